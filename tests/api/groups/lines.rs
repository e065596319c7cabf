//! The two Crossbar lines (`KZ_GROUPS_CROSSBAR`): Kazoo 4.3's listings, its envelope and CSV
//! (csv-and-chunked.md §4, cases named by number), and master's chunked listings and CSV.
use kz_groups::domain::line::CrossbarLine;
use serde_json::{json, Value};

use crate::helpers::Response;
use crate::helpers::{Account, TestApp};

/// The trace's "CSV1": g2 then g1, as 4.3 orders a page.
const CSV1: &str = "\"ID\",\"name\",\"features\",\"endpoints\",\"flags\"\n\"g2\",\"Sales \"\"A\"\", West\",\"music_on_hold\",\"3\",\"\"\n\"g1\",\"Support\",\"\",\"0\",\"a,b\"\n";
const HEADER: &str = "\"ID\",\"name\",\"features\",\"endpoints\",\"flags\"\n";

async fn app_on(line: CrossbarLine) -> (TestApp, Account) {
    let app = TestApp::spawn_with(|config| config.crossbar = line).await;
    let account = app.create_account(None).await;
    (app, account)
}

/// The trace's setup: g1 and g2, the account's user a member of g2.
async fn with_trace_groups(line: CrossbarLine) -> (TestApp, Account) {
    let (app, a) = app_on(line).await;
    app.add_group(
        &a,
        json!({"id": "g1", "name": "Support", "endpoints": {}, "flags": ["a", "b"]}),
    )
    .await;
    let endpoints = json!({
        a.user_id.clone(): {"type": "user"}, "d1": {"type": "device"}, "x": {"type": "user"}
    });
    app.add_group(
        &a,
        json!({"id": "g2", "name": "Sales \"A\", West", "endpoints": endpoints,
               "music_on_hold": {"media_id": "m1"}}),
    )
    .await;
    (app, a)
}

async fn get(app: &TestApp, a: &Account, path: &str, accept: Option<&str>) -> Response {
    let mut req = app.request("GET", path).token(&a.token);
    if let Some(accept) = accept {
        req = req.header("accept", accept);
    }
    req.send().await
}

fn assert_csv(resp: &Response, body: &str) {
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.header("content-type"), Some("text/csv"));
    assert_eq!(resp.text, body);
    assert_eq!(
        resp.header("content-length"),
        Some(body.len().to_string().as_str())
    );
}

fn disposition_name(resp: &Response) -> String {
    let value = resp
        .header("content-disposition")
        .expect("content-disposition");
    value
        .strip_prefix("attachment; filename=\"")
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{value}"))
        .to_owned()
}

fn ids(resp: &Response) -> Vec<&str> {
    resp.json["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", resp.text))
        .iter()
        .map(|row| row["id"].as_str().unwrap())
        .collect()
}

/// Cases 1-5, 8, 9.
#[tokio::test]
async fn on_4_3_a_listing_asked_as_csv_is_the_traced_csv() {
    let (app, a) = with_trace_groups(CrossbarLine::V4_3).await;
    let path = a.groups_path();
    let resp = get(&app, &a, &path, Some("text/csv")).await;
    assert_csv(&resp, CSV1);
    assert_eq!(CSV1.len(), 119);
    let name = disposition_name(&resp);
    assert!(
        name.len() == 31
            && name.starts_with("json_")
            && name.ends_with(".csv")
            && name[5..27].bytes().all(|b| b.is_ascii_hexdigit()),
        "{name}"
    );
    for accept in [
        "application/octet-stream",
        "text/comma-separated-values",
        "text/*",
    ] {
        assert_csv(&get(&app, &a, &path, Some(accept)).await, CSV1);
    }
    for query in [
        "accept=csv",
        "accept=text/csv",
        "accept=application/octet-stream",
    ] {
        let resp = get(&app, &a, &format!("{path}?{query}"), None).await;
        assert_csv(&resp, CSV1);
    }
    // Case 4: `accept` is case-sensitive.
    let json = get(&app, &a, &format!("{path}?accept=CSV"), None).await;
    assert_eq!(json.header("content-type"), Some("application/json"));
    assert_eq!(ids(&json), ["g2", "g1"]);
    // Cases 8, 9: the file name.
    let named = app
        .request("GET", &path)
        .token(&a.token)
        .header("accept", "text/csv")
        .header("x-file-name", "groups.csv")
        .send()
        .await;
    assert_eq!(disposition_name(&named), "groups.csv");
    let named = get(
        &app,
        &a,
        &format!("{path}?file_name=export"),
        Some("text/csv"),
    )
    .await;
    assert_eq!(disposition_name(&named), "export");
    let both = app
        .request("GET", format!("{path}?file_name=b.csv"))
        .token(&a.token)
        .header("accept", "text/csv")
        .header("x-file-name", "x/y/a.csv")
        .send()
        .await;
    assert_eq!(disposition_name(&both), "a.csv");
}

/// Cases 6, 7: a bare 406.
#[tokio::test]
async fn a_csv_type_with_a_parameter_or_an_unknown_type_is_refused_with_406() {
    for line in [CrossbarLine::V4_3, CrossbarLine::Master] {
        let (app, a) = app_on(line).await;
        for accept in ["text/csv; charset=utf-8", "text/html"] {
            let resp = get(&app, &a, &a.groups_path(), Some(accept)).await;
            assert_eq!(resp.status, 406, "{line} {accept}");
            assert!(resp.text.is_empty());
        }
    }
}

/// Cases 10-12, 20-22, and 4.3's JSON listings: rows of a page in reverse view order, a
/// whole listing descending, `descending` ignored, a bad `page_size` the default, chunking
/// ignored.
#[tokio::test]
async fn on_4_3_pages_come_in_reverse_view_order_and_bad_paging_values_are_ignored() {
    let (app, a) = with_trace_groups(CrossbarLine::V4_3).await;
    app.add_group(&a, json!({"id": "g3", "name": "Third"}))
        .await;
    let path = a.groups_path();
    let page = get(&app, &a, &format!("{path}?page_size=2"), None).await;
    assert_eq!(ids(&page), ["g2", "g1"]);
    assert_eq!(page.json["page_size"], 2);
    let next = page.json["next_start_key"].as_str().unwrap().to_owned();
    let rest = get(
        &app,
        &a,
        &format!("{path}?page_size=2&start_key={next}"),
        None,
    )
    .await;
    assert_eq!(ids(&rest), ["g3"]);
    for query in [
        "",
        "page_size=abc",
        "page_size=0",
        "page_size=-1",
        "descending=true",
    ] {
        let resp = get(&app, &a, &format!("{path}?{query}"), None).await;
        assert_eq!(resp.status, 200, "{query}: {}", resp.text);
        assert_eq!(ids(&resp), ["g3", "g2", "g1"], "{query}");
    }
    let whole = get(&app, &a, &format!("{path}?paginate=false"), None).await;
    assert_eq!(ids(&whole), ["g3", "g2", "g1"]);
    assert!(whole.json.get("page_size").is_none());
    let from_g2 = get(
        &app,
        &a,
        &format!("{path}?paginate=false&start_key=g2"),
        None,
    )
    .await;
    assert_eq!(ids(&from_g2), ["g3", "g2"]);
    // Cases 20, 21: chunking is not read at all.
    for query in [
        "is_chunked=true",
        "is_chunked=true&chunk_size=abc",
        "is_chunked=true&chunk_size=0",
    ] {
        let resp = get(&app, &a, &format!("{path}?{query}"), None).await;
        assert_eq!(resp.status, 200, "{query}");
        assert_eq!(ids(&resp), ["g3", "g2", "g1"], "{query}");
        assert_eq!(resp.json["page_size"], 3);
    }
    // Case 10 (on the trace's two groups: the first page by ascending id, one row), 22.
    let one = get(&app, &a, &format!("{path}?page_size=1"), Some("text/csv")).await;
    assert_csv(
        &one,
        &format!("{HEADER}\"g1\",\"Support\",\"\",\"0\",\"a,b\"\n"),
    );
    let chunked = get(
        &app,
        &a,
        &format!("{path}?is_chunked=true&page_size=2"),
        Some("text/csv"),
    )
    .await;
    assert_csv(&chunked, CSV1);
}

/// Cases 13-17.
#[tokio::test]
async fn on_4_3_a_users_groups_as_csv_are_theirs_or_204_and_errors_stay_json() {
    let (app, a) = with_trace_groups(CrossbarLine::V4_3).await;
    let mine = get(&app, &a, &a.user_groups_path(&a.user_id), Some("text/csv")).await;
    assert_csv(
        &mine,
        &format!("{HEADER}\"g2\",\"Sales \"\"A\"\", West\",\"music_on_hold\",\"3\",\"\"\n"),
    );
    // An existing document in no group (the hook checks existence only): 204, nothing else.
    for path in [
        a.user_groups_path(&a.id),
        format!("{}?paginate=false", a.user_groups_path(&a.id)),
    ] {
        let none = get(&app, &a, &path, Some("text/csv")).await;
        assert_eq!(none.status, 204, "{path}");
        assert!(none.text.is_empty());
        for header in ["content-type", "content-disposition", "x-request-id"] {
            assert!(none.header(header).is_none(), "{header} on {path}");
        }
    }
    let missing = get(
        &app,
        &a,
        &a.user_groups_path("nosuchuser"),
        Some("text/csv"),
    )
    .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("content-type"), Some("application/json"));
    assert_eq!(missing.json["error"], "404");
    assert_eq!(missing.json["message"], "bad_identifier");
    assert_eq!(
        missing.json["data"],
        json!({"cause": "nosuchuser", "message": "bad identifier"})
    );
}

/// Case 15.
#[tokio::test]
async fn an_account_without_groups_is_answered_204_as_csv() {
    let (app, a) = app_on(CrossbarLine::V4_3).await;
    for query in ["accept=csv", "accept=csv&paginate=false"] {
        let resp = get(&app, &a, &format!("{}?{query}", a.groups_path()), None).await;
        assert_eq!(resp.status, 204, "{query}");
        assert!(resp.text.is_empty());
        assert!(resp.header("content-type").is_none());
    }
}

/// Cases 18, 19, 23.
#[tokio::test]
async fn a_group_as_csv_is_one_header_line_and_one_row_with_id_last() {
    let (app, a) = with_trace_groups(CrossbarLine::V4_3).await;
    let one = get(&app, &a, &a.group_path("g1"), Some("text/csv")).await;
    assert_csv(
        &one,
        "\"name\",\"flags\",\"ID\"\n\"Support\",\"a,b\",\"g1\"\n",
    );
    let missing = get(&app, &a, &a.group_path("nosuch"), Some("text/csv")).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json["data"]["cause"], "nosuch");
    app.add_group(&a, json!({"id": "g9", "name": "A\nB"})).await;
    let newline = get(&app, &a, &a.group_path("g9"), Some("text/csv")).await;
    assert_csv(&newline, "\"name\",\"ID\"\n\"A\nB\",\"g9\"\n");
}

/// `paginate=false` as CSV is spooled and sent with its length; on 4.3 descending, on master
/// ascending, with filters applied.
#[tokio::test]
async fn a_whole_listing_as_csv_is_every_row_in_the_lines_order() {
    for (line, order) in [
        (CrossbarLine::V4_3, ["g3", "g2", "g1"]),
        (CrossbarLine::Master, ["g1", "g2", "g3"]),
    ] {
        let (app, a) = with_trace_groups(line).await;
        app.add_group(&a, json!({"id": "g3", "name": "Third", "flags": ["z"]}))
            .await;
        let resp = get(
            &app,
            &a,
            &format!("{}?paginate=false", a.groups_path()),
            Some("text/csv"),
        )
        .await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        let rows: Vec<&str> = resp.text.lines().skip(1).map(|l| &l[1..3]).collect();
        assert_eq!(rows, order, "{line}");
        assert_eq!(
            resp.header("content-length"),
            Some(resp.text.len().to_string().as_str())
        );
        let filtered = get(
            &app,
            &a,
            &format!("{}?paginate=false&filter_name=Third", a.groups_path()),
            Some("text/csv"),
        )
        .await;
        assert_csv(
            &filtered,
            &format!("{HEADER}\"g3\",\"Third\",\"\",\"0\",\"z\"\n"),
        );
    }
}

/// Master answers CSV too, in its own row order.
#[tokio::test]
async fn on_master_a_listing_as_csv_is_in_view_order() {
    let (app, a) = with_trace_groups(CrossbarLine::Master).await;
    let resp = get(&app, &a, &a.groups_path(), Some("text/csv")).await;
    assert_csv(
        &resp,
        &format!("{HEADER}\"g1\",\"Support\",\"\",\"0\",\"a,b\"\n\"g2\",\"Sales \"\"A\"\", West\",\"music_on_hold\",\"3\",\"\"\n"),
    );
}

/// Master's `is_chunked=true`: `{"data":[` then the rows, then the string-valued trailer.
#[tokio::test]
async fn on_master_a_chunked_listing_ends_with_the_string_valued_trailer() {
    let (app, a) = with_trace_groups(CrossbarLine::Master).await;
    app.add_group(&a, json!({"id": "g3", "name": "Third"}))
        .await;
    let path = a.groups_path();
    let resp = get(
        &app,
        &a,
        &format!("{path}?is_chunked=true&page_size=2"),
        None,
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert!(
        resp.text.starts_with("{\"data\":[{\"id\":\"g1\""),
        "{}",
        resp.text
    );
    let (rows, trailer) = resp.text.split_once("], ").expect("the trailer");
    let rows: Value = serde_json::from_str(&format!("{}]", &rows[8..])).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2);
    assert!(trailer.starts_with("\"next_start_key\":\"g2"), "{trailer}");
    assert!(trailer.contains(", \"page_size\":\"2\", \"status\":\"success\", \"request_id\":\""));
    assert!(
        trailer.ends_with(&format!("\"auth_token\":\"{}\"}}", a.token)),
        "{trailer}"
    );
    // The whole listing: no paging keys.
    let whole = get(
        &app,
        &a,
        &format!("{path}?is_chunked=true&paginate=false&chunk_size=1"),
        None,
    )
    .await;
    assert!(whole.text.contains("{\"id\":\"g3\""));
    assert!(!whole.text.contains("page_size"), "{}", whole.text);
    assert!(
        whole.text.contains("], \"status\":\"success\", "),
        "{}",
        whole.text
    );
    // Nothing to send: an ordinary answer.
    let (app, b) = app_on(CrossbarLine::Master).await;
    let empty = get(
        &app,
        &b,
        &format!("{}?is_chunked=true", b.groups_path()),
        None,
    )
    .await;
    assert_eq!(empty.json["data"], json!([]));
    assert_eq!(empty.json["page_size"], 0);
}

/// Case 25 for groups on master: `chunk_size` is checked on every listing.
#[tokio::test]
async fn on_master_a_bad_chunk_size_is_refused() {
    let (app, a) = app_on(CrossbarLine::Master).await;
    for (chunk, status, message) in [
        ("51", 404, "chunk size must be lower than 50"),
        ("-1", 404, "chunk size must be at least 1"),
        ("x", 404, "invalid chunk size"),
        ("0", 503, "datastore fatal error"),
    ] {
        let resp = get(
            &app,
            &a,
            &format!("{}?chunk_size={chunk}", a.groups_path()),
            None,
        )
        .await;
        assert_eq!(resp.status, status, "{chunk}: {}", resp.text);
        assert_eq!(resp.json["data"]["message"], message, "{chunk}");
        let name = if status == 404 {
            "faulty_request"
        } else {
            "datastore_fault"
        };
        assert_eq!(resp.json["message"], name);
    }
    let fine = get(
        &app,
        &a,
        &format!("{}?chunk_size=50", a.groups_path()),
        None,
    )
    .await;
    assert_eq!(fine.status, 200);
}

/// 4.3's envelope: no `tokens`, `version` always, a missing token written `undefined` in
/// errors; `/readyz` names the line.
#[tokio::test]
async fn on_4_3_the_envelope_has_no_tokens_and_always_a_version() {
    let (app, a) = app_on(CrossbarLine::V4_3).await;
    let ok = app.list_groups(&a, "").await;
    assert!(ok.json.get("tokens").is_none(), "{}", ok.text);
    assert!(ok.json["version"].is_string());
    let anonymous = app.request("GET", a.groups_path()).send().await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.json["auth_token"], "undefined");
    assert!(anonymous.json["version"].is_string());
    assert!(anonymous.json.get("tokens").is_none());
    let ready = app.request("GET", "/readyz").send().await;
    assert_eq!(ready.json["crossbar"], "4.3");
    let (master, _) = app_on(CrossbarLine::Master).await;
    let ready = master.request("GET", "/readyz").send().await;
    assert_eq!(ready.json["crossbar"], "master");
}

/// 4.3's filtered page: queries of `remaining + 1` rows; the row past the last full query is
/// the next start key whether it passes or not, and the envelope echoes the last query's start.
#[tokio::test]
async fn on_4_3_a_filtered_page_resumes_where_its_last_query_stopped() {
    let (app, a) = app_on(CrossbarLine::V4_3).await;
    for (id, name) in [("a", "X"), ("b", "Y"), ("c", "X"), ("d", "Y")] {
        app.add_group(&a, json!({"id": id, "name": name})).await;
    }
    let path = format!("{}?filter_name=X&page_size=1", a.groups_path());
    let first = get(&app, &a, &path, None).await;
    assert_eq!(ids(&first), ["a"]);
    let next = first.json["next_start_key"].as_str().unwrap().to_owned();
    assert_eq!(next, "g20AAAABYg", "b, which the filter refuses");
    let second = get(&app, &a, &format!("{path}&start_key={next}"), None).await;
    assert_eq!(ids(&second), ["c"]);
    assert_eq!(
        second.json["start_key"], "g20AAAABYw",
        "c: the last query's start"
    );
    assert_eq!(second.json["next_start_key"], "g20AAAABZA");
    let last = get(&app, &a, &format!("{path}&start_key=g20AAAABZA"), None).await;
    assert_eq!(ids(&last), Vec::<&str>::new());
    assert_eq!(last.json["page_size"], 0);
    assert!(last.json.get("next_start_key").is_none());
    // Master: the next start key is the next row that passes.
    let (app, a) = app_on(CrossbarLine::Master).await;
    for (id, name) in [("a", "X"), ("b", "Y"), ("c", "X"), ("d", "Y")] {
        app.add_group(&a, json!({"id": id, "name": name})).await;
    }
    let path = format!("{}?filter_name=X&page_size=1", a.groups_path());
    let first = get(&app, &a, &path, None).await;
    assert_eq!(ids(&first), ["a"]);
    assert_eq!(first.json["next_start_key"], "g20AAAABYw");
}
