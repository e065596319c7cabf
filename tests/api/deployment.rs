//! The binary as the operator pack deploys it (deploy/, README "Operating kz-groups"): secrets
//! read from the files their `_FILE` variables name (Docker secrets, systemd credentials), and
//! under systemd's `Type=notify`, READY=1 once listening, STOPPING=1 and a clean exit on SIGTERM.
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use kz_groups::config::Backend;
use serde_json::{json, Value};

use crate::helpers::bus::{amqp_url, connections_named};
use crate::helpers::process::ServerProcess;
use crate::helpers::{cli, config_for, couchdb_url, empty_backend, md5_hex, test_backend, TestApp};

/// A file of the test's own holding `content`, as a Docker secret is mounted.
fn secret_file(dir: &std::path::Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.to_str().unwrap().to_owned()
}

fn readyz(base: &str) -> Value {
    let body = reqwest::blocking::get(format!("{base}/readyz"))
        .unwrap()
        .text()
        .unwrap();
    serde_json::from_str(&body).unwrap()
}

#[test]
fn the_server_reads_its_store_and_broker_urls_from_the_files_their_file_forms_name() {
    let dir = tempfile::tempdir().unwrap();
    // Both passes: the file form is for CouchDB, whose URL holds credentials.
    let couch = secret_file(dir.path(), "couchdb_url", &format!("{}\n", couchdb_url()));
    let amqp = secret_file(dir.path(), "amqp_url", &format!("{}\n", amqp_url()));
    let node = format!("kz-groups-file-{}@test", std::process::id());
    // A data directory is named too: with COUCHDB_URL_FILE it must stay unused.
    let data = dir.path().join("data");
    let server = ServerProcess::start(
        &Backend::Embedded { dir: data.clone() },
        &[
            ("COUCHDB_URL_FILE", &couch),
            ("KZ_GROUPS_AMQP_URL_FILE", &amqp),
            ("KZ_GROUPS_NODE", &node),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ready = readyz(&server.base());
    while ready["amqp"]["connected"] != json!(true) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        ready = readyz(&server.base());
    }
    assert_eq!(ready["store"], "couchdb", "{ready}");
    assert_eq!(ready["couchdb"], "up", "{ready}");
    assert_eq!(ready["amqp"]["enabled"], json!(true), "{ready}");
    assert_eq!(ready["amqp"]["connected"], json!(true), "{ready}");
    assert_eq!(
        connections_named(&format!("kz-groups {node}")).len(),
        1,
        "the broker sees the connection made with the URL from the file"
    );
    assert!(!data.exists(), "the embedded store was not opened");
}

#[test]
fn a_secret_in_both_forms_or_in_a_missing_file_stops_the_start_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let couch = secret_file(
        dir.path(),
        "couchdb_url",
        "http://admin:secret@127.0.0.1:5984\n",
    );
    let missing = dir.path().join("absent").to_str().unwrap().to_owned();
    let empty = secret_file(dir.path(), "empty", "\n");
    let data = dir.path().join("data");
    for (env, wanted) in [
        (
            vec![
                ("COUCHDB_URL", "http://admin:secret@127.0.0.1:5984"),
                ("COUCHDB_URL_FILE", couch.as_str()),
            ],
            "set COUCHDB_URL or COUCHDB_URL_FILE, not both".to_owned(),
        ),
        (
            vec![
                ("KZ_GROUPS_AMQP_URL", "amqp://h/%2f"),
                ("KZ_GROUPS_AMQP_URL_FILE", couch.as_str()),
            ],
            "set KZ_GROUPS_AMQP_URL or KZ_GROUPS_AMQP_URL_FILE, not both".to_owned(),
        ),
        (
            vec![("COUCHDB_URL_FILE", missing.as_str())],
            format!("COUCHDB_URL_FILE={missing:?}: cannot read the file"),
        ),
        (
            vec![("KZ_GROUPS_AMQP_URL_FILE", missing.as_str())],
            format!("KZ_GROUPS_AMQP_URL_FILE={missing:?}: cannot read the file"),
        ),
        (
            vec![("COUCHDB_URL_FILE", empty.as_str())],
            format!("COUCHDB_URL_FILE={empty:?}: the file is empty"),
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_kz-groups"))
            .arg("serve")
            .env_remove("COUCHDB_URL")
            .env("KZ_GROUPS_DATA", &data)
            .env("KZ_GROUPS_LISTEN", "127.0.0.1:0")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{env:?} started");
        assert!(stderr.contains(&wanted), "{env:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "said once: {stderr}");
        assert!(
            !data.exists(),
            "{env:?}: nothing is created before the check"
        );
    }
}

#[tokio::test]
async fn users_create_reads_the_password_from_the_file_its_file_form_names() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, backend) = empty_backend(dir.path());
    cli::run_ok(&backend, &["init"]);
    let account = cli::run_ok(&backend, &["accounts", "create", "--name", "Filed"]);
    let account_id = account["account_id"].as_str().unwrap();
    let password = secret_file(dir.path(), "password", "Secret1\n");
    let create = |username: &str, env: &[(&str, &str)]| {
        let args = [
            "users",
            "create",
            "--account",
            account_id,
            "--username",
            username,
        ];
        let mut cmd = cli::command(&backend, &args);
        cmd.env_remove("KZ_GROUPS_USER_PASSWORD")
            .env_remove("KZ_GROUPS_USER_PASSWORD_FILE")
            .envs(env.iter().copied());
        cli::run_command(&mut cmd)
    };
    let run = create("carol", &[("KZ_GROUPS_USER_PASSWORD_FILE", &password)]);
    assert!(run.ok, "{}", run.output);
    let run = create(
        "dave",
        &[
            ("KZ_GROUPS_USER_PASSWORD", "Secret1"),
            ("KZ_GROUPS_USER_PASSWORD_FILE", &password),
        ],
    );
    assert!(!run.ok);
    assert!(
        run.output
            .contains("set KZ_GROUPS_USER_PASSWORD or KZ_GROUPS_USER_PASSWORD_FILE, not both"),
        "{}",
        run.output
    );

    // The password is the file's first line, its line end dropped.
    let app = TestApp::spawn_configured(config_for(backend.clone()), None).await;
    let login = app
        .login_with_credentials(
            json!({"credentials": md5_hex("carol:Secret1"), "account_name": "Filed"}),
        )
        .await;
    assert_eq!(login.status, 201, "{}", login.text);
}

#[test]
fn under_systemd_the_server_says_ready_once_listening_then_stopping_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("notify");
    let manager = UnixDatagram::bind(&socket).unwrap();
    manager
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (backend, _data) = test_backend();
    let server = ServerProcess::start(&backend, &[("NOTIFY_SOCKET", socket.to_str().unwrap())]);
    let mut buf = [0u8; 256];
    let n = manager.recv(&mut buf).expect("READY=1 within 20 s");
    assert_eq!(&buf[..n], b"READY=1");
    // Ready means served: the port answers now.
    let health = reqwest::blocking::get(format!("{}/healthz", server.base())).unwrap();
    assert_eq!(health.status(), 200);
    // Its connection closed: how long an idle keep-alive connection holds the stop up is
    // another question than whether the stop is clean.
    drop(health);

    let mut server = server;
    let stopped = server.terminate(Duration::from_secs(15));
    let n = manager.recv(&mut buf).expect("STOPPING=1 on SIGTERM");
    assert_eq!(&buf[..n], b"STOPPING=1");
    let (status, took) = stopped.expect("exited within 15 s of SIGTERM");
    assert!(status.success(), "{status:?}");
    // An idle server has nothing to wait for: well within the unit's TimeoutStopSec.
    assert!(took < Duration::from_secs(5), "took {took:?}");
}
