//! The embedded store keeps every acknowledged write through `kill -9`, and the CLI works on the
//! same data directory while the server runs. Runs the real binary, as an operator would.
use kz_groups::config::Backend;
use serde_json::{json, Value};

use crate::helpers::cli;
use crate::helpers::process::ServerProcess;

#[tokio::test]
async fn acknowledged_writes_survive_kill_9_and_the_cli_shares_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::Embedded {
        dir: dir.path().join("data"),
    };
    let server = ServerProcess::start(&backend, &[]);
    // The CLI writes to the same data directory while the server runs.
    let account = cli::run_ok(&backend, &["accounts", "create", "--name", "Durable"]);
    let account_id = account["account_id"].as_str().unwrap().to_owned();
    let http = reqwest::Client::new();
    let login = http
        .put(format!("{}/v2/api_auth", server.base()))
        .json(&json!({"data": {"api_key": account["api_key"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 201);
    let token = login.json::<Value>().await.unwrap()["auth_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let groups = |base: String| format!("{base}/v2/accounts/{account_id}/groups");

    let creates = (0..20).map(|i| {
        http.put(groups(server.base()))
            .header("x-auth-token", &token)
            .json(&json!({"data": {"name": format!("G{i:02}")}}))
            .send()
    });
    let mut acknowledged = Vec::new();
    for resp in futures::future::join_all(creates).await {
        let resp = resp.unwrap();
        assert_eq!(resp.status(), 201);
        acknowledged.push(
            resp.json::<Value>().await.unwrap()["data"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let patched = http
        .patch(format!("{}/{}", groups(server.base()), acknowledged[0]))
        .header("x-auth-token", &token)
        .json(&json!({"data": {"flags": ["kept"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);

    server.kill();
    let server = ServerProcess::start(&backend, &[]);
    let listed: Value = http
        .get(format!("{}?paginate=false", groups(server.base())))
        .header("x-auth-token", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    ids.sort();
    acknowledged.sort();
    assert_eq!(ids, acknowledged);
    let first = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["flags"] == json!(["kept"]));
    assert!(first.is_some(), "the PATCH survived: {listed}");
}
