//! A groups request as its handlers see it once stages 1-7 passed: the path's parts, the verb,
//! the envelope, the author, and the conditional headers they check (stages 9 and 10).
use actix_web::http::{Method, StatusCode};
use actix_web::HttpRequest;
use serde_json::Value;

use crate::domain::group::Author;
use crate::domain::history::Actor;
use crate::domain::ids::{AccountId, DocId};
use crate::envelope::{self, RequestEnvelope};
use crate::error::ApiError;
use crate::pipeline::reply::Outcome;
use crate::pipeline::request::header;
use crate::pipeline::AppState;

/// The groups part of a path: `accounts/{A}[/users/{U}]/groups[/{G}]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupsPath {
    /// Raw (decoded, unparsed) account id segment.
    pub account: String,
    /// Raw user id segment of `users/{U}/groups`.
    pub user: Option<String>,
    pub target: Target,
}

/// The collection, one group by its raw id segment, or a membership insight (kz-groups'
/// extension, issue 19): of one group (`groups/{G}/{insight}`) or of the whole account
/// (`groups/_account/dangling`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Collection,
    Entity(String),
    Insight {
        /// The raw group id segment; `None` for the whole account.
        group: Option<String>,
        insight: Insight,
    },
    /// A group's history (kz-groups' extension, issue 18): `groups/{G}/history`,
    /// `groups/{G}/history/{ENTRY}`, `groups/{G}/history/{ENTRY}/restore`, and the account's,
    /// `groups/_account/history`.
    History {
        /// The raw group id segment; `None` for the whole account.
        group: Option<String>,
        /// The raw entry id segment.
        entry: Option<String>,
        restore: bool,
    },
}

/// The membership sub-resources: no Crossbar path has this shape (Crossbar answers any
/// `groups/{G}/{anything}` with 404 `not_found`, groups-contract §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insight {
    /// `ringing`: who a ring group would ring, and why not.
    Ringing,
    /// `dangling`: members whose documents are gone or that never ring.
    Dangling,
    /// `references`: the callflows and groups that point at a group.
    References,
}

/// The id segment that names the whole account: no group can have it (an id starting with `_`
/// is refused, as CouchDB refuses it).
pub const ACCOUNT_WIDE: &str = "_account";

impl Insight {
    pub fn parse(segment: &str) -> Option<Self> {
        match segment {
            "ringing" => Some(Insight::Ringing),
            "dangling" => Some(Insight::Dangling),
            "references" => Some(Insight::References),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Insight::Ringing => "ringing",
            Insight::Dangling => "dangling",
            Insight::References => "references",
        }
    }
}

impl Target {
    /// The path arguments token restrictions match (§5.2).
    pub fn args(&self) -> Vec<&str> {
        match self {
            Target::Collection => vec![],
            Target::Entity(id) => vec![id.as_str()],
            Target::Insight { group, insight } => {
                vec![group.as_deref().unwrap_or(ACCOUNT_WIDE), insight.name()]
            }
            Target::History {
                group,
                entry,
                restore,
            } => {
                let mut args = vec![group.as_deref().unwrap_or(ACCOUNT_WIDE), "history"];
                args.extend(entry.as_deref());
                if *restore {
                    args.push("restore");
                }
                args
            }
        }
    }
}

pub struct GroupRequest<'a> {
    pub state: &'a AppState,
    pub account: AccountId,
    /// The raw `{U}` of `users/{U}/groups`.
    pub user: Option<String>,
    pub target: Target,
    pub method: Method,
    pub verb: Method,
    pub env: RequestEnvelope,
    pub request_id: String,
    pub author: Author,
    /// Who the group's history records as making this request's changes.
    pub actor: Actor,
    /// The request path without a trailing slash, for `Location`.
    pub path: String,
    pub conditions: Conditions,
}

impl GroupRequest<'_> {
    /// The group the path names, parsed; Crossbar answers a group it cannot load with 404
    /// `bad_identifier` naming the raw id.
    pub fn group_id(&self) -> Result<DocId, ApiError> {
        match &self.target {
            Target::Entity(raw)
            | Target::Insight {
                group: Some(raw), ..
            }
            | Target::History {
                group: Some(raw), ..
            } => DocId::parse(raw).ok_or_else(|| self.not_found()),
            Target::Collection
            | Target::Insight { group: None, .. }
            | Target::History { group: None, .. } => Err(ApiError::NotFound),
        }
    }

    /// Crossbar's 404 for a group it cannot load.
    pub fn not_found(&self) -> ApiError {
        match &self.target {
            Target::Entity(raw)
            | Target::Insight {
                group: Some(raw), ..
            }
            | Target::History {
                group: Some(raw), ..
            } => ApiError::BadIdentifier(raw.clone()),
            Target::Collection
            | Target::Insight { group: None, .. }
            | Target::History { group: None, .. } => ApiError::NotFound,
        }
    }

    /// The request data, taken out of the envelope (a write makes it the document).
    pub fn take_data(&mut self) -> Value {
        std::mem::take(&mut self.env.data)
    }
}

/// Stage 9 and 10 inputs: conditional headers and whether the body's content type is accepted.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
    pub content_type_ok: bool,
}

impl Conditions {
    pub fn of(req: &HttpRequest) -> Self {
        Self {
            if_match: header(req, "if-match").map(str::to_owned),
            if_none_match: header(req, "if-none-match").map(str::to_owned),
            content_type_ok: content_type_accepted(header(req, "content-type")),
        }
    }

    /// Stage 9: cowboy's conditional checks against the resource's current revision (`None`:
    /// the resource does not exist yet). `Some(outcome)` short-cuts the request with a 304.
    pub fn check(&self, current: Option<&str>, is_get: bool) -> Result<Option<Outcome>, ApiError> {
        let failed = ApiError::Bare(StatusCode::PRECONDITION_FAILED);
        if let Some(if_match) = &self.if_match {
            let ok = match current {
                None => false,
                Some(rev) => if_match.trim() == "*" || etags(if_match, false).any(|t| t == rev),
            };
            if !ok {
                return Err(failed);
            }
        }
        if let (Some(if_none_match), Some(rev)) = (&self.if_none_match, current) {
            if if_none_match.trim() == "*" || etags(if_none_match, true).any(|t| t == rev) {
                return if is_get {
                    Ok(Some(Outcome::NotModified {
                        etag: rev.to_owned(),
                    }))
                } else {
                    Err(failed)
                };
            }
        }
        Ok(None)
    }

    /// Stage 10, for writes.
    pub fn check_content_type(&self) -> Result<(), ApiError> {
        if self.content_type_ok {
            Ok(())
        } else {
            Err(ApiError::Bare(StatusCode::UNSUPPORTED_MEDIA_TYPE))
        }
    }
}

/// The entity tags of an `If-Match`/`If-None-Match` list; weak tags only when `weak_ok`.
fn etags(header: &str, weak_ok: bool) -> impl Iterator<Item = &str> {
    header.split(',').filter_map(move |t| {
        let t = t.trim();
        let (weak, t) = match t.strip_prefix("W/") {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        if weak && !weak_ok {
            return None;
        }
        t.strip_prefix('"').and_then(|t| t.strip_suffix('"'))
    })
}

/// Stage 10: the request content types Crossbar accepts for writes.
fn content_type_accepted(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return true;
    };
    let mime = envelope::media_type(ct);
    matches!(
        mime.as_str(),
        "" | "application/json" | "application/x-json" | "application/x-www-form-urlencoded"
    ) || mime.starts_with("multipart/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conditions(if_match: Option<&str>, if_none_match: Option<&str>) -> Conditions {
        Conditions {
            if_match: if_match.map(Into::into),
            if_none_match: if_none_match.map(Into::into),
            content_type_ok: true,
        }
    }

    const FAILED: ApiError = ApiError::Bare(StatusCode::PRECONDITION_FAILED);

    #[test]
    fn if_match_must_name_the_current_revision() {
        assert!(conditions(Some("\"1-a\""), None)
            .check(Some("1-a"), false)
            .unwrap()
            .is_none());
        assert!(conditions(Some("\"0-x\", \"1-a\""), None)
            .check(Some("1-a"), false)
            .is_ok());
        assert_eq!(
            conditions(Some("\"1-stale\""), None)
                .check(Some("1-a"), false)
                .unwrap_err(),
            FAILED
        );
        assert_eq!(
            conditions(Some("W/\"1-a\""), None)
                .check(Some("1-a"), false)
                .unwrap_err(),
            FAILED
        );
        assert_eq!(
            conditions(Some("*"), None).check(None, false).unwrap_err(),
            FAILED
        );
    }

    #[test]
    fn if_none_match_gives_304_on_get_and_412_otherwise() {
        assert!(matches!(
            conditions(None, Some("\"1-a\"")).check(Some("1-a"), true),
            Ok(Some(Outcome::NotModified { .. }))
        ));
        assert_eq!(
            conditions(None, Some("\"1-a\""))
                .check(Some("1-a"), false)
                .unwrap_err(),
            FAILED
        );
        assert!(conditions(None, Some("\"2-b\""))
            .check(Some("1-a"), true)
            .unwrap()
            .is_none());
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
}
