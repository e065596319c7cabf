//! Provisioning the way Kazoo provisions (auth-contract §2.4, §6): signing material
//! (`kz-groups init`), accounts (`kz-groups accounts create`) and users (`kz-groups users
//! create`). Existing material is never replaced.
use futures::TryStreamExt;
use md5::{Digest, Md5};
use serde_json::{json, Map, Value};
use sha1::Sha1;

use crate::auth::keys;
use crate::domain::clock;
use crate::domain::group::alphanum_name;
use crate::domain::ids::{hex, random_hex, AccountId, DbName, DocId};
use crate::notices::{Change, ChangeAction, ChangeNotifier, DocChange};
use crate::store::views::{self, DesignDb, DesignDoc, Installed};
use crate::store::{Store, StoreError, View, ViewQuery};

/// What `init` found or made.
#[derive(Debug, Clone, PartialEq)]
pub struct InitReport {
    pub kid: String,
    /// What was created, e.g. `system_config/auth default.system_key`.
    pub created: Vec<String>,
}

fn couch_err(context: &str) -> impl Fn(StoreError) -> String + '_ {
    move |e| format!("{context}: {e}")
}

fn static_id(id: &str) -> DocId {
    DocId::parse(id).expect("static id")
}

/// Creates `system_config/auth` (`system_key`, `secret_for_user_signature`) and
/// `system_auth/<kid>` with a `private_key.pem` attachment, each only when absent.
pub async fn init(store: &Store) -> Result<InitReport, String> {
    let config_db = DbName::system(DbName::SYSTEM_CONFIG);
    let auth_db = DbName::system(DbName::SYSTEM_AUTH);
    for db in [&config_db, &auth_db] {
        store.create_db(db).await.map_err(couch_err(db.as_str()))?;
    }
    let mut created = Vec::new();
    let kid = auth_config(store, &config_db, &mut created).await?;
    let kid_id = DocId::parse(&kid)
        .ok_or_else(|| format!("system_key {kid:?} is not a usable document id"))?;
    let key_doc = key_doc(store, &auth_db, &kid_id, &mut created).await?;
    private_key(store, &auth_db, &kid_id, key_doc, &mut created).await?;
    Ok(InitReport { kid, created })
}

/// `system_config/auth` with its secrets, written when one is missing (again after a conflict:
/// another `init` wrote it meanwhile). Returns the key id, `default.system_key`.
async fn auth_config(
    store: &Store,
    config_db: &DbName,
    created: &mut Vec<String>,
) -> Result<String, String> {
    let auth_id = static_id("auth");
    loop {
        let stored = store
            .get_doc(config_db, &auth_id)
            .await
            .map_err(couch_err("system_config/auth"))?;
        let mut doc = stored.unwrap_or_else(|| json!({"_id": "auth"}));
        let (kid, added) = add_missing_secrets(&mut doc)?;
        if added.is_empty() {
            return Ok(kid);
        }
        match store.put_doc(config_db, &auth_id, &doc).await {
            Ok(_) => {
                created.extend(added);
                return Ok(kid);
            }
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(format!("system_config/auth: {e}")),
        }
    }
}

/// Fills in `default.system_key` and `default.secret_for_user_signature` where they are not
/// strings. Returns the key id and what was added.
fn add_missing_secrets(doc: &mut Value) -> Result<(String, Vec<String>), String> {
    let Some(default) = doc
        .as_object_mut()
        .map(|d| d.entry("default").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut)
    else {
        return Err("system_config/auth: `default` is not an object".into());
    };
    let mut added = Vec::new();
    for secret in ["system_key", "secret_for_user_signature"] {
        if !default.get(secret).is_some_and(Value::is_string) {
            default.insert(secret.into(), json!(random_hex(16)));
            added.push(format!("system_config/auth default.{secret}"));
        }
    }
    let kid = default["system_key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok((kid, added))
}

/// `system_auth/<kid>`, created when missing. Another `init` may create it meanwhile (the suite
/// runs several at once, a deployment may too): a conflict means it did, so read it again.
/// Returns the document as stored, or only its `_rev` when this call created it.
async fn key_doc(
    store: &Store,
    auth_db: &DbName,
    kid: &DocId,
    created: &mut Vec<String>,
) -> Result<Value, String> {
    loop {
        if let Some(doc) = store
            .get_doc(auth_db, kid)
            .await
            .map_err(couch_err("system_auth"))?
        {
            return Ok(doc);
        }
        let now = clock::gregorian_now();
        let doc = json!({
            "_id": kid.as_str(),
            "pvt_type": "system_key",
            "pvt_account_id": "system_auth",
            "pvt_account_db": "system_auth",
            "pvt_created": now,
            "pvt_modified": now,
        });
        match store.put_doc(auth_db, kid, &doc).await {
            Ok(rev) => {
                created.push(format!("system_auth/{kid}"));
                return Ok(json!({"_rev": rev}));
            }
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(format!("system_auth: {e}")),
        }
    }
}

/// The `private_key.pem` attachment of `system_auth/<kid>`, added when missing; after a conflict
/// the document is read again, and the attachment another `init` added is kept.
async fn private_key(
    store: &Store,
    auth_db: &DbName,
    kid: &DocId,
    mut key_doc: Value,
    created: &mut Vec<String>,
) -> Result<(), String> {
    let mut pem = None;
    while key_doc.pointer("/_attachments/private_key.pem").is_none() {
        if pem.is_none() {
            pem = Some(new_private_key_pem()?);
        }
        let rev = key_doc
            .get("_rev")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let put = store
            .put_attachment(
                auth_db,
                kid,
                "private_key.pem",
                rev,
                "application/x-pem-file",
                pem.clone().unwrap_or_default().into_bytes(),
            )
            .await;
        match put {
            Ok(_) => {
                created.push(format!("system_auth/{kid}/private_key.pem"));
                break;
            }
            Err(StoreError::Conflict) => {
                key_doc = store
                    .get_doc(auth_db, kid)
                    .await
                    .map_err(couch_err("system_auth"))?
                    .ok_or_else(|| format!("system_auth/{kid} was deleted while init ran"))?;
            }
            Err(e) => return Err(format!("system_auth private_key.pem: {e}")),
        }
    }
    Ok(())
}

fn new_private_key_pem() -> Result<String, String> {
    let key = keys::generate_private_key().map_err(|e| format!("generating the RSA key: {e}"))?;
    keys::private_key_to_pem(&key).map_err(|e| format!("encoding the RSA key: {e}"))
}

/// `accounts create` options.
#[derive(Debug, Clone, Default)]
pub struct NewAccount {
    pub name: String,
    pub realm: Option<String>,
    pub parent: Option<AccountId>,
    pub superduper_admin: bool,
}

async fn view_has_key(
    store: &Store,
    views: &Installed,
    db: &DbName,
    view: View,
    key: &str,
) -> Result<bool, String> {
    let query = ViewQuery {
        key: Some(json!(key)),
        limit: Some(1),
        ..Default::default()
    };
    match views.query(store, db, view, &query).await {
        Ok(rows) => Ok(!rows.is_empty()),
        Err(StoreError::NotFound) => Ok(false),
        Err(e) => Err(format!("{db} {view}: {e}")),
    }
}

async fn install(
    store: &Store,
    db: &DbName,
    designs: &[DesignDoc],
    database: DesignDb,
) -> Result<Installed, String> {
    views::install(store, db, designs, database)
        .await
        .map_err(|e| format!("{db} design documents: {e}"))
}

/// Saves a new document and announces it as Kazoo's data layer does (amqp-notices §1.1).
async fn create_doc(
    store: &Store,
    notifier: &dyn ChangeNotifier,
    db: &DbName,
    id: &DocId,
    doc: &Value,
    what: &str,
) -> Result<(), String> {
    let rev = store.put_doc(db, id, doc).await.map_err(couch_err(what))?;
    if let Value::Object(doc) = doc {
        let change = DocChange::written(db.clone(), id, doc, &rev, ChangeAction::Created);
        notifier.announce(Change::Doc(Box::new(change)));
    }
    Ok(())
}

/// Creates an account as Kazoo's `PUT /v2/accounts` does (auth-contract §6.2, §6.4): its
/// database with the design documents, then the account doc in it and in `accounts`, announcing
/// the database (`db_created`) and both docs as Kazoo does. Returns the stored account doc.
pub async fn create_account(
    store: &Store,
    designs: &[DesignDoc],
    notifier: &dyn ChangeNotifier,
    new: &NewAccount,
) -> Result<Map<String, Value>, String> {
    let name = new.name.trim();
    if name.is_empty() {
        return Err("--name must not be empty".into());
    }
    let accounts_db = DbName::system(DbName::ACCOUNTS);
    let realm = match &new.realm {
        Some(realm) => realm.replace(' ', "").to_lowercase(),
        None => format!("{}.sip.2600hz.com", random_hex(3)),
    };
    check_name_and_realm_free(store, designs, &accounts_db, name, &realm).await?;
    let id = AccountId::parse(&random_hex(16)).expect("32 lower-case hex");
    let placement = placement(store, &id, new.parent.as_ref()).await?;
    let db = id.db();
    store.create_db(&db).await.map_err(couch_err(db.as_str()))?;
    notifier.announce(Change::DbCreated(db.clone()));
    install(store, &db, designs, DesignDb::Account).await?;
    let doc = account_doc(&id, name, &realm, placement, new.superduper_admin);
    let doc_id = DocId::from(id.clone());
    create_doc(store, notifier, &db, &doc_id, &doc, "account doc").await?;
    create_doc(
        store,
        notifier,
        &accounts_db,
        &doc_id,
        &doc,
        "accounts copy of the account doc",
    )
    .await?;
    Ok(match doc {
        Value::Object(map) => map,
        _ => Map::new(),
    })
}

/// Account names (compared as Kazoo does, letters and digits only) and realms are unique in the
/// store: both are looked up in `accounts`, which is created with its views when missing.
async fn check_name_and_realm_free(
    store: &Store,
    designs: &[DesignDoc],
    accounts_db: &DbName,
    name: &str,
    realm: &str,
) -> Result<(), String> {
    store
        .create_db(accounts_db)
        .await
        .map_err(couch_err("accounts"))?;
    let views = install(store, accounts_db, designs, DesignDb::Accounts).await?;
    let by_name = View::AccountsListingByName;
    if view_has_key(store, &views, accounts_db, by_name, &alphanum_name(name)).await? {
        return Err(format!("an account named {name:?} already exists"));
    }
    let by_realm = View::AccountsListingByRealm;
    if view_has_key(store, &views, accounts_db, by_realm, realm).await? {
        return Err(format!("the realm {realm:?} is already in use"));
    }
    Ok(())
}

/// Where a new account sits in the account tree.
struct Placement {
    parent: Option<AccountId>,
    /// `pvt_tree`: the ids of its ancestors, the root first.
    tree: Vec<Value>,
    /// An account starts enabled when its parent is.
    enabled: bool,
}

/// The parent is the one given, else the master account; the first account becomes master.
async fn placement(
    store: &Store,
    id: &AccountId,
    given: Option<&AccountId>,
) -> Result<Placement, String> {
    let config_db = DbName::system(DbName::SYSTEM_CONFIG);
    store
        .create_db(&config_db)
        .await
        .map_err(couch_err("system_config"))?;
    let parent = match given {
        Some(parent) => parent.clone(),
        None => {
            let master = master_or_claim(store, &config_db, id).await?;
            if master == *id {
                // This account just became master (the first one): the root of the tree.
                return Ok(Placement {
                    parent: None,
                    tree: Vec::new(),
                    enabled: true,
                });
            }
            master
        }
    };
    let found = crate::store::account(store, &parent)
        .await
        .map_err(couch_err("parent account"))?;
    let (tree, enabled) = match found {
        Some(account) => {
            let tree = account.tree().chain([parent.as_str()]).map(|id| json!(id));
            (tree.collect(), account.is_enabled())
        }
        // The master another `accounts create` has just claimed, still being written: it is
        // the root, so its tree is empty and it is enabled.
        None if given.is_none() => (vec![json!(parent.as_str())], true),
        None => return Err(format!("parent account {parent} does not exist")),
    };
    Ok(Placement {
        parent: Some(parent),
        tree,
        enabled,
    })
}

/// The account document as Kazoo writes it, new API key included.
fn account_doc(
    id: &AccountId,
    name: &str,
    realm: &str,
    placement: Placement,
    superduper_admin: bool,
) -> Value {
    let now = clock::gregorian_now();
    let mut doc = json!({
        "_id": id.as_str(),
        "name": name,
        "realm": realm,
        "call_restriction": {},
        "music_on_hold": {},
        "preflow": {},
        "ringtones": {},
        "pvt_type": "account",
        "pvt_vsn": "1",
        "pvt_account_id": id.as_str(),
        "pvt_account_db": id.db().encoded(),
        "pvt_tree": placement.tree,
        "pvt_api_key": random_hex(32),
        "pvt_enabled": placement.enabled,
        "pvt_alphanum_name": alphanum_name(name),
        "pvt_created": now,
        "pvt_modified": now,
    });
    if let Some(parent) = &placement.parent {
        doc["pvt_parent_id"] = json!(parent.as_str());
    }
    if superduper_admin {
        doc["pvt_superduper_admin"] = json!(true);
    }
    doc
}

/// The master account named in `system_config/accounts`, or, when none is named yet, `candidate`
/// made master. The claim is a write against the document's revision, so of several concurrent
/// first `accounts create` runs exactly one becomes master and the others find it.
async fn master_or_claim(
    store: &Store,
    db: &DbName,
    candidate: &AccountId,
) -> Result<AccountId, String> {
    let doc_id = static_id("accounts");
    loop {
        let mut doc = store
            .get_doc(db, &doc_id)
            .await
            .map_err(couch_err("system_config/accounts"))?
            .unwrap_or_else(|| json!({"_id": "accounts"}));
        if let Some(master) = doc.pointer("/default/master_account_id") {
            return master
                .as_str()
                .and_then(|id| AccountId::parse(id).ok())
                .ok_or_else(|| format!("system_config/accounts: bad master_account_id {master}"));
        }
        let default = doc
            .as_object_mut()
            .map(|d| d.entry("default").or_insert_with(|| json!({})));
        match default {
            Some(Value::Object(default)) => {
                default.insert("master_account_id".into(), json!(candidate.as_str()));
            }
            _ => return Err("system_config/accounts: `default` is not an object".into()),
        }
        match store.put_doc(db, &doc_id, &doc).await {
            Ok(_) => return Ok(candidate.clone()),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(format!("system_config/accounts: {e}")),
        }
    }
}

/// `users create` options.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    pub account: Option<AccountId>,
    pub username: String,
    pub password: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub priv_level: String,
}

/// Creates a user document that Kazoo's `user_auth` accepts (auth-contract §6.3): lower-cased
/// username, md5/sha1 credential hashes, enabled, with its own signature secret.
pub async fn create_user(
    store: &Store,
    designs: &[DesignDoc],
    notifier: &dyn ChangeNotifier,
    new: &NewUser,
) -> Result<Map<String, Value>, String> {
    let account = new.account.as_ref().ok_or("--account is required")?;
    let username = new.username.trim().to_lowercase();
    if username.is_empty() || new.password.is_empty() {
        return Err("--username and --password must not be empty".into());
    }
    let db = account.db();
    store
        .get_doc(&db, &DocId::from(account.clone()))
        .await
        .map_err(couch_err("account"))?
        .ok_or_else(|| format!("account {account} does not exist"))?;
    let account_views = install(store, &db, designs, DesignDb::Account).await?;
    if view_has_key(
        store,
        &account_views,
        &db,
        View::UsersListByUsername,
        &username,
    )
    .await?
    {
        return Err(format!(
            "the username {username:?} is already taken in account {account}"
        ));
    }
    let creds = format!("{username}:{}", new.password);
    let id = DocId::generate();
    let now = clock::gregorian_now();
    let mut doc = json!({
        "_id": id.as_str(),
        "username": username,
        "first_name": new.first_name.clone().unwrap_or_else(|| username.clone()),
        "last_name": new.last_name.clone().unwrap_or_default(),
        "enabled": true,
        "priv_level": new.priv_level,
        "pvt_type": "user",
        "pvt_vsn": "1",
        "pvt_account_id": account.as_str(),
        "pvt_account_db": db.encoded(),
        "pvt_md5_auth": hex(&Md5::digest(creds.as_bytes())),
        "pvt_sha1_auth": hex(&Sha1::digest(creds.as_bytes())),
        "pvt_signature_secret": random_hex(16),
        "pvt_created": now,
        "pvt_modified": now,
    });
    if let Some(email) = &new.email {
        doc["email"] = json!(email);
    }
    create_doc(store, notifier, &db, &id, &doc, "user doc").await?;
    Ok(match doc {
        Value::Object(map) => map,
        _ => Map::new(),
    })
}

/// The live documents of `db` whose `pvt_type` is `pvt_type`, in id order; none when the
/// database does not exist.
async fn docs_of_type(store: &Store, db: &DbName, pvt_type: &str) -> Result<Vec<Value>, String> {
    let rows = match store.all_docs(db).await {
        Ok(rows) => rows,
        Err(StoreError::NotFound) => return Ok(Vec::new()),
        Err(e) => return Err(format!("{db}: {e}")),
    };
    let docs: Vec<_> = rows.try_collect().await.map_err(couch_err(db.as_str()))?;
    Ok(docs
        .into_iter()
        .filter_map(|row| serde_json::from_str::<Value>(row.doc?.get()).ok())
        .filter(|doc| doc.get("pvt_type").and_then(Value::as_str) == Some(pvt_type))
        .filter(|doc| doc.get("pvt_deleted") != Some(&Value::Bool(true)))
        .collect())
}

/// What `accounts list` and `accounts show` print of an account; the API key only when asked.
pub fn account_summary(doc: &Value, with_api_key: bool) -> Value {
    let mut out = json!({
        "account_id": doc["_id"],
        "name": doc["name"],
        "realm": doc["realm"],
        "parent_id": doc.get("pvt_parent_id").cloned().unwrap_or(Value::Null),
        "enabled": doc.get("pvt_enabled").cloned().unwrap_or(Value::Bool(true)),
        "superduper_admin": doc.get("pvt_superduper_admin").cloned().unwrap_or(Value::Bool(false)),
        "account_db": doc["pvt_account_db"],
    });
    if with_api_key {
        out["api_key"] = doc["pvt_api_key"].clone();
    }
    out
}

/// Every account, from the `accounts` database, by name (`accounts list`).
pub async fn list_accounts(store: &Store) -> Result<Vec<Value>, String> {
    let db = DbName::system(DbName::ACCOUNTS);
    let mut accounts = docs_of_type(store, &db, "account").await?;
    accounts.sort_by_cached_key(|doc| {
        let name = doc["name"].as_str().unwrap_or_default().to_lowercase();
        (name, doc["_id"].as_str().unwrap_or_default().to_owned())
    });
    Ok(accounts
        .iter()
        .map(|doc| account_summary(doc, false))
        .collect())
}

/// One account's document from its own database (`accounts show`), or an error naming it.
pub async fn show_account(store: &Store, id: &AccountId) -> Result<Value, String> {
    match crate::store::account(store, id).await {
        Ok(Some(account)) => Ok(account_summary(&account.doc, true)),
        Ok(None) => Err(format!("account {id} does not exist")),
        Err(e) => Err(format!("account {id}: {e}")),
    }
}

/// The users of an account (`users list`), by username; no credential hash or secret.
pub async fn list_users(store: &Store, account: &AccountId) -> Result<Vec<Value>, String> {
    show_account(store, account).await?;
    let mut users = docs_of_type(store, &account.db(), "user").await?;
    users.sort_by_cached_key(|doc| doc["username"].as_str().unwrap_or_default().to_owned());
    Ok(users
        .iter()
        .map(|doc| {
            json!({
                "id": doc["_id"],
                "username": doc["username"],
                "first_name": doc["first_name"],
                "last_name": doc["last_name"],
                "email": doc.get("email").cloned().unwrap_or(Value::Null),
                "priv_level": doc["priv_level"],
                "enabled": doc.get("enabled").cloned().unwrap_or(Value::Bool(true)),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_secrets_are_added_and_named_and_present_ones_kept() {
        let mut doc = json!({"_id": "auth", "default": {"system_key": "k1", "other": 1}});
        let (kid, added) = add_missing_secrets(&mut doc).unwrap();
        assert_eq!(kid, "k1");
        assert_eq!(
            added,
            ["system_config/auth default.secret_for_user_signature"]
        );
        assert_eq!(doc["default"]["system_key"], "k1");
        assert_eq!(doc["default"]["other"], 1);
        let secret = doc["default"]["secret_for_user_signature"]
            .as_str()
            .unwrap();
        assert_eq!(secret.len(), 32);

        let (again, added) = add_missing_secrets(&mut doc).unwrap();
        assert_eq!(again, "k1");
        assert!(added.is_empty(), "nothing is replaced: {added:?}");
    }

    #[test]
    fn a_new_auth_config_gets_both_secrets_and_the_key_id_is_the_system_key() {
        let mut doc = json!({"_id": "auth"});
        let (kid, added) = add_missing_secrets(&mut doc).unwrap();
        assert_eq!(
            added,
            [
                "system_config/auth default.system_key",
                "system_config/auth default.secret_for_user_signature"
            ]
        );
        assert_eq!(doc["default"]["system_key"], kid.as_str());
    }

    #[test]
    fn a_default_that_is_not_an_object_is_refused() {
        let mut doc = json!({"_id": "auth", "default": "x"});
        assert_eq!(
            add_missing_secrets(&mut doc).unwrap_err(),
            "system_config/auth: `default` is not an object"
        );
    }

    #[test]
    fn an_account_doc_names_its_parent_and_tree_and_admin_flag_only_when_set() {
        let id = AccountId::parse("4b31dd1d32ce6d249897c06332375d65").unwrap();
        let root = Placement {
            parent: None,
            tree: Vec::new(),
            enabled: true,
        };
        let doc = account_doc(&id, "Acme Inc", "acme.sip", root, false);
        assert_eq!(doc["pvt_alphanum_name"], alphanum_name("Acme Inc"));
        assert_eq!(doc["pvt_tree"], json!([]));
        assert!(doc.get("pvt_parent_id").is_none());
        assert!(doc.get("pvt_superduper_admin").is_none());

        let parent = AccountId::parse("00000000000000000000000000000001").unwrap();
        let child = Placement {
            parent: Some(parent.clone()),
            tree: vec![json!(parent.as_str())],
            enabled: false,
        };
        let doc = account_doc(&id, "Acme", "acme.sip", child, true);
        assert_eq!(doc["pvt_parent_id"], parent.as_str());
        assert_eq!(doc["pvt_tree"], json!([parent.as_str()]));
        assert_eq!(doc["pvt_enabled"], false);
        assert_eq!(doc["pvt_superduper_admin"], true);
        assert_eq!(doc["pvt_api_key"].as_str().unwrap().len(), 64);
    }
}
