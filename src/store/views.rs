//! The design documents of `couch_views/`, loaded once at start and kept current: in every
//! account database on its first use by the process, in the `accounts` database, and everywhere
//! by `kz-groups refresh-views`.
//!
//! Beside Kazoo, a design document is changed only by whoever installed it: every rewrite makes
//! CouchDB rebuild the view index from scratch. So a missing one is installed, carrying the
//! marker `"kz_groups": {"installed_by": "kz-groups"}`; one with the marker is ours and updated
//! when `couch_views/` changes; any other (Kazoo's) is never written. If that one lacks a view
//! we read, the view is answered without a design document (`scan`), and this is logged once
//! per database and process.
//!
//! A file's `kz_groups` key says which databases it belongs in.
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio::sync::OnceCell;

use futures::TryStreamExt;

use super::{scan, RowStream, Store, StoreError, StoreResult, View, ViewQuery, ViewRow};
use crate::domain::ids::{AccountId, DbName};

/// Which databases a design document belongs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DesignDb {
    /// Every account database.
    Account,
    /// The aggregate `accounts` database.
    Accounts,
}

/// One design document, as it should stand in CouchDB.
#[derive(Debug, Clone, PartialEq)]
pub struct DesignDoc {
    /// `groups` for `_design/groups`.
    pub name: String,
    /// The body without `_id`/`_rev`.
    pub body: Map<String, Value>,
    pub database: DesignDb,
}

/// The key of our ownership marker in a stored design document.
const MARKER_KEY: &str = "kz_groups";

fn marker() -> Value {
    serde_json::json!({"installed_by": "kz-groups"})
}

/// Whether a stored design document is one kz-groups installed.
pub fn installed_by_us(stored: &Value) -> bool {
    stored.get(MARKER_KEY) == Some(&marker())
}

impl DesignDoc {
    /// Reads a design document file. Like Kazoo, a `map` given as an array of lines is joined
    /// with no separator (auth-contract §6.4), so files keep Kazoo's format.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
        Self::from_value(value).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn from_value(value: Value) -> Result<Self, String> {
        let Value::Object(mut body) = value else {
            return Err("a design document must be an object".into());
        };
        let name = body
            .remove("_id")
            .and_then(|id| {
                id.as_str()
                    .and_then(|s| s.strip_prefix("_design/"))
                    .map(str::to_owned)
            })
            .ok_or("the _id must be \"_design/<name>\"")?;
        body.remove("_rev");
        body.remove("kazoo");
        let meta = body.remove("kz_groups").unwrap_or(Value::Null);
        let database = match meta.get("database").and_then(Value::as_str) {
            None | Some("account") => DesignDb::Account,
            Some("accounts") => DesignDb::Accounts,
            Some(other) => {
                return Err(format!(
                    "kz_groups.database {other:?} is not account or accounts"
                ))
            }
        };
        let views = body
            .get_mut("views")
            .and_then(Value::as_object_mut)
            .ok_or("a design document needs a views object")?;
        for (view, def) in views.iter_mut() {
            let map = def
                .get_mut("map")
                .ok_or_else(|| format!("view {view} has no map"))?;
            if let Value::Array(lines) = map {
                let joined: Option<String> = lines.iter().map(Value::as_str).collect();
                *map = Value::String(
                    joined.ok_or_else(|| format!("view {view}: map lines must be strings"))?,
                );
            }
            if !map.is_string() {
                return Err(format!("view {view}: map must be a string or lines"));
            }
        }
        body.insert(MARKER_KEY.into(), marker());
        Ok(Self {
            name,
            body,
            database,
        })
    }

    fn views(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.body
            .get("views")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
    }

    pub fn view_names(&self) -> impl Iterator<Item = &String> {
        self.views().map(|(name, _)| name)
    }

    /// Whether a stored design doc (ours) already says what this one says.
    fn is_current(&self, stored: &Value) -> bool {
        self.body
            .iter()
            .all(|(key, value)| stored.get(key) == Some(value))
    }

    /// The views we read that a stored design doc lacks.
    fn missing_views(&self, stored: &Value) -> Vec<String> {
        self.view_names()
            .filter(|name| stored.pointer(&format!("/views/{name}")).is_none())
            .cloned()
            .collect()
    }
}

/// All design documents of `couch_views/`, in file-name order.
pub fn load_dir(dir: &Path) -> Result<Vec<DesignDoc>, String> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    let docs = paths
        .iter()
        .map(|p| DesignDoc::from_file(p))
        .collect::<Result<Vec<_>, _>>()?;
    if docs.is_empty() {
        return Err(format!("no design documents in {}", dir.display()));
    }
    Ok(docs)
}

/// Outcome of bringing one design document up to date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    Unchanged,
    Created,
    Updated,
    /// Someone else's (Kazoo's): left as it is; `missing` are the views we read that it lacks.
    NotOurs {
        missing: Vec<String>,
    },
}

/// Writes `design` into `db` when it is missing, or ours and not current; never writes over
/// someone else's. A changed one is swapped in with its index already built ([`swap`]). A
/// concurrent writer (another kz-groups, Kazoo) makes CouchDB answer 409; we read again and
/// retry a few times.
pub async fn ensure_design(store: &Store, db: &DbName, design: &DesignDoc) -> StoreResult<Refresh> {
    let mut attempts = 0;
    loop {
        let stored = store.get_design(db, &design.name).await?;
        match &stored {
            Some(s) if !installed_by_us(s) => {
                return Ok(Refresh::NotOurs {
                    missing: design.missing_views(s),
                })
            }
            Some(s) if design.is_current(s) => return Ok(Refresh::Unchanged),
            _ => {}
        }
        let written = match stored.as_ref().and_then(|s| s.get("_rev")) {
            Some(rev) => swap(store, db, design, rev)
                .await
                .map(|()| Refresh::Updated),
            None => put(store, db, &design.name, design, None)
                .await
                .map(|_| Refresh::Created),
        };
        match written {
            Err(StoreError::Conflict) if attempts < 5 => attempts += 1,
            outcome => return outcome,
        }
    }
}

/// Writes `design`'s body as `_design/{name}`, over revision `rev` when given.
async fn put(
    store: &Store,
    db: &DbName,
    name: &str,
    design: &DesignDoc,
    rev: Option<&Value>,
) -> StoreResult<String> {
    let mut body = design.body.clone();
    body.insert("_id".into(), Value::from(format!("_design/{name}")));
    if let Some(rev) = rev {
        body.insert("_rev".into(), rev.clone());
    }
    store.put_design(db, name, &Value::Object(body)).await
}

/// The name a changed design document is built under before it replaces the live one.
fn staging_name(name: &str) -> String {
    format!("{name}-kz-groups-next")
}

/// Changes a design document without making its readers wait for a rebuild, as CouchDB
/// documents it: the new version goes in under another name and its views are built, while the
/// live one keeps answering; then it is written over the live one (the same views make the same
/// index, which is there already) and the copy is deleted.
async fn swap(store: &Store, db: &DbName, design: &DesignDoc, live_rev: &Value) -> StoreResult<()> {
    let staging = staging_name(&design.name);
    let left_over = store.get_design(db, &staging).await?;
    let staged_rev = put(
        store,
        db,
        &staging,
        design,
        left_over.as_ref().and_then(|d| d.get("_rev")),
    )
    .await?;
    let swapped = match build(store, db, &staging, design).await {
        Ok(()) => put(store, db, &design.name, design, Some(live_rev))
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    // Whatever came of it (another instance may have swapped first, and the caller then finds
    // the live one current), the copy written here goes: whoever wrote the copy last deletes it.
    match store.delete_design(db, &staging, &staged_rev).await {
        Ok(_) | Err(StoreError::Conflict) | Err(StoreError::NotFound) => swapped,
        Err(e) => swapped.and(Err(e)),
    }
}

/// Builds the index of every view of `design` as stored under `_design/{name}`, waiting as long
/// as that takes.
pub async fn build(store: &Store, db: &DbName, name: &str, design: &DesignDoc) -> StoreResult<()> {
    for view in design.view_names() {
        store.build_index(db, name, view).await?;
    }
    Ok(())
}

/// How a database's views are read: from its design documents, except the views listed here,
/// which its (not our) design documents lack and which are therefore computed by `scan`.
/// Kazoo's views (`View::is_kazoos`) are looked for on their first use in the database: where
/// the store does not answer one (no Kazoo design document), it is computed by `scan` too.
#[derive(Debug, Clone, Default)]
pub struct Installed {
    scanned: Arc<HashSet<View>>,
    /// Kazoo's views met so far, and whether each is computed by `scan`.
    kazoos: Arc<Mutex<HashMap<View, bool>>>,
}

impl Installed {
    /// Reading the views of `scanned` without a design document.
    fn scanning(scanned: HashSet<View>) -> Self {
        Self {
            scanned: Arc::new(scanned),
            kazoos: Arc::default(),
        }
    }

    /// Rows of `view`, with or without its design document.
    pub async fn rows(
        &self,
        store: &Store,
        db: &DbName,
        view: View,
        query: &ViewQuery,
    ) -> StoreResult<RowStream> {
        if self.is_scanned(store, db, view).await? {
            let rows = scan::query(store, db, view, query).await?;
            Ok(Box::pin(futures::stream::iter(rows.into_iter().map(Ok))))
        } else {
            store.view_rows(db, view, query).await
        }
    }

    /// All the rows of a (small) query at once.
    pub async fn query(
        &self,
        store: &Store,
        db: &DbName,
        view: View,
        query: &ViewQuery,
    ) -> StoreResult<Vec<ViewRow>> {
        self.rows(store, db, view, query).await?.try_collect().await
    }

    /// Whether `view` is computed from the documents (a whole read of the database per query),
    /// so that a reader of many keys reads all its rows at once instead. For one of Kazoo's
    /// views the store is asked once (no row) whether it answers it; kz-groups never installs
    /// their design documents, and says once per database and process which it lacks.
    pub async fn is_scanned(&self, store: &Store, db: &DbName, view: View) -> StoreResult<bool> {
        if !view.is_kazoos() {
            return Ok(self.scanned.contains(&view));
        }
        let known = self.lock_kazoos().get(&view).copied();
        if let Some(scanned) = known {
            return Ok(scanned);
        }
        let probe = ViewQuery {
            limit: Some(0),
            ..Default::default()
        };
        let scanned = match store.view_rows(db, view, &probe).await {
            Ok(_) => false,
            Err(StoreError::NotFound) => {
                log::warn!(
                    "{db} has no Kazoo design document with the view {view}: it is read \
                     without one (every document of the database per query); kz-groups never \
                     installs Kazoo's design documents"
                );
                true
            }
            Err(e) => return Err(e),
        };
        self.lock_kazoos().insert(view, scanned);
        Ok(scanned)
    }

    fn lock_kazoos(&self) -> std::sync::MutexGuard<'_, HashMap<View, bool>> {
        self.kazoos.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Brings every design document meant for `database` up to date in `db` and says how its
/// views are to be read. Views missing from someone else's design document are logged here,
/// which callers run once per database and process.
pub async fn install(
    store: &Store,
    db: &DbName,
    designs: &[DesignDoc],
    database: DesignDb,
) -> StoreResult<Installed> {
    let mut scanned = HashSet::new();
    for design in designs.iter().filter(|d| d.database == database) {
        match ensure_design(store, db, design).await? {
            Refresh::Unchanged => {}
            Refresh::NotOurs { missing } => {
                if !missing.is_empty() {
                    log::warn!(
                        "_design/{} in {db} was not installed by kz-groups, so it is left as it \
                         is; it lacks the views {}, which are read without a design document \
                         (every document of the database per query)",
                        design.name,
                        missing.join(", ")
                    );
                }
                // Views the service does not read need no answer.
                scanned.extend(missing.iter().filter_map(|v| View::find(&design.name, v)));
            }
            outcome => log::info!("{outcome:?} _design/{} in {db}", design.name),
        }
    }
    Ok(Installed::scanning(scanned))
}

/// How `db`'s views are to be read, as [`install`] says it, without writing anything: the views
/// a stored design document lacks (all of a missing one's) are computed by `scan`. For a
/// command that only reads (`kz-groups doctor`).
pub async fn inspect(
    store: &Store,
    db: &DbName,
    designs: &[DesignDoc],
    database: DesignDb,
) -> StoreResult<Installed> {
    let mut scanned = HashSet::new();
    for design in designs.iter().filter(|d| d.database == database) {
        let missing = match store.get_design(db, &design.name).await? {
            Some(stored) => design.missing_views(&stored),
            None => design.view_names().cloned().collect(),
        };
        scanned.extend(missing.iter().filter_map(|v| View::find(&design.name, v)));
    }
    Ok(Installed::scanning(scanned))
}

/// Remembers which account databases this process has already brought up to date, so the
/// check runs once per account, and concurrent first requests share one check.
pub struct ViewInstaller {
    store: Store,
    designs: Arc<Vec<DesignDoc>>,
    done: Mutex<HashMap<AccountId, Arc<OnceCell<Installed>>>>,
    accounts_db_done: OnceCell<Installed>,
}

impl ViewInstaller {
    pub fn new(store: Store, designs: Vec<DesignDoc>) -> Self {
        Self {
            store,
            designs: Arc::new(designs),
            done: Mutex::new(HashMap::new()),
            accounts_db_done: OnceCell::new(),
        }
    }

    pub fn designs(&self) -> &[DesignDoc] {
        &self.designs
    }

    /// Makes sure every design document is current in the account's database (where it is
    /// ours to change). A failure is not remembered, so the next request tries again.
    pub async fn ensure(&self, account: &AccountId) -> StoreResult<Installed> {
        let cell = {
            let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
            done.entry(account.clone()).or_default().clone()
        };
        let db = account.db();
        cell.get_or_try_init(|| install(&self.store, &db, &self.designs, DesignDb::Account))
            .await
            .cloned()
    }

    /// The same for the `accounts` database, once per process.
    pub async fn ensure_accounts_db(&self) -> StoreResult<Installed> {
        let db = DbName::system(DbName::ACCOUNTS);
        self.accounts_db_done
            .get_or_try_init(|| install(&self.store, &db, &self.designs, DesignDb::Accounts))
            .await
            .cloned()
    }

    /// Forgets an account, e.g. after CouchDB reported a view missing, so the next use checks
    /// its design documents again.
    pub fn forget(&self, account: &AccountId) {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        done.remove(account);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn map_lines_are_joined_without_separator_like_kazoo() {
        let doc = DesignDoc::from_value(json!({
            "_id": "_design/x",
            "kazoo": {"view_map": []},
            "language": "javascript",
            "views": {"v": {"map": ["function(doc) {", " emit(doc._id, null);", "}"]}}
        }))
        .unwrap();
        assert_eq!(doc.name, "x");
        assert_eq!(doc.body["kz_groups"], json!({"installed_by": "kz-groups"}));
        assert_eq!(
            doc.body["views"]["v"]["map"],
            json!("function(doc) { emit(doc._id, null);}")
        );
        assert!(doc.body.get("kazoo").is_none());
    }

    #[test]
    fn the_shipped_groups_design_doc_loads() {
        let docs = load_dir(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/couch_views"
        )))
        .unwrap();
        let groups = docs.iter().find(|d| d.name == "groups").unwrap();
        let views = groups.body["views"].as_object().unwrap();
        assert!(views.contains_key("crossbar_listing"));
        assert!(views.contains_key("crossbar_listing_by_user"));
    }

    #[test]
    fn our_stored_doc_is_current_only_when_it_says_the_same() {
        let doc = DesignDoc::from_value(json!({
            "_id": "_design/x", "language": "javascript", "views": {"v": {"map": "f"}}
        }))
        .unwrap();
        let ours = json!({
            "_id": "_design/x", "_rev": "3-a", "kz_groups": {"installed_by": "kz-groups"},
            "language": "javascript", "views": {"v": {"map": "f"}}
        });
        assert!(installed_by_us(&ours) && doc.is_current(&ours));
        let mut stale = ours.clone();
        stale["views"]["v"]["map"] = json!("g");
        assert!(installed_by_us(&stale) && !doc.is_current(&stale));
    }

    #[test]
    fn kazoos_docs_are_not_ours_and_their_missing_views_are_named() {
        let doc = DesignDoc::from_value(json!({
            "_id": "_design/users", "language": "javascript",
            "views": {"creds_by_md5": {"map": "ours"}, "list_by_username": {"map": "ours"}}
        }))
        .unwrap();
        let kazoos = json!({"_id": "_design/users", "_rev": "1-a", "kazoo": {"view_map": []},
                            "language": "javascript",
                            "views": {"creds_by_md5": {"map": "theirs"}, "crossbar_listing": {"map": "x"}}});
        assert!(!installed_by_us(&kazoos));
        assert_eq!(doc.missing_views(&kazoos), ["list_by_username"]);
        // An old kz-groups doc without the marker is not recognised as ours either.
        assert!(!installed_by_us(
            &json!({"_id": "_design/users", "views": {}})
        ));
    }

    #[test]
    fn malformed_design_docs_are_refused() {
        assert!(DesignDoc::from_value(json!({"_id": "groups", "views": {}})).is_err());
        assert!(DesignDoc::from_value(json!({"_id": "_design/g"})).is_err());
        assert!(DesignDoc::from_value(json!({"_id": "_design/g", "views": {"v": {}}})).is_err());
    }
}
