//! Turns validator errors into Kazoo's error object: `{"<path>": {"<keyword>": {...}}}` with the
//! exact messages and field order of `kz_json_schema:error_to_jobj/2` (contract §6.6).

use jsonschema::error::ValidationErrorKind;
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

/// Renders one validator error into `errors`. Errors on the same path but with different keywords
/// sit side by side under that path.
pub(super) fn add_error(
    schema: &Value,
    error: &ValidationError<'_>,
    errors: &mut Map<String, Value>,
) {
    let segments = pointer_segments(error.instance_path().as_str());
    let instance: &Value = error.instance();
    let schema_path = error.schema_path().as_str();
    // The schema object holding the failing keyword: Kazoo reads targets from it, not from the
    // validator's parsed copy, so numbers keep the form the schema file gives them.
    let owner = schema
        .pointer(
            schema_path
                .rsplit_once('/')
                .map_or("", |(parent, _)| parent),
        )
        .and_then(Value::as_object);
    let owner_value = |key: &str| owner.and_then(|o| o.get(key)).cloned();

    match error.kind() {
        ValidationErrorKind::Required { property } => {
            let name = match property {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            // Keyed by the missing key's own path; `value` is its bare name (§6.6).
            let mut path = segments;
            path.push(name.clone());
            let body = obj([
                ("message", Value::from("Field is required but missing")),
                ("value", Value::from(name)),
            ]);
            insert(errors, join(&path), "required", body);
        }
        ValidationErrorKind::Type { kind } => {
            let types = match schema.pointer(schema_path) {
                Some(Value::String(t)) => t.clone(),
                Some(Value::Array(ts)) => ts
                    .iter()
                    .map(|t| t.as_str().map_or_else(|| t.to_string(), str::to_string))
                    .collect::<Vec<_>>()
                    .join(", "),
                _ => match kind {
                    jsonschema::error::TypeKind::Single(t) => t.to_string(),
                    jsonschema::error::TypeKind::Multiple(set) => set
                        .iter()
                        .map(|t| t.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                },
            };
            insert(errors, join(&segments), "type", type_body(types, instance));
        }
        ValidationErrorKind::MinLength { limit } | ValidationErrorKind::MaxLength { limit } => {
            let reported_min = matches!(error.kind(), ValidationErrorKind::MinLength { .. });
            // Kazoo quirk (§6.6): jesse reports a single "wrong length"; Kazoo then picks min vs
            // max by comparing the *byte* length with minLength. Only switch when the schema
            // actually has the other keyword to quote.
            let bytes = instance.as_str().map_or(0, str::len) as u64;
            let use_min = match owner_value("minLength").and_then(|m| m.as_u64()) {
                Some(min) if min > bytes => true,
                _ if owner_value("maxLength").is_some() => false,
                _ => reported_min,
            };
            let (keyword, text) = if use_min {
                ("minLength", "String must be at least ")
            } else {
                ("maxLength", "String must not be more than ")
            };
            let target = owner_value(keyword).unwrap_or_else(|| Value::from(*limit));
            let body = obj([
                (
                    "message",
                    Value::from(format!("{text}{} characters", number_text(&target))),
                ),
                ("target", target),
                ("cause", instance.clone()),
                ("value", instance.clone()),
            ]);
            insert(errors, join(&segments), keyword, body);
        }
        ValidationErrorKind::Enum { options } => {
            let target = owner_value("enum").unwrap_or_else(|| (**options).clone());
            let body = obj([
                (
                    "message",
                    Value::from("Value not found in enumerated list of values"),
                ),
                ("target", target),
                ("value", instance.clone()),
            ]);
            insert(errors, join(&segments), "enum", body);
        }
        ValidationErrorKind::Minimum { limit }
        | ValidationErrorKind::ExclusiveMinimum { limit } => {
            // Kazoo quotes `minimum`, else `exclusiveMinimum` (draft-04 keeps the bound in
            // `minimum` and makes `exclusiveMinimum` a boolean).
            let target = bound(
                owner_value("minimum"),
                owner_value("exclusiveMinimum"),
                limit,
            );
            let body = obj([
                (
                    "message",
                    Value::from(format!("Value must be at least {}", number_text(&target))),
                ),
                ("target", target),
                ("value", instance.clone()),
            ]);
            insert(errors, join(&segments), "minimum", body);
        }
        ValidationErrorKind::Maximum { limit }
        | ValidationErrorKind::ExclusiveMaximum { limit } => {
            let target = bound(
                owner_value("maximum"),
                owner_value("exclusiveMaximum"),
                limit,
            );
            let body = obj([
                (
                    "message",
                    Value::from(format!("Value must be at most {}", number_text(&target))),
                ),
                ("target", target),
                ("value", instance.clone()),
            ]);
            insert(errors, join(&segments), "maximum", body);
        }
        ValidationErrorKind::Pattern { pattern } => {
            let body = obj([
                (
                    "message",
                    Value::from(format!("Failed to match pattern '{pattern}'")),
                ),
                ("target", Value::from(pattern.clone())),
                ("value", instance.clone()),
            ]);
            insert(errors, join(&segments), "pattern", body);
        }
        ValidationErrorKind::MinItems { limit } => {
            let target = owner_value("minItems").unwrap_or_else(|| Value::from(*limit));
            let body = obj([
                (
                    "message",
                    Value::from(format!(
                        "The list must have at least {} items",
                        number_text(&target)
                    )),
                ),
                ("target", target),
                ("value", instance.clone()),
            ]);
            insert(errors, join(&segments), "minItems", body);
        }
        ValidationErrorKind::MaxItems { limit } => {
            let target = owner_value("maxItems").unwrap_or_else(|| Value::from(*limit));
            let body = obj([
                (
                    "message",
                    Value::from(format!(
                        "The list is more than {} items",
                        number_text(&target)
                    )),
                ),
                ("target", target),
                ("value", instance.clone()),
            ]);
            insert(errors, join(&segments), "maxItems", body);
        }
        ValidationErrorKind::MinProperties { limit } => {
            let target = owner_value("minProperties").unwrap_or_else(|| Value::from(*limit));
            let body = obj([
                (
                    "message",
                    Value::from(format!(
                        "The object must have at least {} keys",
                        number_text(&target)
                    )),
                ),
                ("target", target),
                ("value", instance.clone()),
            ]);
            insert(errors, join(&segments), "minProperties", body);
        }
        ValidationErrorKind::UniqueItems => {
            let body = obj([
                ("message", Value::from("List of items is not unique")),
                ("value", instance.clone()),
            ]);
            insert(errors, join(&segments), "uniqueItems", body);
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            // One error per extra key, keyed by that key's path and carrying its value.
            let room = super::MAX_ERRORS.saturating_sub(errors.len());
            for key in unexpected.iter().take(room) {
                let mut path = segments.clone();
                path.push(key.clone());
                let value = instance.get(key.as_str()).cloned().unwrap_or(Value::Null);
                let body = obj([
                    (
                        "message",
                        Value::from(
                            "Strict checking of data is enabled; only include schema-defined properties",
                        ),
                    ),
                    ("value", value),
                ]);
                insert(errors, join(&path), "additionalProperties", body);
            }
        }
        ValidationErrorKind::AdditionalItems { .. } => {
            let body = obj([
                (
                    "message",
                    Value::from(
                        "Strict checking of data is enabled; only include schema-defined items",
                    ),
                ),
                ("value", instance.clone()),
            ]);
            insert(errors, join(&segments), "additionalItems", body);
        }
        ValidationErrorKind::Format { format } => {
            // Kazoo names this one `wrong_format`, not `format`.
            let body = obj([
                ("message", Value::from("Field is not in the correct format")),
                ("value", instance.clone()),
                ("format", Value::from(format.clone())),
            ]);
            insert(errors, join(&segments), "wrong_format", body);
        }
        other => {
            // Kazoo's catch-all clause: the reason name and "failed to validate".
            let body = obj([
                ("message", Value::from("failed to validate")),
                ("value", instance.clone()),
            ]);
            insert(errors, join(&segments), other.keyword(), body);
        }
    }
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
