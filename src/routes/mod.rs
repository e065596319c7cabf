//! The whole route table: the health probes, the metrics and the OpenAPI document, and
//! Crossbar's paths (groups-contract §1) with the methods each allows and what serves it, in the
//! order of the pipeline's stages (§0), which decides which error a client sees when several
//! apply.
pub mod groups;
pub mod health;
pub mod login;
pub mod ops;

use std::net::SocketAddr;

use actix_web::dev::RequestHead;
use actix_web::http::header::CONTENT_LENGTH;
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use percent_encoding::percent_decode_str;

use crate::domain::history::Actor;
use crate::error::ApiError;
use crate::pipeline::caller::{self, Authenticated, Caller};
use crate::pipeline::media;
use crate::pipeline::memory::{self, Reservation};
use crate::pipeline::reply::Outcome;
use crate::pipeline::request;
use crate::pipeline::scope::Authorised;
use crate::pipeline::{parse, staged, AppState, Reply, Stop};
use groups::request::{Conditions, GroupRequest, GroupsPath, Insight, Target, ACCOUNT_WIDE};
use login::Login;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(ops::metrics))
        .route("/openapi.json", web::get().to(ops::openapi))
        .default_service(web::to(crossbar));
}

/// The name of the route `path` takes, for metrics: one of a fixed set, whatever the path.
pub fn route_name(path: &str) -> &'static str {
    match path {
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/metrics" => "metrics",
        "/openapi.json" => "openapi",
        _ => Route::resolve(path).name(),
    }
}

/// Crossbar's paths: what each `/vN/…` path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v1/…`: 410.
    Gone,
    /// `/vN/api_auth`, `/vN/user_auth`: PUT.
    Login(Login),
    /// `/vN/token_auth`: GET, DELETE.
    TokenAuth,
    /// `/vN/accounts/{A}/groups[/{G}]` and `/vN/accounts/{A}/users/{U}/groups[/{G}]`.
    Groups(GroupsPath),
    /// `/vN/groups…`: no account in the URL (§7.3).
    NoAccount,
    /// Anything else, including account paths the groups resource does not serve: 404.
    NotFound,
}

impl Route {
    /// The route's name in metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Route::Gone => "gone",
            Route::Login(Login::ApiKey) => "api_auth",
            Route::Login(Login::User) => "user_auth",
            Route::TokenAuth => "token_auth",
            Route::Groups(GroupsPath {
                user: None,
                target: Target::Collection,
                ..
            }) => "groups",
            Route::Groups(GroupsPath {
                user: None,
                target: Target::Entity(_),
                ..
            }) => "group",
            Route::Groups(GroupsPath {
                user: Some(_),
                target: Target::Collection,
                ..
            }) => "user_groups",
            Route::Groups(GroupsPath {
                user: Some(_),
                target: Target::Entity(_),
                ..
            }) => "user_group",
            Route::Groups(GroupsPath {
                target: Target::Insight { group, insight },
                ..
            }) => match (group, insight) {
                (None, _) => "account_dangling",
                (Some(_), Insight::Ringing) => "group_ringing",
                (Some(_), Insight::Dangling) => "group_dangling",
                (Some(_), Insight::References) => "group_references",
            },
            Route::Groups(GroupsPath {
                target:
                    Target::History {
                        group,
                        entry,
                        restore,
                    },
                ..
            }) => match (group, entry, restore) {
                (None, ..) => "account_history",
                (Some(_), None, _) => "group_history",
                (Some(_), Some(_), false) => "group_history_entry",
                (Some(_), Some(_), true) => "group_history_restore",
            },
            Route::NoAccount => "no_account",
            Route::NotFound => "not_found",
        }
    }

    /// Splits the path as Crossbar does (§1): `/vN/`, then nouns and their arguments, each
    /// segment URL-decoded after the split (so `%2F` stays inside its segment).
    pub fn resolve(path: &str) -> Route {
        Self::resolve_decoding(path, 1)
    }

    /// The same, each segment decoded `decodes` times (see `CrossbarLine::path_decodes`).
    pub fn resolve_decoding(path: &str, decodes: usize) -> Route {
        let mut segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        // A trailing slash is ignored.
        if segments.len() > 1 && segments.last() == Some(&"") {
            segments.pop();
        }
        let Some((version, rest)) = segments.split_first() else {
            return Route::NotFound;
        };
        let number = version
            .strip_prefix('v')
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        match number.map(str::parse::<u64>) {
            None => return Route::NotFound,
            Some(Ok(1)) => return Route::Gone,
            Some(_) => {}
        }
        let decoded: Vec<String> = rest
            .iter()
            .map(|s| {
                let mut segment = (*s).to_owned();
                for _ in 0..decodes {
                    segment = percent_decode_str(&segment)
                        .decode_utf8_lossy()
                        .into_owned();
                }
                segment
            })
            .collect();
        let words: Vec<&str> = decoded.iter().map(String::as_str).collect();
        let groups = |account: &str, user: Option<&str>, target| {
            Route::Groups(GroupsPath {
                account: account.to_owned(),
                user: user.map(str::to_owned),
                target,
            })
        };
        match words.as_slice() {
            ["api_auth"] => Route::Login(Login::ApiKey),
            ["user_auth"] => Route::Login(Login::User),
            ["token_auth"] => Route::TokenAuth,
            ["accounts", a, "groups"] => groups(a, None, Target::Collection),
            ["accounts", a, "groups", g] => groups(a, None, Target::Entity((*g).to_owned())),
            // kz-groups' membership insight (issue 19): shapes Crossbar answers 404 `not_found`.
            ["accounts", a, "groups", ACCOUNT_WIDE, "dangling"] => groups(
                a,
                None,
                Target::Insight {
                    group: None,
                    insight: Insight::Dangling,
                },
            ),
            // kz-groups' group history (issue 18): shapes Crossbar answers 404 `not_found`.
            ["accounts", a, "groups", ACCOUNT_WIDE, "history"] => {
                groups(a, None, history_target(None, None, false))
            }
            ["accounts", a, "groups", g, "history", rest @ ..] if *g != ACCOUNT_WIDE => {
                match rest {
                    [] => groups(a, None, history_target(Some(g), None, false)),
                    [e] => groups(a, None, history_target(Some(g), Some(e), false)),
                    [e, "restore"] => groups(a, None, history_target(Some(g), Some(e), true)),
                    _ => Route::NotFound,
                }
            }
            ["accounts", a, "groups", g, sub] if *g != ACCOUNT_WIDE => match Insight::parse(sub) {
                Some(insight) => groups(
                    a,
                    None,
                    Target::Insight {
                        group: Some((*g).to_owned()),
                        insight,
                    },
                ),
                None => Route::NotFound,
            },
            ["accounts", a, "users", u, "groups"] => groups(a, Some(u), Target::Collection),
            ["accounts", a, "users", u, "groups", g] => {
                groups(a, Some(u), Target::Entity((*g).to_owned()))
            }
            ["groups", ..] => Route::NoAccount,
            _ => Route::NotFound,
        }
    }
}

fn history_target(group: Option<&str>, entry: Option<&str>, restore: bool) -> Target {
    Target::History {
        group: group.map(str::to_owned),
        entry: entry.map(str::to_owned),
        restore,
    }
}

/// The methods a groups path allows before verb tunnelling (§1 table).
fn groups_methods(target: &Target) -> &'static [Method] {
    match target {
        Target::Collection => &[Method::GET, Method::PUT],
        Target::Entity(_) => &[Method::GET, Method::POST, Method::PATCH, Method::DELETE],
        Target::Insight { .. } => &[Method::GET],
        Target::History { restore: true, .. } => &[Method::PUT, Method::POST],
        Target::History { .. } => &[Method::GET],
    }
}

/// Stages 8-11 of a groups request: what serves each target and verb (Crossbar's `cb_groups`).
async fn serve_groups(mut req: GroupRequest<'_>, reply: &Reply) -> Result<Outcome, ApiError> {
    let (views, user) = groups::prepare(&req).await?;
    match (&req.target, req.verb.clone()) {
        (Target::Collection, Method::GET) => {
            groups::listing::summary(&req, &views, user.as_ref(), reply).await
        }
        (Target::Entity(_), Method::GET) => groups::fetch(&req).await,
        (Target::Entity(_), Method::DELETE) => groups::delete(&req).await,
        // Writes take the request data: it becomes the document, without being copied.
        (Target::Collection, Method::PUT) => {
            let data = req.take_data();
            groups::create(&req, data).await
        }
        (Target::Entity(_), Method::POST) => {
            let data = req.take_data();
            groups::update(&req, data).await
        }
        (Target::Entity(_), Method::PATCH) => {
            let data = req.take_data();
            groups::patch(&req, data).await
        }
        (Target::Insight { insight, .. }, Method::GET) => {
            let insight = *insight;
            groups::membership::serve(&req, &views, insight).await
        }
        (Target::History { restore: false, .. }, Method::GET) => groups::history::serve(&req).await,
        (Target::History { restore: true, .. }, Method::PUT | Method::POST) => {
            groups::history::restore(&req).await
        }
        _ => Err(ApiError::InvalidMethod),
    }
}

/// The single entry point of every `/vN/…` request. Its log lines name it by its request id.
async fn crossbar(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let reply = Reply::for_request(
        req.headers(),
        &state.node,
        caller::initial_tokens(&state, req.peer_addr()),
        state.crossbar,
        &state.version,
    );
    let id = reply.tail.request_id.clone();
    request::serving(id, async {
        // What the request's body and parsed JSON hold, given back once the answer is rendered.
        let mut memory = Reservation::default();
        let (reply, outcome) = match answer(&req, payload, &state, reply, &mut memory).await {
            Ok((reply, outcome)) => (reply, Ok(outcome)),
            Err(stop) => stop.into_parts(),
        };
        let response = reply.render(outcome);
        if memory.bytes() > 0 {
            drop(memory);
            memory::give_back();
        }
        response
    })
    .await
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
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())?;
    if announced <= state.max_upload_bytes as u64 || Route::resolve(head.uri.path()) == Route::Gone
    {
        return None;
    }
    let mut reply = Reply::for_request(
        &head.headers,
        &state.node,
        caller::initial_tokens(state, peer),
        state.crossbar,
        &state.version,
    );
    reply.close = true;
    Some(reply.render(Err(ApiError::too_large(state.max_upload_bytes))))
}

/// The stages of groups-contract §0, in order; each consumes what the one before produced.
async fn answer(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    reply: Reply,
    memory: &mut Reservation,
) -> Result<(Reply, Outcome), Stop> {
    let route = Route::resolve_decoding(req.path(), state.crossbar.path_decodes());
    // Stage 1: the API version, then the body, before any authentication. Stage 2: the method.
    if route == Route::Gone {
        return Err(Stop::new(reply, ApiError::Gone));
    }
    let parsed = parse::parse(req, payload, state, reply, memory).await?;
    // Stage 3: the early token check, then the route and its methods.
    let caller = parsed.check_token(req, state).await?;
    let path = match route {
        Route::Login(login) => return login_route(req, state, caller, login).await,
        Route::TokenAuth => return token_auth_route(req, state, caller).await,
        Route::NoAccount => return Err(caller.without_account(state)),
        Route::NotFound | Route::Gone => return Err(Stop::new(caller.reply, ApiError::NotFound)),
        Route::Groups(path) => path,
    };
    let caller = caller.allow(groups_methods(&path.target))?;
    // Stage 4: the account. Stages 5-6: the credential, and the right to act on the account.
    let scope = caller.account_scope(state, &path.account).await?;
    let Authorised {
        reply,
        env,
        method,
        verb,
        identity,
        account,
    } = scope
        .authorise(state, "groups", &path.target.args())
        .await?;
    // Stage 7: content negotiation. Groups and a group are answered as CSV when asked for.
    let mut reply = caller::negotiate(reply, req)?;
    if verb == Method::GET && matches!(path.target, Target::Collection | Target::Entity(_)) {
        reply.csv = media::csv_answer(reply.rendering, &env, request::header(req, "x-file-name"));
    }
    // Stages 8-11 belong to the resource.
    let request = GroupRequest {
        state,
        account: account.id,
        user: path.user,
        target: path.target,
        method,
        verb,
        env,
        request_id: reply.tail.request_id.clone(),
        actor: Actor::Token {
            account_id: identity.author.account_id.clone(),
            user_id: identity.owner_id.clone(),
            auth_method: identity.method.clone(),
            original_account_id: identity.author.original_account_id.clone(),
        },
        author: identity.author,
        path: req.path().trim_end_matches('/').to_owned(),
        conditions: Conditions::of(req),
    };
    let outcome = serve_groups(request, &reply).await;
    staged(reply, outcome)
}

/// `PUT /vN/api_auth` and `/vN/user_auth` after stage 3a: they authenticate themselves, so
/// their stages are the method, the login's bucket cost (§3.7), negotiation, then the login.
async fn login_route(
    req: &HttpRequest,
    state: &AppState,
    caller: Caller,
    login: Login,
) -> Result<(Reply, Outcome), Stop> {
    let caller = caller.allow(&[Method::PUT])?.pay_for_login(state)?;
    let reply = caller::negotiate(caller.reply, req)?;
    let (mut reply, logged_in) = staged(reply, login::login(state, login, caller.env.data).await)?;
    // A login answers with its new token as `auth_token` (auth-contract §3.4).
    reply.tail.auth_token = Some(logged_in.token);
    reply.tail.version = Some(state.version.clone());
    Ok((reply, logged_in.outcome))
}

/// `GET`/`DELETE /vN/token_auth` after stage 3a: the method, stage 5 without an account,
/// negotiation, then the token's claims.
async fn token_auth_route(
    req: &HttpRequest,
    state: &AppState,
    caller: Caller,
) -> Result<(Reply, Outcome), Stop> {
    let caller = caller.allow(&[Method::GET, Method::DELETE])?;
    let Authenticated {
        reply,
        identity,
        verb,
        ..
    } = caller.authenticate(state, None)?;
    let reply = caller::negotiate(reply, req)?;
    staged(reply, login::token_info(state, &identity, &verb).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "4b31dd1d32ce6d249897c06332375d65";

    fn groups(account: &str, user: Option<&str>, target: Target) -> Route {
        Route::Groups(GroupsPath {
            account: account.into(),
            user: user.map(Into::into),
            target,
        })
    }

    #[test]
    fn collection_entity_and_user_shapes() {
        assert_eq!(
            Route::resolve(&format!("/v2/accounts/{A}/groups")),
            groups(A, None, Target::Collection)
        );
        assert_eq!(
            Route::resolve(&format!("/v2/accounts/{A}/groups/g1/")),
            groups(A, None, Target::Entity("g1".into()))
        );
        assert_eq!(
            Route::resolve(&format!("/v3/accounts/{A}/users/u1/groups")),
            groups(A, Some("u1"), Target::Collection)
        );
        assert_eq!(
            Route::resolve(&format!("/v2/accounts/{A}/users/u1/groups/g1")),
            groups(A, Some("u1"), Target::Entity("g1".into()))
        );
    }

    #[test]
    fn segments_are_decoded_after_the_split() {
        assert_eq!(
            Route::resolve(&format!("/v2/accounts/{A}/groups/_design%2Fgroups")),
            groups(A, None, Target::Entity("_design/groups".into()))
        );
        assert_eq!(
            Route::resolve("/v2/accounts/account%2F4b%2F31%2Fdd1d32ce6d249897c06332375d65/groups"),
            groups(
                "account/4b/31/dd1d32ce6d249897c06332375d65",
                None,
                Target::Collection
            )
        );
    }

    #[test]
    fn membership_insight_shapes_are_kz_groups_extensions() {
        let insight = |group: Option<&str>, insight| {
            groups(
                A,
                None,
                Target::Insight {
                    group: group.map(Into::into),
                    insight,
                },
            )
        };
        for (sub, kind) in [
            ("ringing", Insight::Ringing),
            ("dangling", Insight::Dangling),
            ("references", Insight::References),
        ] {
            assert_eq!(
                Route::resolve(&format!("/v2/accounts/{A}/groups/g1/{sub}/")),
                insight(Some("g1"), kind)
            );
        }
        assert_eq!(
            Route::resolve(&format!("/v2/accounts/{A}/groups/_account/dangling")),
            insight(None, Insight::Dangling)
        );
        // Every other shape Crossbar answers 404 `not_found` stays so.
        for not_found in [
            format!("/v2/accounts/{A}/groups/_account/ringing"),
            format!("/v2/accounts/{A}/groups/g1/members"),
            format!("/v2/accounts/{A}/groups/g1/ringing/x"),
            format!("/v2/accounts/{A}/users/u1/groups/g1/ringing"),
        ] {
            assert_eq!(Route::resolve(&not_found), Route::NotFound, "{not_found}");
        }
        // `/groups/dangling` is a group id, as in Crossbar.
        assert_eq!(
            Route::resolve(&format!("/v2/accounts/{A}/groups/dangling")),
            groups(A, None, Target::Entity("dangling".into()))
        );
    }

    #[test]
    fn route_names_are_a_fixed_set() {
        for (path, name) in [
            ("/readyz", "readyz"),
            ("/metrics", "metrics"),
            ("/openapi.json", "openapi"),
            ("/v2/api_auth", "api_auth"),
            ("/v2/user_auth", "user_auth"),
            ("/v2/token_auth", "token_auth"),
            (&format!("/v2/accounts/{A}/groups") as &str, "groups"),
            (&format!("/v2/accounts/{A}/groups/g1"), "group"),
            (&format!("/v2/accounts/{A}/users/u1/groups"), "user_groups"),
            (
                &format!("/v2/accounts/{A}/users/u1/groups/g1"),
                "user_group",
            ),
            (
                &format!("/v2/accounts/{A}/groups/g1/ringing"),
                "group_ringing",
            ),
            (
                &format!("/v2/accounts/{A}/groups/g1/dangling"),
                "group_dangling",
            ),
            (
                &format!("/v2/accounts/{A}/groups/g1/references"),
                "group_references",
            ),
            (
                &format!("/v2/accounts/{A}/groups/_account/dangling"),
                "account_dangling",
            ),
            ("/v1/accounts", "gone"),
            ("/v2/groups", "no_account"),
            ("/anything/else", "not_found"),
        ] {
            assert_eq!(route_name(path), name, "{path}");
        }
    }

    #[test]
    fn kazoo_4_3_decodes_each_segment_twice() {
        assert_eq!(
            Route::resolve_decoding(&format!("/v2/accounts/{A}/groups/g%2541"), 2),
            groups(A, None, Target::Entity("gA".into()))
        );
        assert_eq!(
            Route::resolve(&format!("/v2/accounts/{A}/groups/g%2541")),
            groups(A, None, Target::Entity("g%41".into()))
        );
    }

    #[test]
    fn other_shapes() {
        assert_eq!(
            Route::resolve(&format!("/v1/accounts/{A}/groups")),
            Route::Gone
        );
        assert_eq!(Route::resolve("/v01/api_auth"), Route::Gone);
        assert_eq!(Route::resolve("/v+1/api_auth"), Route::NotFound);
        for not_found in [
            format!("/v2/accounts/{A}/groups/g/extra"),
            format!("/v2/accounts/{A}"),
            format!("/v2/accounts/{A}/users/u1"),
            "/v2/user_auth/tok".into(),
            "/v2/devices".into(),
            "/accounts".into(),
            "/vx/accounts".into(),
            "/v/accounts".into(),
            "/v2x/accounts".into(),
            "/v+2/accounts".into(),
        ] {
            assert_eq!(Route::resolve(&not_found), Route::NotFound, "{not_found}");
        }
        assert_eq!(Route::resolve("/v2/groups"), Route::NoAccount);
        assert_eq!(Route::resolve("/v2/api_auth"), Route::Login(Login::ApiKey));
        assert_eq!(Route::resolve("/v2/user_auth/"), Route::Login(Login::User));
        assert_eq!(
            Route::resolve("/v2/accounts//groups"),
            groups("", None, Target::Collection)
        );
    }
}
