//! The group history (issue 18): every change through kz-groups recorded once with its actor,
//! difference, members and version; read per group, per entry and per account with Crossbar's
//! envelope and paging; restored through the one write path; refused across accounts.
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{Account, Group, Response, TestApp};

/// A group created through the API by `api`'s caller.
async fn add(api: &crate::helpers::Caller<'_>, account: &Account, data: Value) -> Group {
    let resp = api.create_group(account, data).await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    Group {
        id: resp.id().to_owned(),
        revision: resp.revision().to_owned(),
        data: resp.json["data"].clone(),
    }
}

fn history_path(account: &Account, group: &str) -> String {
    format!("{}/history", account.group_path(group))
}

/// The group's history once it holds `n` entries (they are written just after the answer).
async fn history_of(app: &TestApp, account: &Account, group: &str, n: usize) -> Response {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = app
            .with_token(&account.token)
            .request("GET", history_path(account, group))
            .send()
            .await;
        let count = resp.json["data"].as_array().map_or(0, Vec::len);
        if count >= n || Instant::now() > deadline {
            return resp;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The application, and an account of this test's own.
async fn setup() -> (TestApp, Account) {
    let app = TestApp::spawn().await;
    let account = app.create_account(None).await;
    (app, account)
}

fn actions(resp: &Response) -> Vec<String> {
    resp.listed("action")
}

#[tokio::test]
async fn every_write_is_recorded_newest_first_with_its_actor_diff_and_members() {
    let (app, account) = setup().await;
    let api = app.with_token(&account.token);
    let group = add(
        &api,
        &account,
        json!({"name": "Sales", "endpoints": {"u1": {"type": "user"}}}),
    )
    .await;
    let patched = api
        .patch_group(
            &account,
            &group.id,
            json!({"endpoints": {"d1": {"type": "device"}, "u1": null}}),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    let updated = api
        .update_group(
            &account,
            &group.id,
            json!({"name": "Sales 2", "endpoints": {}}),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(api.delete_group(&account, &group.id).await.status, 200);

    let resp = history_of(&app, &account, &group.id, 4).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json["status"], "success");
    assert_eq!(
        actions(&resp),
        ["deleted", "updated", "patched", "created"],
        "{}",
        resp.text
    );
    let entries = resp.json["data"].as_array().unwrap();
    for entry in entries {
        assert_eq!(entry["actor"]["kind"], "token", "{entry}");
        assert_eq!(entry["actor"]["account_id"], account.id.as_str());
        assert_eq!(entry["actor"]["user_id"], account.user_id.as_str());
        assert!(entry["actor"]["auth_method"].is_string(), "{entry}");
        assert!(entry["request_id"].is_string(), "{entry}");
        assert!(
            entry.get("version").is_none(),
            "listings leave the version out"
        );
    }
    // The patch: d1 added, u1 removed, by id and type, and each as a field change by path.
    let patch = &entries[2];
    assert_eq!(patch["rev_before"], group.revision.as_str());
    assert_eq!(patch["rev_after"], patched.revision());
    assert_eq!(
        patch["members"]["added"],
        json!([{"id": "d1", "type": "device"}])
    );
    assert_eq!(
        patch["members"]["removed"],
        json!([{"id": "u1", "type": "user"}])
    );
    let paths: Vec<Value> = patch["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| json!([c["path"], c["op"]]))
        .collect();
    assert!(
        paths.contains(&json!([["endpoints", "u1"], "removed"])),
        "{paths:?}"
    );
    assert!(
        paths.contains(&json!([["endpoints", "d1"], "added"])),
        "{paths:?}"
    );
    // The update: the name changed, old and new.
    let name = entries[1]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == json!(["name"]))
        .cloned()
        .unwrap();
    assert_eq!(name["old"], "Sales");
    assert_eq!(name["new"], "Sales 2");
    // The created entry starts from nothing.
    assert_eq!(entries[3]["rev_after"], group.revision.as_str());
    assert!(entries[3].get("rev_before").is_none());
}

#[tokio::test]
async fn an_entry_carries_the_version_after_its_change() {
    let (app, account) = setup().await;
    let api = app.with_token(&account.token);
    let group = add(&api, &account, json!({"name": "One"})).await;
    let resp = history_of(&app, &account, &group.id, 1).await;
    let entry_id = resp.listed("id")[0].clone();
    let entry = api
        .request(
            "GET",
            format!("{}/{entry_id}", history_path(&account, &group.id)),
        )
        .send()
        .await;
    assert_eq!(entry.status, 200, "{}", entry.text);
    assert_eq!(entry.json["data"]["version"], group.data);
    assert_eq!(entry.json["data"]["action"], "created");
    let missing = api
        .request(
            "GET",
            format!("{}/000000000009-abc", history_path(&account, &group.id)),
        )
        .send()
        .await;
    assert_eq!(missing.status, 404, "{}", missing.text);
    assert_eq!(missing.json["error"], "404");
}

#[tokio::test]
async fn api_keys_and_parent_accounts_are_recorded_as_who_they_are() {
    let app = TestApp::spawn().await;
    let parent = app.create_account(None).await;
    let child = app.create_account(Some(&parent)).await;
    let login = app.login_with_api_key(&child.api_key).await;
    assert_eq!(login.status, 201, "{}", login.text);
    let key_token = login.auth_token().to_owned();
    let by_key = add(
        &app.with_token(&key_token),
        &child,
        json!({"name": "By key"}),
    )
    .await;
    let by_parent = add(
        &app.with_token(&parent.token),
        &child,
        json!({"name": "By parent"}),
    )
    .await;

    let resp = history_of(&app, &child, &by_key.id, 1).await;
    let actor = &resp.json["data"][0]["actor"];
    assert_eq!(actor["kind"], "token");
    assert_eq!(actor["account_id"], child.id.as_str());
    assert!(
        actor.get("user_id").is_none(),
        "an API key has no user: {actor}"
    );
    assert!(actor["auth_method"].is_string(), "{actor}");

    let resp = history_of(&app, &child, &by_parent.id, 1).await;
    let actor = &resp.json["data"][0]["actor"];
    assert_eq!(actor["account_id"], parent.id.as_str(), "{actor}");
    assert_eq!(actor["user_id"], parent.user_id.as_str(), "{actor}");
}

#[tokio::test]
async fn history_outlives_a_hard_delete_and_is_refused_across_accounts() {
    let (app, account) = setup().await;
    let other = app.create_account(None).await;
    let api = app.with_token(&account.token);
    let group = add(&api, &account, json!({"name": "Gone"})).await;
    assert_eq!(api.hard_delete_group(&account, &group.id).await.status, 200);
    let resp = history_of(&app, &account, &group.id, 2).await;
    assert_eq!(actions(&resp), ["hard_deleted", "created"], "{}", resp.text);

    // Another account's token is refused as it is for the group itself.
    let theirs = app
        .with_token(&other.token)
        .request("GET", history_path(&account, &group.id))
        .send()
        .await;
    let group_answer = app
        .with_token(&other.token)
        .get_group(&account, &group.id)
        .await;
    assert_eq!(theirs.status, group_answer.status, "{}", theirs.text);
    assert!(
        theirs.status == 403 || theirs.status == 401,
        "{}",
        theirs.text
    );
    let account_wide = app
        .with_token(&other.token)
        .request("GET", format!("{}/_account/history", account.groups_path()))
        .send()
        .await;
    assert_eq!(account_wide.status, theirs.status, "{}", account_wide.text);
    // A group that never existed is Crossbar's 404 for a group it cannot load.
    let never = api
        .request("GET", history_path(&account, "nosuchgroup"))
        .send()
        .await;
    assert_eq!(never.status, 404, "{}", never.text);
    assert_eq!(never.json["message"], "bad_identifier", "{}", never.text);
}

#[tokio::test]
async fn paging_is_newest_first_with_crossbars_keys() {
    let (app, account) = setup().await;
    let api = app.with_token(&account.token);
    let group = add(&api, &account, json!({"name": "n0"})).await;
    for n in 1..5 {
        let resp = api
            .update_group(&account, &group.id, json!({"name": format!("n{n}")}))
            .await;
        assert_eq!(resp.status, 200);
    }
    let all = history_of(&app, &account, &group.id, 5).await;
    let ids = all.listed("id");
    assert_eq!(ids.len(), 5);
    let first = api
        .request(
            "GET",
            format!("{}?page_size=2", history_path(&account, &group.id)),
        )
        .send()
        .await;
    assert_eq!(first.listed("id"), ids[..2]);
    assert_eq!(first.json["page_size"], 2);
    let next = first.json["next_start_key"].as_str().unwrap().to_owned();
    assert_eq!(next, ids[2]);
    let second = api
        .request(
            "GET",
            format!(
                "{}?page_size=2&start_key={next}",
                history_path(&account, &group.id)
            ),
        )
        .send()
        .await;
    assert_eq!(second.listed("id"), ids[2..4]);
    assert_eq!(second.json["start_key"], next.as_str());
    let bad = api
        .request(
            "GET",
            format!("{}?page_size=0", history_path(&account, &group.id)),
        )
        .send()
        .await;
    assert_eq!(bad.status, 404, "{}", bad.text);
}

#[tokio::test]
async fn the_account_history_is_filtered_by_action_and_time() {
    let (app, account) = setup().await;
    let api = app.with_token(&account.token);
    let a = add(&api, &account, json!({"name": "A"})).await;
    let b = add(&api, &account, json!({"name": "B"})).await;
    api.update_group(&account, &a.id, json!({"name": "A2"}))
        .await;
    history_of(&app, &account, &a.id, 2).await;
    history_of(&app, &account, &b.id, 1).await;
    let path = format!("{}/_account/history", account.groups_path());
    let all = api.request("GET", &path).send().await;
    assert_eq!(all.status, 200, "{}", all.text);
    assert_eq!(all.listed("group_id").len(), 3, "{}", all.text);
    let created = api
        .request("GET", format!("{path}?action=created"))
        .send()
        .await;
    let mut groups = created.listed("group_id");
    groups.sort();
    let mut expected = vec![a.id.clone(), b.id.clone()];
    expected.sort();
    assert_eq!(groups, expected, "{}", created.text);
    let paged = api
        .request("GET", format!("{path}?page_size=1&action=created"))
        .send()
        .await;
    assert_eq!(paged.listed("group_id").len(), 1);
    let next = paged.json["next_start_key"].as_str().unwrap();
    let rest = api
        .request(
            "GET",
            format!("{path}?page_size=5&action=created&start_key={next}"),
        )
        .send()
        .await;
    assert_eq!(rest.listed("group_id").len(), 1, "{}", rest.text);
    assert!(rest.json.get("next_start_key").is_none());
    let future = api
        .request("GET", format!("{path}?created_from=99999999999"))
        .send()
        .await;
    assert_eq!(future.listed("group_id").len(), 0, "{}", future.text);
}

#[tokio::test]
async fn a_restore_round_trips_and_a_stale_revision_is_a_conflict() {
    let (app, account) = setup().await;
    let api = app.with_token(&account.token);
    let group = add(
        &api,
        &account,
        json!({"name": "Before", "endpoints": {"u1": {"type": "user"}}}),
    )
    .await;
    let changed = api
        .update_group(&account, &group.id, json!({"name": "After"}))
        .await;
    let resp = history_of(&app, &account, &group.id, 2).await;
    let created_entry = resp.listed("id")[1].clone();
    let restore = format!(
        "{}/{created_entry}/restore",
        history_path(&account, &group.id)
    );
    let stale = api
        .request("PUT", &restore)
        .json(&json!({"data": {"rev": group.revision}}))
        .send()
        .await;
    assert_eq!(stale.status, 409, "{}", stale.text);
    let restored = api
        .request("PUT", &restore)
        .json(&json!({"data": {"rev": changed.revision()}}))
        .send()
        .await;
    assert_eq!(restored.status, 200, "{}", restored.text);
    assert_eq!(restored.json["data"], group.data);
    let now = api.get_group(&account, &group.id).await;
    assert_eq!(now.json["data"], group.data);
    assert_eq!(now.revision(), restored.revision());
    let resp = history_of(&app, &account, &group.id, 3).await;
    assert_eq!(actions(&resp), ["restored", "updated", "created"]);
    assert_eq!(resp.json["data"][0]["rev_before"], changed.revision());

    // A hard-deleted group comes back by a restore too (POST works as PUT).
    assert_eq!(api.hard_delete_group(&account, &group.id).await.status, 200);
    let back = api
        .request("POST", &restore)
        .json(&json!({"data": {}}))
        .send()
        .await;
    assert_eq!(back.status, 200, "{}", back.text);
    assert_eq!(
        api.get_group(&account, &group.id).await.json["data"],
        group.data
    );
}

/// `GET` of a group's history from a base URL (a server process), once it holds `n` entries.
async fn history_at(base: &str, account: &Account, group: &str, n: usize) -> Value {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let resp = client
            .get(format!("{base}{}", history_path(account, group)))
            .header("X-Auth-Token", &account.token)
            .send()
            .await;
        let body: Value = match resp {
            Ok(resp) => resp.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        let count = body["data"].as_array().map_or(0, Vec::len);
        if count >= n || Instant::now() > deadline {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A group created through the API, then changed as Kazoo or a script would: straight into the
/// account database (a member added, the name changed).
async fn changed_behind_the_back(app: &TestApp, account: &Account) -> Group {
    let api = app.with_token(&account.token);
    let group = add(&api, account, json!({"name": "Inside"})).await;
    history_of(app, account, &group.id, 1).await;
    app.amend_doc(
        account,
        &group.id,
        json!({"name": "Outside", "endpoints": {"u9": {"type": "user"}}}),
    )
    .await;
    group
}

#[tokio::test]
async fn a_change_written_behind_kz_groups_back_is_recorded_as_outside() {
    let (app, account) = setup().await;
    let group = changed_behind_the_back(&app, &account).await;
    let resp = history_of(&app, &account, &group.id, 2).await;
    assert_eq!(actions(&resp), ["changed", "created"], "{}", resp.text);
    let entry = &resp.json["data"][0];
    assert_eq!(entry["actor"], json!({"kind": "outside"}), "{entry}");
    assert_eq!(entry["rev_before"], group.revision.as_str());
    assert_eq!(
        entry["members"]["added"],
        json!([{"id": "u9", "type": "user"}])
    );
    let name = entry["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == json!(["name"]))
        .cloned()
        .unwrap_or_default();
    assert_eq!(name["new"], "Outside", "{entry}");
    // Recorded once, whoever else reads the feed later.
    crate::helpers::history_feed_caught_up(app.base()).await;
    let again = history_of(&app, &account, &group.id, 2).await;
    assert_eq!(again.listed("id").len(), 2, "{}", again.text);
}

#[tokio::test]
async fn a_change_behind_kz_groups_back_written_over_at_once_keeps_its_own_entry() {
    let (app, account) = setup().await;
    let api = app.with_token(&account.token);
    let group = changed_behind_the_back(&app, &account).await;
    // Written over before any feed read could see it: the feeds show the latest revision only.
    let patched = crate::helpers::eventually(
        || api.patch_group(&account, &group.id, json!({"name": "Inside again"})),
        |resp| resp.status == 200,
    )
    .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    let resp = history_of(&app, &account, &group.id, 3).await;
    assert_eq!(
        actions(&resp),
        ["patched", "changed", "created"],
        "{}",
        resp.text
    );
    let outside = &resp.json["data"][1];
    assert_eq!(outside["actor"], json!({"kind": "outside"}), "{outside}");
    assert_eq!(outside["rev_before"], group.revision.as_str(), "{outside}");
    assert_eq!(
        outside["members"]["added"],
        json!([{"id": "u9", "type": "user"}]),
        "{outside}"
    );
    assert_eq!(resp.json["data"][0]["rev_before"], outside["rev_after"]);
    // Once: the feed follower finds the entry there.
    crate::helpers::history_feed_caught_up(app.base()).await;
    let again = history_of(&app, &account, &group.id, 3).await;
    assert_eq!(again.listed("id").len(), 3, "{}", again.text);
}

#[tokio::test]
async fn changes_made_while_kz_groups_was_killed_are_recovered_from_the_feed() {
    use crate::helpers::process::ServerProcess;
    let (app, account) = setup().await;
    let backend = app.config.backend.clone();
    let first = ServerProcess::start(&backend, &[]);
    let created = reqwest::Client::new()
        .put(format!("{}{}", first.base(), account.groups_path()))
        .header("X-Auth-Token", &account.token)
        .json(&json!({"data": {"name": "Before the crash"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let group = created["data"]["id"].as_str().unwrap().to_owned();
    let body = history_at(&first.base(), &account, &group, 1).await;
    assert_eq!(body["data"].as_array().map_or(0, Vec::len), 1, "{body}");
    // The follower has read the database and kept its checkpoint.
    crate::helpers::history_feed_caught_up(&first.base()).await;
    first.kill();
    // A change whose entry never got written: made while no instance records.
    app.amend_doc(&account, &group, json!({"name": "During the outage"}))
        .await;
    let second = ServerProcess::start(&backend, &[]);
    let body = history_at(&second.base(), &account, &group, 2).await;
    let entries = body["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 2, "{body}");
    assert_eq!(entries[0]["action"], "changed");
    let kind = entries[0]["actor"]["kind"].as_str().unwrap_or("");
    assert!(kind == "unknown" || kind == "outside", "{body}");
    assert_eq!(entries[1]["action"], "created");
    second.kill();
}

#[tokio::test]
async fn the_command_line_prints_a_history_as_json_lines() {
    use crate::helpers::cli;
    let (app, account) = setup().await;
    let api = app.with_token(&account.token);
    let group = add(&api, &account, json!({"name": "Cli"})).await;
    api.update_group(&account, &group.id, json!({"name": "Cli 2"}))
        .await;
    history_of(&app, &account, &group.id, 2).await;
    let backend = app.config.backend.clone();
    let lines = |args: &[&str]| -> Vec<Value> {
        let out = cli::command(&backend, args)
            .output()
            .expect("kz-groups runs");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    };
    let of_group = lines(&["history", "--account", &account.id, "--group", &group.id]);
    let actions: Vec<&str> = of_group
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["updated", "created"]);
    assert_eq!(of_group[0]["version"]["name"], "Cli 2");
    let of_account = lines(&["history", "--account", &account.id]);
    assert_eq!(of_account.len(), 2);
    let later = lines(&[
        "history",
        "--account",
        &account.id,
        "--since",
        "2999-01-01T00:00:00Z",
    ]);
    assert!(later.is_empty());
}

#[tokio::test]
async fn pruning_keeps_the_newest_entries_of_each_group_and_drops_the_old_ones() {
    use kz_groups::domain::ids::{AccountId, DocId};
    let (app, account) = setup().await;
    let api = app.with_token(&account.token);
    let group = add(&api, &account, json!({"name": "p0"})).await;
    for n in 1..4 {
        api.update_group(&account, &group.id, json!({"name": format!("p{n}")}))
            .await;
    }
    let all = history_of(&app, &account, &group.id, 4).await.listed("id");
    let store = kz_groups::history::open_store(&app.config).unwrap();
    let key = (
        AccountId::parse(&account.id).unwrap(),
        DocId::parse(&group.id).unwrap(),
    );
    // At most 2 a group: the 2 oldest go.
    let removed = store.prune(0, std::slice::from_ref(&key), 2).await.unwrap();
    assert_eq!(removed, 2);
    let left = history_of(&app, &account, &group.id, 0).await.listed("id");
    assert_eq!(left, all[..2]);
    // Older than a time far ahead: everything goes (on a store of this test's own: the
    // CouchDB's history is every test's).
    if !crate::helpers::embedded_backend() {
        return;
    }
    let removed = store.prune(i64::MAX / 2, &[], 2).await.unwrap();
    assert!(removed >= 2, "{removed}");
    let left = history_of(&app, &account, &group.id, 0).await;
    assert_eq!(left.listed("id").len(), 0, "{}", left.text);
}
