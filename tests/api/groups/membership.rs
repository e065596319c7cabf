//! The membership insight (issue 19): Kazoo-shaped users, devices, groups and callflows seeded
//! straight into the account's database, and each answer checked against the traced rules of
//! `../shared/kazoo/membership.md` (section named in each test's comment).
use std::collections::BTreeSet;

use kz_groups::domain::ids::random_hex;
use serde_json::{json, Value};

use super::setup;
use crate::helpers::bus::{amqp_url, db_word, Listener};
use crate::helpers::{cli, generation, Account, Response, TestApp};

fn id() -> String {
    random_hex(16)
}

/// Seeds documents into one account's database as Kazoo stores them.
struct Seed<'a> {
    app: &'a TestApp,
    account: &'a Account,
}

impl<'a> Seed<'a> {
    fn new(app: &'a TestApp, account: &'a Account) -> Self {
        Self { app, account }
    }

    async fn put(&self, id: &str, doc: Value) -> String {
        self.app.write_doc(self.account, id, doc).await
    }

    async fn user(&self, fields: Value) -> String {
        let id = id();
        let mut doc = json!({"pvt_type": "user", "first_name": "User", "last_name": &id[..6],
                             "username": format!("u{}", &id[..8]), "enabled": true});
        merge(&mut doc, fields);
        self.put(&id, doc).await;
        id
    }

    async fn device(&self, owner: Option<&str>, fields: Value) -> String {
        let id = id();
        let mut doc = json!({"pvt_type": "device", "name": format!("Phone {}", &id[..6]),
                             "device_type": "sip_device", "enabled": true,
                             "sip": {"username": format!("s{}", &id[..8]), "method": "password"}});
        if let Some(owner) = owner {
            doc["owner_id"] = json!(owner);
        }
        merge(&mut doc, fields);
        self.put(&id, doc).await;
        id
    }

    async fn group(&self, endpoints: Value, fields: Value) -> String {
        let id = id();
        let mut doc = json!({"pvt_type": "group", "name": format!("Group {}", &id[..6]),
                             "endpoints": endpoints, "music_on_hold": {}});
        merge(&mut doc, fields);
        self.put(&id, doc).await;
        id
    }

    async fn callflow(&self, fields: Value) -> String {
        let id = id();
        let mut doc = json!({"pvt_type": "callflow", "name": format!("Flow {}", &id[..6]),
                             "numbers": [format!("{}", 1000 + (id.as_bytes()[0] as u32))],
                             "patterns": []});
        merge(&mut doc, fields);
        self.put(&id, doc).await;
        id
    }

    async fn get(&self, path: &str) -> Response {
        let full = format!("{}/{path}", self.account.groups_path());
        self.app
            .with_token(&self.account.token)
            .request("GET", full)
            .send()
            .await
    }
}

fn merge(doc: &mut Value, fields: Value) {
    if let Value::Object(fields) = fields {
        for (k, v) in fields {
            doc[k] = v;
        }
    }
}

/// A node of an answer's member tree, found by id anywhere in it.
fn node<'a>(nodes: &'a Value, id: &str) -> &'a Value {
    fn find<'a>(nodes: &'a Value, id: &str) -> Option<&'a Value> {
        for n in nodes.as_array()? {
            if n["id"] == id {
                return Some(n);
            }
            for sub in ["devices", "members"] {
                if let Some(found) = find(&n[sub], id) {
                    return Some(found);
                }
            }
        }
        None
    }
    find(nodes, id).unwrap_or_else(|| panic!("no node {id} in {nodes}"))
}

fn leg_ids(body: &Value) -> BTreeSet<String> {
    body["data"]["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["device_id"].as_str().unwrap().to_owned())
        .collect()
}

fn note_codes(body: &Value) -> Vec<String> {
    body["data"]["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["code"].as_str().unwrap().to_owned())
        .collect()
}

/// §3.2-§3.7: users expanded through attributes/owned (hotdesk owners included, deleted,
/// disabled and missing users' devices ringing), devices dropped for being missing, deleted,
/// disabled, on do-not-disturb or of an unknown type, a soft-deleted nested group expanding and
/// a missing one adding nothing.
#[tokio::test]
async fn ringing_follows_the_traced_rules_for_every_kind_of_member() {
    let (app, account) = setup().await;
    let s = Seed::new(&app, &account);
    let u_ok = s.user(json!({})).await;
    let d_ok = s.device(Some(&u_ok), json!({})).await;
    let u_hd = s.user(json!({})).await;
    // Owned by u_ok, but hotdesked by u_hd: attributes/owned gives it to u_hd only.
    let d_hot = s
        .device(
            Some(&u_ok),
            json!({"hotdesk": {"users": {u_hd.clone(): {}}}}),
        )
        .await;
    let u_del = s.user(json!({"pvt_deleted": true})).await;
    let d_u_del = s.device(Some(&u_del), json!({})).await;
    let u_dis = s.user(json!({"enabled": false})).await;
    let d_u_dis = s.device(Some(&u_dis), json!({})).await;
    let u_gone = id();
    let d_u_gone = s.device(Some(&u_gone), json!({})).await;
    let d_off = s.device(None, json!({"enabled": false})).await;
    let d_dnd = s
        .device(None, json!({"do_not_disturb": {"enabled": true}}))
        .await;
    let d_unknown = s
        .device(None, json!({"device_type": "toaster", "sip": null}))
        .await;
    let d_gone = id();
    let d_del = s.device(Some(&u_ok), json!({"pvt_deleted": true})).await;
    let d_nested = s.device(None, json!({})).await;
    let h = s
        .group(
            json!({d_nested.clone(): {"type": "device"}}),
            json!({"pvt_deleted": true}),
        )
        .await;
    let i_gone = id();
    let g = s
        .group(
            json!({
                u_ok.clone(): {"type": "user"}, u_hd.clone(): {"type": "user"},
                u_del.clone(): {"type": "user"}, u_dis.clone(): {"type": "user"},
                u_gone.clone(): {"type": "user"}, d_off.clone(): {"type": "device"},
                d_dnd.clone(): {"type": "device"}, d_unknown.clone(): {"type": "device"},
                d_gone.clone(): {"type": "device"}, d_del.clone(): {"type": "device"},
                h.clone(): {"type": "group"}, i_gone.clone(): {"type": "group"}
            }),
            json!({}),
        )
        .await;

    let resp = s.get(&format!("{g}/ringing")).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let body = &resp.json;
    assert_eq!(body["status"], "success");
    let data = &body["data"];
    assert_eq!(data["outcome"], "rings");
    assert_eq!(data["group"]["id"], g.as_str());
    assert_eq!(data["ring_group"]["strategy"], "simultaneous");
    let expected: BTreeSet<String> = [&d_ok, &d_hot, &d_u_del, &d_u_dis, &d_u_gone, &d_nested]
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(leg_ids(body), expected);
    let members = &data["members"];
    // Users: the devices attributes/owned gives, whatever the user's document says.
    let devices = |user: &str| -> Vec<String> {
        node(members, user)["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        devices(&u_ok),
        [d_ok.as_str()],
        "hotdesked and deleted devices are not u_ok's"
    );
    assert_eq!(devices(&u_hd), [d_hot.as_str()]);
    assert_eq!(node(members, &u_del)["document"]["state"], "soft_deleted");
    assert_eq!(node(members, &u_dis)["document"]["enabled"], false);
    assert_eq!(node(members, &u_gone)["document"]["state"], "missing");
    for d in [&d_u_del, &d_u_dis, &d_u_gone] {
        assert_eq!(node(members, d)["ring"]["rings"], true, "{d}");
    }
    assert_eq!(node(members, &d_ok)["ring"]["legs"], json!(["sip"]));
    assert_eq!(
        node(members, &d_hot)["document"]["hotdesk_users"],
        json!([u_hd])
    );
    // Devices that ring nothing, and why.
    for (device, reason) in [
        (&d_off, "endpoint_disabled"),
        (&d_dnd, "do_not_disturb"),
        (&d_unknown, "unknown_endpoint_type"),
        (&d_gone, "not_found"),
        (&d_del, "endpoint_deleted"),
    ] {
        let ring = &node(members, device)["ring"];
        assert_eq!(ring["rings"], false, "{device}");
        assert_eq!(ring["reason"], reason, "{device}");
    }
    assert_eq!(
        node(members, &d_dnd)["ring"]["do_not_disturb"],
        json!(["device"])
    );
    // Nested groups: a soft-deleted one expands, a missing one adds nothing.
    assert_eq!(node(members, &h)["document"]["state"], "soft_deleted");
    assert_eq!(node(members, &d_nested)["ring"]["rings"], true);
    assert_eq!(node(members, &i_gone)["members"], json!([]));
    let notes = note_codes(body);
    for code in [
        "user_not_checked",
        "deleted_group_expands",
        "hotdesk_owners",
        "caller_excluded",
    ] {
        assert!(notes.contains(&code.to_owned()), "{code} in {notes:?}");
    }
    assert_eq!(data["cycles"], json!([]));
    assert_eq!(data["truncated"], false);
}

/// §3.3: nothing guards against a cycle; it is reported and not followed, and the answer says
/// the call never rings.
#[tokio::test]
async fn a_cycle_of_nested_groups_is_reported_not_followed() {
    let (app, account) = setup().await;
    let s = Seed::new(&app, &account);
    let d = s.device(None, json!({})).await;
    let (g, h) = (id(), id());
    s.put(
        &g,
        json!({"pvt_type": "group", "name": "G", "endpoints": {h.clone(): {"type": "group"}, d.clone(): {"type": "device"}}}),
    )
    .await;
    s.put(
        &h,
        json!({"pvt_type": "group", "name": "H", "endpoints": {g.clone(): {}}}),
    )
    .await;
    let resp = s.get(&format!("{g}/ringing")).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let data = &resp.json["data"];
    assert_eq!(data["outcome"], "never_resolves");
    assert_eq!(data["cycles"], json!([[g, h, g]]));
    assert_eq!(data["legs"], json!([]));
    assert!(note_codes(&resp.json).contains(&"cycle".to_owned()));
    // The loop's closing member names the loop.
    assert_eq!(
        node(&data["members"], &h)["members"][0]["cycle"],
        json!([g, h, g])
    );
}

/// §3.1-§3.3, §8: a callflow's `ring_group` node, with its strategy, weights, delays and
/// timeouts; a SmartPBX callflow linked by `group_id` rings its own members.
#[tokio::test]
async fn ringing_as_a_callflows_ring_group_node_would() {
    let (app, account) = setup().await;
    let s = Seed::new(&app, &account);
    let (da, db, dc, dd) = (
        s.device(None, json!({})).await,
        s.device(None, json!({})).await,
        s.device(None, json!({})).await,
        s.device(None, json!({})).await,
    );
    let g = s
        .group(
            json!({da.clone(): {"type": "device", "weight": 10}, db.clone(): {"type": "device"},
                   dc.clone(): {"type": "device", "weight": 5}}),
            json!({}),
        )
        .await;
    let c = s
        .callflow(
            json!({"flow": {"module": "play", "data": {}, "children": {"_": {
            "module": "ring_group", "data": {"strategy": "single", "timeout": 30, "endpoints": [
                {"id": g, "endpoint_type": "group"},
                {"id": dd, "endpoint_type": "device", "delay": 5, "timeout": 15}]}}}}}),
        )
        .await;
    let resp = s.get(&format!("{g}/ringing?callflow_id={c}")).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let data = &resp.json["data"];
    assert_eq!(data["ring_group"]["callflow_id"], c.as_str());
    assert_eq!(data["ring_group"]["path"], json!(["_"]));
    assert_eq!(data["ring_group"]["strategy"], "single");
    assert_eq!(data["ring_group"]["timeout"], 30);
    // single: the group's weighted entries by weight, then the next member; no re-sort.
    let legs: Vec<(String, i64, i64)> = data["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["device_id"].as_str().unwrap().to_owned(),
                l["delay"].as_i64().unwrap(),
                l["timeout"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        legs,
        [
            (dc.clone(), 0, 20),
            (da.clone(), 0, 20),
            (dd.clone(), 5, 15)
        ]
    );
    assert_eq!(
        node(&data["members"], &g)["dropped"],
        json!([{"id": db, "reason": "no_weight"}])
    );
    assert!(note_codes(&resp.json).contains(&"single_keeps_weighted".to_owned()));

    // SmartPBX: the baseGroup callflow's ring_group lists users; the group doc is not read.
    let u = s.user(json!({})).await;
    let du = s.device(Some(&u), json!({})).await;
    let smart = s.group(json!({}), json!({})).await;
    let base = s
        .callflow(
            json!({"type": "baseGroup", "group_id": smart, "flow": {"module": "ring_group",
            "data": {"strategy": "simultaneous", "timeout": 20, "endpoints": [
                {"id": u, "endpoint_type": "user", "delay": "0", "timeout": "20"}]}}}),
        )
        .await;
    let resp = s.get(&format!("{smart}/ringing?callflow_id={base}")).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(leg_ids(&resp.json), BTreeSet::from([du.clone()]));
    // Without the callflow, the group's own (empty) endpoints ring nothing.
    let resp = s.get(&format!("{smart}/ringing")).await;
    assert_eq!(resp.json["data"]["outcome"], "no_endpoints");

    // A callflow that is missing or deleted is Crossbar's 404; one without the node a 400.
    let deleted = s
        .callflow(json!({"pvt_deleted": true, "group_id": smart}))
        .await;
    for missing in [id(), deleted] {
        let resp = s.get(&format!("{g}/ringing?callflow_id={missing}")).await;
        assert_eq!(resp.status, 404, "{}", resp.text);
        assert_eq!(resp.json["message"], "bad_identifier");
        assert_eq!(resp.json["data"]["cause"], missing.as_str());
    }
    let resp = s.get(&format!("{g}/ringing?callflow_id={base}")).await;
    assert_eq!(resp.status, 400, "{}", resp.text);
    assert_eq!(resp.json["message"], "validation error");
    assert!(resp.json["data"]["callflow_id"]["invalid"].is_object());
}

/// The dangling report of one group and of the whole account: gone members (fixable),
/// disabled users whose devices ring, devices that never ring, gone nested groups.
#[tokio::test]
async fn dangling_members_of_a_group_and_of_the_account() {
    let (app, account) = setup().await;
    let s = Seed::new(&app, &account);
    let u_ok = s.user(json!({})).await;
    s.device(Some(&u_ok), json!({})).await;
    let u_gone = id();
    let d_u_gone = s.device(Some(&u_gone), json!({})).await;
    let u_del = s.user(json!({"pvt_deleted": true})).await;
    let u_dis = s.user(json!({"enabled": false})).await;
    let d_u_dis = s.device(Some(&u_dis), json!({})).await;
    let d_unknown = s
        .device(Some(&u_ok), json!({"device_type": "x", "sip": {}}))
        .await;
    let d_off = s.device(None, json!({"enabled": false})).await;
    let nested_gone = id();
    let g = s
        .group(
            json!({u_ok.clone(): {"type": "user"}, u_gone.clone(): {"type": "user"},
                   u_del.clone(): {"type": "user"}, u_dis.clone(): {"type": "user"},
                   d_off.clone(): {"type": "device"}, nested_gone.clone(): {"type": "group"}}),
            json!({}),
        )
        .await;
    let u_clean = s.user(json!({})).await;
    s.device(Some(&u_clean), json!({})).await;
    let clean = s
        .group(json!({u_clean.clone(): {"type": "user"}}), json!({}))
        .await;

    let resp = s.get(&format!("{g}/dangling")).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let findings: Vec<(String, String, bool)> = resp.json["data"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap().to_owned(),
                f["problem"].as_str().unwrap().to_owned(),
                f["fixable"].as_bool().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, String, bool)> = vec![
        (d_unknown.clone(), "device_never_rings".into(), false),
        (u_gone.clone(), "missing".into(), true),
        (u_del.clone(), "soft_deleted".into(), true),
        (u_dis.clone(), "user_disabled".into(), false),
        (d_off.clone(), "device_never_rings".into(), false),
        (nested_gone.clone(), "missing".into(), true),
    ];
    assert_eq!(
        findings.iter().cloned().collect::<BTreeSet<_>>(),
        expected.into_iter().collect::<BTreeSet<_>>()
    );
    let finding = |id: &str| -> Value {
        resp.json["data"]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(finding(&u_gone)["devices_still_ringing"], json!([d_u_gone]));
    assert_eq!(finding(&u_dis)["devices_still_ringing"], json!([d_u_dis]));
    assert_eq!(finding(&d_unknown)["via"], u_ok.as_str());
    assert_eq!(finding(&d_unknown)["reason"], "unknown_endpoint_type");
    assert_eq!(finding(&d_off)["reason"], "endpoint_disabled");

    let resp = s.get(&format!("{clean}/dangling")).await;
    assert_eq!(resp.json["data"]["findings"], json!([]));

    let resp = s.get("_account/dangling").await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let data = &resp.json["data"];
    assert_eq!(data["groups_checked"], 2);
    let groups = data["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "only the group with findings: {data}");
    assert_eq!(groups[0]["id"], g.as_str());
    assert_eq!(groups[0]["findings"].as_array().unwrap().len(), 6);
}

/// §7: every kind of callflow reference, direct (rules 1-6, skipped nodes marked) and
/// indirect (a `callflow` node, a pickup feature), and the groups that nest the group; a
/// deleted callflow and a device-typed entry of the same id are not references.
#[tokio::test]
async fn references_list_every_callflow_and_group_that_points_at_a_group() {
    let (app, account) = setup().await;
    let s = Seed::new(&app, &account);
    let g = s.group(json!({}), json!({})).await;
    let u = s.user(json!({})).await;
    let base = s
        .callflow(
            json!({"type": "baseGroup", "group_id": g, "flow": {"module": "ring_group",
            "data": {"endpoints": [{"id": u, "endpoint_type": "user"}]}}}),
        )
        .await;
    let root = s
        .callflow(
            json!({"flow": {"module": "ring_group", "data": {"endpoints": [
            {"id": g, "endpoint_type": "group"}]}}}),
        )
        .await;
    let deep = s
        .callflow(json!({"flow": {"module": "play", "data": {}, "children": {
            "_": {"module": "page_group", "data": {"endpoints": [{"id": "x"},
                  {"id": g, "endpoint_type": "group"}]}},
            "1": {"module": "group", "data": {"id": g, "skip_module": true}}}}}))
        .await;
    let features = s
        .callflow(
            json!({"flow": {"module": "group_pickup", "data": {"approved_group_id": g},
            "children": {"_": {"module": "intercept", "data": {"group_id": g}, "children": {
                "_": {"module": "eavesdrop_feature", "data": {"group_id": g}, "children": {
                    "_": {"module": "intercept_feature", "data": {"approved_group_id": g},
                          "children": {"_": {"module": "eavesdrop",
                                             "data": {"approved_group_id": g}}}}}}}}}}}),
        )
        .await;
    let user_group = s
        .callflow(json!({"type": "userGroup", "flow": {"module": "callflow",
            "data": {"id": base}}}))
        .await;
    let pickup = s
        .callflow(
            json!({"flow": {"module": "group_pickup_feature", "data": {"type": "extension"}}}),
        )
        .await;
    s.callflow(json!({"pvt_deleted": true, "group_id": g}))
        .await;
    s.callflow(
        json!({"flow": {"module": "ring_group", "data": {"endpoints": [
        {"id": g, "endpoint_type": "device"}]}}}),
    )
    .await;
    let nesting = s
        .group(json!({g.clone(): {"type": "group"}}), json!({}))
        .await;

    let resp = s.get(&format!("{g}/references")).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let data = &resp.json["data"];
    assert_eq!(data["callflows_checked"], 7);
    let refs = |list: &Value, cf: &str| -> Vec<(Value, Value, String, bool)> {
        list.as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == cf)
            .unwrap_or_else(|| panic!("{cf} not in {list}"))["references"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["module"].clone(),
                    r["path"].clone(),
                    r["field"].as_str().unwrap().to_owned(),
                    r["skipped"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    let direct = &data["callflows"];
    assert_eq!(direct.as_array().unwrap().len(), 4, "{direct}");
    assert_eq!(
        refs(direct, &base),
        [(Value::Null, Value::Null, "group_id".into(), false)]
    );
    assert_eq!(
        refs(direct, &root),
        [(
            json!("ring_group"),
            json!([]),
            "data.endpoints.0".into(),
            false
        )]
    );
    // Children are walked in stored order, which a JavaScript server changes for "1".
    let mut deep_refs = refs(direct, &deep);
    deep_refs.sort_by_key(|r| r.2.clone());
    assert_eq!(
        deep_refs,
        [
            (
                json!("page_group"),
                json!(["_"]),
                "data.endpoints.1".into(),
                false
            ),
            (json!("group"), json!(["1"]), "data.id".into(), true),
        ]
    );
    assert_eq!(
        refs(direct, &features),
        [
            (
                json!("group_pickup"),
                json!([]),
                "data.approved_group_id".into(),
                false
            ),
            (
                json!("intercept"),
                json!(["_"]),
                "data.group_id".into(),
                false
            ),
            (
                json!("eavesdrop_feature"),
                json!(["_", "_"]),
                "data.group_id".into(),
                false
            ),
            (
                json!("intercept_feature"),
                json!(["_", "_", "_"]),
                "data.approved_group_id".into(),
                false
            ),
            (
                json!("eavesdrop"),
                json!(["_", "_", "_", "_"]),
                "data.approved_group_id".into(),
                false
            ),
        ]
    );
    let indirect = &data["indirect"];
    let kinds: BTreeSet<(String, String)> = indirect
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            (user_group.clone(), "callflow".to_owned()),
            (pickup.clone(), "group_pickup_feature".to_owned()),
        ])
    );
    let via = indirect
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == user_group.as_str())
        .unwrap();
    assert_eq!(via["references"][0]["target"], base.as_str());
    assert_eq!(
        data["groups"],
        json!([{"id": nesting, "name": data["groups"][0]["name"], "entry": {"type": "group"}}])
    );
}

/// Issue 19 §5: Kazoo's own design documents are read where they exist and never written.
#[tokio::test]
async fn kazoos_views_are_read_where_they_exist_and_never_written() {
    let (app, account) = setup().await;
    let s = Seed::new(&app, &account);
    let owned = json!({"_id": "_design/attributes", "language": "javascript", "views": {"owned": {"map":
        "function(doc) { if (doc.pvt_deleted) return; var hd = (doc.hotdesk && doc.hotdesk.users) || {}; var users = Object.keys(hd); if (users.length) { users.forEach(function(u) { emit([u, doc.pvt_type], doc._id); }); } else if (doc.owner_id) { emit([doc.owner_id, doc.pvt_type], doc._id); } }"}}});
    let callflows = json!({"_id": "_design/callflows", "language": "javascript", "views": {"crossbar_listing": {"map":
        "function(doc) { if (doc.pvt_type != 'callflow' || doc.pvt_deleted) return; emit(doc._id, {id: doc._id, name: doc.name}); }"}}});
    let owned_rev = app.put_design_doc(&account, "attributes", owned).await;
    let callflows_rev = app.put_design_doc(&account, "callflows", callflows).await;
    let u = s.user(json!({})).await;
    let d = s.device(Some(&u), json!({})).await;
    let g = s
        .group(json!({u.clone(): {"type": "user"}}), json!({}))
        .await;
    let c = s.callflow(json!({"group_id": g})).await;
    let resp = s.get(&format!("{g}/ringing")).await;
    assert_eq!(leg_ids(&resp.json), BTreeSet::from([d]), "{}", resp.text);
    let resp = s.get(&format!("{g}/references")).await;
    assert_eq!(
        resp.json["data"]["callflows"][0]["id"],
        c.as_str(),
        "{}",
        resp.text
    );
    let resp = s.get("_account/dangling").await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    for (name, rev) in [("attributes", owned_rev), ("callflows", callflows_rev)] {
        let stored = app.design_doc(&account, name).await.unwrap();
        assert_eq!(stored["_rev"], rev.as_str(), "_design/{name} was written");
        assert!(stored.get("kz_groups").is_none());
    }
}

/// Issue 19 §4: Crossbar's envelope, auth and errors; Crossbar's own answers unchanged.
#[tokio::test]
async fn the_insight_paths_answer_as_the_groups_api_does() {
    let (app, account) = setup().await;
    let other = app.create_account(None).await;
    let s = Seed::new(&app, &account);
    let g = s.group(json!({}), json!({})).await;
    let user = s.user(json!({})).await;
    let path = |sub: &str| format!("{}/{sub}", account.groups_path());
    let anonymous = app
        .without_token()
        .request("GET", path(&format!("{g}/ringing")))
        .send()
        .await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.json["message"], "invalid_credentials");
    let foreign = app
        .with_token(&other.token)
        .request("GET", path(&format!("{g}/references")))
        .send()
        .await;
    assert_eq!(foreign.status, 403);
    for missing in [id(), user] {
        let resp = s.get(&format!("{missing}/dangling")).await;
        assert_eq!(resp.status, 404, "{}", resp.text);
        assert_eq!(resp.json["message"], "bad_identifier");
        assert_eq!(resp.json["data"]["cause"], missing.as_str());
    }
    let put = app
        .with_token(&account.token)
        .request("PUT", path(&format!("{g}/ringing")))
        .json(&json!({"data": {}}))
        .send()
        .await;
    assert_eq!(put.status, 405);
    assert_eq!(put.json["message"], "invalid_method");
    for not_found in ["_account/ringing", &format!("{g}/members")] {
        let resp = s.get(not_found).await;
        assert_eq!(resp.status, 404, "{not_found}");
        assert_eq!(resp.json["message"], "not_found");
    }
    // A soft-deleted group is answered (Kazoo still rings it); Crossbar's GET is still 404.
    let deleted = s.group(json!({}), json!({"pvt_deleted": true})).await;
    let resp = s.get(&format!("{deleted}/references")).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json["data"]["group"]["state"], "soft_deleted");
    let crossbar = app
        .with_token(&account.token)
        .get_group(&account, &deleted)
        .await;
    assert_eq!(crossbar.status, 404);
    let resp = s.get(&format!("{g}/ringing")).await;
    assert!(resp.json["request_id"].is_string() && resp.json["revision"].is_null());
    assert_eq!(
        resp.header("expires"),
        Some("Fri, 01 Jan 1999 00:00:00 GMT")
    );
}

/// Issue 19 §2: `doctor` reports and changes nothing; `doctor --fix` removes the gone members,
/// one revision-checked write per group, stamped and announced as a PATCH, and touches nothing
/// else.
#[tokio::test]
async fn doctor_fix_removes_gone_members_with_one_write_per_group() {
    let (app, account) = setup().await;
    let s = Seed::new(&app, &account);
    let u_ok = s.user(json!({})).await;
    let d_ok = s.device(Some(&u_ok), json!({})).await;
    let u_del = s.user(json!({"pvt_deleted": true})).await;
    let u_gone = id();
    let d_off = s.device(None, json!({"enabled": false})).await;
    let d_gone = id();
    let a = s
        .group(
            json!({u_ok.clone(): {"type": "user"}, u_del.clone(): {"type": "user"},
                   u_gone.clone(): {"type": "user"}, d_off.clone(): {"type": "device"}}),
            json!({}),
        )
        .await;
    let b = s
        .group(json!({d_gone.clone(): {"type": "device"}}), json!({}))
        .await;
    let c = s
        .group(json!({u_ok.clone(): {"type": "user"}}), json!({}))
        .await;
    let revs = |ids: Vec<String>| {
        let app = &app;
        let account = &account;
        async move {
            let mut out = Vec::new();
            for id in ids {
                let doc = app.read_doc(account, &id).await.unwrap();
                out.push(doc["_rev"].as_str().unwrap().to_owned());
            }
            out
        }
    };
    let all = vec![
        a.clone(),
        b.clone(),
        c.clone(),
        u_ok.clone(),
        d_ok.clone(),
        u_del.clone(),
        d_off.clone(),
    ];
    let before = revs(all.clone()).await;

    let backend = app.config.backend.clone();
    let account_id = account.id.clone();
    let report = tokio::task::spawn_blocking(move || {
        cli::run_ok(&backend, &["doctor", "--account", &account_id])
    })
    .await
    .unwrap();
    assert_eq!(report["groups_checked"], 3);
    assert_eq!(report["groups"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(revs(all.clone()).await, before, "the report wrote");

    let mut q = Listener::bind(&[format!("*.{}.group.*", db_word(&account.id))]).await;
    let mut cmd = cli::command(
        &app.config.backend,
        &["doctor", "--account", &account.id, "--fix"],
    );
    cmd.env("KZ_GROUPS_AMQP_URL", amqp_url());
    let run = tokio::task::spawn_blocking(move || cli::run_command(&mut cmd))
        .await
        .unwrap();
    assert!(run.ok, "{}", run.output);
    let out = run.json;
    let request_id = out["request_id"].as_str().unwrap().to_owned();
    let changed: BTreeSet<String> = out["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(changed, BTreeSet::from([a.clone(), b.clone()]));
    assert_eq!(out["failed"], json!([]));
    let after = revs(all.clone()).await;
    for (i, id) in all.iter().enumerate() {
        let expected = generation(&before[i]) + u64::from(*id == a || *id == b);
        assert_eq!(generation(&after[i]), expected, "{id}");
    }
    let a_doc = app.read_doc(&account, &a).await.unwrap();
    let members: BTreeSet<&String> = a_doc["endpoints"].as_object().unwrap().keys().collect();
    assert_eq!(
        members,
        BTreeSet::from([&u_ok, &d_off]),
        "a disabled device stays"
    );
    assert_eq!(a_doc["pvt_request_id"], request_id.as_str());
    assert_eq!(a_doc["pvt_type"], "group");
    assert_eq!(
        a_doc["pvt_alphanum_name"].as_str().map(|n| !n.is_empty()),
        Some(true)
    );
    let b_doc = app.read_doc(&account, &b).await.unwrap();
    assert_eq!(b_doc["endpoints"], json!({}));
    let notices = q.expect(2).await;
    let keys: BTreeSet<String> = notices.iter().map(|m| m.routing_key.clone()).collect();
    let db = db_word(&account.id);
    assert_eq!(
        keys,
        BTreeSet::from([
            format!("doc_edited.{db}.group.{a}"),
            format!("doc_edited.{db}.group.{b}"),
        ])
    );
    for m in &notices {
        let id = m.json["ID"].as_str().unwrap();
        let doc = app.read_doc(&account, id).await.unwrap();
        assert_eq!(m.json["Rev"], doc["_rev"]);
    }
    q.close().await;

    // Nothing is gone any more: a second run changes nothing.
    let backend = app.config.backend.clone();
    let account_id = account.id.clone();
    let again = tokio::task::spawn_blocking(move || {
        cli::run_ok(&backend, &["doctor", "--account", &account_id, "--fix"])
    })
    .await
    .unwrap();
    assert_eq!(again["changed"], json!([]));
    assert_eq!(revs(all.clone()).await, after);
}

/// `doctor` names what is wrong with its arguments and creates nothing.
#[tokio::test]
async fn doctor_refuses_an_unknown_account() {
    let app = TestApp::spawn().await;
    let run = cli::run(
        &app.config.backend,
        &["doctor", "--account", "not-an-account"],
    );
    assert!(!run.ok);
    assert!(run.output.contains("--account"), "{}", run.output);
    let unknown = id();
    let run = cli::run(&app.config.backend, &["doctor", "--account", &unknown]);
    assert!(!run.ok);
    assert!(run.output.contains("no account"), "{}", run.output);
}
