//! Stages 1 and 2 of groups-contract §0: the body is read and parsed before anything else looks
//! at the request (so a malformed body is a 400 even without a token), then the method must be
//! one Crossbar knows (501).
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest};
use futures::StreamExt;
use serde_json::Value;

use super::memory::{self, Reservation};
use super::reply::{Reply, CROSSBAR_METHODS};
use super::request::header;
use super::{staged, AppState, Stop};
use crate::envelope::{BodyPlan, RequestEnvelope};
use crate::error::ApiError;

/// A request past stages 1 and 2: its envelope, its credential, its method and the verb it
/// tunnels, and what its answer will carry so far.
pub struct Parsed {
    pub reply: Reply,
    pub env: RequestEnvelope,
    pub credential: Option<Credential>,
    pub method: Method,
    /// The tunnelled verb (§1) or, without one, the method.
    pub verb: Method,
}

/// A credential as received, and whether it is one Kazoo would verify as a JWT.
#[derive(Debug, Clone)]
pub struct Credential {
    pub value: String,
    pub is_jwt: bool,
}

/// Stages 1 and 2. `memory` keeps what the body and its tree hold until the answer is rendered.
pub async fn parse(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    mut reply: Reply,
    memory: &mut Reservation,
) -> Result<Parsed, Stop> {
    // A CONNECT's "body" is the rest of the connection: there is none to read (stage 2 answers),
    // and the connection ends with the answer.
    let body = if req.method() == Method::CONNECT {
        reply.close = true;
        Ok(Vec::new())
    } else {
        read_body(req, payload, state, memory).await
    };
    // A body not read to its end leaves the connection unusable.
    reply.close |= body.is_err();
    let (reply, body) = staged(reply, body)?;
    let parsed = parse_envelope(
        state,
        header(req, "content-type"),
        body,
        req.query_string(),
        memory,
    )
    .await;
    let (mut reply, env) = staged(reply, parsed)?;
    if env.req_flag("pretty_print") == Some(true) {
        reply.pretty = true;
    }
    reply.jsonp = jsonp_callback(&env);
    let credential = find_credential(req, &env);
    reply.tail.auth_token = credential.as_ref().map(|c| c.value.clone());

    // Stage 2: known methods.
    let known = CROSSBAR_METHODS.contains(req.method());
    let (reply, ()) = staged(
        reply,
        known
            .then_some(())
            .ok_or(ApiError::Bare(StatusCode::NOT_IMPLEMENTED)),
    )?;
    let verb = tunnelled_verb(&env).unwrap_or_else(|| req.method().clone());
    Ok(Parsed {
        reply,
        env,
        credential,
        method: req.method().clone(),
        verb,
    })
}

/// The request body, taken in within `KZ_GROUPS_BODY_TIMEOUT_MS` of the client's time and held
/// against the request memory budget. The budget is reserved in one step, never while part of
/// it is held (requests each holding part of their body while waiting for more could together
/// wait forever): a body's announced `Content-Length` up front, or the upload limit once an
/// unannounced (chunked) body outgrows what needs no reservation. Time spent waiting for the
/// budget is the server's and does not count. Past the time the answer is a bare 408 and the
/// connection is closed, so a stalled upload holds its socket no longer than that.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    state: &AppState,
    memory: &mut Reservation,
) -> Result<Vec<u8>, ApiError> {
    let limit = state.max_upload_bytes;
    let announced = header(req, "content-length").and_then(|v| v.trim().parse::<usize>().ok());
    let mut deadline = tokio::time::Instant::now() + state.body_timeout;
    if let Some(n) = announced.filter(|n| *n > limit) {
        // Most clients read no answer before their upload is sent: one not much over the limit
        // is read and dropped (it costs time, not memory) so they see the 400.
        if n <= 2 * limit {
            while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, payload.next()).await {}
        }
        return Err(ApiError::too_large(limit));
    }
    let mut reserve = async |bytes: usize, deadline: &mut tokio::time::Instant| {
        let waiting = tokio::time::Instant::now();
        memory.merge(state.memory.reserve_body(bytes).await);
        *deadline += waiting.elapsed();
    };
    let mut body = match announced {
        Some(n) => {
            reserve(n, &mut deadline).await;
            Vec::with_capacity(n)
        }
        None => Vec::new(),
    };
    let mut reserved = announced.is_some();
    loop {
        let chunk = match tokio::time::timeout_at(deadline, payload.next()).await {
            Err(_) => return Err(ApiError::Bare(StatusCode::REQUEST_TIMEOUT)),
            Ok(None) => return Ok(body),
            Ok(Some(chunk)) => chunk.map_err(|_| ApiError::Bare(StatusCode::BAD_REQUEST))?,
        };
        let len = body.len() + chunk.len();
        if len > limit {
            return Err(ApiError::too_large(limit));
        }
        if !reserved && len >= memory::SMALL {
            reserve(limit, &mut deadline).await;
            reserved = true;
        }
        body.extend_from_slice(&chunk);
    }
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

/// Only a plain JavaScript name may wrap a response (`jsonp`, §2.3), so no request can inject
/// script.
fn jsonp_callback(env: &RequestEnvelope) -> Option<String> {
    env.req_value("jsonp")
        .and_then(|v| v.as_str().map(str::to_owned))
        .filter(|cb| {
            !cb.is_empty()
                && cb.len() <= 128
                && cb
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_$.".contains(&b))
        })
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

/// The verb a request tunnels (§1): `data.verb`, then `?verb=`, then the envelope's `verb`,
/// upper-cased. A verb that is not a method name stays a verb no resource allows.
fn tunnelled_verb(env: &RequestEnvelope) -> Option<Method> {
    let from_query = env.query_value("verb");
    let verb = [
        env.data.get("verb"),
        from_query.as_ref(),
        env.envelope.get("verb"),
    ]
    .into_iter()
    .flatten()
    .find_map(Value::as_str)?
    .to_ascii_uppercase();
    let token: String = verb
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    Method::from_bytes(token.as_bytes())
        .ok()
        .or_else(|| Method::from_bytes(b"_").ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verb_comes_from_data_then_query_then_envelope() {
        let env =
            RequestEnvelope::parse(None, br#"{"data":{},"verb":"put"}"#, "verb=patch").unwrap();
        assert_eq!(tunnelled_verb(&env), Some(Method::PATCH));
        let env =
            RequestEnvelope::parse(None, br#"{"data":{"verb":"delete"}}"#, "verb=patch").unwrap();
        assert_eq!(tunnelled_verb(&env), Some(Method::DELETE));
    }

    #[test]
    fn a_verb_that_is_no_method_matches_none() {
        let env = RequestEnvelope::parse(None, br#"{"data":{"verb":"GE T"}}"#, "").unwrap();
        let verb = tunnelled_verb(&env).unwrap();
        assert!(!CROSSBAR_METHODS.contains(&verb));
        let env = RequestEnvelope::parse(None, br#"{"data":{"verb":""}}"#, "").unwrap();
        assert!(tunnelled_verb(&env).is_some_and(|v| !CROSSBAR_METHODS.contains(&v)));
    }
}
