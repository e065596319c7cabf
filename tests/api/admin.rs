//! The provisioning commands, run as the real binary against a store of this test's own (so
//! `init` starts from nothing): `init`, `accounts create`, `users create`, then a login and a
//! group created with the issued token.
use std::process::Command;

use kz_groups::domain::ids::{AccountId, DbName, DocId};
use serde_json::json;

use crate::helpers::{cli, config_for, empty_backend, md5_hex, TestApp};

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
async fn init_accounts_create_and_users_create_give_working_logins() {
    let dir = tempfile::tempdir().unwrap();
    let (server, backend) = empty_backend(dir.path());

    let first = cli::run_ok(&backend, &["init"]);
    let kid = first["kid"].as_str().unwrap().to_owned();
    assert_eq!(first["created"].as_array().unwrap().len(), 4, "{first}");
    let again = cli::run_ok(&backend, &["init"]);
    assert_eq!(
        again,
        json!({"kid": kid, "created": []}),
        "init must never replace material"
    );

    let master = cli::run_ok(
        &backend,
        &[
            "accounts",
            "create",
            "--name",
            "Master",
            "--superduper-admin",
        ],
    );
    let master_id = master["account_id"].as_str().unwrap().to_owned();
    assert_eq!(master["api_key"].as_str().unwrap().len(), 64);
    let acme = cli::run_ok(
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
    let acme_id = acme["account_id"].as_str().unwrap().to_owned();
    let run = cli::run(&backend, &["accounts", "create", "--name", "acme-corp"]);
    assert!(
        !run.ok,
        "a second account whose name normalises the same is refused: {}",
        run.output
    );
    let create_user = |username: &str, password: &str| {
        let args = ["users", "create", "--account", &acme_id];
        let args = [&args[..], &["--username", username, "--password", password]].concat();
        cli::run(&backend, &args)
    };
    let run = create_user("Alice", "Secret1");
    assert!(run.ok, "{}", run.output);
    let user_id = run.json["id"].as_str().unwrap().to_owned();
    let run = create_user("alice", "x");
    assert!(!run.ok, "usernames are unique per account: {}", run.output);

    let app = TestApp::spawn_configured(config_for(backend.clone()), None).await;
    let acme_doc = app.read_doc(&acme_id, &acme_id).await.unwrap();
    assert_eq!(acme_doc["pvt_tree"], json!([master_id]));
    assert_eq!(acme_doc["pvt_type"], "account");
    assert!(acme_doc["pvt_created"].as_i64().unwrap() > 63_000_000_000);

    // api_auth with the printed key, then the groups API with that token.
    let resp = app
        .login_with_api_key(acme["api_key"].as_str().unwrap())
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    let token = resp.auth_token().to_owned();
    let jwt = kz_groups::auth::jwt::Jwt::parse(&token).unwrap();
    assert_eq!(
        jwt.kid(),
        Some(kid.as_str()),
        "signed with the key init created"
    );
    let path = format!("/v2/accounts/{acme_id}/groups");
    let created = app
        .with_token(&token)
        .request("PUT", &path)
        .json(&json!({"data": {"name": "Sales"}}))
        .send()
        .await;
    assert_eq!(created.status, 201, "{}", created.text);

    // user_auth with the user's credentials.
    let resp = app
        .login_with_credentials(
            json!({"credentials": md5_hex("alice:Secret1"), "account_realm": "ACME.example.com"}),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    assert_eq!(resp.json["data"]["owner_id"], user_id.as_str());
    let token = resp.auth_token().to_owned();
    let list = app.with_token(&token).request("GET", &path).send().await;
    assert_eq!(list.json["data"][0]["name"], "Sales");

    // The master (superduper) may act on Acme.
    let resp = app
        .login_with_api_key(master["api_key"].as_str().unwrap())
        .await;
    let master_token = resp.auth_token().to_owned();
    let resp = app
        .with_token(&master_token)
        .request("GET", &path)
        .send()
        .await;
    assert_eq!(resp.status, 200);
    drop(server);
}

#[tokio::test]
async fn concurrent_first_account_creates_make_exactly_one_master() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, backend) = empty_backend(dir.path());
    let created: Vec<cli::CliRun> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..20)
            .map(|i| {
                let backend = &backend;
                scope.spawn(move || {
                    cli::run(
                        backend,
                        &["accounts", "create", "--name", &format!("Concurrent {i}")],
                    )
                })
            })
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    });
    for run in &created {
        assert!(run.ok, "every run succeeds: {}", run.output);
    }
    let store = kz_groups::startup::store(&config_for(backend)).unwrap();
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
    for run in &created {
        let id = run.json["account_id"].as_str().unwrap();
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
