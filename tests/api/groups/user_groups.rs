//! `/v2/accounts/{account}/users/{user}/groups`: the groups a user is a member of, and the
//! create that route also accepts.
use serde_json::json;

use super::{setup, UNKNOWN};

/// #58, #59.
#[tokio::test]
async fn user_groups_lists_only_user_endpoint_memberships_and_404s_unknown_users() {
    let (app, a) = setup().await;
    let u = a.user_id.clone();
    app.add_group(
        &a,
        json!({"name": "Member", "endpoints": {u.clone(): {"type": "user"}}}),
    )
    .await;
    app.add_group(
        &a,
        json!({"name": "AsDevice", "endpoints": {u.clone(): {"type": "device"}}}),
    )
    .await;
    app.add_group(&a, json!({"name": "Other"})).await;
    let resp = app.list_user_groups(&a, &u, "").await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.listed("name"), ["Member"]);
    let resp = app.list_user_groups(&a, UNKNOWN, "").await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.json["data"]["cause"], UNKNOWN);
}

#[tokio::test]
async fn user_groups_paging_reaches_every_group_once() {
    let (app, a) = setup().await;
    let u = a.user_id.clone();
    let mut ids = Vec::new();
    for i in 0..5 {
        let group = app
            .add_group(
                &a,
                json!({"name": format!("M{i}"), "endpoints": {u.clone(): {"type": "user"}}}),
            )
            .await;
        ids.push(group.id);
    }
    ids.sort();
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..5 {
        let query = match &next {
            Some(k) => format!("page_size=2&start_key={k}"),
            None => "page_size=2".to_owned(),
        };
        let resp = app.list_user_groups(&a, &u, &query).await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        seen.extend(resp.listed("id"));
        next = resp.json["next_start_key"].as_str().map(str::to_owned);
        if next.is_none() {
            break;
        }
    }
    assert_eq!(seen, ids);
}

#[tokio::test]
async fn put_on_the_user_route_creates_an_ordinary_group_with_a_user_location() {
    let (app, a) = setup().await;
    let path = a.user_groups_path(&a.user_id);
    let resp = app
        .with_token(&a.token)
        .request("PUT", &path)
        .json(&json!({"data": {"name": "x"}}))
        .send()
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    assert_eq!(
        resp.header("location").unwrap(),
        format!("{path}/{}", resp.id())
    );
    assert_eq!(resp.json["data"]["endpoints"], json!({}));
}
