//! The real binary started, put through a broker outage and stopped as operators do (issue 15,
//! items 6 and 7): SIGTERM closes idle keep-alive connections at once and lets a request in
//! flight finish; and every WARN or ERROR line of a start, an outage and a stop is kz-groups'
//! own, saying what happened, with no library noise at the default log level.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;

use crate::helpers::bus::{amqp_url, FaultyLink};
use crate::helpers::process::{read_until_closed, ServerProcess};
use crate::helpers::{cli, empty_backend};
use kz_groups::config::Backend;

/// What an idle keep-alive connection or a stop may take at most here; the keep-alive timeout
/// a stop used to wait for is 5 s.
const PROMPTLY: Duration = Duration::from_secs(2);

/// A fresh store with signing material and one account: its id and an API token.
fn provisioned(backend: &Backend) -> (String, String) {
    if matches!(backend, Backend::CouchDb { .. }) {
        cli::run_ok(backend, &["init"]);
    }
    let account = cli::run_ok(backend, &["accounts", "create", "--name", "Lifecycle"]);
    let id = account["account_id"].as_str().unwrap().to_owned();
    let key = account["api_key"].as_str().unwrap().to_owned();
    (id, key)
}

fn login(base: &str, api_key: &str) -> String {
    let resp: serde_json::Value = reqwest::blocking::Client::new()
        .put(format!("{base}/v2/api_auth"))
        .json(&json!({"data": {"api_key": api_key}}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    resp["auth_token"].as_str().unwrap().to_owned()
}

/// One whole answer read off a keep-alive connection (headers, then `Content-Length` bytes).
fn read_answer(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    stream.set_read_timeout(Some(PROMPTLY)).unwrap();
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
        let n = stream.read(&mut buf).expect("an answer");
        assert!(n > 0, "closed before the answer: {text}");
        got.extend_from_slice(&buf[..n]);
    }
}

/// The lines at WARN or ERROR.
fn warnings(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect()
}

#[test]
fn a_stop_closes_idle_connections_at_once_and_finishes_a_request_in_flight_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let (_couch, backend) = empty_backend(dir.path());
    let (account, api_key) = provisioned(&backend);
    let amqp = amqp_url();
    let mut server = ServerProcess::start(&backend, &[("KZ_GROUPS_AMQP_URL", &amqp)]);
    let base = server.base();
    let token = login(&base, &api_key);
    // Some work first, so caches, their feeds and the bus are all running.
    let http = reqwest::blocking::Client::new();
    let groups = format!("{base}/v2/accounts/{account}/groups");
    let created = http
        .put(&groups)
        .header("X-Auth-Token", &token)
        .json(&json!({"data": {"name": "before the stop"}}))
        .send()
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(
        http.get(&groups)
            .header("X-Auth-Token", &token)
            .send()
            .unwrap()
            .status(),
        200
    );

    // Three idle keep-alive connections, as a proxy's pool holds them.
    let mut idle: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut stream = server.connect();
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: kz-groups\r\n\r\n")
                .unwrap();
            let answer = read_answer(&mut stream);
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            stream
        })
        .collect();
    // And a request in flight: its head sent, the server waiting for its body (it has answered
    // `100 Continue`, so it has taken the request up).
    let body = json!({"data": {"name": "in flight"}}).to_string();
    let mut in_flight = server.connect();
    write!(
        in_flight,
        "PUT /v2/accounts/{account}/groups HTTP/1.1\r\nHost: kz-groups\r\nX-Auth-Token: {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut continued = [0u8; 25];
    in_flight.set_read_timeout(Some(PROMPTLY)).unwrap();
    in_flight.read_exact(&mut continued).unwrap();
    assert_eq!(&continued, b"HTTP/1.1 100 Continue\r\n\r\n");

    let stop = std::thread::scope(|scope| {
        let stopping = scope.spawn(|| server.terminate(Duration::from_secs(20)));
        for stream in &mut idle {
            let (left, closed) = read_until_closed(stream, PROMPTLY);
            assert!(closed, "an idle keep-alive connection was closed at once");
            assert!(left.is_empty(), "nothing more was sent on it: {left}");
        }
        // The stop has begun; the request in flight still gets its answer.
        in_flight.write_all(body.as_bytes()).unwrap();
        let (answer, closed) = read_until_closed(&mut in_flight, Duration::from_secs(10));
        assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
        assert!(closed, "its connection closed after the answer");
        stopping.join().unwrap()
    });
    let (status, took) = stop.expect("kz-groups stopped");
    assert!(status.success(), "{status:?}");
    assert!(took < PROMPTLY, "the stop took {took:?}");
    let log = server.log(Duration::ZERO);
    assert_eq!(
        warnings(&log),
        Vec::<&str>::new(),
        "a planned stop warns of nothing:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_a_broker_outage_and_a_stop_log_only_kz_groups_own_words() {
    let dir = tempfile::tempdir().unwrap();
    let (_couch, backend) = empty_backend(dir.path());
    let (account, api_key) = {
        let backend = backend.clone();
        tokio::task::spawn_blocking(move || provisioned(&backend))
            .await
            .unwrap()
    };
    let link = FaultyLink::start().await;
    let env = [("KZ_GROUPS_AMQP_URL", link.url())];
    let mut server = {
        let backend = backend.clone();
        tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            // The default log level: no RUST_LOG at all.
            ServerProcess::start_with(&backend, &env, |cmd| {
                cmd.env_remove("RUST_LOG");
            })
        })
        .await
        .unwrap()
    };
    let base = server.base();
    let http = reqwest::Client::new();
    let token: serde_json::Value = http
        .put(format!("{base}/v2/api_auth"))
        .json(&json!({"data": {"api_key": api_key}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["auth_token"].as_str().unwrap().to_owned();
    let groups = format!("{base}/v2/accounts/{account}/groups");
    let create = |name: &str| {
        http.put(&groups)
            .header("X-Auth-Token", &token)
            .json(&json!({"data": {"name": name}}))
            .send()
    };
    let metric = |name: &'static str| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let text = http
                .get(format!("{base}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
                .unwrap_or_default()
        }
    };
    let until = |name: &'static str, value: &'static str| {
        let metric = &metric;
        async move {
            for _ in 0..200 {
                if metric(name).await == value {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("{name} never became {value}");
        }
    };
    until("kz_groups_amqp_connected ", "1").await;
    assert_eq!(create("before").await.unwrap().status(), 201);
    link.cut();
    until("kz_groups_amqp_connected ", "0").await;
    assert_eq!(create("during").await.unwrap().status(), 201);
    link.restore();
    until("kz_groups_amqp_connected ", "1").await;
    until("kz_groups_amqp_queue_depth ", "0").await;
    let stopped = tokio::task::spawn_blocking(move || {
        let took = server.terminate(Duration::from_secs(20));
        (took, server.log(Duration::ZERO))
    })
    .await
    .unwrap();
    let (took, log) = stopped;
    assert!(
        took.is_some_and(|(status, _)| status.success()),
        "kz-groups stopped"
    );
    for line in log.lines() {
        assert!(
            !line.contains("lapin") && !line.contains("tracing"),
            "library noise at the default level: {line}\n{log}"
        );
    }
    let warned = warnings(&log);
    assert!(
        warned.iter().any(|l| l.contains("AMQP")),
        "the outage is said:\n{log}"
    );
    // Each says what happened and what kz-groups does about it.
    let doing = ["retrying", "reconnecting", "dropped", "503", "until"];
    for line in warned {
        assert!(
            line.contains(" kz_groups") && doing.iter().any(|d| line.contains(d)),
            "a warning of kz-groups' own, saying what it does: {line}\n{log}"
        );
    }
}
