//! Test support: the real application on a free port against this test's store (the CouchDB in
//! `COUCHDB_URL`, or an embedded store of its own), accounts and users provisioned by the crate's
//! own `admin` functions, tokens signed with the fixture key, and the typed client of `client`.
//! Every test makes its own accounts, so tests share nothing and run in any order.
pub mod bus;
pub mod cli;
mod client;
pub mod couch_server;
pub mod cut_proxy;
pub mod process;
pub mod tls_proxy;

pub use client::{Caller, Group, Response};

use kz_groups::admin::{self, NewAccount, NewUser};
use kz_groups::auth::{identity, jwt, keys};
use kz_groups::config::{Backend, Config};
use kz_groups::domain::clock::{self, ManualClock};
use kz_groups::domain::ids::{random_hex, AccountId, DbName, DocId};
use kz_groups::domain::line::CrossbarLine;
use kz_groups::notices::LogNotifier;
use kz_groups::startup::{self, Application};
use kz_groups::store::views::DesignDoc;
use kz_groups::store::{Store, StoreError};
use serde_json::{json, Map, Value};
use tempfile::TempDir;

/// How long a write made straight into the store (as Kazoo or an operator makes it) may take to
/// be seen through the service's caches: a change feed's delay, or the TTL where none runs
/// (README, "Caches"), with a margin.
pub const COHERENCE: std::time::Duration = std::time::Duration::from_secs(3);

/// Asks until an answer passes `until` (a write made straight into the store has been seen), or
/// [`COHERENCE`] passes; returns the last answer.
pub async fn eventually<F, Fut>(ask: F, until: impl Fn(&Response) -> bool) -> Response
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let deadline = std::time::Instant::now() + COHERENCE;
    loop {
        let resp = ask().await;
        if until(&resp) || std::time::Instant::now() > deadline {
            return resp;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The successful passes of the group history's change-feed follower, in a `/metrics` scrape.
pub fn history_feed_passes(scrape: &str) -> u64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix("kz_groups_history_feed_passes_total{result=\"ok\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until the history's change-feed follower of the service at `base` has read every
/// change made before this call: two passes more have ended (the first may have begun before).
/// Panics after 30 s.
pub async fn history_feed_caught_up(base: &str) {
    let http = reqwest::Client::new();
    let scrape = || async {
        let resp = http.get(format!("{base}/metrics")).send().await;
        match resp {
            Ok(resp) => history_feed_passes(&resp.text().await.unwrap_or_default()),
            Err(_) => 0,
        }
    };
    let wanted = scrape().await + 2;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while scrape().await < wanted {
        assert!(
            std::time::Instant::now() < deadline,
            "the history's feed follower at {base} made no two passes in 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The fixture signing key, stored as Kazoo stores its key (auth-contract §2.1), under `KID`.
pub const KEY_PEM: &str = include_str!("../../fixtures/kazoo_e2049.pem");
/// Another key of the same kind, for tokens signed with the wrong key.
pub const OTHER_KEY_PEM: &str = include_str!("../../fixtures/other_e2049.pem");
pub const KID: &str = "0b5e7e57fa83df8e9b2e08f7682c47aa";

pub fn couchdb_url() -> String {
    std::env::var("COUCHDB_URL").expect(
        "COUCHDB_URL is not set: run the tests with scripts/test, which starts a CouchDB-compatible server",
    )
}

/// Whether the suite's store is a CouchDB cluster of several nodes (`/_membership`), where a
/// view copy may lag a write the cluster acknowledged.
pub async fn on_a_cluster() -> bool {
    if embedded_backend() {
        return false;
    }
    let url = format!("{}/_membership", couchdb_url().trim_end_matches('/'));
    let membership: Value = match reqwest::get(url).await {
        Ok(resp) => resp.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    membership["cluster_nodes"]
        .as_array()
        .is_some_and(|nodes| nodes.len() > 1)
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
    // groups-contract.md was traced from Kazoo master, and these tests check it: a test of
    // 4.3's answers (the default line) says so with `spawn_with`.
    config.crossbar = CrossbarLine::Master;
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

/// A store of a test's own, empty: a private pouchdb-server, or an embedded store in `dir`.
pub fn empty_backend(dir: &std::path::Path) -> (Option<couch_server::TestCouchServer>, Backend) {
    if embedded_backend() {
        let backend = Backend::Embedded {
            dir: dir.join("data"),
        };
        (None, backend)
    } else {
        let server = couch_server::TestCouchServer::start(None, dir)
            .expect("this test needs KZ_TEST_COUCH_SERVER_BIN (set by scripts/test)");
        let backend = Backend::CouchDb { url: server.url() };
        (Some(server), backend)
    }
}

/// The application under test, and a handle on its store for what a test sets up or checks
/// behind the API's back.
pub struct TestApp {
    base: String,
    http: reqwest::Client,
    pub store: Store,
    /// The configuration the application runs with (same store as `store`).
    pub config: Config,
    designs: Vec<DesignDoc>,
    server_secret: String,
    key: rsa::RsaPrivateKey,
    _data: Option<TempDir>,
}

/// An account made by `admin::create_account`, with an admin user made by `admin::create_user`
/// and a token of that user's.
pub struct Account {
    pub id: String,
    pub name: String,
    pub realm: String,
    pub api_key: String,
    pub user_id: String,
    pub token: String,
}

impl Account {
    pub fn groups_path(&self) -> String {
        format!("/v2/accounts/{}/groups", self.id)
    }

    pub fn group_path(&self, id: &str) -> String {
        format!("/v2/accounts/{}/groups/{id}", self.id)
    }

    pub fn user_groups_path(&self, user: &str) -> String {
        format!("/v2/accounts/{}/users/{user}/groups", self.id)
    }
}

impl AsRef<str> for Account {
    fn as_ref(&self) -> &str {
        &self.id
    }
}

impl TestApp {
    /// The application on this test's store.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// The same, with the test configuration changed by `adjust` first.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
        let (backend, data) = test_backend();
        let mut config = config_for(backend);
        adjust(&mut config);
        Self::spawn_configured(config, data).await
    }

    /// The application whose rate limiter refills by `clock` only.
    pub async fn spawn_with_clock(clock: &ManualClock) -> TestApp {
        Self::spawn_with(|config| config.clock = clock.clock()).await
    }

    /// Against a given CouchDB (the recovery test's private server).
    pub async fn spawn_on_couchdb(url: &str) -> TestApp {
        let backend = Backend::CouchDb {
            url: url.to_owned(),
        };
        Self::spawn_configured(config_for(backend), None).await
    }

    /// With `config` as it is; `data` is kept alive as long as the application.
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
            designs: startup::design_docs().expect("design documents"),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            server_secret,
            key: keys::private_key_from_pem(KEY_PEM).unwrap(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Where the application listens (`http://127.0.0.1:PORT`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A new account under `parent`, as `kz-groups accounts create` makes it; without a parent
    /// it hangs under the store's master account (the first account made there), or becomes it.
    /// With an admin user and that user's token.
    pub async fn create_account(&self, parent: Option<&Account>) -> Account {
        self.provision_account(parent, false).await
    }

    /// An account with `pvt_superduper_admin` (`accounts create --superduper-admin`).
    pub async fn create_superduper_account(&self) -> Account {
        self.provision_account(None, true).await
    }

    async fn provision_account(&self, parent: Option<&Account>, superduper: bool) -> Account {
        // Names and realms are unique in a store; the tests share one.
        let tag = random_hex(8);
        let new = NewAccount {
            name: format!("Test {tag}"),
            realm: Some(format!("{tag}.sip.example.com")),
            parent: parent.map(|p| AccountId::parse(&p.id).unwrap()),
            superduper_admin: superduper,
        };
        let doc = admin::create_account(&self.store, &self.designs, &LogNotifier, &new)
            .await
            .expect("admin::create_account");
        let field = |name: &str| doc[name].as_str().unwrap().to_owned();
        let id = field("_id");
        let user_id = self.create_user(&id, "admin", &random_hex(8)).await;
        let token = self.user_token(&id, &user_id).await;
        Account {
            name: field("name"),
            realm: field("realm"),
            api_key: field("pvt_api_key"),
            id,
            user_id,
            token,
        }
    }

    /// A user with admin rights who can log in with `username` and `password`, as `kz-groups
    /// users create` makes it; returns its id.
    pub async fn create_user(
        &self,
        account: impl AsRef<str>,
        username: &str,
        password: &str,
    ) -> String {
        let new = NewUser {
            account: Some(AccountId::parse(account.as_ref()).unwrap()),
            username: username.into(),
            password: password.into(),
            priv_level: "admin".into(),
            ..Default::default()
        };
        let doc = admin::create_user(&self.store, &self.designs, &LogNotifier, &new)
            .await
            .expect("admin::create_user");
        doc["_id"].as_str().unwrap().to_owned()
    }

    /// Sets `fields` in both copies of an account's document (its own database's and the
    /// `accounts` one), as an edit through Kazoo would: for what `admin` has no option for (a
    /// trial's end, a disabled account). `null` removes a field.
    pub async fn amend_account(&self, account: &Account, fields: Value) {
        self.amend(&account_db(&account.id), &account.id, fields.clone())
            .await;
        let accounts = DbName::system(DbName::ACCOUNTS);
        self.amend(&accounts, &account.id, fields).await;
    }

    /// Sets `fields` in a stored document of an account's database (`null` removes one).
    pub async fn amend_doc(&self, account: impl AsRef<str>, id: &str, fields: Value) {
        self.amend(&account_db(account.as_ref()), id, fields).await;
    }

    async fn amend(&self, db: &DbName, id: &str, fields: Value) {
        let id = DocId::parse(id).unwrap();
        let mut doc = self.store.get_doc(db, &id).await.unwrap().expect("a doc");
        merge_into(&mut doc, fields);
        self.store.put_doc(db, &id, &doc).await.expect("amended");
    }

    /// Writes a document into an account database as it is; returns its new revision.
    pub async fn write_doc(&self, account: impl AsRef<str>, id: &str, doc: Value) -> String {
        let db = account_db(account.as_ref());
        self.store
            .put_doc(&db, &DocId::parse(id).unwrap(), &doc)
            .await
            .expect("raw put")
    }

    /// A document of an account database as stored.
    pub async fn read_doc(&self, account: impl AsRef<str>, id: &str) -> Option<Value> {
        let db = account_db(account.as_ref());
        self.store
            .get_doc(&db, &DocId::parse(id).unwrap())
            .await
            .expect("raw get")
    }

    /// `_design/{name}` of an account database, as stored.
    pub async fn design_doc(&self, account: &Account, name: &str) -> Option<Value> {
        let db = account_db(&account.id);
        self.store.get_design(&db, name).await.expect("design get")
    }

    /// Puts `doc` as `_design/{name}`, over whatever stands there; returns the new revision.
    pub async fn put_design_doc(&self, account: &Account, name: &str, mut doc: Value) -> String {
        if let Some(stored) = self.design_doc(account, name).await {
            doc["_rev"] = stored["_rev"].clone();
        }
        let db = account_db(&account.id);
        self.store
            .put_design(&db, name, &doc)
            .await
            .expect("design put")
    }

    /// Deletes `_design/{name}` (`admin` installs ours with the account), leaving the account
    /// as Kazoo makes one: without any design document of kz-groups'. Returns the revision of
    /// the deletion.
    pub async fn remove_design_doc(&self, account: &Account, name: &str) -> String {
        let tombstone = json!({"_id": format!("_design/{name}"), "_deleted": true});
        self.put_design_doc(account, name, tombstone).await
    }

    /// A `user_auth`-style token: the claims of auth-contract §1.3 with a correct identity_sig.
    pub async fn user_token(&self, account: impl AsRef<str>, user: &str) -> String {
        let mut claims = self.claims(account, Some(user)).await;
        claims.insert("exp".into(), json!(clock::unix_now() + 3600));
        self.sign(&claims)
    }

    /// Claims with `identity_sig` for the given identity (the user, else the account), without
    /// `exp`. The identity's document must hold a `pvt_signature_secret`.
    pub async fn claims(&self, account: impl AsRef<str>, user: Option<&str>) -> Map<String, Value> {
        let account = account.as_ref();
        let identity_id = user.unwrap_or(account);
        let doc = self
            .read_doc(account, identity_id)
            .await
            .expect("identity doc");
        let secret = doc["pvt_signature_secret"]
            .as_str()
            .expect("the identity has a pvt_signature_secret");
        let sig = identity::identity_sig(secret, &self.server_secret, identity_id);
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

    /// Signed with the fixture key under `KID`, RS256.
    pub fn sign(&self, claims: &Map<String, Value>) -> String {
        self.sign_with(claims, jwt::Alg::RS256)
    }

    pub fn sign_with(&self, claims: &Map<String, Value>, alg: jwt::Alg) -> String {
        jwt::sign(claims, KID, alg, &self.key)
    }

    /// The fixture key.
    pub fn key(&self) -> &rsa::RsaPrivateKey {
        &self.key
    }
}

/// The generation of a revision: 3 for `3-…`.
pub fn generation(rev: &str) -> u64 {
    rev.split('-')
        .next()
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| panic!("a revision: {rev:?}"))
}

pub fn md5_hex(text: &str) -> String {
    use md5::Digest as _;
    hex(&md5::Md5::digest(text.as_bytes()))
}

pub fn sha1_hex(text: &str) -> String {
    use sha1::Digest as _;
    hex(&sha1::Sha1::digest(text.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The database of the account `id`.
pub fn account_db(id: &str) -> DbName {
    AccountId::parse(id).expect("an account id").db()
}

/// `fields` as a JSON merge patch on the top level: a `null` removes the field.
fn merge_into(target: &mut Value, fields: Value) {
    if let (Value::Object(target), Value::Object(fields)) = (target, fields) {
        for (name, value) in fields {
            match value {
                Value::Null => target.remove(&name),
                value => target.insert(name, value),
            };
        }
    }
}

/// The signing material `kz-groups init` makes, with the fixture key as the signing key, so
/// tests can sign tokens themselves; returns the server secret. Material already there (a real
/// Kazoo's) is kept: the fixture key is then one more key in `system_auth`.
async fn provision_key_material(store: &Store) -> String {
    install_fixture_signing_key(store).await;
    admin::init(store).await.expect("admin::init");
    let auth = store
        .get_doc(
            &DbName::system(DbName::SYSTEM_CONFIG),
            &DocId::parse("auth").unwrap(),
        )
        .await
        .expect("read system_config/auth")
        .expect("admin::init made system_config/auth");
    auth.pointer("/default/secret_for_user_signature")
        .and_then(Value::as_str)
        .expect("admin::init set secret_for_user_signature")
        .to_owned()
}

/// `system_auth/<KID>` with the fixture key as its `private_key.pem`, and `KID` as
/// `system_config/auth` `default.system_key` unless one is set: what `admin::init` would do with
/// a key of its own. Tests run in parallel processes on one store, so every write tolerates a
/// concurrent one and is checked again; nothing is replaced.
async fn install_fixture_signing_key(store: &Store) {
    let auth_db = DbName::system(DbName::SYSTEM_AUTH);
    let config_db = DbName::system(DbName::SYSTEM_CONFIG);
    for db in [&auth_db, &config_db] {
        store.create_db(db).await.expect("create a system db");
    }
    let kid = DocId::parse(KID).unwrap();
    let auth = DocId::parse("auth").unwrap();
    for _ in 0..20 {
        let key_doc = store.get_doc(&auth_db, &kid).await.expect("read key doc");
        let config = store
            .get_doc(&config_db, &auth)
            .await
            .expect("read system_config/auth");
        match (key_doc, config) {
            (None, _) => {
                let doc = json!({"_id": KID, "pvt_type": "system_key",
                                 "pvt_account_id": "system_auth", "pvt_account_db": "system_auth"});
                ok_or_conflict(store.put_doc(&auth_db, &kid, &doc).await);
            }
            (Some(doc), _) if doc.pointer("/_attachments/private_key.pem").is_none() => {
                let put = store
                    .put_attachment(
                        &auth_db,
                        &kid,
                        "private_key.pem",
                        doc["_rev"].as_str().unwrap(),
                        "application/x-pem-file",
                        KEY_PEM.as_bytes().to_vec(),
                    )
                    .await;
                ok_or_conflict(put);
            }
            (_, Some(config)) if config.pointer("/default/system_key").is_some() => return,
            (_, config) => {
                let mut config = config.unwrap_or_else(|| json!({"_id": "auth"}));
                let default = config
                    .as_object_mut()
                    .unwrap()
                    .entry("default")
                    .or_insert_with(|| json!({}));
                default["system_key"] = json!(KID);
                ok_or_conflict(store.put_doc(&config_db, &auth, &config).await);
            }
        }
    }
    panic!("the fixture key could not be installed in 20 attempts");
}

fn ok_or_conflict(result: Result<String, StoreError>) {
    match result {
        Ok(_) | Err(StoreError::Conflict) => {}
        Err(e) => panic!("provisioning failed: {e}"),
    }
}
