//! Turns validator errors into Kazoo's error object: `{"<path>": {"<keyword>": {...}}}` with the
//! exact messages and field order of `kz_json_schema:error_to_jobj/2` (contract §6.6).

use jsonschema::error::{TypeKind, ValidationErrorKind as Kind};
use jsonschema::ValidationError;
use serde_json::{Map, Value};

/// The error for data that is not an object at all (end of §6.6).
pub(super) fn root_not_object(data: &Value) -> Map<String, Value> {
    let mut errors = Map::new();
    insert(
        &mut errors,
        String::new(),
        "type",
        type_body("object".to_string(), data),
    );
    errors
}

/// Kazoo's fixed messages, word for word.
const NOT_UNIQUE: &str = "List of items is not unique";
const STRICT_ITEMS: &str = "Strict checking of data is enabled; only include schema-defined items";
const STRICT_PROPERTIES: &str =
    "Strict checking of data is enabled; only include schema-defined properties";

/// Renders one validator error into `errors`. Errors on the same path but with different keywords
/// sit side by side under that path.
pub(super) fn add_error(
    schema: &Value,
    error: &ValidationError<'_>,
    errors: &mut Map<String, Value>,
) {
    let at = Failure::of(schema, error);
    let (keyword, body) = match error.kind() {
        // These two are keyed by a child's path, not by the failing value's.
        Kind::Required { property } => return required(&at, property, errors),
        Kind::AdditionalProperties { unexpected } => {
            return additional_properties(&at, unexpected, errors)
        }
        Kind::Type { kind } => ("type", type_body(type_names(&at, kind), at.value)),
        Kind::MinLength { limit } => length(&at, true, *limit),
        Kind::MaxLength { limit } => length(&at, false, *limit),
        Kind::Enum { options } => ("enum", enumeration(&at, options)),
        Kind::Minimum { limit } | Kind::ExclusiveMinimum { limit } => {
            ("minimum", minimum(&at, limit))
        }
        Kind::Maximum { limit } | Kind::ExclusiveMaximum { limit } => {
            ("maximum", maximum(&at, limit))
        }
        Kind::MinItems { limit } => ("minItems", min_items(&at, *limit)),
        Kind::MaxItems { limit } => ("maxItems", max_items(&at, *limit)),
        Kind::MinProperties { limit } => ("minProperties", min_properties(&at, *limit)),
        Kind::Pattern { pattern } => ("pattern", pattern_body(&at, pattern)),
        Kind::UniqueItems => ("uniqueItems", message_body(&at, NOT_UNIQUE)),
        Kind::AdditionalItems { .. } => ("additionalItems", message_body(&at, STRICT_ITEMS)),
        // Kazoo names this one `wrong_format`, not `format`.
        Kind::Format { format } => ("wrong_format", wrong_format(&at, format)),
        // Kazoo's catch-all clause: the reason name and "failed to validate".
        other => (other.keyword(), message_body(&at, "failed to validate")),
    };
    insert(errors, join(&at.path), keyword, body);
}

/// One validator error as the renderers read it.
struct Failure<'a> {
    /// The failing value's path, as unescaped segments.
    path: Vec<String>,
    /// The failing value.
    value: &'a Value,
    /// The failing keyword's own value, as the schema file gives it.
    keyword_value: Option<&'a Value>,
    /// The schema object holding the failing keyword: Kazoo reads targets from it, not from the
    /// validator's parsed copy, so numbers keep the form the schema file gives them.
    owner: Option<&'a Map<String, Value>>,
}

impl<'a> Failure<'a> {
    fn of(schema: &'a Value, error: &'a ValidationError<'_>) -> Self {
        let schema_path = error.schema_path().as_str();
        let owner_path = schema_path
            .rsplit_once('/')
            .map_or("", |(parent, _)| parent);
        Self {
            path: pointer_segments(error.instance_path().as_str()),
            value: error.instance(),
            keyword_value: schema.pointer(schema_path),
            owner: schema.pointer(owner_path).and_then(Value::as_object),
        }
    }

    /// The value of `keyword` beside the failing one, as the schema file states it.
    fn stated(&self, keyword: &str) -> Option<Value> {
        self.owner.and_then(|o| o.get(keyword)).cloned()
    }

    /// The stated value of `keyword`, else the validator's `limit`.
    fn stated_or(&self, keyword: &str, limit: u64) -> Value {
        self.stated(keyword).unwrap_or_else(|| Value::from(limit))
    }
}

/// `required`: keyed by the missing key's own path; `value` is its bare name (§6.6).
fn required(at: &Failure<'_>, property: &Value, errors: &mut Map<String, Value>) {
    let name = match property {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut path = at.path.clone();
    path.push(name.clone());
    let body = obj([
        ("message", Value::from("Field is required but missing")),
        ("value", Value::from(name)),
    ]);
    insert(errors, join(&path), "required", body);
}

/// `additionalProperties`: one error per extra key, keyed by that key's path and carrying its
/// value, while the answer has room for them.
fn additional_properties(at: &Failure<'_>, unexpected: &[String], errors: &mut Map<String, Value>) {
    let room = super::MAX_ERRORS.saturating_sub(errors.len());
    for key in unexpected.iter().take(room) {
        let mut path = at.path.clone();
        path.push(key.clone());
        let value = at.value.get(key.as_str()).cloned().unwrap_or(Value::Null);
        let body = obj([
            ("message", Value::from(STRICT_PROPERTIES)),
            ("value", value),
        ]);
        insert(errors, join(&path), "additionalProperties", body);
    }
}

/// The `type` the schema file names, a list joined in its order; else the validator's.
fn type_names(at: &Failure<'_>, kind: &TypeKind) -> String {
    match at.keyword_value {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .map(|t| t.as_str().map_or_else(|| t.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(", "),
        _ => match kind {
            TypeKind::Single(t) => t.to_string(),
            TypeKind::Multiple(set) => set
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        },
    }
}

/// `minLength` and `maxLength`. Kazoo quirk (§6.6): jesse reports a single "wrong length"; Kazoo
/// then picks min vs max by comparing the *byte* length with minLength. Only switch when the
/// schema actually has the other keyword to quote.
fn length(at: &Failure<'_>, reported_min: bool, limit: u64) -> (&'static str, Value) {
    let bytes = at.value.as_str().map_or(0, str::len) as u64;
    let use_min = match at.stated("minLength").and_then(|m| m.as_u64()) {
        Some(min) if min > bytes => true,
        _ if at.stated("maxLength").is_some() => false,
        _ => reported_min,
    };
    let (keyword, text) = if use_min {
        ("minLength", "String must be at least ")
    } else {
        ("maxLength", "String must not be more than ")
    };
    let target = at.stated_or(keyword, limit);
    let body = obj([
        (
            "message",
            Value::from(format!("{text}{} characters", number_text(&target))),
        ),
        ("target", target),
        ("cause", at.value.clone()),
        ("value", at.value.clone()),
    ]);
    (keyword, body)
}

fn enumeration(at: &Failure<'_>, options: &Value) -> Value {
    obj([
        (
            "message",
            Value::from("Value not found in enumerated list of values"),
        ),
        (
            "target",
            at.stated("enum").unwrap_or_else(|| options.clone()),
        ),
        ("value", at.value.clone()),
    ])
}

/// `minimum` and `exclusiveMinimum`. Kazoo quotes `minimum`, else `exclusiveMinimum` (draft-04
/// keeps the bound in `minimum` and makes `exclusiveMinimum` a boolean).
fn minimum(at: &Failure<'_>, limit: &Value) -> Value {
    let target = bound(at.stated("minimum"), at.stated("exclusiveMinimum"), limit);
    limit_body(at, target, |n| format!("Value must be at least {n}"))
}

/// `maximum` and `exclusiveMaximum`, as [`minimum`].
fn maximum(at: &Failure<'_>, limit: &Value) -> Value {
    let target = bound(at.stated("maximum"), at.stated("exclusiveMaximum"), limit);
    limit_body(at, target, |n| format!("Value must be at most {n}"))
}

fn min_items(at: &Failure<'_>, limit: u64) -> Value {
    let target = at.stated_or("minItems", limit);
    limit_body(at, target, |n| {
        format!("The list must have at least {n} items")
    })
}

fn max_items(at: &Failure<'_>, limit: u64) -> Value {
    let target = at.stated_or("maxItems", limit);
    limit_body(at, target, |n| format!("The list is more than {n} items"))
}

fn min_properties(at: &Failure<'_>, limit: u64) -> Value {
    let target = at.stated_or("minProperties", limit);
    limit_body(at, target, |n| {
        format!("The object must have at least {n} keys")
    })
}

/// The body of a bound Kazoo quotes in its message: `{message, target, value}`.
fn limit_body(at: &Failure<'_>, target: Value, message: impl FnOnce(&str) -> String) -> Value {
    obj([
        ("message", Value::from(message(&number_text(&target)))),
        ("target", target),
        ("value", at.value.clone()),
    ])
}

fn pattern_body(at: &Failure<'_>, pattern: &str) -> Value {
    obj([
        (
            "message",
            Value::from(format!("Failed to match pattern '{pattern}'")),
        ),
        ("target", Value::from(pattern)),
        ("value", at.value.clone()),
    ])
}

fn wrong_format(at: &Failure<'_>, format: &str) -> Value {
    obj([
        ("message", Value::from("Field is not in the correct format")),
        ("value", at.value.clone()),
        ("format", Value::from(format)),
    ])
}

/// A fixed message and the failing value.
fn message_body(at: &Failure<'_>, message: &str) -> Value {
    obj([
        ("message", Value::from(message)),
        ("value", at.value.clone()),
    ])
}

fn type_body(types: String, value: &Value) -> Value {
    obj([
        (
            "message",
            Value::from(format!("Value did not match type(s): {types}")),
        ),
        ("target", Value::from(types)),
        ("value", value.clone()),
    ])
}

fn bound(primary: Option<Value>, secondary: Option<Value>, limit: &Value) -> Value {
    primary
        .filter(Value::is_number)
        .or(secondary.filter(Value::is_number))
        .unwrap_or_else(|| limit.clone())
}

/// `kz_term:to_binary/1` of a schema number: integers print plainly.
fn number_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn obj<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::Object(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn insert(errors: &mut Map<String, Value>, path: String, keyword: &str, body: Value) {
    let entry = errors
        .entry(path)
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(by_keyword) = entry {
        by_keyword.insert(keyword.to_string(), body);
    }
}

/// Splits a JSON pointer into its unescaped segments, keeping empty keys (which the validator's
/// own segment iterator drops).
fn pointer_segments(pointer: &str) -> Vec<String> {
    if pointer.is_empty() {
        return Vec::new();
    }
    pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// Kazoo's key: segments joined with "." after writing each literal "." as "%2E" (§6.6);
/// array indexes stay 0-based.
fn join(segments: &[String]) -> String {
    segments
        .iter()
        .map(|s| s.replace('.', "%2E"))
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_segments_unescape_and_keep_empty_keys() {
        assert_eq!(pointer_segments(""), Vec::<String>::new());
        assert_eq!(pointer_segments("/a~1b/~0c/0"), vec!["a/b", "~c", "0"]);
        assert_eq!(pointer_segments("/x//y"), vec!["x", "", "y"]);
    }

    #[test]
    fn join_escapes_dots_inside_keys() {
        let path = vec!["a.b".to_string(), "1".to_string(), "c".to_string()];
        assert_eq!(join(&path), "a%2Eb.1.c");
        assert_eq!(join(&[]), "");
    }
}
