//! The Groups API: the cases of groups-contract §8, named by number in each test's comment,
//! and what real clients were seen to send.
mod create;
mod delete;
mod fetch;
mod http;
mod lines;
mod listing;
mod membership;
mod update;
mod user_groups;

use serde_json::Value;

use crate::helpers::{Account, TestApp};

/// A well-formed id that names no group (and no account).
const UNKNOWN: &str = "0123456789abcdef0123456789abcdef";

async fn setup() -> (TestApp, Account) {
    let app = TestApp::spawn().await;
    let account = app.create_account(None).await;
    (app, account)
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The envelope fields every answer carries (groups-contract §3.1).
fn assert_envelope_tail(body: &Value) {
    assert!(
        body["status"] == "success" || body["status"] == "error",
        "{body}"
    );
    let ts = body["timestamp"].as_str().expect("timestamp");
    assert!(ts.ends_with('Z') && ts.len() == 20, "{ts}");
    assert!(body["tokens"]["consumed"].is_u64() && body["tokens"]["remaining"].is_u64());
    assert_eq!(body["node"].as_str().map(str::len), Some(22));
    if body["status"] == "error" {
        assert!(body["error"].is_string(), "error must be a string: {body}");
    }
}
