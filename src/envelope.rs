//! Kazoo's request envelope in (body parsing by content type, key normalisation, the `data`
//! check, the three-place parameter lookup) and the response envelope out
//! (groups-contract §2 and §3.1/§3.2).
use serde_json::{json, Map, Value};

use crate::error::ApiError;

/// Crossbar's `crossbar.max_upload_size` default.
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 8_000_000;

/// The parsed request: the normalised envelope, its `data`, and the query string.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestEnvelope {
    pub envelope: Map<String, Value>,
    pub data: Value,
    pub query: Vec<(String, Option<String>)>,
}

impl RequestEnvelope {
    /// Stage 1 of the pipeline: parse the body by its content type and check the envelope.
    pub fn parse(
        content_type: Option<&str>,
        body: &[u8],
        query_string: &str,
    ) -> Result<Self, ApiError> {
        let query = parse_query(query_string);
        let envelope = match body_kind(content_type) {
            BodyKind::Json => parse_json_body(body)?,
            BodyKind::Form => parse_form_body(body)?,
            // Kept by Crossbar as an uploaded file: the JSON data is empty (§2.1).
            BodyKind::Opaque => Map::new(),
        };
        let envelope = normalise_keys(envelope);
        let data = if envelope.is_empty() {
            Value::Object(Map::new())
        } else {
            match envelope.get("data") {
                None => {
                    return Err(ApiError::validation(
                        "data",
                        "required",
                        json!({"message": "Field is required but missing", "value": envelope}),
                    ))
                }
                Some(data @ (Value::Object(_) | Value::Array(_))) => data.clone(),
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
            }
        };
        Ok(Self {
            envelope,
            data,
            query,
        })
    }

    /// Kazoo's request-value lookup (§2.3): `data.<key>`, then the query string, then the
    /// envelope's top level. A bare query key is JSON `true`.
    pub fn req_value(&self, key: &str) -> Option<Value> {
        if let Some(v) = self.data.get(key) {
            return Some(v.clone());
        }
        if let Some(v) = self.query_value(key) {
            return Some(v);
        }
        self.envelope.get(key).cloned()
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

    /// The `data` object, or an empty one when `data` is an array.
    pub fn data_object(&self) -> Map<String, Value> {
        self.data.as_object().cloned().unwrap_or_default()
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

fn json_invalid(message: &str) -> ApiError {
    ApiError::validation(
        "json",
        "invalid",
        json!({"message": message, "target": "body"}),
    )
}

fn parse_json_body(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(json_invalid("All JSON must be valid")),
        // Kazoo's parser wrapper reports every syntax error this way (§3.5).
        Err(_) => Err(json_invalid("decoder_exit around 0")),
    }
}

/// `application/x-www-form-urlencoded` (§2.1): a single key with no value is the usual
/// `curl -d '{json}'` and is parsed as JSON; otherwise the form fields are the envelope. A JSON
/// body containing `=` or `&` is therefore misread as a form, as in Crossbar.
fn parse_form_body(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let text = String::from_utf8_lossy(body);
    let pairs = parse_query(text.trim());
    match pairs.as_slice() {
        [] => Ok(Map::new()),
        [(_, None)] => parse_json_body(body),
        _ => Ok(pairs
            .into_iter()
            .map(|(k, v)| (k, v.map(Value::String).unwrap_or(Value::Bool(true))))
            .collect()),
    }
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

/// Top-level keys: ASCII and Latin-1 capitals lower-cased, `-` becomes `_` (§2.2). Nested keys
/// are untouched.
fn normalise_keys(map: Map<String, Value>) -> Map<String, Value> {
    map.into_iter()
        .map(|(k, v)| (normalise_key(&k), v))
        .collect()
}

fn normalise_key(key: &str) -> String {
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
}

impl Tail {
    fn write(&self, out: &mut Map<String, Value>) {
        if let Some(token) = &self.auth_token {
            out.insert("auth_token".into(), Value::from(token.as_str()));
        }
        out.insert("node".into(), Value::from(self.node.as_str()));
        out.insert("request_id".into(), Value::from(self.request_id.as_str()));
        out.insert("timestamp".into(), Value::from(self.timestamp.as_str()));
        out.insert(
            "tokens".into(),
            json!({"consumed": self.tokens_consumed, "remaining": self.tokens_remaining}),
        );
        if let Some(version) = &self.version {
            out.insert("version".into(), Value::from(version.as_str()));
        }
    }
}

/// `{"data":…, <extra>, "revision":…, "status":"success", …tail…}`. `extra` carries the
/// paging keys of listings; absent values are omitted, never `null`.
pub fn success(
    data: Value,
    revision: Option<&str>,
    extra: &[(&str, Value)],
    tail: &Tail,
) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in extra {
        out.insert((*k).to_owned(), v.clone());
    }
    out.insert("data".into(), data);
    if let Some(rev) = revision {
        out.insert("revision".into(), Value::from(rev));
    }
    out.insert("status".into(), Value::from("success"));
    tail.write(&mut out);
    out
}

/// The error envelope (§3.2), or `None` for cowboy's bare answers.
pub fn error(err: &ApiError, tail: &Tail) -> Option<Map<String, Value>> {
    let (message, data) = err.message_and_data()?;
    let mut out: Map<String, Value> = err
        .extra()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    out.insert("data".into(), data);
    out.insert("error".into(), Value::from(err.status().to_string()));
    out.insert("message".into(), Value::from(message));
    out.insert("status".into(), Value::from("error"));
    tail.write(&mut out);
    Some(out)
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
        assert_eq!(env.req_value("verb"), Some(json!("PATCH")));
        assert_eq!(env.req_value("page_size"), Some(json!("7")));
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
        assert_eq!(env.req_value("page_size"), Some(json!("2")));
    }

    #[test]
    fn error_envelope_has_a_string_error_and_no_version_when_anonymous() {
        let tail = Tail {
            request_id: "r".into(),
            node: "n".into(),
            timestamp: "t".into(),
            ..Default::default()
        };
        let body = error(&ApiError::Forbidden, &tail).unwrap();
        assert_eq!(body["error"], "403");
        assert_eq!(body["status"], "error");
        assert!(!body.contains_key("version"));
        assert!(!body.contains_key("auth_token"));
        assert!(error(&ApiError::Bare(412), &tail).is_none());
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
