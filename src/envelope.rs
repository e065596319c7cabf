//! Kazoo's request envelope in (body parsing by content type, key normalisation, the `data`
//! check, the three-place parameter lookup) and the response envelope out
//! (groups-contract §2 and §3.1/§3.2).
use std::borrow::Cow;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::domain::line::CrossbarLine;
use crate::error::{ApiError, ErrorData};
use crate::json;
use crate::json::raw::Transcoded;

/// Crossbar's `crossbar.max_upload_size` default.
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 8_000_000;

/// The parsed request: the normalised envelope (without its `data`), its `data`, and the query
/// string.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestEnvelope {
    pub envelope: Map<String, Value>,
    pub data: Value,
    pub query: Vec<(String, Option<String>)>,
}

/// A body measured and found affordable: what building its envelope will cost, and how to build
/// it. Measuring allocates nothing proportional to the body, so it is safe before authentication.
#[derive(Debug)]
pub struct BodyPlan {
    kind: PlanKind,
}

#[derive(Debug)]
enum PlanKind {
    Empty,
    Json(json::Measured),
    Form { cost: usize },
}

impl BodyPlan {
    /// Measures `body` as its content type says it is encoded; too deep or too costly bodies
    /// are refused here, as malformed JSON (§3.5).
    pub fn measure(content_type: Option<&str>, body: &[u8]) -> Result<Self, ApiError> {
        let kind = match body_kind(content_type) {
            BodyKind::Json => measure_json(body)?,
            BodyKind::Form => match form_shape(body) {
                FormShape::Empty => PlanKind::Empty,
                FormShape::Json => measure_json(body)?,
                FormShape::Fields(count) => {
                    let cost = count.saturating_mul(FORM_FIELD_COST) + 2 * body.len();
                    if cost > json::cost_cap(body.len()) {
                        return Err(json_invalid(DECODE_ERROR));
                    }
                    PlanKind::Form { cost }
                }
            },
            // Kept by Crossbar as an uploaded file: the JSON data is empty (§2.1).
            BodyKind::Opaque => PlanKind::Empty,
        };
        Ok(Self { kind })
    }

    /// Bytes the envelope will take once built.
    pub fn cost(&self) -> usize {
        match &self.kind {
            PlanKind::Empty => 0,
            PlanKind::Json(measured) => measured.cost,
            PlanKind::Form { cost } => *cost,
        }
    }

    /// Builds the envelope of the measured `body` and checks it (§2.1-§2.3).
    pub fn build(self, body: &[u8], query_string: &str) -> Result<RequestEnvelope, ApiError> {
        let query = parse_query(query_string);
        let mut envelope = match self.kind {
            PlanKind::Empty => Map::new(),
            PlanKind::Json(measured) => match json::build(body, &measured, Some(normalise_key)) {
                Ok(Value::Object(map)) => map,
                Ok(_) => return Err(json_invalid("All JSON must be valid")),
                Err(_) => return Err(json_invalid(DECODE_ERROR)),
            },
            PlanKind::Form { .. } => parse_query(String::from_utf8_lossy(body).trim())
                .into_iter()
                .map(|(k, v)| {
                    (
                        normalise_key(k),
                        v.map(Value::String).unwrap_or(Value::Bool(true)),
                    )
                })
                .collect(),
        };
        if envelope.is_empty() {
            return Ok(RequestEnvelope {
                envelope,
                data: Value::Object(Map::new()),
                query,
            });
        }
        let data = match envelope.shift_remove("data") {
            None => {
                return Err(ApiError::validation(
                    "data",
                    "required",
                    json!({"message": "Field is required but missing", "value": envelope}),
                ))
            }
            Some(data @ (Value::Object(_) | Value::Array(_))) => data,
            Some(other) => {
                return Err(ApiError::validation(
                    "data",
                    "type",
                    json!({
                        "message": "Value did not match type(s): object, array",
                        "target": "object, array",
                        "value": other,
                    }),
                ))
            }
        };
        Ok(RequestEnvelope {
            envelope,
            data,
            query,
        })
    }
}

/// What one form field costs as an envelope entry, beyond its text: the parsed pair, the map
/// entry, and their allocations.
const FORM_FIELD_COST: usize = 256;

fn measure_json(body: &[u8]) -> Result<PlanKind, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(PlanKind::Empty);
    }
    match json::measure(body) {
        Ok(measured) => Ok(PlanKind::Json(measured)),
        // Kazoo's parser wrapper reports every syntax error this way (§3.5); nesting past
        // json::MAX_DEPTH and bodies too costly to parse are reported as malformed too.
        Err(_) => Err(json_invalid(DECODE_ERROR)),
    }
}

enum FormShape {
    Empty,
    /// A single key with no value: the usual `curl -d '{json}'`.
    Json,
    Fields(usize),
}

/// The shape of an `application/x-www-form-urlencoded` body (§2.1), read without decoding it: a
/// single key with no value is parsed as JSON; otherwise the form fields are the envelope. A
/// JSON body containing `=` or `&` is therefore misread as a form, as in Crossbar.
fn form_shape(body: &[u8]) -> FormShape {
    let text = body.trim_ascii();
    let mut parts = text.split(|b| *b == b'&').filter(|p| !p.is_empty());
    match (parts.next(), parts.count()) {
        (None, _) => FormShape::Empty,
        (Some(only), 0) if !only.contains(&b'=') => FormShape::Json,
        (Some(_), rest) => FormShape::Fields(rest + 1),
    }
}

impl RequestEnvelope {
    /// Stage 1 of the pipeline in one step, for bodies that need no accounting: measure, build.
    pub fn parse(
        content_type: Option<&str>,
        body: &[u8],
        query_string: &str,
    ) -> Result<Self, ApiError> {
        BodyPlan::measure(content_type, body)?.build(body, query_string)
    }

    /// Kazoo's request-value lookup (§2.3): `data.<key>`, then the query string, then the
    /// envelope's top level. A bare query key is JSON `true`.
    pub fn req_value(&self, key: &str) -> Option<Cow<'_, Value>> {
        if let Some(v) = self.data.get(key) {
            return Some(Cow::Borrowed(v));
        }
        if let Some(v) = self.query_value(key) {
            return Some(Cow::Owned(v));
        }
        self.envelope.get(key).map(Cow::Borrowed)
    }

    /// A query-string parameter only (first occurrence; repeated keys are not merged).
    pub fn query_value(&self, key: &str) -> Option<Value> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| match v {
                Some(s) => Value::String(s.clone()),
                None => Value::Bool(true),
            })
    }

    /// A boolean option: true only for the exact string "true" or a bare key (§2.3).
    pub fn req_flag(&self, key: &str) -> Option<bool> {
        self.req_value(key).map(|v| is_true(&v))
    }

    /// Like `req_flag`, from the query string only (`descending`, `ascending`).
    pub fn query_flag(&self, key: &str) -> Option<bool> {
        self.query_value(key).map(|v| is_true(&v))
    }
}

fn is_true(v: &Value) -> bool {
    matches!(v, Value::Bool(true)) || v.as_str() == Some("true")
}

enum BodyKind {
    Json,
    Form,
    Opaque,
}

/// The media type of a `Content-Type` value, lower-cased, without parameters.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn body_kind(content_type: Option<&str>) -> BodyKind {
    let Some(ct) = content_type else {
        return BodyKind::Json;
    };
    match media_type(ct).as_str() {
        "" | "application/json" | "application/x-json" => BodyKind::Json,
        "application/x-www-form-urlencoded" => BodyKind::Form,
        _ => BodyKind::Opaque,
    }
}

/// Kazoo's answer to a body its JSON decoder cannot read.
const DECODE_ERROR: &str = "decoder_exit around 0";

fn json_invalid(message: &str) -> ApiError {
    ApiError::validation(
        "json",
        "invalid",
        json!({"message": message, "target": "body"}),
    )
}

/// `k=v&k2&...`, percent-decoded, `+` as space; a key without `=` has no value.
pub fn parse_query(qs: &str) -> Vec<(String, Option<String>)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    qs.split('&')
        .filter(|part| !part.is_empty())
        .map(|part| match part.split_once('=') {
            Some((k, v)) => (decode(k), Some(decode(v))),
            None => (decode(part), None),
        })
        .collect()
}

/// A top-level key: ASCII and Latin-1 capitals lower-cased, `-` becomes `_` (§2.2). Nested
/// keys are untouched.
fn normalise_key(key: String) -> String {
    let needs = key
        .chars()
        .any(|c| c == '-' || c.is_ascii_uppercase() || ('\u{C0}'..='\u{DE}').contains(&c));
    if !needs {
        return key;
    }
    key.chars()
        .map(|c| match c {
            'A'..='Z' => c.to_ascii_lowercase(),
            // Latin-1 capitals À..Þ except ×.
            '\u{C0}'..='\u{DE}' if c != '\u{D7}' => char::from_u32(c as u32 + 32).unwrap_or(c),
            '-' => '_',
            _ => c,
        })
        .collect()
}

/// Fields every response envelope carries besides `status`/`data` (§3.1).
#[derive(Debug, Clone, Default)]
pub struct Tail {
    pub request_id: String,
    pub auth_token: Option<String>,
    pub node: String,
    pub timestamp: String,
    /// Present only when the request carried a valid token.
    pub version: Option<String>,
    pub tokens_consumed: u64,
    pub tokens_remaining: u64,
    /// The Crossbar line answered: it decides `tokens`, and `auth_token` on errors (see
    /// `domain::line`).
    pub line: CrossbarLine,
}

impl Tail {
    /// In the order Crossbar sends them; `error`: for an error envelope.
    fn fields(&self, error: bool) -> Vec<(&'static str, Value)> {
        let mut fields = Vec::with_capacity(6);
        let missing = || error.then(|| self.line.missing_token_in_errors()).flatten();
        if let Some(token) = self.auth_token.as_deref().or_else(missing) {
            fields.push(("auth_token", Value::from(token)));
        }
        fields.push(("node", Value::from(self.node.as_str())));
        fields.push(("request_id", Value::from(self.request_id.as_str())));
        fields.push(("timestamp", Value::from(self.timestamp.as_str())));
        if self.line.reports_tokens() {
            fields.push((
                "tokens",
                json!({"consumed": self.tokens_consumed, "remaining": self.tokens_remaining}),
            ));
        }
        if let Some(version) = &self.version {
            fields.push(("version", Value::from(version.as_str())));
        }
        fields
    }
}

/// The end of a chunked listing (`api_util:close_chunk_json_envelope/2`, csv-and-chunked §3.3):
/// `], ` then the paging fields given (in the order given), `status`, `request_id`, `node`,
/// `version`, `timestamp` and `auth_token`, each `"key":"value"` with the value as text and not
/// JSON-escaped, an empty one (`""`, `"0"`) left out, joined by `, `.
pub fn chunk_trailer(paging: &[(&str, String)], tail: &Tail) -> String {
    let mut fields: Vec<(&str, &str)> = paging.iter().map(|(k, v)| (*k, v.as_str())).collect();
    fields.push(("status", "success"));
    fields.push(("request_id", &tail.request_id));
    fields.push(("node", &tail.node));
    if let Some(version) = &tail.version {
        fields.push(("version", version));
    }
    fields.push(("timestamp", &tail.timestamp));
    if let Some(token) = &tail.auth_token {
        fields.push(("auth_token", token));
    }
    let encoded: Vec<String> = fields
        .into_iter()
        .filter(|(_, v)| !matches!(*v, "" | "0" | "NULL" | "undefined"))
        .map(|(k, v)| format!("\"{k}\":\"{v}\""))
        .collect();
    format!("], {}}}", encoded.join(", "))
}

/// A success's `data`: a JSON value, or the rows of a listing as stored JSON text, written out
/// without ever being built into trees.
#[derive(Debug)]
pub enum Data {
    Json(Value),
    Rows(Vec<Box<RawValue>>),
}

impl Data {
    pub fn is_empty_list(&self) -> bool {
        match self {
            Data::Json(Value::Array(items)) => items.is_empty(),
            Data::Rows(rows) => rows.is_empty(),
            Data::Json(_) => false,
        }
    }
}

impl Serialize for Data {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Data::Json(value) => value.serialize(serializer),
            Data::Rows(rows) => serializer.collect_seq(rows.iter().map(|row| Transcoded(row))),
        }
    }
}

/// `{<extra>, "data":…, "revision":…, "status":"success", …tail…}`. `extra` carries the paging
/// keys of listings; absent values are omitted, never `null`. Without `data`, it is the closing
/// part of a streamed listing.
pub struct SuccessBody<'a> {
    pub extra: &'a [(&'static str, Value)],
    pub data: Option<&'a Data>,
    pub revision: Option<&'a str>,
    pub tail: &'a Tail,
}

impl Serialize for SuccessBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.extra {
            map.serialize_entry(key, value)?;
        }
        if let Some(data) = self.data {
            map.serialize_entry("data", data)?;
        }
        if let Some(revision) = self.revision {
            map.serialize_entry("revision", revision)?;
        }
        map.serialize_entry("status", "success")?;
        for (key, value) in self.tail.fields(false) {
            map.serialize_entry(key, &value)?;
        }
        map.end()
    }
}

/// The error envelope (§3.2), or `None` for cowboy's bare answers.
pub fn error<'a>(err: &'a ApiError, tail: &'a Tail) -> Option<ErrorBody<'a>> {
    let (message, data) = err.message_and_data()?;
    Some(ErrorBody {
        extra: err.extra(),
        data,
        status: err.status().as_u16(),
        message,
        tail,
    })
}

/// `{<extra>, "data":…, "error":"<status>", "message":…, "status":"error", …tail…}`.
pub struct ErrorBody<'a> {
    extra: Vec<(&'static str, Value)>,
    data: ErrorData<'a>,
    status: u16,
    message: &'static str,
    tail: &'a Tail,
}

impl Serialize for ErrorBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in &self.extra {
            map.serialize_entry(key, value)?;
        }
        map.serialize_entry("data", &self.data)?;
        map.serialize_entry("error", &self.status.to_string())?;
        map.serialize_entry("message", self.message)?;
        map.serialize_entry("status", "error")?;
        for (key, value) in self.tail.fields(true) {
            map.serialize_entry(key, &value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(ct: Option<&str>, body: &str) -> Result<RequestEnvelope, ApiError> {
        RequestEnvelope::parse(ct, body.as_bytes(), "")
    }

    fn errors(e: ApiError) -> Value {
        match e {
            ApiError::Validation(m) => Value::Object(m),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn empty_body_gives_empty_data() {
        let env = parse(Some("application/json"), "").unwrap();
        assert_eq!(env.data, json!({}));
        assert!(env.envelope.is_empty());
    }

    #[test]
    fn missing_data_is_required_with_the_whole_envelope_as_value() {
        let e = errors(parse(None, r#"{"name":"x"}"#).unwrap_err());
        assert_eq!(
            e,
            json!({"data":{"required":{"message":"Field is required but missing","value":{"name":"x"}}}})
        );
    }

    #[test]
    fn scalar_data_is_a_type_error() {
        let e = errors(parse(None, r#"{"data":"x"}"#).unwrap_err());
        assert_eq!(
            e["data"]["type"],
            json!({"message":"Value did not match type(s): object, array","target":"object, array","value":"x"})
        );
    }

    #[test]
    fn syntax_errors_and_non_objects_are_json_invalid() {
        let e = errors(parse(None, r#"{"data":"#).unwrap_err());
        assert_eq!(
            e,
            json!({"json":{"invalid":{"message":"decoder_exit around 0","target":"body"}}})
        );
        let e = errors(parse(None, "[1,2]").unwrap_err());
        assert_eq!(e["json"]["invalid"]["message"], "All JSON must be valid");
    }

    #[test]
    fn top_level_keys_are_normalised_but_nested_keys_are_not() {
        let env = parse(None, r#"{"Data":{"Name-X":"x"},"AUTH-TOKEN":"t","Ünit":1}"#).unwrap();
        assert_eq!(env.data, json!({"Name-X":"x"}));
        assert_eq!(env.envelope["auth_token"], "t");
        assert!(env.envelope.contains_key("ünit"));
    }

    #[test]
    fn curl_form_default_with_a_json_body_is_json() {
        let env = parse(
            Some("application/x-www-form-urlencoded"),
            r#"{"data":{"name":"x"}}"#,
        )
        .unwrap();
        assert_eq!(env.data, json!({"name":"x"}));
    }

    #[test]
    fn json_with_an_equals_sign_sent_as_form_is_misread_like_crossbar() {
        let e = parse(
            Some("application/x-www-form-urlencoded"),
            r#"{"data":{"name":"a=b"}}"#,
        )
        .unwrap_err();
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn text_plain_bodies_are_opaque_files() {
        let env = parse(Some("text/plain"), r#"{"data":{"name":"x"}}"#).unwrap();
        assert_eq!(env.data, json!({}));
    }

    #[test]
    fn req_value_looks_in_data_then_query_then_envelope() {
        let env = RequestEnvelope::parse(
            None,
            br#"{"data":{"verb":"PATCH"},"verb":"DELETE","page_size":3}"#,
            "verb=PUT&paginate&page_size=7",
        )
        .unwrap();
        assert_eq!(env.req_value("verb").as_deref(), Some(&json!("PATCH")));
        assert_eq!(env.req_value("page_size").as_deref(), Some(&json!("7")));
        assert_eq!(env.req_flag("paginate"), Some(true));
        assert_eq!(env.req_value("missing"), None);
    }

    #[test]
    fn only_the_exact_string_true_is_true() {
        let env = RequestEnvelope::parse(None, b"", "a=1&b=TRUE&c=true&d").unwrap();
        assert_eq!(env.query_flag("a"), Some(false));
        assert_eq!(env.query_flag("b"), Some(false));
        assert_eq!(env.query_flag("c"), Some(true));
        assert_eq!(env.query_flag("d"), Some(true));
        assert_eq!(env.query_flag("e"), None);
    }

    #[test]
    fn repeated_query_keys_take_the_first() {
        let env = RequestEnvelope::parse(None, b"", "page_size=2&page_size=5").unwrap();
        assert_eq!(env.req_value("page_size").as_deref(), Some(&json!("2")));
    }

    #[test]
    fn error_envelope_has_a_string_error_and_no_version_when_anonymous() {
        let tail = Tail {
            request_id: "r".into(),
            node: "n".into(),
            timestamp: "t".into(),
            line: CrossbarLine::Master,
            ..Default::default()
        };
        let body = serde_json::to_string(&error(&ApiError::Forbidden, &tail).unwrap()).unwrap();
        assert_eq!(
            body,
            r#"{"data":{"message":"forbidden"},"error":"403","message":"forbidden","status":"error","node":"n","request_id":"r","timestamp":"t","tokens":{"consumed":0,"remaining":0}}"#
        );
        // Kazoo 4.3: no `tokens`, and a missing token written as `undefined`.
        let tail = Tail {
            line: CrossbarLine::V4_3,
            version: Some("4.3.0".into()),
            ..tail
        };
        let body = serde_json::to_string(&error(&ApiError::Forbidden, &tail).unwrap()).unwrap();
        assert_eq!(
            body,
            r#"{"data":{"message":"forbidden"},"error":"403","message":"forbidden","status":"error","auth_token":"undefined","node":"n","request_id":"r","timestamp":"t","version":"4.3.0"}"#
        );
        let bare = ApiError::Bare(actix_web::http::StatusCode::PRECONDITION_FAILED);
        assert!(error(&bare, &tail).is_none());
    }

    #[test]
    fn a_chunk_trailer_writes_every_value_as_text_and_drops_empty_ones() {
        let tail = Tail {
            request_id: "r".into(),
            node: "n".into(),
            timestamp: "t".into(),
            version: Some("4.3.0".into()),
            auth_token: Some("tok".into()),
            line: CrossbarLine::Master,
            ..Default::default()
        };
        let paging = [
            ("next_start_key", "g2".to_owned()),
            ("page_size", "0".to_owned()),
        ];
        assert_eq!(
            chunk_trailer(&paging, &tail),
            r#"], "next_start_key":"g2", "status":"success", "request_id":"r", "node":"n", "version":"4.3.0", "timestamp":"t", "auth_token":"tok"}"#
        );
    }

    proptest! {
        #[test]
        fn parsing_never_panics(ct in proptest::option::of("[a-z/+-]{0,30}"), body in proptest::collection::vec(any::<u8>(), 0..64), qs in ".{0,40}") {
            let _ = RequestEnvelope::parse(ct.as_deref(), &body, &qs);
        }

        #[test]
        fn any_object_with_object_data_parses_back(name in ".{0,20}", extra in "[a-z_]{1,8}") {
            let body = json!({"data": {"name": name}, format!("x{extra}"): 1}).to_string();
            let env = RequestEnvelope::parse(None, body.as_bytes(), "").unwrap();
            prop_assert_eq!(env.data, json!({"name": name}));
        }
    }
}
