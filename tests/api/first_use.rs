//! Concurrent first use (issue 15.1): many `accounts create` at once on a fresh store, then
//! `serve`, then every account logs in and reads every account's groups at once. Each answer
//! must come from the store as it is: a login must find its API key, and a token the server
//! has just issued must verify on its very next request, however the requests interleave.
use std::collections::HashMap;

use serde_json::{json, Value};

use crate::helpers::cli;
use crate::helpers::empty_backend;
use crate::helpers::process::ServerProcess;

const ACCOUNTS: usize = 12;
const ROUNDS: usize = 3;

struct Created {
    id: String,
    api_key: String,
}

async fn login(http: &reqwest::Client, base: &str, account: &Created) -> String {
    let resp = http
        .put(format!("{base}/v2/api_auth"))
        .json(&json!({"data": {"api_key": account.api_key}}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 201, "api_auth of {}: {body}", account.id);
    body["auth_token"].as_str().unwrap().to_owned()
}

async fn read_groups(http: &reqwest::Client, base: &str, token: &str, account: &str) -> u16 {
    http.get(format!("{base}/v2/accounts/{account}/groups"))
        .header("X-Auth-Token", token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// What a read by `reader` of `target`'s groups must answer: its own account and the master's
/// (a superduper admin) 200, anyone else 403.
fn expected(reader: &str, target: &str, master: &str) -> u16 {
    if reader == target || reader == master {
        200
    } else {
        403
    }
}

fn create_accounts_at_once(backend: &kz_groups::config::Backend) -> Vec<Created> {
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..ACCOUNTS)
            .map(|i| {
                scope.spawn(move || {
                    cli::run_ok(
                        backend,
                        &["accounts", "create", "--name", &format!("First {i}")],
                    )
                })
            })
            .collect();
        runs.into_iter()
            .map(|run| {
                let json = run.join().unwrap();
                Created {
                    id: json["account_id"].as_str().unwrap().to_owned(),
                    api_key: json["api_key"].as_str().unwrap().to_owned(),
                }
            })
            .collect()
    })
}

/// The master account: the one every read of it by itself and of any other answers 200.
fn master_of(accounts: &[Created], backend: &kz_groups::config::Backend) -> String {
    let listed = cli::run_ok(backend, &["accounts", "list"]);
    let roots: Vec<&str> = listed["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["parent_id"].is_null())
        .filter_map(|a| a["account_id"].as_str())
        .collect();
    assert_eq!(roots.len(), 1, "exactly one master: {listed}");
    assert!(accounts.iter().any(|a| a.id == roots[0]));
    roots[0].to_owned()
}

#[tokio::test]
async fn logins_and_reads_right_after_concurrent_first_use_answer_from_the_store() {
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let (_couch, backend) = empty_backend(dir.path());
        if matches!(backend, kz_groups::config::Backend::CouchDb { .. }) {
            cli::run_ok(&backend, &["init"]);
        }
        let accounts = create_accounts_at_once(&backend);
        let master = master_of(&accounts, &backend);
        let server = ServerProcess::start(&backend, &[]);
        let base = server.base();
        let http = reqwest::Client::new();

        // In turn: the accounts already logged in read the next one's groups (so the server
        // has read its account), then it logs in and reads its own at once.
        let mut tokens: HashMap<&str, String> = HashMap::new();
        let half = &accounts[..ACCOUNTS / 2];
        for account in half {
            for (reader, token) in &tokens {
                let status = read_groups(&http, &base, token, &account.id).await;
                let want = expected(reader, &account.id, &master);
                assert_eq!(status, want, "round {round}: {reader} reads {}", account.id);
            }
            let token = login(&http, &base, account).await;
            let status = read_groups(&http, &base, &token, &account.id).await;
            assert_eq!(status, 200, "round {round}: {} reads itself", account.id);
            tokens.insert(&account.id, token);
        }

        // Then the other half all at once, each reading every account as soon as it is in,
        // while the first half keeps reading everyone.
        let everyone: Vec<&str> = accounts.iter().map(|a| a.id.as_str()).collect();
        let newcomers = accounts[ACCOUNTS / 2..].iter().map(|account| {
            let (http, base, everyone, master) = (&http, &base, &everyone, &master);
            async move {
                let token = login(http, base, account).await;
                let mut wrong = Vec::new();
                for target in everyone {
                    let status = read_groups(http, base, &token, target).await;
                    if status != expected(&account.id, target, master) {
                        wrong.push(format!("{} reads {target}: {status}", account.id));
                    }
                }
                wrong
            }
        });
        let veterans = tokens.iter().map(|(reader, token)| {
            let (http, base, everyone, master) = (&http, &base, &everyone, &master);
            async move {
                let mut wrong = Vec::new();
                for target in everyone {
                    let status = read_groups(http, base, token, target).await;
                    if status != expected(reader, target, master) {
                        wrong.push(format!("{reader} reads {target}: {status}"));
                    }
                }
                wrong
            }
        });
        let (late, early) = futures::future::join(
            futures::future::join_all(newcomers),
            futures::future::join_all(veterans),
        )
        .await;
        let wrong: Vec<String> = late.into_iter().chain(early).flatten().collect();
        assert!(wrong.is_empty(), "round {round}: {wrong:#?}");
        drop(server);
    }
}
