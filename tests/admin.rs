//! The provisioning commands, run as the real binary against a CouchDB-compatible server of this
//! test's own (so `init` starts from nothing): `init`, `accounts create`, `users create`, then a
//! login and a group created with the issued token.
mod common;

use std::process::Command;

use common::couch_server::TestCouchServer;
use common::TestApp;
use kz_groups::config::Backend;
use kz_groups::domain::ids::{AccountId, DbName, DocId};
use serde_json::{json, Value};

/// Runs the binary against `backend`, as an operator would.
fn kz_groups(backend: &Backend, args: &[&str]) -> (bool, Value, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kz-groups"));
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .env_remove("COUCHDB_URL");
    match backend {
        Backend::CouchDb { url } => cmd.env("COUCHDB_URL", url),
        Backend::Embedded { dir } => cmd.env("KZ_GROUPS_DATA", dir),
    };
    let out = cmd.output().expect("kz-groups runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (out.status.success(), json, format!("{stdout}{stderr}"))
}

fn md5_hex(text: &str) -> String {
    use md5::Digest as _;
    md5::Md5::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn help_lists_the_subcommands() {
    let out = Command::new(env!("CARGO_BIN_EXE_kz-groups"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for sub in ["serve", "refresh-views", "init", "accounts", "users"] {
        assert!(help.contains(sub), "{sub} missing from:\n{help}");
    }
}

#[tokio::test]
async fn init_accounts_and_users_give_working_logins() {
    // A store of this test's own, so that `init` starts from nothing.
    let dir = tempfile::tempdir().unwrap();
    let (server, backend) = if common::embedded_backend() {
        let backend = Backend::Embedded {
            dir: dir.path().join("data"),
        };
        (None, backend)
    } else {
        let server = TestCouchServer::start(None, dir.path())
            .expect("this test needs KZ_TEST_COUCH_SERVER_BIN (set by scripts/test)");
        let backend = Backend::CouchDb { url: server.url() };
        (Some(server), backend)
    };

    let (ok, first, out) = kz_groups(&backend, &["init"]);
    assert!(ok, "{out}");
    let kid = first["kid"].as_str().unwrap().to_owned();
    assert_eq!(first["created"].as_array().unwrap().len(), 4, "{first}");
    let (ok, again, out) = kz_groups(&backend, &["init"]);
    assert!(ok, "{out}");
    assert_eq!(
        again,
        json!({"kid": kid, "created": []}),
        "init must never replace material"
    );

    let (ok, master, out) = kz_groups(
        &backend,
        &[
            "accounts",
            "create",
            "--name",
            "Master",
            "--superduper-admin",
        ],
    );
    assert!(ok, "{out}");
    let master_id = master["account_id"].as_str().unwrap().to_owned();
    assert_eq!(master["api_key"].as_str().unwrap().len(), 64);
    let (ok, acme, out) = kz_groups(
        &backend,
        &[
            "accounts",
            "create",
            "--name",
            "Acme Corp",
            "--realm",
            "acme.example.com",
        ],
    );
    assert!(ok, "{out}");
    let acme_id = acme["account_id"].as_str().unwrap().to_owned();
    let (ok, _, out) = kz_groups(&backend, &["accounts", "create", "--name", "acme-corp"]);
    assert!(
        !ok,
        "a second account whose name normalises the same is refused: {out}"
    );
    let (ok, user, out) = kz_groups(
        &backend,
        &[
            "users",
            "create",
            "--account",
            &acme_id,
            "--username",
            "Alice",
            "--password",
            "Secret1",
        ],
    );
    assert!(ok, "{out}");
    let user_id = user["id"].as_str().unwrap().to_owned();
    let (ok, _, out) = kz_groups(
        &backend,
        &[
            "users",
            "create",
            "--account",
            &acme_id,
            "--username",
            "alice",
            "--password",
            "x",
        ],
    );
    assert!(!ok, "usernames are unique per account: {out}");

    let app = TestApp::spawn_configured(common::config_for(backend.clone()), None).await;
    let acme_doc = app.raw(&acme_id, &acme_id).await.unwrap();
    assert_eq!(acme_doc["pvt_tree"], json!([master_id]));
    assert_eq!(acme_doc["pvt_type"], "account");
    assert!(acme_doc["pvt_created"].as_i64().unwrap() > 63_000_000_000);

    // api_auth with the printed key, then the groups API with that token.
    let resp = app
        .call(
            "PUT",
            "/v2/api_auth",
            None,
            Some(json!({"data": {"api_key": acme["api_key"]}})),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    let token = resp.json["auth_token"].as_str().unwrap().to_owned();
    let jwt = kz_groups::auth::jwt::Jwt::parse(&token).unwrap();
    assert_eq!(
        jwt.kid(),
        Some(kid.as_str()),
        "signed with the key init created"
    );
    let path = format!("/v2/accounts/{acme_id}/groups");
    let created = app
        .call(
            "PUT",
            &path,
            Some(&token),
            Some(json!({"data": {"name": "Sales"}})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);

    // user_auth with the user's credentials.
    let resp = app
        .call(
            "PUT",
            "/v2/user_auth",
            None,
            Some(json!({"data": {"credentials": md5_hex("alice:Secret1"), "account_realm": "ACME.example.com"}})),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    assert_eq!(resp.json["data"]["owner_id"], user_id.as_str());
    let token = resp.json["auth_token"].as_str().unwrap().to_owned();
    let list = app.call("GET", &path, Some(&token), None).await;
    assert_eq!(list.json["data"][0]["name"], "Sales");

    // The master (superduper) may act on Acme.
    let resp = app
        .call(
            "PUT",
            "/v2/api_auth",
            None,
            Some(json!({"data": {"api_key": master["api_key"]}})),
        )
        .await;
    let master_token = resp.json["auth_token"].as_str().unwrap().to_owned();
    assert_eq!(
        app.call("GET", &path, Some(&master_token), None)
            .await
            .status,
        200
    );
    drop(server);
}

#[tokio::test]
async fn concurrent_first_account_creates_make_exactly_one_master() {
    // A store of this test's own, with no account yet.
    let dir = tempfile::tempdir().unwrap();
    let (_server, backend) = if common::embedded_backend() {
        let backend = Backend::Embedded {
            dir: dir.path().join("data"),
        };
        (None, backend)
    } else {
        let server = TestCouchServer::start(None, dir.path())
            .expect("this test needs KZ_TEST_COUCH_SERVER_BIN (set by scripts/test)");
        let backend = Backend::CouchDb { url: server.url() };
        (Some(server), backend)
    };
    let created: Vec<(bool, Value, String)> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..20)
            .map(|i| {
                let backend = &backend;
                scope.spawn(move || {
                    kz_groups(
                        backend,
                        &["accounts", "create", "--name", &format!("Concurrent {i}")],
                    )
                })
            })
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    });
    for (ok, _, out) in &created {
        assert!(ok, "every run succeeds: {out}");
    }
    let store = kz_groups::startup::store(&common::config_for(backend)).unwrap();
    let config = store
        .get_doc(
            &DbName::system(DbName::SYSTEM_CONFIG),
            &DocId::parse("accounts").unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    let master = config["default"]["master_account_id"].as_str().unwrap();
    let mut roots = Vec::new();
    for (_, account, _) in &created {
        let id = account["account_id"].as_str().unwrap();
        let doc = store
            .get_doc(
                &AccountId::parse(id).unwrap().db(),
                &DocId::parse(id).unwrap(),
            )
            .await
            .unwrap()
            .unwrap();
        match doc["pvt_tree"].as_array().unwrap().as_slice() {
            [] => roots.push(id.to_owned()),
            [parent] => assert_eq!(parent, master, "{id} hangs under the master"),
            other => panic!("{id} has the tree {other:?}"),
        }
    }
    assert_eq!(
        roots,
        [master],
        "exactly one account, the master, has no parent"
    );
}
