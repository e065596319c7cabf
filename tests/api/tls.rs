//! CouchDB over TLS, against an endpoint each test sets up itself: a CA made at test time, a
//! certificate it signs for `localhost` and 127.0.0.1, and a TLS proxy in front of the test
//! CouchDB (the suite's `COUCHDB_URL`; on the embedded pass, a private pouchdb-server, as the
//! recovery test does). The commands and the service work with that CA in
//! `KZ_GROUPS_COUCHDB_CA`; without it, or with a certificate for another host, they say what is
//! wrong with the certificate; a bad `KZ_GROUPS_COUCHDB_CA` is refused at start.
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::Path;
use std::time::Duration;

use kz_groups::config::Backend;
use kz_groups::domain::ids::random_hex;
use reqwest::Url;
use serde_json::{json, Value};

use crate::helpers::couch_server::TestCouchServer;
use crate::helpers::process::ServerProcess;
use crate::helpers::tls_proxy::{TestCa, TlsProxy};
use crate::helpers::{cli, couchdb_url, embedded_backend};

const CA_ENV: &str = "KZ_GROUPS_COUCHDB_CA";

/// A plain-HTTP CouchDB, and a TLS proxy in front of it with a certificate of `ca` for `names`.
struct TlsCouch {
    /// The CouchDB's own URL, credentials included.
    plain: Url,
    proxy: TlsProxy,
    _private: Option<TestCouchServer>,
}

impl TlsCouch {
    fn start(dir: &Path, ca: &TestCa, names: &[&str]) -> Self {
        let (private, plain) = if embedded_backend() {
            let server = TestCouchServer::start(None, &dir.join("couch"))
                .expect("this test needs KZ_TEST_COUCH_SERVER_BIN (set by scripts/test)");
            let url = server.url();
            (Some(server), url)
        } else {
            (None, couchdb_url())
        };
        let plain = Url::parse(&plain).unwrap();
        assert_eq!(
            plain.scheme(),
            "http",
            "the proxy relays to a plain-HTTP CouchDB"
        );
        let upstream: Vec<SocketAddr> = (
            plain.host_str().unwrap(),
            plain.port_or_known_default().unwrap(),
        )
            .to_socket_addrs()
            .unwrap()
            .collect();
        Self {
            proxy: TlsProxy::start(upstream, ca.server_config(names)),
            plain,
            _private: private,
        }
    }

    /// `https://` (with the CouchDB's credentials) on the proxy, by the host name `host`.
    fn https(&self, host: &str) -> Backend {
        self.https_on(host, self.proxy.port)
    }

    fn https_on(&self, host: &str, port: u16) -> Backend {
        let mut url = self.plain.clone();
        url.set_scheme("https").unwrap();
        url.set_host(Some(host)).unwrap();
        url.set_port(Some(port)).unwrap();
        Backend::CouchDb { url: url.into() }
    }

    /// The CouchDB's password, which no message may show.
    fn password(&self) -> &str {
        self.plain.password().unwrap_or("")
    }
}

fn cli_run(backend: &Backend, ca: Option<&Path>, args: &[&str]) -> cli::CliRun {
    let mut cmd = cli::command(backend, args);
    if let Some(ca) = ca {
        cmd.env(CA_ENV, ca);
    }
    cli::run_command(&mut cmd)
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn send(request: reqwest::blocking::RequestBuilder) -> (u16, Value) {
    let resp = request.send().unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

#[test]
fn commands_logins_and_groups_work_over_tls_with_the_private_ca_in_kz_groups_couchdb_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::generate();
    let ca_pem = ca.write_pem(dir.path());
    let couch = TlsCouch::start(dir.path(), &ca, &["localhost", "127.0.0.1"]);
    let backend = couch.https("localhost");

    let init = cli_run(&backend, Some(&ca_pem), &["init"]);
    assert!(init.ok, "init over TLS:\n{}", init.output);
    assert!(init.json["kid"].is_string(), "{}", init.output);
    let name = format!("TLS {}", random_hex(8));
    let created = cli_run(
        &backend,
        Some(&ca_pem),
        &["accounts", "create", "--name", &name],
    );
    assert!(created.ok, "accounts create over TLS:\n{}", created.output);
    let account_id = created.json["account_id"].as_str().unwrap().to_owned();
    let api_key = created.json["api_key"].as_str().unwrap().to_owned();
    // 127.0.0.1 is named by the certificate too.
    let shown = cli_run(
        &couch.https("127.0.0.1"),
        Some(&ca_pem),
        &["accounts", "show", &account_id],
    );
    assert!(shown.ok, "accounts show over TLS:\n{}", shown.output);
    assert_eq!(shown.json["name"], name.as_str());

    let server = ServerProcess::start(&backend, &[(CA_ENV, ca_pem.to_str().unwrap())]);
    let base = server.base();
    let http = http();
    let (status, ready) = send(http.get(format!("{base}/readyz")));
    assert_eq!(status, 200, "{ready}\n{}", server.log(Duration::ZERO));
    let (status, login) = send(
        http.put(format!("{base}/v2/api_auth"))
            .header("content-type", "application/json")
            .body(json!({"data": {"api_key": api_key}}).to_string()),
    );
    assert_eq!(status, 201, "{login}");
    let token = login["auth_token"].as_str().unwrap().to_owned();
    let groups = format!("{base}/v2/accounts/{account_id}/groups");
    let (status, group) = send(
        http.put(&groups)
            .header("x-auth-token", &token)
            .header("content-type", "application/json")
            .body(json!({"data": {"name": "Over TLS"}}).to_string()),
    );
    assert_eq!(status, 201, "{group}");
    let group_id = group["data"]["id"].as_str().unwrap();
    let (status, fetched) = send(
        http.get(format!("{groups}/{group_id}"))
            .header("x-auth-token", &token),
    );
    assert_eq!(status, 200, "{fetched}");
    assert_eq!(fetched["data"]["name"], "Over TLS");
    assert!(
        couch.proxy.handshakes() > 0,
        "nothing went through the TLS proxy"
    );
}

#[test]
fn without_the_ca_the_certificate_problem_is_named_by_commands_the_log_and_readyz() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::generate();
    let couch = TlsCouch::start(dir.path(), &ca, &["localhost", "127.0.0.1"]);
    let backend = couch.https("localhost");

    for args in [&["init"][..], &["accounts", "list"]] {
        let run = cli_run(&backend, None, args);
        assert!(!run.ok, "{args:?} succeeded with an untrusted certificate");
        assert_eq!(run.output.lines().count(), 1, "{}", run.output);
        for said in [
            "TLS certificate problem",
            "UnknownIssuer",
            CA_ENV,
            "COUCHDB_URL",
        ] {
            assert!(
                run.output.contains(said),
                "{args:?} lacks {said}: {}",
                run.output
            );
        }
        assert!(!run.output.contains(couch.password()), "{}", run.output);
    }

    let server = ServerProcess::start(&backend, &[]);
    let log = server.log(Duration::ZERO);
    assert!(log.contains("TLS certificate problem"), "{log}");
    assert!(!log.contains(couch.password()), "{log}");
    let http = http();
    let (status, ready) = send(http.get(format!("{}/readyz", server.base())));
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["couchdb"], "down", "{ready}");
    let problem = ready["problem"].as_str().unwrap_or_default();
    assert!(problem.contains("TLS certificate problem"), "{ready}");
    assert!(problem.contains("UnknownIssuer"), "{ready}");
    let logged = server.log(Duration::ZERO).len();
    let (status, body) = send(http.get(format!(
        "{}/v2/accounts/{}/groups",
        server.base(),
        random_hex(16)
    )));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "503", "the Kazoo envelope: {body}");
    assert!(
        !body.to_string().contains("TLS"),
        "causes are logged, not sent: {body}"
    );
    let log = server.log(Duration::from_millis(100));
    assert!(
        log[logged..].contains("store unreachable: TLS certificate problem"),
        "a request's failure is logged with its cause:\n{log}"
    );
}

#[test]
fn a_certificate_for_another_host_and_a_server_without_tls_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::generate();
    let ca_pem = ca.write_pem(dir.path());
    let couch = TlsCouch::start(dir.path(), &ca, &["couchdb.example"]);

    let run = cli_run(
        &couch.https("localhost"),
        Some(&ca_pem),
        &["accounts", "list"],
    );
    assert!(!run.ok);
    for said in [
        "TLS certificate problem",
        "not valid for name \"localhost\"",
        "couchdb.example",
    ] {
        assert!(run.output.contains(said), "lacks {said}: {}", run.output);
    }
    let plain_port = couch.plain.port_or_known_default().unwrap();
    let run = cli_run(
        &couch.https_on("127.0.0.1", plain_port),
        Some(&ca_pem),
        &["accounts", "list"],
    );
    assert!(!run.ok);
    assert!(run.output.contains("TLS handshake"), "{}", run.output);
    assert!(
        !run.output.contains("certificate problem"),
        "{}",
        run.output
    );
}

#[test]
fn a_bad_kz_groups_couchdb_ca_is_refused_at_start_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let key_only = dir.path().join("key.pem");
    std::fs::write(
        &key_only,
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let missing = dir.path().join("missing.pem");
    // Nothing listens there: the variable is refused before any connection is tried.
    let backend = Backend::CouchDb {
        url: "https://admin:secret@localhost:1".into(),
    };
    for (path, why) in [
        (&missing, "cannot read"),
        (&not_pem, "no certificate"),
        (&key_only, "no certificate"),
    ] {
        for args in [&["serve"][..], &["init"]] {
            let run = cli_run(&backend, Some(path), args);
            assert!(!run.ok, "{args:?} with {CA_ENV}={}", path.display());
            assert_eq!(
                run.output.lines().count(),
                1,
                "printed once: {}",
                run.output
            );
            assert!(run.output.contains(CA_ENV), "{}", run.output);
            assert!(run.output.contains(why), "{}", run.output);
            assert!(!run.output.contains("connection refused"), "{}", run.output);
        }
    }
}
