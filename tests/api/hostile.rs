//! Hostile clients, tried on the real binary as an attacker would: bodies built to cost memory
//! before any authentication, many of them at once, stored documents built to cost memory when
//! listed, bodies that never arrive, and more connections than the service admits. The process's
//! own memory and sockets are read from /proc.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::helpers::process::{read_until_closed, ServerProcess};
use crate::helpers::TestApp;
use serde_json::json;

const MB: u64 = 1 << 20;
/// Crossbar's `max_upload_size`, the default body limit.
const MAX_BODY: usize = 8_000_000;
/// What a process needs beyond the bodies themselves (buffers, thread stacks, allocator slack).
const SLACK: u64 = 24 * MB;

/// The bound the README documents for one request: its tree (`json::cost_cap`), as much again
/// when an error answer echoes it, and the texts of the body and answer.
fn request_bound(len: usize) -> u64 {
    (2 * kz_groups::json::cost_cap(len) + 4 * len) as u64
}

/// `n` items of `item` separated by commas, inside `{"data":{"<key>":[…]}}`, about `bytes` long.
fn body_of(key: &str, item: &str, bytes: usize) -> Vec<u8> {
    let head = format!(r#"{{"data":{{"{key}":["#);
    let n = (bytes - head.len() - 4) / (item.len() + 1);
    let mut body = Vec::with_capacity(bytes);
    body.extend_from_slice(head.as_bytes());
    for i in 0..n {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item.as_bytes());
    }
    body.extend_from_slice(b"]}}");
    body
}

fn nested_body(depth: usize, bytes: usize) -> Vec<u8> {
    let one = format!("{}0{}", "[".repeat(depth), "]".repeat(depth));
    body_of("x", &one, bytes)
}

fn keys_body(bytes: usize) -> Vec<u8> {
    let mut members = Vec::new();
    let mut len = 0;
    let mut i = 0u64;
    while len < bytes - 64 {
        let member = format!(r#""k{i}":0"#);
        len += member.len() + 1;
        members.push(member);
        i += 1;
    }
    format!(r#"{{"data":{{{}}}}}"#, members.join(",")).into_bytes()
}

fn put(client: &reqwest::blocking::Client, url: &str, token: Option<&str>, body: Vec<u8>) -> u16 {
    let mut req = client
        .put(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        req = req.header("x-auth-token", token);
    }
    req.send().map(|r| r.status().as_u16()).unwrap_or(0)
}

fn scrape(http: &reqwest::blocking::Client, base: &str) -> String {
    http.get(format!("{base}/metrics"))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default()
}

/// Waits (10 s at most) until the service has no group history entry waiting to be written,
/// and its change-feed follower has read what was written (30 s at most).
fn settle_history(http: &reqwest::blocking::Client, base: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let metrics = scrape(http, base);
        if metrics
            .lines()
            .any(|l| l == "kz_groups_history_entries_waiting 0")
        {
            // And the change-feed follower has read those writes (two passes more).
            let wanted = crate::helpers::history_feed_passes(&metrics) + 2;
            while crate::helpers::history_feed_passes(&scrape(http, base)) < wanted {
                assert!(std::time::Instant::now() < deadline + std::time::Duration::from_secs(20));
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_built_to_cost_memory_stay_within_the_bound_before_any_token_is_read() {
    let app = TestApp::spawn().await;
    let account = app.create_account(None).await;
    let server = ServerProcess::start(&app.config.backend, &[]);
    let groups = format!("{}/v2/accounts/{}/groups", server.base(), account.id);
    let login = format!("{}/v2/api_auth", server.base());
    let attacks: Vec<(&str, Vec<u8>)> = vec![
        ("zeros", body_of("api_key", "0", MAX_BODY)),
        ("nulls", body_of("api_key", "null", MAX_BODY)),
        ("numbers", body_of("api_key", "1234567", MAX_BODY)),
        ("nested 100 deep", nested_body(100, MAX_BODY)),
        ("nested 60 deep", nested_body(60, MAX_BODY)),
        ("many keys", keys_body(MAX_BODY)),
        ("empty objects", body_of("x", "{}", MAX_BODY)),
    ];
    let server = std::sync::Arc::new(server);
    let srv = server.clone();
    tokio::task::spawn_blocking(move || {
        let http = client();
        let base = srv.rss();
        for (name, body) in attacks {
            for url in [&login, &groups] {
                let before = srv.rss();
                srv.reset_peak();
                let len = body.len();
                let status = put(&http, url, None, body.clone());
                let growth = srv.peak().saturating_sub(before);
                eprintln!(
                    "{name} to {url}: {status}, {} MB, peak +{} MB ({:.1}x)",
                    len as u64 / MB,
                    growth / MB,
                    growth as f64 / len as f64
                );
                assert!(
                    matches!(status, 400 | 401),
                    "{name}: refused before any work, got {status}"
                );
                assert!(
                    growth <= request_bound(len) + SLACK,
                    "{name} to {url}: the process grew by {growth} bytes, over the bound {}",
                    request_bound(len) + SLACK
                );
            }
            // And the memory is given back.
            let settled = srv.rss_settles_below(base + SLACK, Duration::from_secs(5));
            assert!(
                settled <= base + SLACK,
                "{name}: {} MB still held after the attack (from {} MB)",
                settled / MB,
                base / MB
            );
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sixteen_attackers_at_once_stay_within_the_memory_budget() {
    let app = TestApp::spawn().await;
    let account = app.create_account(None).await;
    let budget = 128 * MB;
    let server = ServerProcess::start(
        &app.config.backend,
        &[("KZ_GROUPS_REQUEST_MEMORY_MB", "128")],
    );
    let groups = format!("{}/v2/accounts/{}/groups", server.base(), account.id);
    let healthz = format!("{}/healthz", server.base());
    // Bodies the measuring pass admits (a tree of about 16 times their size) and the
    // validation then refuses, each echoing its whole data in the answer; each one's tree and
    // echo take more than the budget's tree pool, so they are parsed one at a time.
    let body = body_of("api_key", "null", MAX_BODY / 2);
    let base = server.rss();
    server.reset_peak();
    let (statuses, slowest) = std::thread::scope(|scope| {
        let attackers: Vec<_> = (0..16)
            .map(|i| {
                let (body, url) = (body.clone(), groups.clone());
                let token = account.token.clone();
                scope.spawn(move || {
                    put(
                        &client(),
                        &url,
                        (i % 2 == 0).then_some(token.as_str()),
                        body,
                    )
                })
            })
            .collect();
        // A well-behaved client keeps asking meanwhile.
        let watcher = scope.spawn(|| {
            let http = client();
            let mut slowest = Duration::ZERO;
            for _ in 0..40 {
                let started = Instant::now();
                let status = http.get(&healthz).send().unwrap().status();
                assert_eq!(status, 200);
                slowest = slowest.max(started.elapsed());
                std::thread::sleep(Duration::from_millis(50));
            }
            slowest
        });
        let statuses: Vec<u16> = attackers.into_iter().map(|a| a.join().unwrap()).collect();
        (statuses, watcher.join().unwrap())
    });
    let growth = server.peak().saturating_sub(base);
    eprintln!(
        "16 attackers: statuses {statuses:?}, peak +{} MB, slowest /healthz {slowest:?}",
        growth / MB
    );
    // Refused by validation with a token, by authentication without: each in turn, none timed
    // out while waiting for the budget.
    assert!(
        statuses.iter().all(|s| matches!(s, 400 | 401)),
        "{statuses:?}"
    );
    // One request larger than the whole budget runs alone, so the peak is the larger of the
    // two, plus the bodies still arriving in steps below the reserved size.
    let bound = budget.max(request_bound(body.len())) + 16 * (64 << 10) + SLACK;
    assert!(
        growth <= bound,
        "16 attackers grew the process by {growth} bytes, over {bound}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_never_arrives_is_answered_408_and_its_socket_closed() {
    let app = TestApp::spawn().await;
    let server = ServerProcess::start(&app.config.backend, &[("KZ_GROUPS_BODY_TIMEOUT_MS", "300")]);
    let stalled = b"PUT /v2/api_auth HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"data\":";
    let (answer, closed) = server.raw(stalled, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(closed, "the connection is closed after the 408");
    // CONNECT's body would be the rest of the connection: answered at once, then closed.
    let (answer, closed) = server.raw(
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        Duration::from_secs(10),
    );
    assert!(answer.starts_with("HTTP/1.1 501"), "{answer}");
    assert!(closed, "the connection is closed after a CONNECT");
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_sockets_beyond_the_connection_limit_are_freed_and_others_still_answered() {
    let app = TestApp::spawn().await;
    let server = ServerProcess::start(
        &app.config.backend,
        &[
            ("KZ_GROUPS_BODY_TIMEOUT_MS", "500"),
            ("KZ_GROUPS_MAX_CONNECTIONS", "100"),
        ],
    );
    let sockets_before = server.open_client_connections();
    let mut stalled = Vec::new();
    for _ in 0..300 {
        let mut s = server.connect();
        s.write_all(b"PUT /v2/api_auth HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            .unwrap();
        stalled.push(s);
    }
    std::thread::sleep(Duration::from_millis(200));
    let sockets_during = server.open_client_connections();
    eprintln!("{sockets_during} sockets open with 300 stalled uploads (from {sockets_before})");
    // Admitted connections are capped (give or take the few being handed to a worker); the
    // rest wait in the kernel's listen queue.
    assert!(
        sockets_during <= sockets_before + 100 + 16,
        "{sockets_during} sockets open (from {sockets_before}) with a limit of 100 connections"
    );
    // A well-behaved client gets its answer once the stalled ones time out.
    let status = tokio::task::spawn_blocking({
        let url = format!("{}/healthz", server.base());
        move || client().get(url).send().unwrap().status().as_u16()
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
    let answers: Vec<(String, bool)> = stalled
        .iter_mut()
        .map(|s| read_until_closed(s, Duration::from_secs(30)))
        .collect();
    let wrong: Vec<_> = answers
        .iter()
        .filter(|(a, closed)| !(a.starts_with("HTTP/1.1 408") && *closed))
        .collect();
    assert!(
        wrong.is_empty(),
        "every stalled upload is answered 408 and closed; {} were not, e.g. {:?}",
        wrong.len(),
        wrong.first()
    );
    drop(stalled);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.open_client_connections() > sockets_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let sockets_after = server.open_client_connections();
    assert!(
        sockets_after <= sockets_before,
        "their sockets are freed: {sockets_after} open (from {sockets_before})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_announced_body_over_the_limit_is_refused_before_it_is_sent() {
    let app = TestApp::spawn().await;
    let server = ServerProcess::start(&app.config.backend, &[]);
    let mut s = server.connect();
    s.write_all(b"PUT /v2/api_auth HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 9000000\r\n\r\n")
        .unwrap();
    let (answer, closed) = read_until_closed(&mut s, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");
    let body: serde_json::Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(
        body["data"]["file"]["maxSize"]["message"],
        "Payload or Files must not be more than 8000000 bytes"
    );
    assert!(closed);
    // Within the limit, the client is told to go on.
    let mut s = server.connect();
    s.write_all(b"PUT /v2/api_auth HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        .unwrap();
    let (answer, _) = read_until_closed(&mut s, Duration::from_millis(500));
    assert!(answer.starts_with("HTTP/1.1 100 Continue"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_open_file_soft_limit_is_raised_to_the_hard_limit() {
    let app = TestApp::spawn().await;
    let server = ServerProcess::start_with(&app.config.backend, &[], |cmd| {
        use std::os::unix::process::CommandExt;
        // SAFETY: only setrlimit, which is async-signal-safe, runs in the child before exec.
        unsafe {
            cmd.pre_exec(|| {
                let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
                rlimit::setrlimit(rlimit::Resource::NOFILE, 256.min(hard), hard)
            });
        }
    });
    let (soft, hard) = server.file_limits();
    assert_eq!(soft, hard, "soft {soft}, hard {hard}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stored_documents_built_to_cost_memory_list_in_bounded_memory() {
    let app = TestApp::spawn().await;
    let account = app.create_account(None).await;
    let other = app.create_account(None).await;
    // The caches keep what they read, up to their own byte bounds: small ones here, counted in.
    let caches = 2 * 8 * MB;
    let server = std::sync::Arc::new(ServerProcess::start(
        &app.config.backend,
        &[
            ("KZ_GROUPS_DOC_CACHE_MB", "8"),
            ("KZ_GROUPS_LISTING_CACHE_MB", "8"),
        ],
    ));
    let base = server.base();
    let groups = format!("{base}/v2/accounts/{}/groups", account.id);
    // Fields outside the schema are kept, as Crossbar keeps them; `flags` reaches every
    // listing row through the view.
    let doc_bytes = 3_000_000;
    let flags: Vec<String> = (0..doc_bytes / 14).map(|i| format!("f{i:09}")).collect();
    let extra: Vec<u64> = (0..doc_bytes / 9).map(|i| 10_000_000 + i as u64).collect();
    let srv = server.clone();
    let token = account.token.clone();
    let other_token = other.token.clone();
    let other_groups = format!("{base}/v2/accounts/{}/groups", other.id);
    tokio::task::spawn_blocking(move || {
        let http = client();
        for i in 0..6 {
            let data = if i % 2 == 0 {
                json!({"name": format!("bomb {i}"), "flags": flags})
            } else {
                json!({"name": format!("bomb {i}"), "x": extra})
            };
            let body = json!({ "data": data }).to_string().into_bytes();
            assert_eq!(put(&http, &groups, Some(&token), body), 201);
        }
        // Their history entries are written off the request path by a worker of the same
        // process: the listings' memory is measured once it has written them.
        settle_history(&http, &base);
        for query in [
            "filter_name=nothing",
            "has_key=x&paginate=false",
            "filter_x.2=10000001",
            "paginate=false",
            "page_size=2",
            // CSV of every row: spooled to a file, a row's summary at a time.
            "paginate=false&accept=csv",
        ] {
            let before = srv.rss();
            srv.reset_peak();
            let url = format!("{groups}?{query}");
            // Another account is served while the listing runs: no lock is held across it.
            let done = std::sync::atomic::AtomicBool::new(false);
            let (answer, others) = std::thread::scope(|scope| {
                let watcher = scope.spawn(|| {
                    let mut answered = 0;
                    while !done.load(std::sync::atomic::Ordering::Acquire) {
                        let status = http
                            .get(&other_groups)
                            .header("x-auth-token", &other_token)
                            .send()
                            .unwrap()
                            .status();
                        assert_eq!(status, 200);
                        answered += 1;
                    }
                    answered
                });
                let resp = http.get(&url).header("x-auth-token", &token).send().unwrap();
                assert_eq!(resp.status(), 200, "{query}");
                let answer = resp.bytes().unwrap();
                done.store(true, std::sync::atomic::Ordering::Release);
                (answer, watcher.join().unwrap())
            });
            let growth = srv.peak().saturating_sub(before);
            eprintln!(
                "{query}: {} MB answered, peak +{} MB, {others} answers to another account meanwhile",
                answer.len() as u64 / MB,
                growth / MB
            );
            // The rows of the answer, one document read at a time: never a document's tree.
            let bound = 3 * answer.len() as u64 + 4 * doc_bytes as u64 + caches + SLACK;
            assert!(
                growth <= bound,
                "{query}: the process grew by {growth} bytes, over {bound}"
            );
        }
    })
    .await
    .unwrap();
}
