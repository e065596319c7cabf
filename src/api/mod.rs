//! The Crossbar request pipeline for the Groups resource and the login resources, in the stage
//! order of groups-contract §0, which decides which error a client sees when several apply.
pub mod groups;
pub mod limiter;
pub mod listing;
pub mod login;
pub mod memory;
pub mod path;
pub mod reply;

use std::net::SocketAddr;

use actix_web::dev::RequestHead;
use actix_web::http::header::HeaderMap;
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use futures::StreamExt;
use md5::{Digest, Md5};
use serde_json::{Map, Value};

use crate::auth::issuer::Issuer;
use crate::auth::restrictions::RestrictedRequest;
use crate::auth::{Authenticator, Identity, TokenCheck};
use crate::config::Config;
use crate::domain::clock;
use crate::domain::ids::{random_hex, AccountId, AccountIdError, DocId};
use crate::envelope::{BodyPlan, RequestEnvelope, Tail};
use crate::error::ApiError;
use crate::notices::ChangeNotifier;
use crate::startup::Schemas;
use crate::store::views::ViewInstaller;
use crate::store::Store;
use limiter::RateLimiter;
use memory::{MemoryBudget, Reservation};
use path::{Route, Target};
use reply::{Outcome, ReplyContext, GLOBAL_METHODS};

/// Everything a request needs, built once at start.
pub struct AppState {
    pub store: Store,
    pub views: ViewInstaller,
    pub schemas: Schemas,
    pub auth: Authenticator,
    pub issuer: Issuer,
    pub limiter: RateLimiter,
    pub notifier: Arc<dyn ChangeNotifier>,
    pub page_size: usize,
    pub max_upload_bytes: usize,
    /// `KZ_GROUPS_BODY_TIMEOUT_MS`.
    pub body_timeout: std::time::Duration,
    /// What request bodies and their parsed JSON may hold at once.
    pub memory: MemoryBudget,
    /// Large bodies measured or built at once, off the workers: one per core.
    parse_slots: tokio::sync::Semaphore,
    /// base64url(md5(node name)), the envelope's `node`.
    pub node: String,
    pub version: String,
}

impl AppState {
    pub fn node_id(node_name: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Md5::digest(node_name.as_bytes()))
    }

    pub fn from_parts(
        config: &Config,
        store: Store,
        views: ViewInstaller,
        schemas: Schemas,
        notifier: Arc<dyn ChangeNotifier>,
    ) -> Self {
        Self {
            auth: Authenticator::new(store.clone(), config.key_cache),
            issuer: Issuer::new(store.clone(), config.key_cache),
            store,
            views,
            schemas,
            limiter: RateLimiter::new(config.clock.clone()),
            notifier,
            page_size: config.page_size,
            max_upload_bytes: config.max_upload_bytes,
            body_timeout: config.body_timeout,
            memory: MemoryBudget::new(config.request_memory_bytes),
            parse_slots: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            ),
            node: Self::node_id(&config.node_name),
            version: config.version.clone(),
        }
    }
}

impl AppState {
    /// Runs CPU-heavy work on the blocking pool, at most one job per core at a time.
    async fn off_workers<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let _slot = self.parse_slots.acquire().await;
        tokio::task::spawn_blocking(job).await.map_err(|e| {
            log::error!("parsing a body failed: {e}");
            ApiError::Bare(500)
        })
    }
}

const KNOWN_METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"];

/// The single entry point of every `/vN/...` request.
pub async fn crossbar(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let mut cx = reply_context(req.headers(), req.peer_addr(), &state);
    // What the request's body and parsed JSON hold, given back once the answer is rendered.
    let mut memory = Reservation::default();
    let outcome = pipeline(&req, payload, &state, &mut cx, &mut memory).await;
    let answer = cx.render(outcome);
    if memory.bytes() > 0 {
        drop(memory);
        memory::give_back();
    }
    answer
}

/// What every answer to a request carries, read from its headers before anything else.
fn reply_context(headers: &HeaderMap, peer: Option<SocketAddr>, state: &AppState) -> ReplyContext {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mut cx = ReplyContext {
        tail: Tail {
            request_id: header("x-request-id")
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .unwrap_or_else(|| random_hex(16)),
            node: state.node.clone(),
            timestamp: clock::iso8601_now(),
            tokens_consumed: 1,
            tokens_remaining: 0,
            ..Default::default()
        },
        pretty: header("x-pretty-print") == Some("true"),
        cors_request: [
            "origin",
            "access-control-request-method",
            "access-control-request-headers",
        ]
        .iter()
        .any(|h| headers.contains_key(*h)),
        allowed_methods: GLOBAL_METHODS.to_vec(),
        requested_method: header("access-control-request-method").map(str::to_owned),
        negotiated: false,
        language: header("accept-language")
            .and_then(|l| l.split([',', ';']).next())
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .unwrap_or("en")
            .to_owned(),
        jsonp: None,
        close: false,
    };
    cx.tail.tokens_remaining = state.limiter.remaining(&bucket_key(peer, None));
    cx
}

/// An `Expect: 100-continue` request whose announced body is over `max_upload_size` is answered
/// at once, with the 400 its body would get, so the client never sends it. The stage-1 order
/// holds: an API version 1 path is still answered 410 by the pipeline.
pub fn refuse_announced_body(
    head: &RequestHead,
    peer: Option<SocketAddr>,
    state: &AppState,
) -> Option<HttpResponse> {
    let announced = head
        .headers
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())?;
    if announced <= state.max_upload_bytes as u64 || path::parse(head.uri.path()) == Route::Gone {
        return None;
    }
    let mut cx = reply_context(&head.headers, peer, state);
    cx.close = true;
    Some(cx.render(Err(too_large(state.max_upload_bytes))))
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The request body, taken in within `KZ_GROUPS_BODY_TIMEOUT_MS` of the client's time, and
/// reserved against the request memory budget as it grows (time spent waiting for the budget is
/// the server's, not the client's, and does not count). Past the time the answer is a bare 408
/// and the connection is closed, so a stalled upload holds its socket no longer than that.
async fn read_body(
    mut payload: web::Payload,
    state: &AppState,
    memory: &mut Reservation,
) -> Result<Vec<u8>, ApiError> {
    let limit = state.max_upload_bytes;
    let mut deadline = tokio::time::Instant::now() + state.body_timeout;
    let mut body = Vec::new();
    loop {
        let chunk = match tokio::time::timeout_at(deadline, payload.next()).await {
            Err(_) => return Err(ApiError::Bare(408)),
            Ok(None) => return Ok(body),
            Ok(Some(chunk)) => chunk.map_err(|_| ApiError::Bare(400))?,
        };
        let len = body.len() + chunk.len();
        if len > limit {
            return Err(too_large(limit));
        }
        if len > body.capacity() {
            let capacity = len.next_power_of_two().min(limit);
            let waiting = tokio::time::Instant::now();
            memory.merge(state.memory.reserve_body(capacity - body.capacity()).await);
            deadline += waiting.elapsed();
            body.reserve_exact(capacity - body.len());
        }
        body.extend_from_slice(&chunk);
    }
}

/// §3.6: a body over `max_upload_size` is rendered as a 400 validation error.
pub fn too_large(limit: usize) -> ApiError {
    ApiError::validation(
        "file",
        "maxSize",
        serde_json::json!({
            "message": format!("Payload or Files must not be more than {limit} bytes"),
            "target": limit,
        }),
    )
}

/// What a parsed body holds until its request is answered: its tree, and as much again when an
/// error answer echoes it (Crossbar's validation errors carry the offending values).
fn answer_cost(plan: &BodyPlan) -> usize {
    plan.cost().saturating_mul(2)
}

/// Stage 1's parse: measured first (refusing what is too deep or too costly), then reserved
/// against the memory budget, then built. Large bodies are measured and built on the blocking
/// pool, a few at a time, so the workers keep answering other clients meanwhile.
async fn parse_envelope(
    state: &AppState,
    content_type: Option<&str>,
    body: Vec<u8>,
    query: &str,
    memory: &mut Reservation,
) -> Result<RequestEnvelope, ApiError> {
    if body.len() < memory::SMALL {
        let plan = BodyPlan::measure(content_type, &body)?;
        memory.merge(state.memory.reserve_tree(answer_cost(&plan)).await);
        return plan.build(&body, query);
    }
    let content_type = content_type.map(str::to_owned);
    let (plan, body) = state
        .off_workers(move || (BodyPlan::measure(content_type.as_deref(), &body), body))
        .await?;
    let plan = plan?;
    memory.merge(state.memory.reserve_tree(answer_cost(&plan)).await);
    let query = query.to_owned();
    state.off_workers(move || plan.build(&body, &query)).await?
}

/// A credential as received, and whether it is one Kazoo would verify as a JWT.
struct Credential {
    value: String,
    is_jwt: bool,
}

/// Where the token comes from (auth-contract §1.7 step 1): `X-Auth-Token`, the `auth_token`
/// request value, then `Authorization`.
fn find_credential(req: &HttpRequest, env: &RequestEnvelope) -> Option<Credential> {
    let jwt = |value: String| Credential {
        value,
        is_jwt: true,
    };
    if let Some(token) = header(req, "x-auth-token").filter(|t| !t.is_empty()) {
        return Some(jwt(token.to_owned()));
    }
    if let Some(token) = env
        .req_value("auth_token")
        .as_deref()
        .and_then(Value::as_str)
    {
        if !token.is_empty() {
            return Some(jwt(token.to_owned()));
        }
    }
    // `Authorization: Bearer <t>` (or Basic) is never a Kazoo JWT here: it is echoed, and refused.
    header(req, "authorization").map(|value| Credential {
        value: value
            .split_once(' ')
            .map(|(_, credential)| credential.trim())
            .unwrap_or(value)
            .to_owned(),
        is_jwt: false,
    })
}

async fn pipeline(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    cx: &mut ReplyContext,
    memory: &mut Reservation,
) -> Result<Outcome, ApiError> {
    // Stage 1: version, then the body, before any authentication.
    let route = path::parse(req.path());
    if route == Route::Gone {
        return Err(ApiError::Gone);
    }
    // A CONNECT's "body" is the rest of the connection: there is none to read (stage 2 answers),
    // and the connection ends with the answer.
    let body = if req.method() == actix_web::http::Method::CONNECT {
        cx.close = true;
        Vec::new()
    } else {
        read_body(payload, state, memory)
            .await
            .inspect_err(|_| cx.close = true)?
    };
    let env = parse_envelope(
        state,
        header(req, "content-type"),
        body,
        req.query_string(),
        memory,
    )
    .await?;
    if env.req_flag("pretty_print") == Some(true) {
        cx.pretty = true;
    }
    // Only a plain JavaScript name may wrap a response, so no request can inject script.
    cx.jsonp = env
        .req_value("jsonp")
        .and_then(|v| v.as_str().map(str::to_owned))
        .filter(|cb| {
            !cb.is_empty()
                && cb.len() <= 128
                && cb
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_$.".contains(&b))
        });
    let credential = find_credential(req, &env);
    cx.tail.auth_token = credential.as_ref().map(|c| c.value.clone());

    // Stage 2: known methods.
    let method = req.method().as_str().to_owned();
    if !KNOWN_METHODS.contains(&method.as_str()) {
        return Err(ApiError::Bare(501));
    }

    // Stage 3a: the early token check; only an expired (or trial-expired) token stops here.
    let check = match &credential {
        Some(Credential {
            value,
            is_jwt: true,
        }) => {
            let account_header = header(req, "x-auth-account-id");
            state.auth.check(value, account_header).await?
        }
        _ => TokenCheck::Invalid,
    };
    match &check {
        TokenCheck::Expired => return Err(ApiError::TokenExpired),
        TokenCheck::TrialExpired(ts) => {
            return Err(ApiError::validation(
                "account",
                "expired",
                serde_json::json!({"message": "account expired", "cause": ts}),
            ))
        }
        _ => {}
    }
    let identity = match check {
        TokenCheck::Valid(identity) => Some(*identity),
        _ => None,
    };

    // Stage 3b: the path shape, verb tunnelling and the allowed methods.
    let verb = tunnelled_verb(&env).unwrap_or_else(|| method.clone());
    let groups_path = match route {
        Route::Login(login) => {
            check_method(cx, &method, &verb, &["PUT"])?;
            if method == "OPTIONS" {
                return Ok(Outcome::Preflight);
            }
            return login_route(req, state, cx, login, env.data).await;
        }
        Route::TokenAuth => {
            check_method(cx, &method, &verb, &["GET", "DELETE"])?;
            if method == "OPTIONS" {
                return Ok(Outcome::Preflight);
            }
            let identity = authenticated(cx, state, req, identity, credential.is_some(), None)?;
            cx.negotiated = true;
            if !accepts_json(header(req, "accept")) {
                return Err(ApiError::Bare(406));
            }
            return login::token_info(state, &identity, &verb).await;
        }
        Route::Groups(p) => p,
        Route::NoAccount => {
            // §7.3: no account in the URL is for superduper admins only, after authentication.
            mark_authenticated(cx, state, identity.as_ref(), req, None);
            return Err(match identity {
                None => ApiError::InvalidCredentials,
                Some(id) if id.may_access_without_account() => ApiError::NotFound,
                Some(_) => ApiError::Forbidden,
            });
        }
        Route::NotServed | Route::Unknown | Route::Gone => return Err(ApiError::NotFound),
    };
    check_method(cx, &method, &verb, groups_path.allowed_methods())?;
    if method == "OPTIONS" {
        return Ok(Outcome::Preflight);
    }

    // Stage 4: the account id and the account document.
    let account = match AccountId::parse(&groups_path.account) {
        Ok(id) => id,
        Err(AccountIdError::Missing) => {
            return Err(ApiError::MalformedAccountId("missing account_id".into()))
        }
        Err(AccountIdError::Malformed(raw)) => {
            return Err(ApiError::MalformedAccountId(format!(
                "invalid account_id '{raw}'"
            )))
        }
        Err(AccountIdError::NoSuchAccount(raw)) => return Err(ApiError::BadIdentifier(raw)),
    };
    // The token check has just read the caller's own account doc; an account acting on itself
    // (the common case) does not read it twice.
    let known = identity
        .as_ref()
        .filter(|id| id.account_id == account)
        .and_then(|id| id.account_doc.clone());
    let account_doc = match known {
        Some(doc) => doc,
        None => match state
            .store
            .get_doc(&account.db(), &DocId::from(account.clone()))
            .await
        {
            Ok(Some(Value::Object(doc))) => doc,
            Ok(_) => return Err(ApiError::BadIdentifier(account.to_string())),
            Err(e) => {
                log::warn!("account {account}: {e}");
                return Err(ApiError::DatastoreFatal);
            }
        },
    };

    // Stage 5: a credential must be present and valid.
    let identity = authenticated(
        cx,
        state,
        req,
        identity,
        credential.is_some(),
        Some(&account),
    )?;

    // Stage 6: authorisation.
    if !identity.may_access(&account, &account_doc) {
        return Err(ApiError::Forbidden);
    }
    let args: Vec<&str> = match &groups_path.target {
        Target::Collection => vec![],
        Target::Entity(id) => vec![id.as_str()],
    };
    let restricted = RestrictedRequest {
        endpoint: "groups",
        args: &args,
        verb: &verb,
        account: account.as_str(),
        relation: identity.relation(&account, &account_doc),
    };
    if !state
        .auth
        .restrictions_allow(&identity, &restricted)
        .await?
    {
        return Err(ApiError::Restricted);
    }

    // Stage 7: content negotiation.
    cx.negotiated = true;
    if !accepts_json(header(req, "accept")) {
        return Err(ApiError::Bare(406));
    }

    // Stages 8-11 belong to the resource.
    let request = groups::GroupRequest {
        state,
        account,
        user: groups_path.user.clone(),
        target: groups_path.target.clone(),
        method,
        verb,
        env,
        request_id: cx.tail.request_id.clone(),
        author: identity.author.clone(),
        path: req.path().trim_end_matches('/').to_owned(),
        conditions: groups::Conditions {
            if_match: header(req, "if-match").map(str::to_owned),
            if_none_match: header(req, "if-none-match").map(str::to_owned),
            content_type_ok: content_type_accepted(header(req, "content-type")),
        },
    };
    groups::handle(request, &cx.tail).await
}

/// Verb tunnelling (§1): a POST whose tunnelled verb is allowed is allowed too; otherwise POST is
/// not. OPTIONS passes only as a CORS preflight (the caller answers it).
fn check_method(
    cx: &mut ReplyContext,
    method: &str,
    verb: &str,
    resource_methods: &[&'static str],
) -> Result<(), ApiError> {
    let mut allowed = resource_methods.to_vec();
    if method == "POST" && verb != "POST" {
        if allowed.contains(&verb) {
            allowed.push("POST");
        } else {
            allowed.retain(|m| *m != "POST");
        }
    }
    cx.allowed_methods = allowed.clone();
    let ok = if method == "OPTIONS" {
        cx.cors_request
    } else {
        allowed.contains(&method)
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::InvalidMethod)
    }
}

/// `PUT /v2/api_auth` and `PUT /v2/user_auth`: they authenticate themselves, at a cost of two
/// bucket tokens (auth-contract §3.7), and answer with the new token as `auth_token`.
async fn login_route(
    req: &HttpRequest,
    state: &AppState,
    cx: &mut ReplyContext,
    login: login::Login,
    data: Value,
) -> Result<Outcome, ApiError> {
    spend(cx, state, &bucket_key(req.peer_addr(), None), 2.0)?;
    cx.negotiated = true;
    if !accepts_json(header(req, "accept")) {
        return Err(ApiError::Bare(406));
    }
    let logged_in = login::handle(state, login, data, login.path()).await?;
    cx.tail.auth_token = Some(logged_in.token);
    cx.tail.version = Some(state.version.clone());
    Ok(logged_in.outcome)
}

/// Stage 5: the caller's identity, or 401; a request without any credential is charged to the
/// client's bucket, and an empty bucket is a 429 (§0, auth-contract §1.7.1).
fn authenticated(
    cx: &mut ReplyContext,
    state: &AppState,
    req: &HttpRequest,
    identity: Option<Identity>,
    has_credential: bool,
    account: Option<&AccountId>,
) -> Result<Identity, ApiError> {
    mark_authenticated(cx, state, identity.as_ref(), req, account);
    match identity {
        Some(identity) => Ok(identity),
        None => {
            if !has_credential {
                spend(cx, state, &bucket_key(req.peer_addr(), account), 1.0)?;
            }
            Err(ApiError::InvalidCredentials)
        }
    }
}

/// Takes `cost` tokens from a client's bucket; an empty bucket is a 429.
fn spend(cx: &mut ReplyContext, state: &AppState, key: &str, cost: f64) -> Result<(), ApiError> {
    match state.limiter.take(key, cost) {
        Ok(remaining) => {
            cx.tail.tokens_remaining = remaining;
            Ok(())
        }
        Err(remaining) => {
            cx.tail.tokens_remaining = remaining;
            Err(ApiError::TooManyRequests)
        }
    }
}

fn tunnelled_verb(env: &RequestEnvelope) -> Option<String> {
    let from_query = env.query_value("verb");
    let verb = [
        env.data.get("verb"),
        from_query.as_ref(),
        env.envelope.get("verb"),
    ]
    .into_iter()
    .flatten()
    .find_map(|v| v.as_str().map(str::to_ascii_uppercase));
    verb
}

fn bucket_key(peer: Option<SocketAddr>, account: Option<&AccountId>) -> String {
    let ip = peer
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    match account {
        Some(a) => format!("{ip}/{a}"),
        None => format!("{ip}/no_account"),
    }
}

fn mark_authenticated(
    cx: &mut ReplyContext,
    state: &AppState,
    identity: Option<&Identity>,
    req: &HttpRequest,
    account: Option<&AccountId>,
) {
    cx.tail.tokens_remaining = state
        .limiter
        .remaining(&bucket_key(req.peer_addr(), account));
    if identity.is_some() {
        cx.tail.version = Some(state.version.clone());
    }
}

/// Stage 7: JSON must be acceptable (`Accept` absent, `*/*`, `application/*`, or a JSON type).
fn accepts_json(accept: Option<&str>) -> bool {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return true;
    };
    accept.split(',').any(|item| {
        let mut parts = item.split(';');
        let mime = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                == Some(0.0)
        });
        !refused
            && matches!(
                mime.as_str(),
                "*/*" | "application/*" | "application/json" | "application/x-json"
            )
    })
}

/// Stage 10: the request content types Crossbar accepts for writes.
fn content_type_accepted(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return true;
    };
    let mime = crate::envelope::media_type(ct);
    matches!(
        mime.as_str(),
        "" | "application/json" | "application/x-json" | "application/x-www-form-urlencoded"
    ) || mime.starts_with("multipart/")
}

/// Turns a target into a parsed group id, or the 404 Crossbar gives for a group it cannot load.
pub fn parse_group_id(target: &Target) -> Option<Result<DocId, ApiError>> {
    match target {
        Target::Collection => None,
        Target::Entity(raw) => {
            Some(DocId::parse(raw).ok_or_else(|| ApiError::BadIdentifier(raw.clone())))
        }
    }
}

/// A JSON object as a map (anything else is an empty map).
pub fn as_map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        assert!(accepts_json(None));
        assert!(accepts_json(Some("application/json")));
        assert!(accepts_json(Some("text/html, */*;q=0.8")));
        assert!(!accepts_json(Some("text/html")));
        assert!(!accepts_json(Some("application/json;q=0")));
    }

    #[test]
    fn write_content_types() {
        assert!(content_type_accepted(None));
        assert!(content_type_accepted(Some(
            "application/json; charset=utf-8"
        )));
        assert!(content_type_accepted(Some(
            "application/x-www-form-urlencoded"
        )));
        assert!(!content_type_accepted(Some("text/plain")));
    }

    #[test]
    fn node_is_22_chars_of_base64url() {
        let node = AppState::node_id("kz-groups@host");
        assert_eq!(node.len(), 22);
        assert!(node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }

    #[test]
    fn verb_comes_from_data_then_query_then_envelope() {
        let env =
            RequestEnvelope::parse(None, br#"{"data":{},"verb":"put"}"#, "verb=patch").unwrap();
        assert_eq!(tunnelled_verb(&env).as_deref(), Some("PATCH"));
        let env =
            RequestEnvelope::parse(None, br#"{"data":{"verb":"delete"}}"#, "verb=patch").unwrap();
        assert_eq!(tunnelled_verb(&env).as_deref(), Some("DELETE"));
    }
}
