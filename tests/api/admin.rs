//! The provisioning commands, run as the real binary against a store of this test's own (so
//! `init` starts from nothing): `init`, `accounts create`, `users create`, then a login and a
//! group created with the issued token.
use std::process::Command;

use kz_groups::domain::ids::{AccountId, DbName, DocId};
use serde_json::json;

use crate::helpers::process::ServerProcess;
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

#[test]
fn concurrent_inits_agree_on_one_key_and_each_piece_is_created_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, backend) = empty_backend(dir.path());
    let runs: Vec<cli::CliRun> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| cli::run(&backend, &["init"])))
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    });
    for run in &runs {
        assert!(run.ok, "every run succeeds: {}", run.output);
    }
    let kid = runs[0].json["kid"].as_str().unwrap();
    let mut created = Vec::new();
    for run in &runs {
        assert_eq!(run.json["kid"], kid, "{}", run.output);
        created.extend(
            run.json["created"]
                .as_array()
                .unwrap()
                .iter()
                .map(|piece| piece.as_str().unwrap().to_owned()),
        );
    }
    created.sort();
    assert_eq!(
        created,
        [
            format!("system_auth/{kid}"),
            format!("system_auth/{kid}/private_key.pem"),
            "system_config/auth default.secret_for_user_signature".to_owned(),
            "system_config/auth default.system_key".to_owned(),
        ]
    );
}

#[test]
fn each_commands_help_documents_its_options_and_the_variables_it_reads() {
    let help = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_kz-groups"))
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let top = help(&[]);
    assert!(top.contains("embedded store"), "{top}");
    assert!(top.contains("COUCHDB_URL_FILE"), "{top}");
    for (args, wanted) in [
        (
            &["serve"][..],
            &[
                "COUCHDB_URL",
                "COUCHDB_URL_FILE",
                "KZ_GROUPS_COUCHDB_CA",
                "KZ_GROUPS_DATA",
                "KZ_GROUPS_LISTEN",
                "KZ_GROUPS_AMQP_URL",
                "KZ_GROUPS_AMQP_URL_FILE",
                "KZ_GROUPS_LOG_FORMAT",
            ][..],
        ),
        (
            &["init"],
            &[
                "COUCHDB_URL",
                "COUCHDB_URL_FILE",
                "KZ_GROUPS_COUCHDB_CA",
                "KZ_GROUPS_DATA",
            ],
        ),
        (&["refresh-views"], &["COUCHDB_URL", "KZ_GROUPS_DATA"]),
        (
            &["accounts", "create"],
            &[
                "--name",
                "--parent",
                "--realm",
                "--superduper-admin",
                "KZ_GROUPS_AMQP_URL",
                "KZ_GROUPS_AMQP_URL_FILE",
            ],
        ),
        (&["accounts", "list"], &["COUCHDB_URL"]),
        (&["accounts", "show"], &["ACCOUNT_ID", "COUCHDB_URL"]),
        (
            &["users", "create"],
            &[
                "--password-stdin",
                "KZ_GROUPS_USER_PASSWORD",
                "KZ_GROUPS_USER_PASSWORD_FILE",
                "--priv-level",
                "COUCHDB_URL",
                "COUCHDB_URL_FILE",
                "KZ_GROUPS_AMQP_URL_FILE",
            ],
        ),
        (&["users", "list"], &["--account", "COUCHDB_URL"]),
    ] {
        let text = help(args);
        for word in wanted {
            assert!(
                text.contains(word),
                "`{args:?} --help` lacks {word}:\n{text}"
            );
        }
    }
}

#[test]
fn a_bad_variable_fails_once_naming_it_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backend = kz_groups::config::Backend::Embedded { dir: data.clone() };
    for (var, value) in [
        ("KZ_GROUPS_LISTEN", "garbage"),
        ("KZ_GROUPS_PAGE_SIZE", "zero"),
        ("KZ_GROUPS_LOG_FORMAT", "xml"),
        ("KZ_GROUPS_COUCHDB_CA", "/nonexistent/ca.pem"),
    ] {
        let mut cmd = cli::command(&backend, &["serve"]);
        let run = cli::run_command(cmd.env(var, value));
        assert!(!run.ok);
        assert_eq!(
            run.output.lines().count(),
            1,
            "printed once:\n{}",
            run.output
        );
        assert!(run.output.contains(var), "{}", run.output);
        assert!(!data.exists(), "{var}={value} created the data directory");
    }
    for args in [
        &["accounts", "create", "--name", "X", "--parent", "garbage"][..],
        &["accounts", "show", "garbage"],
        &["users", "list", "--account", "garbage"],
    ] {
        let run = cli::run(&backend, args);
        assert!(!run.ok);
        assert_eq!(
            run.output.lines().count(),
            1,
            "printed once:\n{}",
            run.output
        );
        assert!(run.output.contains("garbage"), "{}", run.output);
        assert!(!data.exists(), "{args:?} created the data directory");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_says_a_refused_couchdb_at_start_and_answers_503_until_it_is_back() {
    let backend = kz_groups::config::Backend::CouchDb {
        url: "http://admin:secret@127.0.0.1:1".into(),
    };
    let server = ServerProcess::start(&backend, &[]);
    let log = server.log(std::time::Duration::ZERO);
    assert!(
        log.contains("connection refused") && !log.contains("secret"),
        "{log}"
    );
    let http = reqwest::Client::new();
    let ready = http
        .get(format!("{}/readyz", server.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let listing = http
        .get(format!(
            "{}/v2/accounts/4b31dd1d32ce6d249897c06332375d65/groups",
            server.base()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(listing.status(), 503);
    let body: serde_json::Value = listing.json().await.unwrap();
    assert_eq!(body["error"], "503");
}

#[test]
fn a_refused_couchdb_connection_is_called_so() {
    let backend = kz_groups::config::Backend::CouchDb {
        url: "http://admin:secret@127.0.0.1:1".into(),
    };
    for args in [&["init"][..], &["accounts", "list"]] {
        let run = cli::run(&backend, args);
        assert!(!run.ok);
        assert_eq!(run.output.lines().count(), 1, "{}", run.output);
        assert!(run.output.contains("connection refused"), "{}", run.output);
        assert!(run.output.contains("COUCHDB_URL"), "{}", run.output);
        assert!(
            !run.output.contains("secret"),
            "no password: {}",
            run.output
        );
    }
}

#[tokio::test]
async fn accounts_list_show_users_list_and_passwords_from_stdin_or_the_environment() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let (_server, backend) = empty_backend(dir.path());
    cli::run_ok(&backend, &["init"]);
    assert_eq!(
        cli::run_ok(&backend, &["accounts", "list"]),
        json!({"accounts": []})
    );
    let acme = cli::run_ok(
        &backend,
        &[
            "accounts",
            "create",
            "--name",
            "Acme",
            "--realm",
            "acme.example.com",
        ],
    );
    let beta = cli::run_ok(&backend, &["accounts", "create", "--name", "Beta"]);
    let acme_id = acme["account_id"].as_str().unwrap();

    let listed = cli::run_ok(&backend, &["accounts", "list"]);
    let names: Vec<_> = listed["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].clone())
        .collect();
    assert_eq!(names, [json!("Acme"), json!("Beta")]);
    assert!(
        listed["accounts"][0].get("api_key").is_none(),
        "no keys in the list: {listed}"
    );
    assert_eq!(
        listed["accounts"][1]["parent_id"], acme["account_id"],
        "{listed}"
    );
    let shown = cli::run_ok(
        &backend,
        &["accounts", "show", beta["account_id"].as_str().unwrap()],
    );
    assert_eq!(shown["api_key"], beta["api_key"], "{shown}");
    let run = cli::run(
        &backend,
        &["accounts", "show", "0123456789abcdef0123456789abcdef"],
    );
    assert!(
        !run.ok && run.output.contains("does not exist"),
        "{}",
        run.output
    );

    let mut cmd = cli::command(
        &backend,
        &[
            "users",
            "create",
            "--account",
            acme_id,
            "--username",
            "alice",
            "--password-stdin",
        ],
    );
    let mut child = cmd
        .env("KZ_GROUPS_USER_PASSWORD", "not-this-one")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"From-Stdin1\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cmd = cli::command(
        &backend,
        &["users", "create", "--account", acme_id, "--username", "bob"],
    );
    let run = cli::run_command(cmd.env("KZ_GROUPS_USER_PASSWORD", "From-Env1"));
    assert!(run.ok, "{}", run.output);
    let run = cli::run(
        &backend,
        &[
            "users",
            "create",
            "--account",
            acme_id,
            "--username",
            "carol",
        ],
    );
    assert!(
        !run.ok && run.output.contains("--password-stdin"),
        "{}",
        run.output
    );

    let users = cli::run_ok(&backend, &["users", "list", "--account", acme_id]);
    let usernames: Vec<_> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].clone())
        .collect();
    assert_eq!(usernames, [json!("alice"), json!("bob")], "{users}");
    assert!(
        !users.to_string().contains("pvt_"),
        "no hashes or secrets: {users}"
    );

    let app = TestApp::spawn_configured(config_for(backend.clone()), None).await;
    for (name, password) in [("alice", "From-Stdin1"), ("bob", "From-Env1")] {
        let resp = app
            .login_with_credentials(json!({"credentials": md5_hex(&format!("{name}:{password}")), "account_realm": "acme.example.com"}))
            .await;
        assert_eq!(resp.status, 201, "{name}: {}", resp.text);
    }
    assert_eq!(cli::run_ok(&backend, &["refresh-views"])["account_dbs"], 2);
    drop(app);
}

#[test]
fn the_embedded_store_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let backend = kz_groups::config::Backend::Embedded { dir: data.clone() };
    cli::run_ok(&backend, &["init"]);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    let files: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!files.is_empty());
    for file in files {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    // A store made world-readable (by an older version, or by hand) is made private again.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    cli::run_ok(&backend, &["accounts", "list"]);
    assert_eq!(mode(&data), 0o700);
}
