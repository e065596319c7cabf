//! `kz-groups doctor --account ID [--fix]`: an account's dangling group members, the report of
//! `GET …/groups/_account/dangling`; with `--fix`, the members whose documents are gone
//! (missing or soft-deleted) are removed, one write per group, as a PATCH removes them
//! (`{"endpoints": {"<id>": null}}`: merged, validated, stamped, written over the revision the
//! report was made from, announced on the bus). Nothing else is changed.
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::domain::document::StoredDoc;
use crate::domain::group;
use crate::domain::history::{Action, Actor};
use crate::domain::ids::{random_hex, AccountId, DocId};
use crate::history::Recorder;
use crate::metrics::Metrics;
use crate::notices::ChangeNotifier;
use crate::recent_writes::RecentWrites;
use crate::startup;
use crate::store::history::History;
use crate::store::membership::{Reader, ReportedGroup};
use crate::store::views::{self, DesignDb};
use crate::store::{Store, StoreError};
use crate::validation::Schemas;
use crate::writes::{self, GroupWrites, Write};

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// The account to check (32 lower-case hex).
    #[arg(long, value_name = "ACCOUNT_ID")]
    pub account: String,
    /// Remove the members whose documents are gone (missing or soft-deleted): one
    /// revision-checked write per group, announced on the bus. Nothing else is changed.
    #[arg(long)]
    pub fix: bool,
}

/// `doctor --fix`: prints the report and what was changed as one JSON object; a group that
/// could not be fixed makes it fail once everything is printed.
pub async fn fix(
    store: Store,
    notifier: Arc<dyn ChangeNotifier>,
    history: History,
    account: AccountId,
) -> Result<(), String> {
    run(store, Some((notifier, history)), account).await
}

/// `doctor`: the report alone; nothing is written or announced.
pub async fn report(store: Store, account: AccountId) -> Result<(), String> {
    run(store, None, account).await
}

/// The report, and with a notifier the fixes.
async fn run(
    store: Store,
    notifier: Option<(Arc<dyn ChangeNotifier>, History)>,
    account: AccountId,
) -> Result<(), String> {
    if crate::store::account(&store, &account)
        .await
        .map_err(|e| format!("reading account {account}: {e}"))?
        .is_none()
    {
        return Err(format!("no account {account} in {}", store.describe()));
    }
    let db = account.db();
    // Read-only: how the views are read, without installing a design document.
    let installed = views::inspect(&store, &db, &startup::design_docs()?, DesignDb::Account)
        .await
        .map_err(|e| format!("{db} design documents: {e}"))?;
    let mut reader = Reader::new(&store, &installed, &account);
    let report = reader
        .account_report()
        .await
        .map_err(|e| format!("reading {db}: {e}"))?;
    eprintln!(
        "doctor: {} groups checked, {} with dangling members",
        report.checked,
        report.groups.len()
    );
    let mut out = json!({"account_id": account.as_str()});
    if let Value::Object(fields) = report.json() {
        out.as_object_mut().expect("an object").extend(fields);
    }
    let Some((notifier, history)) = notifier else {
        println!("{out}");
        return Ok(());
    };
    let request_id = random_hex(16);
    let recent = RecentWrites::new();
    let recorder = Recorder::direct(history, Arc::new(Metrics::new()));
    let writer = GroupWrites {
        store: &store,
        notifier: &*notifier,
        recent: &recent,
        account: &account,
        request_id: &request_id,
        author: None,
        history: &recorder,
        actor: &Actor::CommandLine,
    };
    let schemas = Schemas::load()?;
    let (mut changed, mut failed) = (Vec::new(), Vec::new());
    for group in &report.groups {
        match fix_group(&writer, &schemas, group).await {
            Ok(Some(change)) => {
                eprintln!("doctor: {} fixed", group.id);
                changed.push(change);
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("doctor: {} NOT fixed: {e}", group.id);
                failed.push(json!({"id": group.id, "error": e}));
            }
        }
    }
    out["request_id"] = json!(request_id);
    out["changed"] = json!(changed);
    out["failed"] = json!(failed);
    println!("{out}");
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} groups were not fixed (they changed since they were checked, or the store \
             failed); run doctor again",
            failed.len()
        ))
    }
}

/// Removes a group's gone members as a PATCH would, over the revision they were found in.
/// `None` when nothing is gone.
async fn fix_group(
    writer: &GroupWrites<'_>,
    schemas: &Schemas,
    group: &ReportedGroup,
) -> Result<Option<Value>, String> {
    let gone: Vec<_> = group.findings.iter().filter(|f| f.fixable).collect();
    if gone.is_empty() {
        return Ok(None);
    }
    let id = DocId::parse(&group.id).ok_or("not a usable document id")?;
    let db = writer.account.db();
    let stored = writer
        .store
        .get_doc(&db, &id)
        .await
        .map_err(|e| e.to_string())?
        .and_then(|doc| StoredDoc::from_shared(Arc::new(doc)))
        .filter(|doc| group::is_live_group(doc.fields()))
        .ok_or("the group is gone")?;
    if Some(&stored.rev) != group.rev.as_ref() {
        return Err(format!(
            "the group changed since it was checked (revision {} now)",
            stored.rev
        ));
    }
    let removals: Map<String, Value> = gone.iter().map(|f| (f.id.clone(), Value::Null)).collect();
    let body = json!({ "endpoints": removals });
    let before = stored.fields().clone();
    let (public, private) = group::split(stored.into_fields());
    let public = writes::patched(schemas, public, body)
        .map_err(|e| format!("the patched group does not validate: {e:?}"))?;
    let write = Write {
        action: Action::Patched,
        before: Some(&before),
    };
    let (rev, _) = writer
        .replace(&id, public, private, write)
        .await
        .map_err(|e| match e {
            StoreError::Conflict => "the group changed while it was being fixed".to_owned(),
            e => e.to_string(),
        })?;
    Ok(Some(json!({
        "id": group.id,
        "name": group.name,
        "rev_before": group.rev,
        "rev": rev,
        "removed": gone,
    })))
}
