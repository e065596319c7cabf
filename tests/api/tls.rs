//! CouchDB over TLS, against an endpoint each test sets up itself: a CA made at test time and a
//! certificate it signs for `localhost` and 127.0.0.1, or a self-signed certificate made with the
//! `openssl` command line as CouchDB's docs make it, and a TLS proxy in front of the test CouchDB
//! (the suite's `COUCHDB_URL`; on the embedded pass, a private pouchdb-server, as the recovery
//! test does). The commands and the service work with that CA, or that very self-signed
//! certificate, in `KZ_GROUPS_COUCHDB_CA`; without it, with a certificate for another host, or an
//! expired one, they say what is wrong with the certificate; a bad `KZ_GROUPS_COUCHDB_CA` is
//! refused at start.
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use kz_groups::config::Backend;
use kz_groups::domain::ids::random_hex;
use reqwest::Url;
use serde_json::{json, Value};
use tokio_rustls::rustls::version::{TLS12, TLS13};
use tokio_rustls::rustls::{ServerConfig, SupportedProtocolVersion};

use crate::helpers::couch_server::TestCouchServer;
use crate::helpers::process::ServerProcess;
use crate::helpers::tls_proxy::{pem_server_config, TestCa, TlsProxy};
use crate::helpers::{cli, couchdb_url, embedded_backend};

const CA_ENV: &str = "KZ_GROUPS_COUCHDB_CA";

/// A plain-HTTP CouchDB, and a TLS proxy in front of it serving `config` (a certificate of a test
/// CA, or one made as an operator makes it).
struct TlsCouch {
    /// The CouchDB's own URL, credentials included.
    plain: Url,
    upstream: Vec<SocketAddr>,
    proxy: TlsProxy,
    _private: Option<TestCouchServer>,
}

impl TlsCouch {
    fn start(dir: &Path, config: Arc<ServerConfig>) -> Self {
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
            proxy: TlsProxy::start(upstream.clone(), config),
            upstream,
            plain,
            _private: private,
        }
    }

    /// Another TLS proxy in front of the same CouchDB, serving `config`.
    fn another_proxy(&self, config: Arc<ServerConfig>) -> TlsProxy {
        TlsProxy::start(self.upstream.clone(), config)
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

/// An account made with `accounts create`, shown again by `accounts show`.
struct Account {
    id: String,
    name: String,
}

/// Over `backend` with `ca` in `KZ_GROUPS_COUCHDB_CA`: `init` and `accounts create` work, and the
/// service logs in with the account's key and creates and fetches a group, all through `couch`'s
/// proxy.
fn commands_logins_and_groups_work(couch: &TlsCouch, backend: &Backend, ca: &Path) -> Account {
    let init = cli_run(backend, Some(ca), &["init"]);
    assert!(init.ok, "init over TLS:\n{}", init.output);
    assert!(init.json["kid"].is_string(), "{}", init.output);
    let name = format!("TLS {}", random_hex(8));
    let created = cli_run(backend, Some(ca), &["accounts", "create", "--name", &name]);
    assert!(created.ok, "accounts create over TLS:\n{}", created.output);
    let account_id = created.json["account_id"].as_str().unwrap().to_owned();
    let api_key = created.json["api_key"].as_str().unwrap().to_owned();

    let server = ServerProcess::start(backend, &[(CA_ENV, ca.to_str().unwrap())]);
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
    Account {
        id: account_id,
        name,
    }
}

/// `accounts show` of `account` over `backend` with `ca` in `KZ_GROUPS_COUCHDB_CA` finds it.
fn account_is_shown(backend: &Backend, ca: &Path, account: &Account) {
    let shown = cli_run(backend, Some(ca), &["accounts", "show", &account.id]);
    assert!(shown.ok, "accounts show over TLS:\n{}", shown.output);
    assert_eq!(shown.json["name"], account.name.as_str());
}

#[test]
fn commands_logins_and_groups_work_over_tls_with_the_private_ca_in_kz_groups_couchdb_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::generate();
    let ca_pem = ca.write_pem(dir.path());
    let couch = TlsCouch::start(dir.path(), ca.server_config(&["localhost", "127.0.0.1"]));
    let account = commands_logins_and_groups_work(&couch, &couch.https("localhost"), &ca_pem);
    // 127.0.0.1 is named by the certificate too.
    account_is_shown(&couch.https("127.0.0.1"), &ca_pem, &account);
}

#[test]
fn without_the_ca_the_certificate_problem_is_named_by_commands_the_log_and_readyz() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::generate();
    let couch = TlsCouch::start(dir.path(), ca.server_config(&["localhost", "127.0.0.1"]));
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
    let couch = TlsCouch::start(dir.path(), ca.server_config(&["couchdb.example"]));

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

/// `openssl <args>` in `dir`, as an operator following CouchDB's docs runs it; its output.
fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("these tests need the openssl command line");
    assert!(
        out.status.success(),
        "openssl {args:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A server's certificate and key as PEM files (what CouchDB's `[ssl] cert_file` and `key_file`
/// name), in a directory of their own.
struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
}

impl CertFiles {
    fn in_dir(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        Self {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }

    /// `openssl req -x509`: self-signed, and marked `CA:TRUE` by OpenSSL 3.
    fn req_x509(dir: &Path, subject: &str, alt_names: &str) -> Self {
        let files = Self::in_dir(dir);
        openssl(
            dir,
            &[
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out",
                "cert.pem", "-days", "30", "-subj", subject, "-addext", alt_names,
            ],
        );
        files
    }

    /// `openssl x509 -req -signkey`: self-signed, version 1, so without any extension; `cn` is
    /// the only name it has.
    fn x509_signkey(dir: &Path, cn: &str) -> Self {
        let files = Self::in_dir(dir);
        openssl(dir, &["genrsa", "-out", "key.pem", "2048"]);
        let subject = format!("/CN={cn}");
        openssl(
            dir,
            &[
                "req", "-new", "-key", "key.pem", "-subj", &subject, "-out", "csr.pem",
            ],
        );
        openssl(
            dir,
            &[
                "x509", "-req", "-in", "csr.pem", "-signkey", "key.pem", "-days", "30", "-out",
                "cert.pem",
            ],
        );
        files
    }

    /// What `openssl x509 -text` says of the certificate.
    fn text(&self) -> String {
        openssl(
            self.cert.parent().unwrap(),
            &["x509", "-in", "cert.pem", "-noout", "-text"],
        )
    }

    fn server_config(&self, versions: &[&'static SupportedProtocolVersion]) -> Arc<ServerConfig> {
        pem_server_config(&self.cert, &self.key, versions)
    }
}

/// With the self-signed `made.cert` in `KZ_GROUPS_COUCHDB_CA`, a CouchDB serving it is reached by
/// `host`: the commands, logins and groups work over TLS 1.3, and a command over TLS 1.2 (whose
/// handshake is signed otherwise). That CouchDB, for more.
fn works_pinned(dir: &Path, made: &CertFiles, host: &str) -> TlsCouch {
    let couch = TlsCouch::start(dir, made.server_config(&[&TLS13]));
    let account = commands_logins_and_groups_work(&couch, &couch.https(host), &made.cert);
    let tls12 = couch.another_proxy(made.server_config(&[&TLS12]));
    account_is_shown(&couch.https_on(host, tls12.port), &made.cert, &account);
    assert!(
        tls12.handshakes() > 0,
        "nothing went through the TLS 1.2 proxy"
    );
    couch
}

#[test]
fn a_self_signed_certificate_from_openssl_req_x509_in_kz_groups_couchdb_ca_is_trusted_as_itself() {
    let dir = tempfile::tempdir().unwrap();
    let made = CertFiles::req_x509(
        &dir.path().join("couchdb"),
        "/CN=localhost",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
    );
    let text = made.text();
    assert!(text.contains("Version: 3"), "{text}");
    assert!(text.contains("CA:TRUE"), "{text}");
    let couch = works_pinned(dir.path(), &made, "localhost");
    // The other name of its subjectAltName.
    let run = cli_run(
        &couch.https("127.0.0.1"),
        Some(&made.cert),
        &["accounts", "list"],
    );
    assert!(run.ok, "by 127.0.0.1:\n{}", run.output);
}

#[test]
fn a_version_1_certificate_from_openssl_x509_signkey_in_kz_groups_couchdb_ca_is_trusted_as_itself()
{
    let dir = tempfile::tempdir().unwrap();
    let made = CertFiles::x509_signkey(&dir.path().join("couchdb"), "127.0.0.1");
    let text = made.text();
    assert!(text.contains("Version: 1 (0x0)"), "{text}");
    assert!(!text.contains("X509v3"), "no extensions: {text}");
    let couch = works_pinned(dir.path(), &made, "127.0.0.1");
    // Its common name is its only name: localhost, the same server, is not it.
    let run = cli_run(
        &couch.https("localhost"),
        Some(&made.cert),
        &["accounts", "list"],
    );
    assert!(
        !run.ok,
        "a host the certificate does not name: {}",
        run.output
    );
    for said in [
        "TLS certificate problem",
        "not valid for name \"localhost\"",
        "only valid for 127.0.0.1",
    ] {
        assert!(run.output.contains(said), "lacks {said}: {}", run.output);
    }
}

#[test]
fn a_file_with_a_private_ca_and_a_self_signed_certificate_trusts_both() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::generate();
    let made = CertFiles::req_x509(
        &dir.path().join("couchdb"),
        "/CN=localhost",
        "subjectAltName=DNS:localhost",
    );
    let both = dir.path().join("both.pem");
    let pems = [
        std::fs::read_to_string(ca.write_pem(dir.path())).unwrap(),
        std::fs::read_to_string(&made.cert).unwrap(),
    ];
    std::fs::write(&both, pems.concat()).unwrap();
    let couch = TlsCouch::start(dir.path(), ca.server_config(&["localhost"]));
    let pinned = couch.another_proxy(made.server_config(&[&TLS13]));
    for port in [couch.proxy.port, pinned.port] {
        let run = cli_run(
            &couch.https_on("localhost", port),
            Some(&both),
            &["accounts", "list"],
        );
        assert!(run.ok, "over port {port}:\n{}", run.output);
    }
    assert!(couch.proxy.handshakes() > 0 && pinned.handshakes() > 0);
}

/// With `ca` in `KZ_GROUPS_COUCHDB_CA`, the commands and the service refuse the certificate of
/// `backend`, saying all of `said` in a command's one line of error, in the service's log and in
/// `/readyz`'s `problem`.
fn refused_saying(backend: &Backend, ca: &Path, said: &[&str]) {
    for args in [&["init"][..], &["accounts", "list"]] {
        let run = cli_run(backend, Some(ca), args);
        assert!(!run.ok, "{args:?} took the certificate: {}", run.output);
        assert_eq!(run.output.lines().count(), 1, "{}", run.output);
        for said in said {
            let output = &run.output;
            assert!(output.contains(said), "{args:?} lacks {said}: {output}");
        }
    }
    let server = ServerProcess::start(backend, &[(CA_ENV, ca.to_str().unwrap())]);
    let log = server.log(Duration::ZERO);
    let (status, ready) = send(http().get(format!("{}/readyz", server.base())));
    assert_eq!(status, 503, "{ready}");
    let problem = ready["problem"].as_str().unwrap_or_default();
    for said in said {
        assert!(log.contains(said), "the log lacks {said}: {log}");
        assert!(problem.contains(said), "readyz lacks {said}: {ready}");
    }
}

#[test]
fn a_self_signed_certificate_for_another_host_is_refused_naming_the_host_and_its_names() {
    let dir = tempfile::tempdir().unwrap();
    let made = CertFiles::req_x509(
        &dir.path().join("couchdb"),
        "/CN=couchdb.example",
        "subjectAltName=DNS:couchdb.example",
    );
    let couch = TlsCouch::start(dir.path(), made.server_config(&[&TLS13]));
    refused_saying(
        &couch.https("localhost"),
        &made.cert,
        &[
            "TLS certificate problem",
            "not valid for name \"localhost\"",
            "only valid for couchdb.example",
            "COUCHDB_URL",
        ],
    );
}

#[test]
fn an_expired_self_signed_certificate_is_refused_naming_its_expiry_in_commands_the_log_and_readyz()
{
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let expired = CertFiles::in_dir(&dir.path().join("couchdb"));
    std::fs::write(&expired.cert, params.self_signed(&key).unwrap().pem()).unwrap();
    std::fs::write(&expired.key, key.serialize_pem()).unwrap();
    let couch = TlsCouch::start(dir.path(), expired.server_config(&[&TLS13]));
    refused_saying(
        &couch.https("localhost"),
        &expired.cert,
        &[
            "TLS certificate problem",
            "certificate expired",
            "expired at 2021-01-01T00:00:00Z",
        ],
    );
}
