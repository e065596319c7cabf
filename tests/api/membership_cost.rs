//! What the membership insight costs on a large account (issue 19 §5): 5,000 users, 10,000
//! devices, 2,000 callflows and 212 groups seeded straight into the store, then each answer
//! timed against a separate `kz-groups serve` process whose peak memory is read from /proc. A
//! benchmark, not a test: it prints figures and asserts only that the answers are whole.
//! Ignored by default; `scripts/bench-membership` runs it against a release build, on CouchDB
//! (with and without Kazoo's design documents) and on the embedded store.
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::process::ServerProcess;
use crate::helpers::{account_db, embedded_backend, Account, TestApp};

const USERS: usize = 5_000;
const CALLFLOWS: usize = 2_000;
/// Groups of 25 users each; users 25i..25i+24.
const SMALL_GROUPS: usize = 200;

fn user_id(i: usize) -> String {
    format!("a0{i:030x}")
}
fn device_id(i: usize) -> String {
    format!("b0{i:030x}")
}
fn group_id(i: usize) -> String {
    format!("c0{i:030x}")
}
fn callflow_id(i: usize) -> String {
    format!("d0{i:030x}")
}

/// Every document of the account, Kazoo-shaped, with a little of everything membership.md
/// describes: deleted and disabled users, disabled, unknown-type and hotdesked devices,
/// missing members, nested groups, and callflows of each referencing kind.
fn documents() -> Vec<Value> {
    let mut docs = Vec::new();
    for i in 0..USERS {
        let mut user = json!({"_id": user_id(i), "pvt_type": "user", "first_name": "User",
            "last_name": format!("{i}"), "username": format!("user{i}"), "enabled": true,
            "priv_level": "user", "call_forward": {"enabled": false}});
        if i % 100 == 7 {
            user["pvt_deleted"] = json!(true);
        }
        if i % 100 == 13 {
            user["enabled"] = json!(false);
        }
        docs.push(user);
        for d in [2 * i, 2 * i + 1] {
            let mut device = json!({"_id": device_id(d), "pvt_type": "device",
                "name": format!("Phone {d}"), "owner_id": user_id(i), "device_type": "sip_device",
                "enabled": true, "sip": {"username": format!("sip{d}"), "method": "password",
                "password": "secret"}, "call_forward": {"enabled": false},
                "media": {"audio": {"codecs": ["PCMU", "PCMA"]}}});
            if d % 50 == 3 {
                device["enabled"] = json!(false);
            }
            if d % 100 == 11 {
                device["device_type"] = json!("toaster");
                device.as_object_mut().unwrap().remove("sip");
            }
            if d % 50 == 17 {
                device["hotdesk"] = json!({"users": {user_id((i + 1) % USERS): {}}});
            }
            docs.push(device);
        }
    }
    for g in 0..SMALL_GROUPS {
        let mut endpoints = serde_json::Map::new();
        for u in 25 * g..25 * g + 25 {
            endpoints.insert(user_id(u), json!({"type": "user"}));
        }
        endpoints.insert(device_id(50 * g), json!({"type": "device"}));
        if g % 10 == 0 {
            endpoints.insert(format!("e0{g:030x}"), json!({"type": "user"}));
        }
        docs.push(
            json!({"_id": group_id(g), "pvt_type": "group", "name": format!("Group {g}"),
            "endpoints": endpoints, "music_on_hold": {}}),
        );
    }
    // A group of 1,000 users, and one nesting ten groups (250 users).
    let big: serde_json::Map<String, Value> = (0..1000)
        .map(|u| (user_id(u), json!({"type": "user"})))
        .collect();
    docs.push(json!({"_id": group_id(1000), "pvt_type": "group", "name": "Big", "endpoints": big}));
    let nested: serde_json::Map<String, Value> = (0..10)
        .map(|g| (group_id(g), json!({"type": "group"})))
        .collect();
    docs.push(
        json!({"_id": group_id(1001), "pvt_type": "group", "name": "Nested", "endpoints": nested}),
    );
    for i in 0..CALLFLOWS {
        let g = group_id(i % SMALL_GROUPS);
        let flow = match i % 4 {
            0 => json!({"module": "ring_group", "data": {"strategy": "simultaneous",
                "endpoints": [{"id": g, "endpoint_type": "group"}]},
                "children": {"_": {"module": "voicemail", "data": {"id": "vm"}}}}),
            1 => json!({"module": "ring_group", "data": {"endpoints": (0..5)
                .map(|u| json!({"id": user_id((i + u) % USERS), "endpoint_type": "user"}))
                .collect::<Vec<_>>()}}),
            2 => json!({"module": "callflow", "data": {"id": callflow_id(i - 2)}}),
            _ => json!({"module": "user", "data": {"id": user_id(i % USERS)}, "children": {
                "_": {"module": "group_pickup", "data": {"group_id": g}}}}),
        };
        let mut callflow = json!({"_id": callflow_id(i), "pvt_type": "callflow",
            "name": format!("Flow {i}"), "numbers": [format!("{}", 2000 + i)], "patterns": [],
            "flow": flow});
        if i % 4 == 1 {
            callflow["group_id"] = json!(g);
            callflow["type"] = json!("baseGroup");
        }
        docs.push(callflow);
    }
    docs
}

async fn seed(app: &TestApp, account: &Account) -> usize {
    let db = account_db(&account.id);
    let docs = documents();
    for chunk in docs.chunks(500) {
        let results = app.store.bulk_docs(&db, chunk).await.expect("bulk write");
        assert!(results.iter().all(Result::is_ok));
    }
    docs.len()
}

/// Kazoo's two views, as a Kazoo account database has them (written here, as Kazoo would).
async fn install_kazoo_views(app: &TestApp, account: &Account) {
    let owned = json!({"language": "javascript", "views": {"owned": {"map":
        "function(doc) { if (doc.pvt_deleted) return; var hd = (doc.hotdesk && doc.hotdesk.users) || {}; var users = Object.keys(hd); if (users.length) { users.forEach(function(u) { emit([u, doc.pvt_type], doc._id); }); } else if (doc.owner_id) { emit([doc.owner_id, doc.pvt_type], doc._id); } }"}}});
    let callflows = json!({"language": "javascript", "views": {"crossbar_listing": {"map":
        "function(doc) { if (doc.pvt_type != 'callflow' || doc.pvt_deleted) return; emit(doc._id, {id: doc._id, name: doc.name}); }"}}});
    app.put_design_doc(account, "attributes", owned).await;
    app.put_design_doc(account, "callflows", callflows).await;
}

struct Figure {
    name: &'static str,
    path: String,
    runs: usize,
}

/// Runs each figure against the server process: its first answer (cold), the median and the
/// slowest of the others, and the server's resident peak above what it held before.
async fn measure(label: &str, server: &ServerProcess, token: &str, figures: &[Figure]) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    println!("\n{label}");
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "answer", "first ms", "median", "max ms", "peak +MiB", "bytes"
    );
    for figure in figures {
        let before = server.rss();
        server.reset_peak();
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..figure.runs {
            let started = Instant::now();
            let resp = http
                .get(format!("{}{}", server.base(), figure.path))
                .header("X-Auth-Token", token)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body = resp.bytes().await.unwrap();
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(
                status,
                200,
                "{}: {}",
                figure.name,
                String::from_utf8_lossy(&body)
            );
            let json: Value = serde_json::from_slice(&body).unwrap();
            assert_ne!(json["data"]["truncated"], json!(true), "{}", figure.name);
            size = body.len();
        }
        let first = times[0];
        let mut rest: Vec<f64> = times[1..].to_vec();
        rest.sort_by(f64::total_cmp);
        let median = rest.get(rest.len() / 2).copied().unwrap_or(first);
        let max = rest.last().copied().unwrap_or(first);
        let peak = server.peak().saturating_sub(before) as f64 / (1 << 20) as f64;
        println!(
            "{:<34} {first:>9.0} {median:>9.0} {max:>9.0} {peak:>10.1} {size:>9}",
            figure.name
        );
    }
    println!(
        "idle resident memory: {:.1} MiB",
        server.rss() as f64 / (1 << 20) as f64
    );
}

#[tokio::test]
#[ignore = "a benchmark: scripts/bench-membership runs it"]
async fn membership_cost_on_a_large_account() {
    let app = TestApp::spawn().await;
    let account = app.create_account(None).await;
    let started = Instant::now();
    let seeded = seed(&app, &account).await;
    println!(
        "seeded {seeded} documents ({USERS} users, {} devices, {CALLFLOWS} callflows, {} \
         groups) in {:.1} s",
        2 * USERS,
        SMALL_GROUPS + 2,
        started.elapsed().as_secs_f64()
    );
    let groups = account.groups_path();
    let figures = [
        Figure {
            name: "ringing, 25 users",
            path: format!("{groups}/{}/ringing", group_id(3)),
            runs: 11,
        },
        Figure {
            name: "ringing, nested, 250 users",
            path: format!("{groups}/{}/ringing", group_id(1001)),
            runs: 5,
        },
        Figure {
            name: "ringing, 1,000 users",
            path: format!("{groups}/{}/ringing", group_id(1000)),
            runs: 5,
        },
        Figure {
            name: "ringing as a callflow's node",
            path: format!(
                "{groups}/{}/ringing?callflow_id={}",
                group_id(0),
                callflow_id(0)
            ),
            runs: 11,
        },
        Figure {
            name: "dangling, one group",
            path: format!("{groups}/{}/dangling", group_id(10)),
            runs: 11,
        },
        Figure {
            name: "references (2,000 callflows)",
            path: format!("{groups}/{}/references", group_id(5)),
            runs: 5,
        },
        Figure {
            name: "dangling, whole account",
            path: format!("{groups}/_account/dangling"),
            runs: 3,
        },
    ];
    let program =
        std::env::var("KZ_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_kz-groups").into());
    println!("server: {program}");
    let backend = app.config.backend.clone();
    let modes: &[(&str, bool)] = if embedded_backend() {
        &[("embedded store (Kazoo's views indexed natively)", false)]
    } else {
        &[
            (
                "CouchDB without Kazoo's design documents (views computed from the documents)",
                false,
            ),
            (
                "CouchDB with Kazoo's attributes/owned and callflows/crossbar_listing",
                true,
            ),
        ]
    };
    for &(label, kazoo_views) in modes {
        if kazoo_views {
            install_kazoo_views(&app, &account).await;
        }
        // A process of its own for each: it looks for Kazoo's views on its first use of the
        // account.
        let server = ServerProcess::start_program(&program, &backend, &[], |_| {});
        measure(label, &server, &account.token, &figures).await;
        server.kill();
    }
}
