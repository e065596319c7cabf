//! Talking to the application under test: a typed call per API operation (`get_group`,
//! `create_group`, `login_with_api_key`, ...) for what a test means to do, and a small request
//! builder for what a test sends on purpose (odd methods, headers and bodies).
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;
use serde_json::{json, Value};

use super::{Account, TestApp};

/// An answer, read in full.
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    /// The body as JSON; `Null` when it is not JSON (or empty).
    pub json: Value,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `data.id` of an answer about one group.
    pub fn id(&self) -> &str {
        self.json["data"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no data.id in {}", self.text))
    }

    /// `revision` of the envelope.
    pub fn revision(&self) -> &str {
        self.json["revision"]
            .as_str()
            .unwrap_or_else(|| panic!("no revision in {}", self.text))
    }

    /// `auth_token` of a login answer.
    pub fn auth_token(&self) -> &str {
        self.json["auth_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no auth_token in {}", self.text))
    }

    /// What `data` (an array of objects) holds under `field`, in the order listed.
    pub fn listed(&self, field: &str) -> Vec<String> {
        self.json["data"]
            .as_array()
            .unwrap_or_else(|| panic!("data is no array: {}", self.text))
            .iter()
            .map(|item| match item[field].as_str() {
                Some(value) => value.to_owned(),
                None => panic!("an item without {field}: {}", self.text),
            })
            .collect()
    }

    pub async fn read(resp: reqwest::Response) -> Response {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Response {
            status,
            headers,
            text,
            json,
        }
    }
}

/// One request to the application, sent exactly as built: nothing is added but what the
/// builder is told (no content type, no token). A header set twice keeps the last value.
pub struct TestRequest {
    inner: reqwest::RequestBuilder,
    headers: HeaderMap,
}

impl TestRequest {
    pub fn new(app: &TestApp, method: &str, path: &str) -> Self {
        let method = Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        Self {
            inner: app.http.request(method, app.url(path)),
            headers: HeaderMap::new(),
        }
    }

    /// `X-Auth-Token`.
    pub fn token(self, token: &str) -> Self {
        self.header("x-auth-token", token)
    }

    pub fn header(mut self, name: &str, value: impl AsRef<str>) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("a header name");
        let value = HeaderValue::from_str(value.as_ref()).expect("a header value");
        self.headers.insert(name, value);
        self
    }

    /// `Content-Type: application/json`, as Kazoo's clients send on every request.
    pub fn json_type(self) -> Self {
        self.header("content-type", "application/json")
    }

    /// `body` as compact JSON, with `Content-Type: application/json`.
    pub fn json(self, body: &Value) -> Self {
        self.json_type().body(body.to_string())
    }

    /// A body sent as it is.
    pub fn body(self, body: impl Into<reqwest::Body>) -> Self {
        Self {
            inner: self.inner.body(body),
            ..self
        }
    }

    pub async fn send(self) -> Response {
        Response::read(self.send_unread().await).await
    }

    /// Sent; the answer's head read, its body left for the test (one that may be cut short).
    pub async fn send_unread(self) -> reqwest::Response {
        self.inner
            .headers(self.headers)
            .send()
            .await
            .expect("request reaches kz-groups")
    }
}

/// The typed API as one caller sees it: with a given token, or none. Every call sends
/// `Content-Type: application/json` and, where it has a body, the `{"data": ...}` envelope.
#[derive(Clone, Copy)]
pub struct Caller<'a> {
    app: &'a TestApp,
    token: Option<&'a str>,
}

impl<'a> Caller<'a> {
    pub fn new(app: &'a TestApp, token: Option<&'a str>) -> Self {
        Self { app, token }
    }

    /// A request with this caller's token and the JSON content type, to add to.
    pub fn request(&self, method: &str, path: impl AsRef<str>) -> TestRequest {
        let req = self.app.request(method, path).json_type();
        match self.token {
            Some(token) => req.token(token),
            None => req,
        }
    }

    async fn send(&self, method: &str, path: impl AsRef<str>, data: Option<Value>) -> Response {
        let req = self.request(method, path);
        match data {
            Some(data) => req.json(&json!({ "data": data })).send().await,
            None => req.send().await,
        }
    }

    /// `GET /v2/accounts/{account}/groups?{query}` (`query` may be empty).
    pub async fn list_groups(&self, account: &Account, query: &str) -> Response {
        self.send("GET", with_query(account.groups_path(), query), None)
            .await
    }

    /// `GET /v2/accounts/{account}/users/{user}/groups?{query}`.
    pub async fn list_user_groups(&self, account: &Account, user: &str, query: &str) -> Response {
        self.send(
            "GET",
            with_query(account.user_groups_path(user), query),
            None,
        )
        .await
    }

    /// `PUT /v2/accounts/{account}/groups` with `{"data": data}`.
    pub async fn create_group(&self, account: &Account, data: Value) -> Response {
        self.send("PUT", account.groups_path(), Some(data)).await
    }

    /// `GET /v2/accounts/{account}/groups/{id}`.
    pub async fn get_group(&self, account: &Account, id: &str) -> Response {
        self.send("GET", account.group_path(id), None).await
    }

    /// `POST /v2/accounts/{account}/groups/{id}` with `{"data": data}`: replaces the group.
    pub async fn update_group(&self, account: &Account, id: &str, data: Value) -> Response {
        self.send("POST", account.group_path(id), Some(data)).await
    }

    /// `PATCH /v2/accounts/{account}/groups/{id}` with `{"data": data}`: merges into the group.
    pub async fn patch_group(&self, account: &Account, id: &str, data: Value) -> Response {
        self.send("PATCH", account.group_path(id), Some(data)).await
    }

    /// `DELETE /v2/accounts/{account}/groups/{id}` (soft, as Kazoo's default).
    pub async fn delete_group(&self, account: &Account, id: &str) -> Response {
        self.send("DELETE", account.group_path(id), None).await
    }

    /// `DELETE …/groups/{id}?should_soft_delete=false`: the document removed.
    pub async fn hard_delete_group(&self, account: &Account, id: &str) -> Response {
        let path = format!("{}?should_soft_delete=false", account.group_path(id));
        self.send("DELETE", path, None).await
    }

    /// `PUT /v2/api_auth` with `{"data": data}`.
    pub async fn api_auth(&self, data: Value) -> Response {
        self.send("PUT", "/v2/api_auth", Some(data)).await
    }

    /// `PUT /v2/user_auth` with `{"data": data}`.
    pub async fn user_auth(&self, data: Value) -> Response {
        self.send("PUT", "/v2/user_auth", Some(data)).await
    }

    /// `GET /v2/token_auth`: the claims of this caller's token.
    pub async fn token_info(&self) -> Response {
        self.send("GET", "/v2/token_auth", None).await
    }

    /// `DELETE /v2/token_auth`.
    pub async fn delete_token(&self) -> Response {
        self.send("DELETE", "/v2/token_auth", None).await
    }
}

fn with_query(path: String, query: &str) -> String {
    if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    }
}

/// The typed API with an account's own admin token, the usual caller of a test.
impl TestApp {
    /// The API as the holder of `token` sees it.
    pub fn with_token<'a>(&'a self, token: &'a str) -> Caller<'a> {
        Caller::new(self, Some(token))
    }

    /// The API as a client without a token sees it.
    pub fn without_token(&self) -> Caller<'_> {
        Caller::new(self, None)
    }

    fn admin_of<'a>(&'a self, account: &'a Account) -> Caller<'a> {
        self.with_token(&account.token)
    }

    /// A request sent exactly as built (see [`TestRequest`]).
    pub fn request(&self, method: &str, path: impl AsRef<str>) -> TestRequest {
        TestRequest::new(self, method, path.as_ref())
    }

    pub async fn list_groups(&self, account: &Account, query: &str) -> Response {
        self.admin_of(account).list_groups(account, query).await
    }

    pub async fn list_user_groups(&self, account: &Account, user: &str, query: &str) -> Response {
        self.admin_of(account)
            .list_user_groups(account, user, query)
            .await
    }

    pub async fn create_group(&self, account: &Account, data: Value) -> Response {
        self.admin_of(account).create_group(account, data).await
    }

    pub async fn get_group(&self, account: &Account, id: &str) -> Response {
        self.admin_of(account).get_group(account, id).await
    }

    pub async fn update_group(&self, account: &Account, id: &str, data: Value) -> Response {
        self.admin_of(account).update_group(account, id, data).await
    }

    pub async fn patch_group(&self, account: &Account, id: &str, data: Value) -> Response {
        self.admin_of(account).patch_group(account, id, data).await
    }

    pub async fn delete_group(&self, account: &Account, id: &str) -> Response {
        self.admin_of(account).delete_group(account, id).await
    }

    pub async fn hard_delete_group(&self, account: &Account, id: &str) -> Response {
        self.admin_of(account).hard_delete_group(account, id).await
    }

    /// A group made for a test's setup: created through the API, which must answer 201.
    pub async fn add_group(&self, account: &Account, data: Value) -> Group {
        let resp = self.create_group(account, data).await;
        assert_eq!(resp.status, 201, "creating a group failed: {}", resp.text);
        Group {
            id: resp.id().to_owned(),
            revision: resp.revision().to_owned(),
            data: resp.json["data"].clone(),
        }
    }

    /// `PUT /v2/api_auth` with an account's API key.
    pub async fn login_with_api_key(&self, api_key: &str) -> Response {
        self.without_token()
            .api_auth(json!({ "api_key": api_key }))
            .await
    }

    /// `PUT /v2/user_auth` with `data` (credentials and an account name or realm).
    pub async fn login_with_credentials(&self, data: Value) -> Response {
        self.without_token().user_auth(data).await
    }

    /// The `/healthz` or `/readyz` probe.
    pub async fn probe(&self, path: &str) -> Response {
        self.request("GET", path).send().await
    }
}

/// A group created through the API.
pub struct Group {
    pub id: String,
    pub revision: String,
    /// The `data` the create answered with.
    pub data: Value,
}
