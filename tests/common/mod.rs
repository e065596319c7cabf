//! Test support: the real application on a free port against the CouchDB in `COUCHDB_URL`, and
//! accounts, users and key material provisioned the way Kazoo stores them. Every test makes its
//! own accounts, so tests share nothing and run in any order.
#![allow(dead_code)]

pub mod bus;
pub mod couch_server;
pub mod process;

use kz_groups::auth::{identity, jwt, keys};
use kz_groups::config::{Backend, Config};
use kz_groups::domain::clock;
use kz_groups::domain::ids::{random_hex, AccountId, DbName, DocId};
use kz_groups::startup::{self, Application};
use kz_groups::store::{Store, StoreError};
use serde_json::{json, Map, Value};
use tempfile::TempDir;

/// The fixture key, stored as Kazoo stores its signing key (auth-contract §2.1).
pub const KEY_PEM: &str = include_str!("../fixtures/kazoo_e2049.pem");
pub const OTHER_KEY_PEM: &str = include_str!("../fixtures/other_e2049.pem");
pub const KID: &str = "0b5e7e57fa83df8e9b2e08f7682c47aa";
const TEST_SERVER_SECRET: &str = "12079f354e3c8b2e3509213fe30ad834";

pub fn couchdb_url() -> String {
    std::env::var("COUCHDB_URL").expect(
        "COUCHDB_URL is not set: run the tests with scripts/test, which starts a CouchDB-compatible server",
    )
}

/// `KZ_TEST_BACKEND=embedded` runs the suite against the embedded store; otherwise against the
/// CouchDB in `COUCHDB_URL`. scripts/test runs it both ways.
pub fn embedded_backend() -> bool {
    std::env::var("KZ_TEST_BACKEND").as_deref() == Ok("embedded")
}

/// The configuration the tests run the application with, for a given backend.
pub fn config_for(backend: Backend) -> Config {
    let mut config = Config::from_lookup(|name| match name {
        "KZ_GROUPS_LISTEN" => Some("127.0.0.1:0".into()),
        "KZ_GROUPS_COUCH_TIMEOUT_MS" => Some("3000".into()),
        _ => None,
    })
    .expect("test config");
    config.backend = backend;
    config.node_name = "kz-groups@test".into();
    config
}

/// A backend for one test: the shared CouchDB, or a fresh embedded data directory (kept alive
/// by the returned guard).
pub fn test_backend() -> (Backend, Option<TempDir>) {
    if embedded_backend() {
        let dir = tempfile::tempdir().expect("temp dir");
        let backend = Backend::Embedded {
            dir: dir.path().to_path_buf(),
        };
        (backend, Some(dir))
    } else {
        (Backend::CouchDb { url: couchdb_url() }, None)
    }
}

pub struct TestApp {
    pub base: String,
    pub store: Store,
    pub http: reqwest::Client,
    pub server_secret: String,
    /// The configuration the application runs with (same store as `store`).
    pub config: Config,
    key: rsa::RsaPrivateKey,
    _data: Option<TempDir>,
}

pub struct Account {
    pub id: String,
    pub tree: Vec<String>,
    /// An admin user's token.
    pub token: String,
    pub user_id: String,
}

pub struct Response {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        let (backend, data) = test_backend();
        Self::spawn_configured(config_for(backend), data).await
    }

    /// Against a given CouchDB (the recovery test's private server).
    pub async fn spawn_with(couchdb_url: &str) -> TestApp {
        let backend = Backend::CouchDb {
            url: couchdb_url.to_owned(),
        };
        Self::spawn_configured(config_for(backend), None).await
    }

    pub async fn spawn_configured(config: Config, data: Option<TempDir>) -> TestApp {
        let _ = env_logger::builder().is_test(true).try_init();
        let app = Application::build(config.clone()).expect("application builds");
        let base = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped());
        let store = startup::store(&config).expect("test store");
        let server_secret = provision_key_material(&store).await;
        TestApp {
            base,
            store,
            config,
            _data: data,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            server_secret,
            key: keys::private_key_from_pem(KEY_PEM).unwrap(),
        }
    }

    /// A new account under `parent` (its `pvt_tree` is the parent's tree plus the parent), with
    /// an admin user and that user's token.
    pub async fn create_account(&self, parent: Option<&Account>) -> Account {
        self.create_account_with(parent, json!({})).await
    }

    pub async fn create_account_with(&self, parent: Option<&Account>, extra: Value) -> Account {
        let id = AccountId::parse(&random_hex(16)).unwrap();
        let tree: Vec<String> = match parent {
            Some(p) => p.tree.iter().cloned().chain([p.id.clone()]).collect(),
            None => vec![],
        };
        let db = id.db();
        self.store.create_db(&db).await.expect("create account db");
        let now = clock::gregorian_now();
        let mut doc = json!({
            "_id": id.as_str(),
            "name": format!("Test {}", &id.as_str()[..6]),
            "realm": format!("{}.sip.example.com", &id.as_str()[..6]),
            "pvt_type": "account",
            "pvt_vsn": "1",
            "pvt_account_id": id.as_str(),
            "pvt_account_db": db.encoded(),
            "pvt_tree": tree,
            "pvt_api_key": random_hex(32),
            "pvt_enabled": true,
            "pvt_signature_secret": random_hex(16),
            "pvt_created": now,
            "pvt_modified": now,
        });
        merge_into(&mut doc, extra);
        self.store
            .put_doc(&db, &DocId::from(id.clone()), &doc)
            .await
            .expect("save account doc");
        // Kazoo keeps a second copy in the aggregate `accounts` database.
        let accounts = DbName::system(DbName::ACCOUNTS);
        self.store
            .create_db(&accounts)
            .await
            .expect("create accounts db");
        self.store
            .put_doc(&accounts, &DocId::from(id.clone()), &doc)
            .await
            .expect("save account doc copy");
        let user_id = self.create_user(id.as_str(), "admin").await;
        let token = self.user_token(id.as_str(), &user_id).await;
        Account {
            id: id.to_string(),
            tree,
            token,
            user_id,
        }
    }

    /// A user document as Kazoo keeps it; returns its id.
    pub async fn create_user(&self, account: &str, priv_level: &str) -> String {
        let id = random_hex(16);
        let doc = json!({
            "_id": id,
            "username": format!("user{}", &id[..6]),
            "first_name": "Test",
            "last_name": "User",
            "enabled": true,
            "priv_level": priv_level,
            "pvt_type": "user",
            "pvt_signature_secret": random_hex(16),
            "pvt_account_id": account,
        });
        self.put(account, &id, doc).await;
        id
    }

    /// A user who can log in with `user_auth`: `pvt_md5_auth`/`pvt_sha1_auth` of
    /// `"<username>:<password>"`, as Kazoo stores them (auth-contract §6.3).
    pub async fn create_login_user(
        &self,
        account: &str,
        username: &str,
        password: &str,
        enabled: bool,
    ) -> String {
        use md5::Digest as _;
        let creds = format!("{}:{password}", username.to_lowercase());
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let id = random_hex(16);
        let doc = json!({
            "_id": id,
            "username": username.to_lowercase(),
            "enabled": enabled,
            "priv_level": "admin",
            "pvt_type": "user",
            "pvt_md5_auth": hex(&md5::Md5::digest(creds.as_bytes())),
            "pvt_sha1_auth": hex(&sha1::Sha1::digest(creds.as_bytes())),
            "pvt_account_id": account,
        });
        self.put(account, &id, doc).await;
        id
    }

    /// Writes a raw document into an account database.
    pub async fn put(&self, account: &str, id: &str, doc: Value) -> String {
        let db = AccountId::parse(account).unwrap().db();
        self.store
            .put_doc(&db, &DocId::parse(id).unwrap(), &doc)
            .await
            .expect("raw put")
    }

    /// Reads a raw document from an account database.
    pub async fn raw(&self, account: &str, id: &str) -> Option<Value> {
        let db = AccountId::parse(account).unwrap().db();
        self.store
            .get_doc(&db, &DocId::parse(id).unwrap())
            .await
            .expect("raw get")
    }

    /// A `user_auth`-style token: the claims of auth-contract §1.3 with a correct identity_sig.
    pub async fn user_token(&self, account: &str, user: &str) -> String {
        let mut claims = self.claims(account, Some(user)).await;
        claims.insert("exp".into(), json!(clock::unix_now() + 3600));
        self.sign(&claims)
    }

    /// Claims with `identity_sig` for the given identity, without `exp`.
    pub async fn claims(&self, account: &str, user: Option<&str>) -> Map<String, Value> {
        let identity_id = user.unwrap_or(account);
        let doc = self.raw(account, identity_id).await.expect("identity doc");
        let secret = doc["pvt_signature_secret"].as_str().unwrap().to_owned();
        let sig = identity::identity_sig(&secret, &self.server_secret, identity_id);
        let mut claims = Map::new();
        claims.insert("iss".into(), json!("kazoo"));
        claims.insert("identity_sig".into(), json!(sig));
        claims.insert("account_id".into(), json!(account));
        if let Some(user) = user {
            claims.insert("owner_id".into(), json!(user));
            claims.insert("method".into(), json!("cb_user_auth"));
        } else {
            claims.insert("method".into(), json!("cb_api_auth"));
        }
        claims
    }

    pub fn sign(&self, claims: &Map<String, Value>) -> String {
        jwt::sign(claims, KID, jwt::Alg::RS256, &self.key)
    }

    pub fn sign_with(&self, claims: &Map<String, Value>, alg: jwt::Alg) -> String {
        jwt::sign(claims, KID, alg, &self.key)
    }

    pub fn key(&self) -> &rsa::RsaPrivateKey {
        &self.key
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request with `Content-Type: application/json` and the token (if any).
    pub async fn call(
        &self,
        method: &str,
        path: impl AsRef<str>,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut req = self
            .http
            .request(method.parse().unwrap(), self.url(path.as_ref()))
            .header("content-type", "application/json");
        if let Some(token) = token {
            req = req.header("x-auth-token", token);
        }
        if let Some(body) = body {
            req = req.body(body.to_string());
        }
        send(req).await
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Response {
        send(req).await
    }

    pub fn groups_path(account: &Account) -> String {
        format!("/v2/accounts/{}/groups", account.id)
    }

    /// Creates a group through the API and returns its response data.
    pub async fn create_group(&self, account: &Account, data: Value) -> Value {
        let resp = self
            .call(
                "PUT",
                &Self::groups_path(account),
                Some(&account.token),
                Some(json!({ "data": data })),
            )
            .await;
        assert_eq!(resp.status, 201, "create failed: {}", resp.text);
        resp.json["data"].clone()
    }
}

pub async fn send(req: reqwest::RequestBuilder) -> Response {
    let resp = req.send().await.expect("request reaches kz-groups");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Response {
        status,
        headers,
        text,
        json,
    }
}

pub fn md5_hex(text: &str) -> String {
    use md5::Digest as _;
    md5::Md5::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn merge_into(target: &mut Value, extra: Value) {
    if let (Value::Object(t), Value::Object(e)) = (target, extra) {
        for (k, v) in e {
            t.insert(k, v);
        }
    }
}

/// Makes sure `system_auth/<KID>` carries the fixture key and `system_config/auth` a server
/// secret, as Kazoo keeps them. Tests run in parallel processes, so every step tolerates a
/// concurrent writer; existing material (a real Kazoo's secret) is read, never replaced.
async fn provision_key_material(store: &Store) -> String {
    let auth_db = DbName::system(DbName::SYSTEM_AUTH);
    let config_db = DbName::system(DbName::SYSTEM_CONFIG);
    store.create_db(&auth_db).await.expect("create system_auth");
    store
        .create_db(&config_db)
        .await
        .expect("create system_config");
    let kid = DocId::parse(KID).unwrap();
    for _ in 0..20 {
        match store.get_doc(&auth_db, &kid).await.expect("read key doc") {
            Some(doc) if doc.pointer("/_attachments/private_key.pem").is_some() => break,
            Some(doc) => {
                let rev = doc["_rev"].as_str().unwrap().to_owned();
                let put = store
                    .put_attachment(
                        &auth_db,
                        &kid,
                        "private_key.pem",
                        &rev,
                        "application/x-pem-file",
                        KEY_PEM.as_bytes().to_vec(),
                    )
                    .await;
                ok_or_conflict(put);
            }
            None => {
                let doc = json!({"_id": KID, "pvt_type": "system_key", "pvt_account_id": "system_auth", "pvt_account_db": "system_auth"});
                ok_or_conflict(store.put_doc(&auth_db, &kid, &doc).await);
            }
        }
    }
    let auth = DocId::parse("auth").unwrap();
    loop {
        let doc = store
            .get_doc(&config_db, &auth)
            .await
            .expect("read system_config/auth");
        let secret = doc
            .as_ref()
            .and_then(|d| d.pointer("/default/secret_for_user_signature"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let has_kid = doc
            .as_ref()
            .and_then(|d| d.pointer("/default/system_key"))
            .is_some();
        if let (Some(secret), true) = (&secret, has_kid) {
            return secret.clone();
        }
        // Existing material (a real Kazoo's) is kept; only what is missing is added.
        let mut doc = doc.unwrap_or_else(|| json!({"_id": "auth"}));
        let default = doc
            .as_object_mut()
            .unwrap()
            .entry("default")
            .or_insert_with(|| json!({}));
        if secret.is_none() {
            default["secret_for_user_signature"] = json!(TEST_SERVER_SECRET);
        }
        if !has_kid {
            default["system_key"] = json!(KID);
        }
        ok_or_conflict(store.put_doc(&config_db, &auth, &doc).await);
    }
}

fn ok_or_conflict(result: Result<String, StoreError>) {
    match result {
        Ok(_) | Err(StoreError::Conflict) => {}
        Err(e) => panic!("provisioning failed: {e}"),
    }
}
