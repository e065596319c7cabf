//! The caches of issue 9 (README, "Caches"): what keeps them true besides the TTL (the store's
//! change feed, another process's writes, Kazoo's notices on the bus), what they save (one
//! store call for a GET with the group cache off), and what `/metrics` says of them.
use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::json;

use crate::helpers::bus::{amqp_config, amqp_url, db_word, declare_kazoo_exchange};
use crate::helpers::{cli, eventually, md5_hex, Account, Group, Response, TestApp};

/// Far longer than any test: an entry that leaves the cache within a test was dropped by what
/// the test exercises, not by its age.
const NO_TTL: Duration = Duration::from_secs(600);

fn name(resp: &Response) -> &str {
    resp.json["data"]["name"].as_str().unwrap_or_default()
}

/// A group named "Before", read through the service (so it is cached), then renamed "After"
/// straight in the store, as Kazoo or an operator would.
async fn cached_then_changed_behind_its_back(app: &TestApp) -> (Account, Group) {
    let account = app.create_account(None).await;
    let group = app.add_group(&account, json!({"name": "Before"})).await;
    let read = app
        .with_token(&account.token)
        .get_group(&account, &group.id)
        .await;
    assert_eq!(name(&read), "Before");
    app.amend_doc(&account.id, &group.id, json!({"name": "After"}))
        .await;
    (account, group)
}

#[tokio::test]
async fn a_write_behind_the_services_back_is_seen_by_the_change_feed() {
    let app = TestApp::spawn_with(|config| config.caches.ttl = NO_TTL).await;
    let (account, group) = cached_then_changed_behind_its_back(&app).await;
    let caller = app.with_token(&account.token);
    let seen = eventually(
        || caller.get_group(&account, &group.id),
        |resp| name(resp) == "After",
    )
    .await;
    assert_eq!(name(&seen), "After", "{}", seen.text);
}

#[tokio::test]
async fn a_user_made_by_the_cli_in_another_process_can_log_in_at_once() {
    let app = TestApp::spawn_with(|config| config.caches.ttl = NO_TTL).await;
    let account = app.create_account(None).await;
    let login = || {
        app.login_with_credentials(json!({
            "credentials": md5_hex("carol:Secret1"),
            "account_realm": account.realm,
        }))
    };
    assert_eq!(login().await.status, 401, "no such user yet");
    let made = cli::run(
        &app.config.backend,
        &[
            "users",
            "create",
            "--account",
            &account.id,
            "--username",
            "carol",
            "--password",
            "Secret1",
        ],
    );
    assert!(made.ok, "{}", made.output);
    let resp = eventually(login, |resp| resp.status == 201).await;
    assert_eq!(resp.status, 201, "{}", resp.text);
}

/// Publishes a Kazoo-style change notice (amqp-notices §3) for a group of `account`.
async fn announce_as_kazoo(account: &str, id: &str) {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("the test broker");
    let channel = connection.create_channel().await.unwrap();
    declare_kazoo_exchange(&channel).await.unwrap();
    let db = db_word(account);
    let body = json!({
        "Type": "group", "Database": db, "ID": id, "Rev": "9-0",
        "Node": "kazoo_apps@kz1", "Event-Name": "doc_edited", "Event-Category": "configuration",
    });
    channel
        .basic_publish(
            "configuration",
            &format!("doc_edited.{db}.group.{id}"),
            BasicPublishOptions::default(),
            body.to_string().as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let _ = connection.close(200, "done").await;
}

#[tokio::test]
async fn kazoos_change_notices_drop_what_they_name() {
    // No change feed and no TTL: only the notice can make the change visible.
    let app = TestApp::spawn_with(|config| {
        config.caches.ttl = NO_TTL;
        config.caches.feeds = 0;
        config.amqp = Some(amqp_config(&amqp_url()));
    })
    .await;
    let (account, group) = cached_then_changed_behind_its_back(&app).await;
    let caller = app.with_token(&account.token);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        name(&caller.get_group(&account, &group.id).await),
        "Before",
        "with no feed and no TTL the cached copy stays until something says it changed"
    );
    // The service binds its queue in the background: announce until it has heard.
    let seen = eventually(
        || async {
            announce_as_kazoo(&account.id, &group.id).await;
            caller.get_group(&account, &group.id).await
        },
        |resp| name(resp) == "After",
    )
    .await;
    assert_eq!(name(&seen), "After", "{}", seen.text);
}

/// The series `name{labels}` of a scrape, summed over the lines that match.
fn sample(text: &str, matches: impl Fn(&str) -> bool) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#') && matches(line))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Store calls other than the change feeds' own (which run in the background).
fn store_calls(text: &str) -> f64 {
    sample(text, |line| {
        line.starts_with("kz_groups_store_requests_total{") && !line.contains("operation=\"feed_")
    })
}

#[tokio::test]
async fn with_the_group_cache_off_a_get_costs_one_store_call_and_metrics_show_each_cache() {
    let app = TestApp::spawn_with(|config| config.caches.doc_entries = 0).await;
    let account = app.create_account(None).await;
    let caller = app.with_token(&account.token);
    let group = app.add_group(&account, json!({"name": "Counted"})).await;
    assert_eq!(caller.get_group(&account, &group.id).await.status, 200);
    let first = app.probe("/metrics").await.text;
    // A read that raced a change feed's start is not kept (README, "Caches"), so the caches may
    // take another GET or two to hold everything; then every GET costs the group alone.
    let (mut before, mut after) = (first.clone(), first);
    let mut calls = Vec::new();
    for _ in 0..5 {
        before = after;
        assert_eq!(caller.get_group(&account, &group.id).await.status, 200);
        after = app.probe("/metrics").await.text;
        calls.push(store_calls(&after) - store_calls(&before));
        if calls.last() == Some(&1.0) {
            break;
        }
    }
    assert!(
        calls.iter().all(|&n| n >= 1.0),
        "the group itself always comes from the store (its cache is off): {calls:?}"
    );
    assert_eq!(
        calls.last(),
        Some(&1.0),
        "the caller's documents come from the caches, the group from the store: {calls:?}\n{after}"
    );
    for cache in ["token", "auth"] {
        let series = |metric: &str, text: &str| {
            sample(text, |line| {
                line.starts_with(&format!("{metric}{{cache=\"{cache}\"}}"))
            })
        };
        assert!(
            series("kz_groups_cache_hits_total", &after)
                > series("kz_groups_cache_hits_total", &before),
            "{cache} answered:\n{after}"
        );
        assert!(
            series("kz_groups_cache_entries", &after) >= 1.0,
            "{cache} holds entries:\n{after}"
        );
    }
    let group_entries = sample(&after, |line| {
        line.starts_with("kz_groups_cache_entries{cache=\"group\"}")
    });
    assert_eq!(group_entries, 0.0, "the group cache is off:\n{after}");
}
