//! Stages 3 and 5 of groups-contract §0: who is calling. The token is checked early (only an
//! expired token, or an expired trial, stops a request there), the route's methods are checked
//! with verb tunnelling, and later a credential must be present and valid, with the rate-limit
//! bucket of auth-contract §1.7.1 charged when there is none.
use std::net::SocketAddr;

use actix_web::http::{Method, StatusCode};
use actix_web::HttpRequest;
use serde_json::json;

use super::media;
use super::parse::{Credential, Parsed};
use super::reply::Reply;
use super::request::header;
use super::{staged, AppState, Stop};
use crate::auth::{Identity, TokenCheck};
use crate::domain::ids::AccountId;
use crate::envelope::RequestEnvelope;
use crate::error::ApiError;

/// A request past stage 3: its token checked (an identity when it is valid) and its method
/// allowed on its route.
pub struct Caller {
    pub reply: Reply,
    pub env: RequestEnvelope,
    pub method: Method,
    pub verb: Method,
    pub(super) identity: Option<Identity>,
    pub(super) has_credential: bool,
    pub(super) peer: Option<SocketAddr>,
}

impl Parsed {
    /// Stage 3a: the early token check. A token that verifies but has expired is 401 variant B,
    /// an expired trial a 400, here; any other failure waits for stage 5.
    pub async fn check_token(self, req: &HttpRequest, state: &AppState) -> Result<Caller, Stop> {
        let Parsed {
            reply,
            env,
            credential,
            method,
            verb,
        } = self;
        let check = match &credential {
            Some(Credential {
                value,
                is_jwt: true,
            }) => state
                .auth
                .check(value, header(req, "x-auth-account-id"))
                .await
                .map_err(ApiError::from),
            _ => Ok(TokenCheck::Invalid),
        };
        let (reply, check) = staged(reply, check)?;
        let identity = match check {
            TokenCheck::Expired => Err(ApiError::TokenExpired),
            TokenCheck::TrialExpired(ts) => Err(ApiError::validation(
                "account",
                "expired",
                json!({"message": "account expired", "cause": ts}),
            )),
            TokenCheck::Valid(identity) => Ok(Some(*identity)),
            TokenCheck::Invalid => Ok(None),
        };
        let (reply, identity) = staged(reply, identity)?;
        Ok(Caller {
            reply,
            env,
            method,
            verb,
            identity,
            has_credential: credential.is_some(),
            peer: req.peer_addr(),
        })
    }
}

impl Caller {
    /// Stage 3b: the route's methods (before tunnelling, §1). A POST whose tunnelled verb is
    /// allowed is allowed too; otherwise POST is not. OPTIONS passes only as a CORS preflight,
    /// which is answered here.
    pub fn allow(mut self, methods: &[Method]) -> Result<Caller, Stop> {
        let mut allowed = methods.to_vec();
        if self.method == Method::POST && self.verb != Method::POST {
            if allowed.contains(&self.verb) {
                allowed.push(Method::POST);
            } else {
                allowed.retain(|m| *m != Method::POST);
            }
        }
        let preflight = self.method == Method::OPTIONS;
        let ok = if preflight {
            self.reply.cors_request
        } else {
            allowed.contains(&self.method)
        };
        self.reply.allowed_methods = allowed;
        match (ok, preflight) {
            (false, _) => Err(Stop::new(self.reply, ApiError::InvalidMethod)),
            (true, true) => Err(Stop::preflight(self.reply)),
            (true, false) => Ok(self),
        }
    }

    /// Stage 5: the caller's identity, or 401; a request without any credential is charged to
    /// the client's bucket for `account` (or the one without an account), and an empty bucket is
    /// a 429 (§0, auth-contract §1.7.1).
    pub fn authenticate(
        self,
        state: &AppState,
        account: Option<&AccountId>,
    ) -> Result<Authenticated, Stop> {
        let Caller {
            mut reply,
            env,
            method,
            verb,
            identity,
            has_credential,
            peer,
        } = self;
        let bucket = bucket_key(peer, account);
        reply.tail.tokens_remaining = state.limiter.remaining(&bucket);
        let Some(identity) = identity else {
            let error = match has_credential {
                true => ApiError::InvalidCredentials,
                false => spend(&mut reply, state, &bucket, 1.0)
                    .err()
                    .unwrap_or(ApiError::InvalidCredentials),
            };
            return Err(Stop::new(reply, error));
        };
        reply.tail.version = Some(state.version.clone());
        Ok(Authenticated {
            reply,
            env,
            method,
            verb,
            identity,
        })
    }

    /// The identity, if the token was valid, for a route that decides on its own (§7.3).
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// The logins authenticate themselves, at a cost of two bucket tokens (auth-contract §3.7).
    pub fn pay_for_login(mut self, state: &AppState) -> Result<Caller, Stop> {
        let spent = spend(&mut self.reply, state, &bucket_key(self.peer, None), 2.0);
        let (reply, ()) = staged(self.reply, spent)?;
        Ok(Caller { reply, ..self })
    }

    /// Without an account in the URL only superduper admins pass, after authentication (§7.3).
    pub fn without_account(self, state: &AppState) -> Stop {
        let error = match &self.identity {
            None => ApiError::InvalidCredentials,
            Some(id) if id.may_access_without_account() => ApiError::NotFound,
            Some(_) => ApiError::Forbidden,
        };
        let mut reply = self.reply;
        reply.tail.tokens_remaining = state.limiter.remaining(&bucket_key(self.peer, None));
        if self.identity.is_some() {
            reply.tail.version = Some(state.version.clone());
        }
        Stop::new(reply, error)
    }
}

/// A request whose caller is known (stage 5 passed).
pub struct Authenticated {
    pub reply: Reply,
    pub env: RequestEnvelope,
    pub method: Method,
    pub verb: Method,
    pub identity: Identity,
}

/// Takes `cost` tokens from a client's bucket; an empty bucket is a 429.
fn spend(reply: &mut Reply, state: &AppState, key: &str, cost: f64) -> Result<(), ApiError> {
    let (taken, remaining) = match state.limiter.take(key, cost) {
        Ok(remaining) => (true, remaining),
        Err(remaining) => (false, remaining),
    };
    reply.tail.tokens_remaining = remaining;
    taken.then_some(()).ok_or(ApiError::TooManyRequests)
}

/// Crossbar's bucket per client address, and per account when the URL names one.
fn bucket_key(peer: Option<SocketAddr>, account: Option<&AccountId>) -> String {
    let ip = peer
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    match account {
        Some(a) => format!("{ip}/{a}"),
        None => format!("{ip}/no_account"),
    }
}

/// The answer's starting bucket reading: the client's bucket without an account.
pub fn initial_tokens(state: &AppState, peer: Option<SocketAddr>) -> u64 {
    state.limiter.remaining(&bucket_key(peer, None))
}

/// Stage 7: JSON or CSV must be acceptable (see `media`), else a bare 406. From here on
/// answers carry `Content-Language` and `Vary`.
pub fn negotiate(mut reply: Reply, req: &HttpRequest) -> Result<Reply, Stop> {
    reply.negotiated = true;
    match media::choose(header(req, "accept")) {
        Some(rendering) => {
            reply.rendering = rendering;
            Ok(reply)
        }
        None => Err(Stop::new(reply, ApiError::Bare(StatusCode::NOT_ACCEPTABLE))),
    }
}
