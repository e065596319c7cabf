//! The membership insight (issue 19), kz-groups' extension of the groups paths, read-only and
//! answered through the same pipeline (auth, envelope, errors) as the rest:
//!
//! - `GET …/groups/{G}/ringing`: who a ring group would ring and why not; with
//!   `?callflow_id=` as that callflow's `ring_group` node would (its strategy, delays,
//!   timeouts, weights);
//! - `GET …/groups/{G}/dangling` and `GET …/groups/_account/dangling`: members whose documents
//!   are gone, gone or disabled users whose devices still ring, devices that never ring;
//! - `GET …/groups/{G}/references`: every callflow that points at the group, directly or not,
//!   and every group that nests it.
//!
//! A soft-deleted group is answered too (Kazoo still rings it when a callflow names it); a
//! missing one, or another type of document, is Crossbar's 404 `bad_identifier`. The rules are
//! `domain::membership` and `domain::references`; the reads `store::membership`.
use serde_json::{json, Map, Value};

use super::request::{GroupRequest, Insight, Target};
use crate::domain::clock;
use crate::domain::ids::DocId;
use crate::domain::membership::{self, DocFacts, DocState, Member, Note, Strategy};
use crate::domain::references::{self, CallflowScan};
use crate::error::{ApiError, StoreContext};
use crate::pipeline::reply::{Outcome, Revision, Success};
use crate::store::membership::Reader;
use crate::store::views::Installed;
use crate::store::{StoreError, View};

pub async fn serve(
    req: &GroupRequest<'_>,
    views: &Installed,
    insight: Insight,
) -> Result<Outcome, ApiError> {
    let whole_account = matches!(req.target, Target::Insight { group: None, .. });
    let data = match insight {
        Insight::Dangling if whole_account => account_dangling(req, views).await?,
        Insight::Ringing => ringing(req, views).await?,
        Insight::Dangling => dangling(req, views).await?,
        Insight::References => references(req, views).await?,
    };
    Ok(Outcome::Done(Success {
        is_get: true,
        ..Success::ok(data, Revision::None)
    }))
}

/// A failed read: a view the store no longer has is Crossbar's 503 `datastore missing view`
/// (and the account's views are looked for again next time), anything else as for a document.
fn read_failed(req: &GroupRequest<'_>, e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => {
            req.state.views.forget(&req.account);
            ApiError::from_store(e, StoreContext::View)
        }
        e => ApiError::from_store(e, StoreContext::Resource),
    }
}

/// The group the path names: any document of type `group` (or none), soft-deleted ones too.
async fn load_group(req: &GroupRequest<'_>) -> Result<(DocId, Map<String, Value>), ApiError> {
    let id = req.group_id()?;
    let doc = req.state.store.get_doc(&req.account.db(), &id).await?;
    match doc {
        Some(Value::Object(doc))
            if doc
                .get("pvt_type")
                .is_none_or(|t| t.as_str() == Some(crate::domain::group::GROUP_TYPE)) =>
        {
            Ok((id, doc))
        }
        _ => Err(req.not_found()),
    }
}

/// The group as the answers name it.
fn group_view(id: &DocId, doc: &DocFacts) -> Value {
    let mut view = json!({"id": id.as_str(), "state": doc.state});
    if let Some(name) = &doc.name {
        view["name"] = json!(name);
    }
    view
}

fn notes(notes: &[Note]) -> Value {
    notes
        .iter()
        .map(|n| json!({"code": n, "message": n.message()}))
        .collect()
}

/// `GET …/groups/{G}/ringing[?callflow_id=C]`.
async fn ringing(req: &GroupRequest<'_>, views: &Installed) -> Result<Value, ApiError> {
    let (id, stored) = load_group(req).await?;
    let group = DocFacts::read(Some(&Value::Object(stored)));
    let (members, strategy, mut ring_group) = match req.env.query_value("callflow_id") {
        None => (
            vec![Member::group(id.as_str())],
            Strategy::Simultaneous,
            json!({"strategy": "simultaneous", "members": 1}),
        ),
        Some(raw) => callflow_node(req, &id, raw).await?,
    };
    let mut reader = Reader::new(&req.state.store, views, &req.account);
    reader
        .for_members(&members)
        .await
        .map_err(|e| read_failed(req, e))?;
    let r = membership::ringing(&reader.facts, &members, strategy, clock::gregorian_now());
    ring_group["strategy"] = json!(r.strategy.name());
    Ok(json!({
        "group": group_view(&id, &group),
        "ring_group": ring_group,
        "outcome": r.outcome,
        "legs": r.legs,
        "members": r.members,
        "cycles": r.cycles,
        "notes": notes(&r.notes),
        "truncated": r.truncated || reader.truncated,
    }))
}

/// The members of callflow `raw`'s ring group node that rings group `id`, its strategy, and
/// how the answer names the node. A callflow that is missing, deleted or not a callflow is
/// Crossbar's 404 `bad_identifier` naming it; one without such a node a 400.
async fn callflow_node(
    req: &GroupRequest<'_>,
    id: &DocId,
    raw: Value,
) -> Result<(Vec<Member>, Strategy, Value), ApiError> {
    let raw = match raw {
        Value::String(s) => s,
        other => other.to_string(),
    };
    let missing = || ApiError::BadIdentifier(raw.clone());
    let callflow_id = DocId::parse(&raw).ok_or_else(missing)?;
    let doc = req
        .state
        .store
        .get_docs(&req.account.db(), std::slice::from_ref(&callflow_id))
        .await?
        .pop()
        .flatten()
        .ok_or_else(missing)?;
    let facts = DocFacts::read(Some(&doc));
    if facts.state != DocState::Found || facts.pvt_type.as_deref() != Some("callflow") {
        return Err(missing());
    }
    let Some((path, data)) = references::ring_group_node(id.as_str(), &doc) else {
        return Err(ApiError::validation(
            "callflow_id",
            "invalid",
            json!({"message": "the callflow has no ring_group node for this group", "value": raw}),
        ));
    };
    let (members, strategy) = membership::node_members(&data);
    let info = json!({
        "callflow_id": raw,
        "path": path,
        "members": members.len(),
        "timeout": data.get("timeout").cloned().unwrap_or(json!(20)),
        "repeats": data.get("repeats").cloned().unwrap_or(json!(1)),
    });
    Ok((members, strategy, info))
}

/// `GET …/groups/{G}/dangling`.
async fn dangling(req: &GroupRequest<'_>, views: &Installed) -> Result<Value, ApiError> {
    let (id, stored) = load_group(req).await?;
    let group = DocFacts::read(Some(&Value::Object(stored)));
    let mut reader = Reader::new(&req.state.store, views, &req.account);
    reader
        .for_findings(&group.endpoints)
        .await
        .map_err(|e| read_failed(req, e))?;
    let found = membership::findings(&reader.facts, &group.endpoints);
    Ok(json!({
        "group": group_view(&id, &group),
        "findings": found,
        "truncated": reader.truncated,
    }))
}

/// `GET …/groups/_account/dangling`: every live group's findings, the groups without any left
/// out.
async fn account_dangling(req: &GroupRequest<'_>, views: &Installed) -> Result<Value, ApiError> {
    let mut reader = Reader::new(&req.state.store, views, &req.account);
    let report = reader
        .account_report()
        .await
        .map_err(|e| read_failed(req, e))?;
    Ok(report.json())
}

/// `GET …/groups/{G}/references`.
async fn references(req: &GroupRequest<'_>, views: &Installed) -> Result<Value, ApiError> {
    let (id, stored) = load_group(req).await?;
    let group = DocFacts::read(Some(&Value::Object(stored)));
    let reader = Reader::new(&req.state.store, views, &req.account);
    let failed = |e| read_failed(req, e);
    let mut scans: Vec<CallflowScan> = Vec::new();
    let checked = reader
        .each_document(View::CallflowsListing, |callflow, doc| {
            let scan = references::scan_callflow(id.as_str(), &callflow, &doc);
            if scan.matters() {
                scans.push(scan);
            }
        })
        .await
        .map_err(failed)?;
    let indirect = references::indirect(&scans);
    let direct: Vec<_> = scans
        .into_iter()
        .filter(|s| !s.summary.references.is_empty())
        .map(|s| s.summary)
        .collect();
    let mut nesting = Vec::new();
    reader
        .each_document(View::GroupsListing, |other, doc| {
            if let Some(entry) = doc.get("endpoints").and_then(|e| e.get(id.as_str())) {
                nesting.push(json!({"id": other, "name": doc.get("name"), "entry": entry}));
            }
        })
        .await
        .map_err(failed)?;
    Ok(json!({
        "group": group_view(&id, &group),
        "callflows": direct,
        "indirect": indirect,
        "groups": nesting,
        "callflows_checked": checked,
    }))
}
