//! The one error type of the HTTP edge: each variant is a Kazoo error envelope (status, `message`,
//! `data`) from groups-contract §3.5/§3.6, or one of cowboy's bare, body-less answers. Store
//! failures become API errors here and nowhere else ([`ApiError::from_store`]).
use actix_web::http::StatusCode;
use serde_json::{json, Map, Value};

use crate::store::StoreError;

/// The `data` of an error envelope.
#[derive(Debug, PartialEq)]
pub enum ErrorData<'a> {
    Errors(&'a Map<String, Value>),
    Value(Value),
}

impl serde::Serialize for ErrorData<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ErrorData::Errors(errors) => errors.serialize(serializer),
            ErrorData::Value(value) => value.serialize(serializer),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// 400 `validation error` with the nested errors (schema, envelope, JSON syntax, size).
    Validation(Map<String, Value>),
    /// 404 `bad_identifier`: missing account, user or group.
    BadIdentifier(String),
    /// 404 `bad identifier` with `data: [<key>]`: an API key that matches no account
    /// (auth-contract §3.5).
    UnknownApiKey(String),
    /// 404 `bad identifier` (with a space): a malformed account id.
    MalformedAccountId(String),
    /// 404 `not_found`: a path shape the groups resource does not serve.
    NotFound,
    /// 404 `faulty_request`: bad paging parameters.
    FaultyRequest(&'static str),
    /// 405 `invalid_method`.
    InvalidMethod,
    /// 409 `datastore_conflict`.
    Conflict,
    /// 410 `gone`: API version 1.
    Gone,
    /// 401 variant A: no usable credentials.
    InvalidCredentials,
    /// 401 variant B: a validly signed token whose `exp` has passed.
    TokenExpired,
    /// 403 `forbidden`.
    Forbidden,
    /// 403 `forbidden`, denied by token restrictions.
    Restricted,
    /// 429 `too_many_requests`.
    TooManyRequests,
    /// 500 `datastore_fault`: an unexpected CouchDB answer; `cause` is CouchDB's error name.
    DatastoreFault(String),
    /// 503 `datastore_unreachable`.
    DatastoreUnreachable,
    /// 503 `datastore missing view`.
    DatastoreMissingView,
    /// 503 `datastore fatal error`.
    DatastoreFatal,
    /// 503 `datastore_fault` with `{"message":"datastore fatal error"}`: master's
    /// `crossbar_view:build_load_params/3` caught a crash (`chunk_size=0`).
    DatastoreBuildFault,
    /// cowboy's answers without a body: 304, 404 (tunnelled GET), 406, 408, 412, 415, 501.
    Bare(StatusCode),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation(_) => StatusCode::BAD_REQUEST,
            Self::BadIdentifier(_)
            | Self::UnknownApiKey(_)
            | Self::MalformedAccountId(_)
            | Self::NotFound
            | Self::FaultyRequest(_) => StatusCode::NOT_FOUND,
            Self::InvalidMethod => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::Gone => StatusCode::GONE,
            Self::InvalidCredentials | Self::TokenExpired => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::Restricted => StatusCode::FORBIDDEN,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::DatastoreFault(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::DatastoreUnreachable
            | Self::DatastoreMissingView
            | Self::DatastoreFatal
            | Self::DatastoreBuildFault => StatusCode::SERVICE_UNAVAILABLE,
            Self::Bare(status) => *status,
        }
    }

    /// The envelope's `message` and `data`, or `None` for a bare answer. A validation error's
    /// data is lent, not copied: it can echo a large part of the request.
    pub fn message_and_data(&self) -> Option<(&'static str, ErrorData<'_>)> {
        if let Self::Validation(errors) = self {
            return Some(("validation error", ErrorData::Errors(errors)));
        }
        self.message_and_value()
            .map(|(message, data)| (message, ErrorData::Value(data)))
    }

    fn message_and_value(&self) -> Option<(&'static str, Value)> {
        let msg = |m: &str| json!({ "message": m });
        Some(match self {
            Self::Validation(_) | Self::Bare(_) => return None,
            Self::BadIdentifier(cause) => (
                "bad_identifier",
                json!({ "cause": cause, "message": "bad identifier" }),
            ),
            Self::MalformedAccountId(detail) => ("bad identifier", msg(detail)),
            Self::UnknownApiKey(key) => ("bad identifier", json!([key])),
            Self::NotFound => ("not_found", msg("not found")),
            Self::FaultyRequest(detail) => ("faulty_request", msg(detail)),
            Self::InvalidMethod => ("invalid_method", msg("method not allowed")),
            Self::Conflict => ("datastore_conflict", msg("conflicting documents")),
            Self::Gone => (
                "gone",
                msg("API version 1 is not supported. Please upgrade your code to use version 2."),
            ),
            Self::InvalidCredentials => ("invalid_credentials", msg("invalid credentials")),
            Self::TokenExpired => ("invalid credentials", json!({})),
            Self::Forbidden => ("forbidden", msg("forbidden")),
            Self::Restricted => (
                "forbidden",
                json!({"cause": "access denied by token restrictions", "message": "forbidden"}),
            ),
            Self::TooManyRequests => ("too_many_requests", msg("too many requests")),
            Self::DatastoreFault(cause) => (
                "datastore_fault",
                json!({ "cause": cause, "message": "unknown failure" }),
            ),
            Self::DatastoreUnreachable => ("datastore_unreachable", msg("datastore timeout")),
            Self::DatastoreMissingView => ("datastore missing view", json!({})),
            Self::DatastoreFatal => ("datastore fatal error", json!({})),
            Self::DatastoreBuildFault => ("datastore_fault", msg("datastore fatal error")),
        })
    }

    /// Envelope fields some errors carry besides the usual ones.
    pub fn extra(&self) -> Vec<(&'static str, Value)> {
        match self {
            // Leaks from the empty view result, as in Crossbar.
            Self::UnknownApiKey(_) => vec![("page_size", json!(0))],
            _ => Vec::new(),
        }
    }

    /// A single validation error `{"<path>":{"<keyword>":{...}}}`.
    pub fn validation(path: &str, keyword: &str, detail: Value) -> Self {
        let mut inner = Map::new();
        inner.insert(keyword.to_owned(), detail);
        let mut errors = Map::new();
        errors.insert(path.to_owned(), Value::Object(inner));
        Self::Validation(errors)
    }
}

/// Where a store failure happened, which decides Crossbar's answer (§3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreContext {
    /// Loading or saving the resource: unreachable is 503 `datastore_unreachable`, a conflict
    /// 409, anything else 500 `datastore_fault` with CouchDB's error as its cause.
    Resource,
    /// A `validate_resource` hook (the URL's account, `users/{U}`): any failure but a missing
    /// document is 503 `datastore fatal error`.
    Hook,
    /// A listing's view or database that is missing: 503 `datastore missing view`.
    View,
}

impl ApiError {
    /// The one place a store failure becomes an answer; its cause is logged (with the request's
    /// id, see `pipeline::request_id`), never sent.
    pub fn from_store(e: StoreError, context: StoreContext) -> Self {
        // A conflict is a client's lost race, not a failure.
        let logged = (!matches!(e, StoreError::Conflict)).then(|| e.to_string());
        let answer = Self::answer_to(e, context);
        let status = answer.status().as_u16();
        match logged {
            None => {}
            Some(cause) if status == 503 => log::warn!("{cause}: answered 503"),
            Some(cause) => log::error!("store failure: {cause}: answered {status}"),
        }
        answer
    }

    fn answer_to(e: StoreError, context: StoreContext) -> Self {
        match (e, context) {
            (StoreError::Conflict, StoreContext::Resource) => Self::Conflict,
            (_, StoreContext::Hook) => Self::DatastoreFatal,
            (StoreError::NotFound, StoreContext::View) => Self::DatastoreMissingView,
            (StoreError::Unreachable(_), _) => Self::DatastoreUnreachable,
            (StoreError::NotFound, _) => Self::DatastoreFault("not_found".into()),
            (StoreError::Conflict, _) => Self::DatastoreFault("conflict".into()),
            (StoreError::Other { error, .. }, _) => Self::DatastoreFault(if error.is_empty() {
                "unknown".into()
            } else {
                error
            }),
        }
    }

    /// §3.6: a body over `max_upload_size` is rendered as a 400 validation error.
    pub fn too_large(limit: usize) -> Self {
        Self::validation(
            "file",
            "maxSize",
            json!({
                "message": format!("Payload or Files must not be more than {limit} bytes"),
                "target": limit,
            }),
        )
    }
}

/// Loading or saving the resource (`StoreContext::Resource`), the common case.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::from_store(e, StoreContext::Resource)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_strings_are_kazoos() {
        let err = ApiError::BadIdentifier("G".into());
        let (m, d) = err.message_and_data().unwrap();
        assert_eq!(m, "bad_identifier");
        assert_eq!(
            d,
            ErrorData::Value(json!({"cause": "G", "message": "bad identifier"}))
        );
        let err = ApiError::MalformedAccountId("invalid account_id 'abc'".into());
        let (m, d) = err.message_and_data().unwrap();
        assert_eq!(m, "bad identifier");
        assert_eq!(
            d,
            ErrorData::Value(json!({"message": "invalid account_id 'abc'"}))
        );
        assert_eq!(
            ApiError::TokenExpired.message_and_data().unwrap().1,
            ErrorData::Value(json!({}))
        );
        assert_eq!(
            ApiError::Bare(StatusCode::PRECONDITION_FAILED).message_and_data(),
            None
        );
        assert_eq!(ApiError::DatastoreUnreachable.status(), 503);
        assert_eq!(
            ApiError::from_store(StoreError::Unreachable("x".into()), StoreContext::Hook),
            ApiError::DatastoreFatal
        );
        assert_eq!(
            ApiError::from_store(StoreError::NotFound, StoreContext::View),
            ApiError::DatastoreMissingView
        );
    }

    #[test]
    fn couch_failures_map_to_503_409_500() {
        assert_eq!(
            ApiError::from(StoreError::Unreachable("refused".into())),
            ApiError::DatastoreUnreachable
        );
        assert_eq!(ApiError::from(StoreError::Conflict), ApiError::Conflict);
        assert_eq!(
            ApiError::from(StoreError::Other {
                status: 400,
                error: "bad_request".into(),
                reason: "secret detail".into()
            }),
            ApiError::DatastoreFault("bad_request".into())
        );
    }
}
