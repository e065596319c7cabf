//! Turning a handler's outcome into the bytes Crossbar sends: the envelope, and the headers of
//! groups-contract §3.3 (request id, ETag, Expires, Location, CORS, content language).
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use bytes::Bytes;
use futures::stream::BoxStream;
use md5::{Digest, Md5};
use serde::Serialize;
use serde_json::Value;

use crate::envelope::{self, Data, SuccessBody, Tail};
use crate::error::ApiError;

pub const EXPIRES: &str = "Fri, 01 Jan 1999 00:00:00 GMT";
const ALLOW_HEADERS: &str = "content-type, depth, user-agent, x-http-method-override, x-file-size, x-requested-with, if-modified-since, x-file-name, cache-control, x-auth-token, x-kazoo-cluster-id, if-match";
const EXPOSE_HEADERS: &str =
    "content-type, x-auth-token, x-request-id, x-kazoo-cluster-id, location, etag, etag";
/// Methods announced for errors raised before routing (§3.3).
pub const GLOBAL_METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"];

/// How a success's `revision` is found.
#[derive(Debug, Clone, PartialEq)]
pub enum Revision {
    None,
    /// A document's `_rev`.
    Doc(String),
    /// A non-empty listing: the md5 of the body rendered with `"revision":"automatic"` (§3.4).
    BodyHash,
}

#[derive(Debug)]
pub struct Success {
    pub status: u16,
    pub data: Data,
    pub revision: Revision,
    /// Paging keys of listings.
    pub extra: Vec<(&'static str, Value)>,
    /// GET answers carry `ETag` (when there is a revision) and `Expires`.
    pub is_get: bool,
    pub location: Option<String>,
}

impl Success {
    pub fn ok(data: Value, revision: Revision) -> Self {
        Self::of(Data::Json(data), revision)
    }

    pub fn of(data: Data, revision: Revision) -> Self {
        Self {
            status: 200,
            data,
            revision,
            extra: Vec::new(),
            is_get: false,
            location: None,
        }
    }
}

/// A listing streamed as it is read (`paginate=false`): the opening is sent, then each chunk of
/// rows, then the closing with the tail.
pub struct Streamed {
    pub etag: Option<String>,
    pub body: BoxStream<'static, Result<Bytes, std::io::Error>>,
}

impl std::fmt::Debug for Streamed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streamed")
            .field("etag", &self.etag)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub enum Outcome {
    Done(Success),
    NotModified {
        etag: String,
    },
    Stream(Streamed),
    /// A CORS preflight: 200, empty body.
    Preflight,
}

/// Per-request facts the response needs, filled in as the pipeline advances.
#[derive(Debug, Clone)]
pub struct ReplyContext {
    pub tail: Tail,
    pub pretty: bool,
    /// The request carried `Origin` or `Access-Control-Request-*`.
    pub cors_request: bool,
    /// Methods for `access-control-allow-methods`.
    pub allowed_methods: Vec<&'static str>,
    /// `Access-Control-Request-Method`, added to the allowed list when missing.
    pub requested_method: Option<String>,
    /// Content negotiation ran (stage 7): `content-language`/`vary` are sent.
    pub negotiated: bool,
    pub language: String,
    /// `jsonp=<callback>`: the body is sent as `callback(<json>);` (groups-contract §2.3).
    pub jsonp: Option<String>,
    /// The request body was not read to its end: the connection cannot be reused.
    pub close: bool,
}

impl ReplyContext {
    pub fn render(&self, outcome: Result<Outcome, ApiError>) -> HttpResponse {
        let mut resp = self.render_outcome(outcome);
        if self.close {
            resp.head_mut()
                .set_connection_type(actix_web::http::ConnectionType::Close);
        }
        resp
    }

    fn render_outcome(&self, outcome: Result<Outcome, ApiError>) -> HttpResponse {
        match outcome {
            Ok(Outcome::Done(success)) => self.render_success(success),
            Ok(Outcome::NotModified { etag }) => {
                let mut resp = self.bare(StatusCode::NOT_MODIFIED);
                set(&mut resp, "etag", &quote(&etag));
                set(&mut resp, "expires", EXPIRES);
                resp
            }
            Ok(Outcome::Stream(stream)) => {
                let mut builder = HttpResponse::Ok();
                builder.content_type("application/json");
                let mut resp = builder.streaming(stream.body);
                self.common_headers(&mut resp, self.cors_request);
                if let Some(etag) = stream.etag {
                    set(&mut resp, "etag", &quote(&etag));
                }
                set(&mut resp, "expires", EXPIRES);
                resp
            }
            Ok(Outcome::Preflight) => {
                let mut resp = HttpResponse::Ok().finish();
                self.common_headers(&mut resp, true);
                resp
            }
            Err(err) => self.render_error(&err),
        }
    }

    fn render_success(&self, success: Success) -> HttpResponse {
        let body = |revision| SuccessBody {
            extra: &success.extra,
            data: Some(&success.data),
            revision,
            tail: &self.tail,
        };
        let revision = match &success.revision {
            Revision::None => None,
            Revision::Doc(rev) => Some(rev.clone()),
            // Hashed as it is written: the draft body is never held.
            Revision::BodyHash => {
                let mut hash = HashWriter(Md5::new());
                serde_json::to_writer(&mut hash, &body(Some("automatic"))).ok();
                Some(hex(&hash.0.finalize()))
            }
        };
        let status = StatusCode::from_u16(success.status).unwrap_or(StatusCode::OK);
        let mut resp = self.json(status, &body(revision.as_deref()));
        self.common_headers(&mut resp, self.cors_request);
        if success.is_get {
            if let Some(rev) = &revision {
                set(&mut resp, "etag", &quote(rev));
            }
            set(&mut resp, "expires", EXPIRES);
        }
        if let Some(location) = &success.location {
            set(&mut resp, "location", location);
        }
        resp
    }

    pub fn render_error(&self, err: &ApiError) -> HttpResponse {
        let status =
            StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match envelope::error(err, &self.tail) {
            Some(body) => {
                let mut resp = self.json(status, &body);
                // Crossbar adds CORS headers to every enveloped error (§3.3).
                self.common_headers(&mut resp, true);
                resp
            }
            None => self.bare(status),
        }
    }

    fn bare(&self, status: StatusCode) -> HttpResponse {
        let mut resp = HttpResponse::build(status).finish();
        self.common_headers(&mut resp, self.cors_request);
        resp
    }

    fn json(&self, status: StatusCode, body: &impl Serialize) -> HttpResponse {
        let bytes = if self.pretty {
            serde_json::to_vec_pretty(body)
        } else {
            serde_json::to_vec(body)
        }
        .unwrap_or_default();
        match &self.jsonp {
            Some(callback) => {
                let mut wrapped = Vec::with_capacity(bytes.len() + callback.len() + 3);
                wrapped.extend_from_slice(callback.as_bytes());
                wrapped.push(b'(');
                wrapped.extend_from_slice(&bytes);
                wrapped.extend_from_slice(b");");
                HttpResponse::build(status)
                    .content_type("application/javascript")
                    .body(wrapped)
            }
            None => HttpResponse::build(status)
                .content_type("application/json")
                .body(bytes),
        }
    }

    fn common_headers(&self, resp: &mut HttpResponse, cors: bool) {
        set(resp, "x-request-id", &self.tail.request_id);
        if self.negotiated {
            set(resp, "content-language", &self.language);
            set(resp, "vary", "accept-language, accept");
        }
        if cors {
            let mut methods = vec!["OPTIONS"];
            methods.extend(self.allowed_methods.iter().copied());
            let mut allow = methods.join(", ");
            if let Some(requested) = &self.requested_method {
                if !methods.iter().any(|m| m.eq_ignore_ascii_case(requested)) {
                    allow.push_str(", ");
                    allow.push_str(requested);
                }
            }
            set(resp, "access-control-allow-origin", "*");
            set(resp, "access-control-allow-methods", &allow);
            set(resp, "access-control-allow-headers", ALLOW_HEADERS);
            set(resp, "access-control-expose-headers", EXPOSE_HEADERS);
            set(resp, "access-control-max-age", "86400");
        }
    }
}

fn set(resp: &mut HttpResponse, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        resp.headers_mut()
            .insert(HeaderName::from_static(name), value);
    }
}

pub fn quote(etag: &str) -> String {
    format!("\"{etag}\"")
}

pub fn md5_hex(bytes: &[u8]) -> String {
    hex(&Md5::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Feeds what is written to an MD5 digest.
struct HashWriter(Md5);

impl std::io::Write for HashWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
