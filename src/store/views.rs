//! The design documents of `couch_views/`, loaded once at start and kept current: in every
//! account database on its first use by the process, in the `accounts` database, and everywhere
//! by `kz-groups refresh-views`.
//!
//! A file's `kz_groups` key says where it goes and how: `_design/groups` is ours and replaced
//! when it differs; Kazoo's own `_design/users` and `_design/accounts` carry many more views,
//! so for those we only add the views we read when they are missing.
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio::sync::OnceCell;

use super::{Store, StoreError, StoreResult};
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
    /// Only add missing views to a stored doc, never change the ones there (Kazoo's docs).
    pub add_missing_views_only: bool,
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
        let add_missing_views_only = meta
            .get("add_missing_views_only")
            .and_then(Value::as_bool)
            .unwrap_or(false);
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
        Ok(Self {
            name,
            body,
            database,
            add_missing_views_only,
        })
    }

    fn views(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.body
            .get("views")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
    }

    /// Whether a stored design doc already says what this one says (or, for Kazoo's docs,
    /// already has every view we read).
    fn is_current(&self, stored: &Value) -> bool {
        if self.add_missing_views_only {
            return self
                .views()
                .all(|(name, _)| stored.pointer(&format!("/views/{name}")).is_some());
        }
        self.body
            .iter()
            .all(|(key, value)| stored.get(key) == Some(value))
    }

    /// The body to write over `stored` (without `_id`/`_rev`).
    fn updated(&self, stored: Option<&Value>) -> Map<String, Value> {
        match stored.and_then(Value::as_object) {
            Some(stored) if self.add_missing_views_only => {
                let mut body = stored.clone();
                body.remove("_id");
                body.remove("_rev");
                let views = body
                    .entry("views")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(views) = views {
                    for (name, def) in self.views() {
                        views.entry(name.clone()).or_insert_with(|| def.clone());
                    }
                }
                body
            }
            _ => self.body.clone(),
        }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    Unchanged,
    Created,
    Updated,
}

/// Writes `design` into `db` unless it is already current. A concurrent writer (another
/// kz-groups, Crossbar) makes CouchDB answer 409; we read again and retry a few times.
pub async fn ensure_design(store: &Store, db: &DbName, design: &DesignDoc) -> StoreResult<Refresh> {
    let mut attempts = 0;
    loop {
        let stored = store.get_design(db, &design.name).await?;
        if stored.as_ref().is_some_and(|s| design.is_current(s)) {
            return Ok(Refresh::Unchanged);
        }
        let mut body = design.updated(stored.as_ref());
        let outcome = match stored.as_ref().and_then(|s| s.get("_rev")) {
            Some(rev) => {
                body.insert("_rev".into(), rev.clone());
                Refresh::Updated
            }
            None => Refresh::Created,
        };
        body.insert(
            "_id".into(),
            Value::from(format!("_design/{}", design.name)),
        );
        match store
            .put_design(db, &design.name, &Value::Object(body))
            .await
        {
            Ok(_) => return Ok(outcome),
            Err(StoreError::Conflict) if attempts < 5 => attempts += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Remembers which account databases this process has already brought up to date, so the
/// check runs once per account, and concurrent first requests share one check.
pub struct ViewInstaller {
    store: Store,
    designs: Arc<Vec<DesignDoc>>,
    done: Mutex<HashMap<AccountId, Arc<OnceCell<()>>>>,
    accounts_db_done: OnceCell<()>,
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

    /// Makes sure every design document is current in the account's database. A failure is not
    /// remembered, so the next request tries again.
    pub async fn ensure(&self, account: &AccountId) -> StoreResult<()> {
        let cell = {
            let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
            done.entry(account.clone()).or_default().clone()
        };
        let db = account.db();
        cell.get_or_try_init(|| self.install(&db, DesignDb::Account))
            .await
            .map(|_| ())
    }

    /// The same for the `accounts` database, once per process.
    pub async fn ensure_accounts_db(&self) -> StoreResult<()> {
        let db = DbName::system(DbName::ACCOUNTS);
        self.accounts_db_done
            .get_or_try_init(|| self.install(&db, DesignDb::Accounts))
            .await
            .map(|_| ())
    }

    async fn install(&self, db: &DbName, database: DesignDb) -> StoreResult<()> {
        for design in self.designs.iter().filter(|d| d.database == database) {
            let outcome = ensure_design(&self.store, db, design).await?;
            if outcome != Refresh::Unchanged {
                log::info!("{outcome:?} _design/{} in {}", design.name, db);
            }
        }
        Ok(())
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
    fn a_stored_doc_with_the_same_views_is_current() {
        let doc = DesignDoc::from_value(json!({
            "_id": "_design/x", "language": "javascript", "views": {"v": {"map": "f"}}
        }))
        .unwrap();
        assert!(doc.is_current(&json!({
            "_id": "_design/x", "_rev": "3-a", "language": "javascript", "views": {"v": {"map": "f"}}
        })));
        assert!(!doc.is_current(&json!({
            "_id": "_design/x", "language": "javascript", "views": {"v": {"map": "g"}}
        })));
    }

    #[test]
    fn kazoos_own_docs_only_gain_missing_views() {
        let doc = DesignDoc::from_value(json!({
            "_id": "_design/users", "kz_groups": {"add_missing_views_only": true},
            "language": "javascript", "views": {"creds_by_md5": {"map": "ours"}}
        }))
        .unwrap();
        let kazoos = json!({"_id": "_design/users", "_rev": "1-a", "language": "javascript",
                            "views": {"creds_by_md5": {"map": "theirs"}, "crossbar_listing": {"map": "x"}}});
        assert!(doc.is_current(&kazoos));
        let partial = json!({"_id": "_design/users", "_rev": "1-a", "views": {"crossbar_listing": {"map": "x"}}});
        assert!(!doc.is_current(&partial));
        assert_eq!(
            Value::Object(doc.updated(Some(&partial))),
            json!({"views": {"crossbar_listing": {"map": "x"}, "creds_by_md5": {"map": "ours"}}})
        );
    }

    #[test]
    fn malformed_design_docs_are_refused() {
        assert!(DesignDoc::from_value(json!({"_id": "groups", "views": {}})).is_err());
        assert!(DesignDoc::from_value(json!({"_id": "_design/g"})).is_err());
        assert!(DesignDoc::from_value(json!({"_id": "_design/g", "views": {"v": {}}})).is_err());
    }
}
