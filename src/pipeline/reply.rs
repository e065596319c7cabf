//! Turning a handler's outcome into the bytes Crossbar sends: the envelope, and the headers of
//! groups-contract §3.3 (request id, ETag, Expires, Location, CORS, content language).
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::HttpResponse;
use bytes::Bytes;
use futures::stream::BoxStream;
use md5::{Digest, Md5};
use serde::Serialize;
use serde_json::Value;

use super::media::Rendering;
use super::request::Serving;
use crate::domain::clock;
use crate::domain::ids::{hex, random_hex};
use crate::domain::line::CrossbarLine;
use crate::envelope::{self, Data, SuccessBody, Tail};
use crate::error::ApiError;

pub const EXPIRES: &str = "Fri, 01 Jan 1999 00:00:00 GMT";
/// Crossbar's placeholder revision (§3.4).
const AUTOMATIC: &str = "automatic";
const ALLOW_HEADERS: &str = "content-type, depth, user-agent, x-http-method-override, x-file-size, x-requested-with, if-modified-since, x-file-name, cache-control, x-auth-token, x-kazoo-cluster-id, if-match";
const EXPOSE_HEADERS: &str =
    "content-type, x-auth-token, x-request-id, x-kazoo-cluster-id, location, etag, etag";
/// Crossbar's methods (its `?ALLOWED_METHODS`): the only ones it serves at all (any other is a
/// bare 501), and those announced for errors raised before routing (§3.3).
pub const CROSSBAR_METHODS: [Method; 7] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::HEAD,
    Method::PATCH,
    Method::OPTIONS,
];

/// How a success's `revision` is found.
#[derive(Debug, Clone, PartialEq)]
pub enum Revision {
    None,
    /// A document's `_rev`.
    Doc(String),
    /// The literal `automatic` (the logins' answers).
    Automatic,
    /// A non-empty listing: the md5 of the body rendered with `"revision":"automatic"` (§3.4).
    BodyHash,
}

#[derive(Debug)]
pub struct Success {
    pub status: StatusCode,
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
            status: StatusCode::OK,
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

/// A CSV answer's body (csv-and-chunked §2.3): held whole (a page, a group), or streamed from
/// where the rows were written first, its length known.
pub enum CsvBody {
    Whole(Vec<u8>),
    Sized {
        length: u64,
        body: BoxStream<'static, Result<Bytes, std::io::Error>>,
    },
}

impl std::fmt::Debug for CsvBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Whole(bytes) => write!(f, "Whole({} bytes)", bytes.len()),
            Self::Sized { length, .. } => write!(f, "Sized({length} bytes)"),
        }
    }
}

#[derive(Debug)]
pub enum Outcome {
    Done(Success),
    /// CSV rows; `None`: there were none, answered 204 with nothing (§2.6).
    Csv(Option<CsvBody>),
    NotModified {
        etag: String,
    },
    Stream(Streamed),
    /// A CORS preflight: 200, empty body.
    Preflight,
}

/// What an answer carries besides its outcome: read from the request's headers first, then
/// completed by each stage of the pipeline, which hands it on to the next in the value it
/// returns; rendered once, at the end.
#[derive(Debug, Clone)]
pub struct Reply {
    pub tail: Tail,
    pub pretty: bool,
    /// The request carried `Origin` or `Access-Control-Request-*`.
    pub cors_request: bool,
    /// Methods for `access-control-allow-methods`.
    pub allowed_methods: Vec<Method>,
    /// `Access-Control-Request-Method`, added to the allowed list when missing.
    pub requested_method: Option<String>,
    /// Content negotiation ran (stage 7): `content-language`/`vary` are sent.
    pub negotiated: bool,
    pub language: String,
    /// `jsonp=<callback>`: the body is sent as `callback(<json>);` (groups-contract §2.3).
    pub jsonp: Option<String>,
    /// The request body was not read to its end: the connection cannot be reused.
    pub close: bool,
    /// What `Accept` chose at stage 7.
    pub rendering: Rendering,
    /// A group GET answered as CSV: the file name its `Content-Disposition` gives.
    pub csv: Option<String>,
}

/// A request answered before its last stage (most often by an error), and what its answer
/// carries. Boxed: it travels up through every stage's `?`.
pub struct Stop(Box<(Reply, Result<Outcome, ApiError>)>);

impl Stop {
    pub fn new(reply: Reply, error: ApiError) -> Self {
        Self(Box::new((reply, Err(error))))
    }

    /// A CORS preflight: answered 200 with the allowed methods once they are known.
    pub fn preflight(reply: Reply) -> Self {
        Self(Box::new((reply, Ok(Outcome::Preflight))))
    }

    pub fn into_parts(self) -> (Reply, Result<Outcome, ApiError>) {
        *self.0
    }
}

/// A stage's result joined with the reply it hands on: the value and the reply, or a [`Stop`].
pub fn staged<T>(reply: Reply, result: Result<T, ApiError>) -> Result<(Reply, T), Stop> {
    match result {
        Ok(value) => Ok((reply, value)),
        Err(error) => Err(Stop::new(reply, error)),
    }
}

impl Reply {
    /// What every answer to a request carries, read from its headers before anything else:
    /// its id, the node, the time, the client's rate-limit bucket, CORS and language facts, and
    /// the Crossbar line answered (with the `version` it reports to every client, or `None`).
    pub fn for_request(
        headers: &HeaderMap,
        node: &str,
        tokens_remaining: u64,
        line: CrossbarLine,
        version: &str,
    ) -> Self {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        Reply {
            tail: Tail {
                request_id: header("x-request-id")
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
                    .unwrap_or_else(|| random_hex(16)),
                node: node.to_owned(),
                timestamp: clock::iso8601_now(),
                tokens_consumed: 1,
                tokens_remaining,
                version: line.always_versions().then(|| version.to_owned()),
                line,
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
            allowed_methods: CROSSBAR_METHODS.to_vec(),
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
            rendering: Rendering::Json,
            csv: None,
        }
    }

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
            Ok(Outcome::Done(success))
                if self.csv.is_some() && success.status == StatusCode::OK =>
            {
                self.render_csv(csv_rows(&success.data).map(CsvBody::Whole))
            }
            Ok(Outcome::Done(success)) => self.render_success(success),
            Ok(Outcome::Csv(body)) => self.render_csv(body),
            Ok(Outcome::NotModified { etag }) => {
                let mut resp = self.bare(StatusCode::NOT_MODIFIED);
                set(&mut resp, "etag", &quote(&etag));
                set(&mut resp, "expires", EXPIRES);
                resp
            }
            Ok(Outcome::Stream(stream)) => {
                let mut builder = HttpResponse::Ok();
                builder.content_type("application/json");
                // Read after the request's own future has ended: its log lines still name it.
                let body = Serving::new(self.tail.request_id.clone(), stream.body);
                let mut resp = builder.streaming(body);
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
            Revision::Automatic => Some(AUTOMATIC.to_owned()),
            // Hashed as it is written: the draft body is never held.
            Revision::BodyHash => {
                let mut hash = HashWriter(Md5::new());
                serde_json::to_writer(&mut hash, &body(Some(AUTOMATIC))).ok();
                Some(hex(&hash.0.finalize()))
            }
        };
        let mut resp = self.json(success.status, &body(revision.as_deref()));
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

    /// `api_util:create_csv_resp_content/2`: 200 with `text/csv` and the file name, or, with no
    /// rows, Cowboy's 204 with no header at all (§2.6).
    fn render_csv(&self, body: Option<CsvBody>) -> HttpResponse {
        let Some(body) = body else {
            let mut resp = HttpResponse::NoContent().finish();
            resp.headers_mut().clear();
            return resp;
        };
        let mut builder = HttpResponse::Ok();
        builder.content_type("text/csv");
        let mut resp = match body {
            CsvBody::Whole(bytes) => builder.body(bytes),
            CsvBody::Sized { length, body } => {
                builder.no_chunking(length);
                builder.streaming(Serving::new(self.tail.request_id.clone(), body))
            }
        };
        self.common_headers(&mut resp, self.cors_request);
        let name = self.csv.clone().unwrap_or_default();
        let disposition = format!("attachment; filename=\"{name}\"");
        if let Ok(value) = HeaderValue::from_bytes(disposition.as_bytes()) {
            resp.headers_mut()
                .insert(HeaderName::from_static("content-disposition"), value);
        }
        set(&mut resp, "expires", EXPIRES);
        resp
    }

    pub fn render_error(&self, err: &ApiError) -> HttpResponse {
        let status = err.status();
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
            methods.extend(self.allowed_methods.iter().map(Method::as_str));
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

/// The rows a success's data renders as CSV (a single object is one row), or `None`: none.
fn csv_rows(data: &Data) -> Option<Vec<u8>> {
    match data {
        Data::Rows(rows) => {
            let values: Vec<Value> = rows
                .iter()
                .filter_map(|row| serde_json::from_str(row.get()).ok())
                .collect();
            crate::csv::render(&values)
        }
        Data::Json(Value::Array(items)) => crate::csv::render(items),
        Data::Json(one) => crate::csv::render([one]),
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
