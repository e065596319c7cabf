//! The embedded store keeps every acknowledged write through `kill -9`, and the CLI works on the
//! same data directory while the server runs. Runs the real binary, as an operator would.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Server {
    child: Child,
    base: String,
}

fn start(data: &std::path::Path) -> Server {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_kz-groups"))
        .arg("serve")
        .env_remove("COUCHDB_URL")
        .env("KZ_GROUPS_DATA", data)
        .env("KZ_GROUPS_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("kz-groups starts");
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "kz-groups did not listen within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

impl Server {
    /// SIGKILL, as a crash or an impatient operator would.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn cli(data: &std::path::Path, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_kz-groups"))
        .args(args)
        .env_remove("COUCHDB_URL")
        .env("KZ_GROUPS_DATA", data)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9_and_the_cli_shares_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = start(&data);
    // The CLI writes to the same data directory while the server runs.
    let account = cli(&data, &["accounts", "create", "--name", "Durable"]);
    let account_id = account["account_id"].as_str().unwrap().to_owned();
    let http = reqwest::Client::new();
    let login = http
        .put(format!("{}/v2/api_auth", server.base))
        .json(&json!({"data": {"api_key": account["api_key"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 201);
    let token = login.json::<Value>().await.unwrap()["auth_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v2/accounts/{account_id}/groups");

    let creates = (0..20).map(|i| {
        http.put(format!("{}{path}", server.base))
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
        .patch(format!("{}{path}/{}", server.base, acknowledged[0]))
        .header("x-auth-token", &token)
        .json(&json!({"data": {"flags": ["kept"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);

    server.kill();
    let server = start(&data);
    let listed: Value = http
        .get(format!("{}{path}?paginate=false", server.base))
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
