//! Owns JSON-Schema validation of group data: the schema is compiled once, defaults are filled in
//! the way Kazoo's jesse options do it, and failures are rendered as Kazoo error objects (§6).

mod render;

use serde_json::{Map, Value};
use std::path::Path;

/// The schema files, shipped inside the binary.
const GROUPS_SCHEMA: (&str, &str) = (
    "schemas/groups.json",
    include_str!("../../schemas/groups.json"),
);
const API_AUTH_SCHEMA: (&str, &str) = (
    "schemas/api_auth.json",
    include_str!("../../schemas/api_auth.json"),
);
const USER_AUTH_SCHEMA: (&str, &str) = (
    "schemas/user_auth.json",
    include_str!("../../schemas/user_auth.json"),
);

/// The compiled schemas of every resource served, built once at start.
pub struct Schemas {
    pub groups: SchemaValidator,
    pub api_auth: SchemaValidator,
    pub user_auth: SchemaValidator,
}

impl Schemas {
    /// Compiles the shipped schemas; an error names the broken file.
    pub fn load() -> Result<Self, String> {
        let schema = |(file, text): (&str, &str)| {
            serde_json::from_str(text)
                .map_err(|e| e.to_string())
                .and_then(SchemaValidator::from_schema)
                .map_err(|e| format!("{file}: {e}"))
        };
        Ok(Self {
            groups: schema(GROUPS_SCHEMA)?,
            api_auth: schema(API_AUTH_SCHEMA)?,
            user_auth: schema(USER_AUTH_SCHEMA)?,
        })
    }
}

/// The most validation errors one answer carries. Crossbar lists them all; a bound keeps the
/// answer (and its memory) proportionate to the request.
pub const MAX_ERRORS: usize = 100;

/// A compiled schema (groups-contract §6.1 for groups), built once at start and shared by every
/// request.
pub struct SchemaValidator {
    /// The raw schema, kept to read the keyword values Kazoo copies into its error bodies.
    schema: Value,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for SchemaValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaValidator")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl SchemaValidator {
    /// Reads and compiles a schema file; the error text names the file so a broken deployment
    /// fails fast with a useful message.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read schema file {}: {e}", path.display()))?;
        let schema: Value = serde_json::from_str(&text)
            .map_err(|e| format!("schema file {} is not valid JSON: {e}", path.display()))?;
        Self::from_schema(schema).map_err(|e| format!("schema file {}: {e}", path.display()))
    }

    /// Compiles a schema. Kazoo's schemas are draft-04, so that is the draft used when the schema
    /// does not name one with `$schema`.
    pub fn from_schema(schema: Value) -> Result<Self, String> {
        if !schema.is_object() {
            return Err("schema must be a JSON object".to_string());
        }
        let mut options = jsonschema::options();
        if schema.get("$schema").is_none() {
            options = options.with_draft(jsonschema::Draft::Draft4);
        }
        let validator = options
            .build(&schema)
            .map_err(|e| format!("invalid JSON schema: {e}"))?;
        Ok(Self { schema, validator })
    }

    /// `data` = the request data with private keys already removed. Applies schema defaults
    /// (properties' "default", recursively into nested objects that are present or defaulted)
    /// BEFORE validating, so `endpoints` is never reported as required (§6.1, [exec]). Returns the
    /// data with defaults filled in, or the Kazoo error object (§6.6) holding ALL errors, e.g.
    /// `{"name":{"required":{...}},"flags.1":{"type":{...}}}`.
    pub fn validate(&self, data: Value) -> Result<Value, Map<String, Value>> {
        if !data.is_object() {
            // Kazoo strips private keys element by element and never gets a usable object; the
            // contract allows answering with a root `type` error instead (end of §6.6).
            return Err(render::root_not_object(&data));
        }
        let mut with_defaults = data;
        apply_defaults(&self.schema, &mut with_defaults);
        // The validator builds every error before yielding any, and a body can hold millions of
        // wrong array items. The data is rejected anyway, so arrays are cut to MAX_ERRORS + 1
        // items before the errors are listed; the first error is kept aside only when the cut
        // would drop it, so the answer always explains the refusal.
        let first = match self.validator.validate(&with_defaults) {
            Ok(()) => return Ok(with_defaults),
            Err(error) if beyond_cut(&with_defaults, error.instance_path().as_str()) => {
                let mut first = Map::new();
                render::add_error(&self.schema, &error, &mut first);
                Some(first)
            }
            Err(_) => None,
        };
        truncate_arrays(&mut with_defaults, CUT);
        let mut errors = Map::new();
        for error in self.validator.iter_errors(&with_defaults).take(MAX_ERRORS) {
            render::add_error(&self.schema, &error, &mut errors);
        }
        Err(match first {
            Some(first) if errors.is_empty() => first,
            _ => errors,
        })
    }
}

/// Array items kept when a rejected body's errors are listed.
const CUT: usize = MAX_ERRORS + 1;

/// Whether the value at a JSON pointer sits past [`CUT`] in some array it is in.
fn beyond_cut(instance: &Value, pointer: &str) -> bool {
    let mut at = instance;
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        at = match at {
            Value::Array(items) => match segment.parse::<usize>() {
                Ok(index) if index >= CUT => return true,
                Ok(index) => match items.get(index) {
                    Some(item) => item,
                    None => return false,
                },
                Err(_) => return false,
            },
            Value::Object(map) => match map.get(&segment) {
                Some(value) => value,
                None => return false,
            },
            _ => return false,
        };
    }
    false
}

/// Keeps the first `len` items of every array, at any depth.
fn truncate_arrays(value: &mut Value, len: usize) {
    match value {
        Value::Array(items) => {
            items.truncate(len);
            items.iter_mut().for_each(|v| truncate_arrays(v, len));
        }
        Value::Object(map) => map.values_mut().for_each(|v| truncate_arrays(v, len)),
        _ => {}
    }
}

/// Fills in missing properties from their schema `default`, the way Kazoo's `use_defaults` and
/// `apply_defaults_to_empty_objects` jesse options do: defaults go only into JSON objects (never
/// into a value of the wrong type), are appended in schema order, and nested defaults are applied
/// inside both present and freshly defaulted objects. A key present with `null` counts as present.
fn apply_defaults(schema: &Value, instance: &mut Value) {
    let Some(schema) = schema.as_object() else {
        return;
    };
    match instance {
        Value::Object(map) => {
            let Some(Value::Object(properties)) = schema.get("properties") else {
                return;
            };
            for (key, sub_schema) in properties {
                if !map.contains_key(key) {
                    match sub_schema.get("default") {
                        Some(default) => {
                            map.insert(key.clone(), default.clone());
                        }
                        None => continue,
                    }
                }
                if let Some(value) = map.get_mut(key) {
                    apply_defaults(sub_schema, value);
                }
            }
        }
        Value::Array(items) => match schema.get("items") {
            Some(item_schema @ Value::Object(_)) => {
                for item in items {
                    apply_defaults(item_schema, item);
                }
            }
            Some(Value::Array(item_schemas)) => {
                for (item, item_schema) in items.iter_mut().zip(item_schemas) {
                    apply_defaults(item_schema, item);
                }
            }
            _ => {}
        },
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn groups() -> SchemaValidator {
        let schema = serde_json::from_str(include_str!("../../schemas/groups.json")).unwrap();
        SchemaValidator::from_schema(schema).expect("groups schema compiles")
    }

    fn errors(data: Value) -> Value {
        Value::Object(groups().validate(data).expect_err("data must be rejected"))
    }

    #[test]
    fn long_arrays_list_errors_of_their_first_items_only() {
        let mut flags: Vec<Value> = (0..10_000).map(|i| json!(i)).collect();
        let e = errors(json!({"name": "n", "flags": flags.clone()}));
        assert_eq!(e.as_object().unwrap().len(), MAX_ERRORS);
        assert!(e["flags.0"]["type"].is_object());
        // The only wrong item is past the cut: it is still the one reported.
        flags = (0..10_000).map(|i| json!(i.to_string())).collect();
        flags[5_000] = json!(5);
        let e = errors(json!({"name": "n", "flags": flags}));
        assert_eq!(
            e,
            json!({"flags.5000": {"type": {"message": "Value did not match type(s): string", "target": "string", "value": 5}}})
        );
    }

    #[test]
    fn defaults_are_added_after_the_request_fields_in_schema_order() {
        let out = groups().validate(json!({"name": "Test group"})).unwrap();
        assert_eq!(
            serde_json::to_string(&out).unwrap(),
            r#"{"name":"Test group","endpoints":{},"music_on_hold":{}}"#
        );
    }

    #[test]
    fn endpoints_is_never_reported_as_required() {
        // Case #5: only `name`, because the `endpoints` default lands before the required check.
        assert_eq!(
            errors(json!({})),
            json!({"name":{"required":{"message":"Field is required but missing","value":"name"}}})
        );
    }

    #[test]
    fn name_of_129_characters_is_rejected_with_max_length() {
        // Case #7.
        let long = "a".repeat(129);
        assert_eq!(
            errors(json!({ "name": long })),
            json!({"name":{"maxLength":{
                "message":"String must not be more than 128 characters",
                "target":128,"cause":long,"value":long}}})
        );
    }

    #[test]
    fn max_length_body_keeps_kazoo_key_order() {
        let long = "a".repeat(129);
        let out = serde_json::to_string(&errors(json!({ "name": long }))).unwrap();
        let expected = format!(
            r#"{{"name":{{"maxLength":{{"message":"String must not be more than 128 characters","target":128,"cause":"{long}","value":"{long}"}}}}}}"#
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn name_of_128_characters_is_accepted() {
        // Case #8.
        assert!(groups().validate(json!({"name": "a".repeat(128)})).is_ok());
    }

    #[test]
    fn max_length_counts_code_points_not_bytes() {
        assert!(groups().validate(json!({"name": "é".repeat(128)})).is_ok());
        assert!(groups().validate(json!({"name": "😀".repeat(128)})).is_ok());
        let e = errors(json!({"name": "é".repeat(129)}));
        assert!(e["name"]["maxLength"].is_object());
    }

    #[test]
    fn empty_name_is_rejected_with_min_length() {
        // Case #9.
        assert_eq!(
            errors(json!({"name": ""})),
            json!({"name":{"minLength":{
                "message":"String must be at least 1 characters","target":1,"cause":"","value":""}}})
        );
    }

    #[test]
    fn numeric_name_is_a_type_error() {
        // Case #10.
        assert_eq!(
            errors(json!({"name": 5})),
            json!({"name":{"type":{
                "message":"Value did not match type(s): string","target":"string","value":5}}})
        );
    }

    #[test]
    fn non_string_flag_is_keyed_by_its_zero_based_index() {
        // Case #11.
        assert_eq!(
            errors(json!({"name": "x", "flags": ["a", 1]})),
            json!({"flags.1":{"type":{
                "message":"Value did not match type(s): string","target":"string","value":1}}})
        );
    }

    #[test]
    fn endpoints_as_array_is_a_type_error_and_gets_no_default() {
        // Case #12.
        assert_eq!(
            errors(json!({"name": "x", "endpoints": []})),
            json!({"endpoints":{"type":{
                "message":"Value did not match type(s): object","target":"object","value":[]}}})
        );
    }

    #[test]
    fn long_media_id_is_keyed_by_its_nested_path() {
        // Case #13.
        let long = "m".repeat(129);
        assert_eq!(
            errors(json!({"name": "x", "music_on_hold": {"media_id": long}})),
            json!({"music_on_hold.media_id":{"maxLength":{
                "message":"String must not be more than 128 characters",
                "target":128,"cause":long,"value":long}}})
        );
    }

    #[test]
    fn several_errors_are_reported_together() {
        // §3.5 "several errors at once".
        assert_eq!(
            errors(json!({"name": "", "endpoints": 1, "flags": "x"})),
            json!({
                "endpoints":{"type":{"message":"Value did not match type(s): object","target":"object","value":1}},
                "flags":{"type":{"message":"Value did not match type(s): array","target":"array","value":"x"}},
                "name":{"minLength":{"message":"String must be at least 1 characters","target":1,"cause":"","value":""}}
            })
        );
    }

    #[test]
    fn null_name_is_reported_as_a_type_error() {
        // PATCH removes null keys before validation (§6.4), so a null reaching here is present.
        let e = errors(json!({"name": null}));
        assert_eq!(e["name"]["type"]["value"], Value::Null);
    }

    #[test]
    fn data_that_is_not_an_object_gets_a_root_type_error() {
        for data in [json!([{"name": "x"}]), json!("x"), json!(5), json!(null)] {
            assert_eq!(
                errors(data.clone()),
                json!({"":{"type":{
                    "message":"Value did not match type(s): object","target":"object","value":data}}})
            );
        }
    }

    #[test]
    fn unknown_fields_are_kept() {
        let data = json!({"name": "x", "custom": {"a": 1}, "ui_metadata": {"ui": "kazoo-ui"}});
        let out = groups().validate(data).unwrap();
        assert_eq!(out["custom"], json!({"a": 1}));
        assert_eq!(out["ui_metadata"], json!({"ui": "kazoo-ui"}));
    }

    #[test]
    fn present_values_are_not_replaced_by_defaults() {
        let data = json!({"name": "x", "endpoints": {"u1": {"type": "user"}}, "music_on_hold": {"media_id": "m"}});
        assert_eq!(groups().validate(data.clone()).unwrap(), data);
    }

    #[test]
    fn defaults_are_not_added_inside_a_value_of_the_wrong_type() {
        let schema = json!({
            "type": "object",
            "properties": {"moh": {"type": "object", "default": {},
                "properties": {"volume": {"type": "integer", "default": 5}}}}
        });
        let v = SchemaValidator::from_schema(schema).unwrap();
        let e = v.validate(json!({"moh": "loud"})).unwrap_err();
        assert_eq!(e["moh"]["type"]["value"], json!("loud"));
        assert_eq!(
            v.validate(json!({})).unwrap(),
            json!({"moh": {"volume": 5}}),
            "nested defaults land inside a defaulted object"
        );
        assert_eq!(
            v.validate(json!({"moh": {"other": 1}})).unwrap(),
            json!({"moh": {"other": 1, "volume": 5}}),
            "nested defaults land inside a present object"
        );
    }

    #[test]
    fn required_inside_a_nested_object_is_keyed_by_the_full_path() {
        let schema = json!({"type": "object", "properties": {
            "a.b": {"type": "object", "required": ["c.d"]}}});
        let v = SchemaValidator::from_schema(schema).unwrap();
        assert_eq!(
            Value::Object(v.validate(json!({"a.b": {}})).unwrap_err()),
            json!({"a%2Eb.c%2Ed":{"required":{"message":"Field is required but missing","value":"c.d"}}})
        );
    }

    #[test]
    fn type_lists_are_joined_in_schema_order() {
        let schema =
            json!({"type": "object", "properties": {"x": {"type": ["string", "null", "integer"]}}});
        let v = SchemaValidator::from_schema(schema).unwrap();
        let e = v.validate(json!({"x": [1]})).unwrap_err();
        assert_eq!(
            Value::Object(e),
            json!({"x":{"type":{"message":"Value did not match type(s): string, null, integer",
                "target":"string, null, integer","value":[1]}}})
        );
    }

    #[test]
    fn two_keywords_on_the_same_path_are_both_reported() {
        let schema = json!({"type": "object", "properties": {
            "x": {"type": "string", "minLength": 3, "pattern": "^[a-z]+$"}}});
        let v = SchemaValidator::from_schema(schema).unwrap();
        let e = v.validate(json!({"x": "A"})).unwrap_err();
        assert_eq!(
            Value::Object(e),
            json!({"x":{
                "minLength":{"message":"String must be at least 3 characters","target":3,"cause":"A","value":"A"},
                "pattern":{"message":"Failed to match pattern '^[a-z]+$'","target":"^[a-z]+$","value":"A"}
            }})
        );
    }

    #[test]
    fn other_keywords_render_like_kazoo() {
        let schema = json!({"type": "object", "properties": {
            "e": {"enum": ["a", "b"]},
            "lo": {"type": "integer", "minimum": 2},
            "hi": {"type": "integer", "maximum": 5},
            "few": {"type": "array", "minItems": 2},
            "many": {"type": "array", "maxItems": 1},
            "uniq": {"type": "array", "uniqueItems": true},
            "strict": {"type": "object", "properties": {"k": {}}, "additionalProperties": false}
        }});
        let v = SchemaValidator::from_schema(schema).unwrap();
        let e = v
            .validate(
                json!({"e": "c", "lo": 1, "hi": 6, "few": [1], "many": [1, 2],
                "uniq": [1, 1], "strict": {"k": 1, "z": 2}}),
            )
            .unwrap_err();
        assert_eq!(
            Value::Object(e),
            json!({
                "e":{"enum":{"message":"Value not found in enumerated list of values","target":["a","b"],"value":"c"}},
                "lo":{"minimum":{"message":"Value must be at least 2","target":2,"value":1}},
                "hi":{"maximum":{"message":"Value must be at most 5","target":5,"value":6}},
                "few":{"minItems":{"message":"The list must have at least 2 items","target":2,"value":[1]}},
                "many":{"maxItems":{"message":"The list is more than 1 items","target":1,"value":[1,2]}},
                "uniq":{"uniqueItems":{"message":"List of items is not unique","value":[1,1]}},
                "strict.z":{"additionalProperties":{
                    "message":"Strict checking of data is enabled; only include schema-defined properties",
                    "value":2}}
            })
        );
    }

    #[test]
    fn draft4_exclusive_bounds_render_as_minimum_and_maximum() {
        let schema = json!({"$schema": "http://json-schema.org/draft-04/schema#", "type": "object",
            "properties": {"n": {"type": "number", "minimum": 1, "exclusiveMinimum": true,
                                 "maximum": 3, "exclusiveMaximum": true}}});
        let v = SchemaValidator::from_schema(schema).unwrap();
        let low = v.validate(json!({"n": 1})).unwrap_err();
        assert_eq!(
            low["n"]["minimum"],
            json!({"message":"Value must be at least 1","target":1,"value":1})
        );
        let high = v.validate(json!({"n": 3})).unwrap_err();
        assert_eq!(
            high["n"]["maximum"],
            json!({"message":"Value must be at most 3","target":3,"value":3})
        );
    }

    #[test]
    fn min_or_max_length_is_chosen_by_byte_length_as_kazoo_does() {
        // §6.6: the validator counts characters, Kazoo's error builder compares bytes with
        // minLength. "éé" is 2 characters (too short for 3) but 4 bytes, so Kazoo says maxLength.
        let schema = json!({"type": "object", "properties": {
            "s": {"type": "string", "minLength": 3, "maxLength": 10}}});
        let v = SchemaValidator::from_schema(schema).unwrap();
        let e = v.validate(json!({"s": "éé"})).unwrap_err();
        assert_eq!(
            e["s"],
            json!({"maxLength":{"message":"String must not be more than 10 characters",
                "target":10,"cause":"éé","value":"éé"}})
        );
        let e = v.validate(json!({"s": "ab"})).unwrap_err();
        assert!(e["s"]["minLength"].is_object());
    }

    #[test]
    fn unrendered_keywords_fall_back_to_a_generic_body() {
        let schema =
            json!({"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 2}}});
        let v = SchemaValidator::from_schema(schema).unwrap();
        let e = v.validate(json!({"n": 3})).unwrap_err();
        assert_eq!(
            e["n"],
            json!({"multipleOf":{"message":"failed to validate","value":3}})
        );
    }

    /// The error object exactly as it goes on the wire: these bodies are compared byte for byte.
    fn rendered(schema: Value, data: Value) -> String {
        let v = SchemaValidator::from_schema(schema).unwrap();
        serde_json::to_string(&v.validate(data).unwrap_err()).unwrap()
    }

    #[test]
    fn min_properties_renders_like_kazoo() {
        let schema = json!({"type": "object", "properties": {
            "o": {"type": "object", "minProperties": 2}}});
        assert_eq!(
            rendered(schema, json!({"o": {"a": 1}})),
            r#"{"o":{"minProperties":{"message":"The object must have at least 2 keys","target":2,"value":{"a":1}}}}"#
        );
    }

    #[test]
    fn items_past_a_tuple_render_as_strict_checking() {
        let schema = json!({"type": "object", "properties": {
            "t": {"type": "array", "items": [{"type": "integer"}], "additionalItems": false}}});
        assert_eq!(
            rendered(schema, json!({"t": [1, 2]})),
            r#"{"t":{"additionalItems":{"message":"Strict checking of data is enabled; only include schema-defined items","value":[1,2]}}}"#
        );
    }

    #[test]
    fn a_wrong_format_is_reported_as_wrong_format_with_the_format_last() {
        let schema = json!({"type": "object", "properties": {
            "mail": {"type": "string", "format": "email"}}});
        assert_eq!(
            rendered(schema, json!({"mail": "nope"})),
            r#"{"mail":{"wrong_format":{"message":"Field is not in the correct format","value":"nope","format":"email"}}}"#
        );
    }

    #[test]
    fn bounds_render_as_minimum_and_maximum_quoted_as_the_schema_file_writes_them() {
        // Later drafts keep the bound in `exclusiveMinimum` itself: Kazoo quotes it then.
        let exclusive = json!({"$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object", "properties": {"n": {"type": "number", "exclusiveMinimum": 3},
                                             "m": {"type": "number", "exclusiveMaximum": 3}}});
        let decimal = json!({"type": "object", "properties": {
            "n": {"type": "number", "minimum": 2.5}, "m": {"type": "number", "maximum": 5.0}}});
        for (schema, data, expected) in [
            (
                exclusive,
                json!({"n": 3, "m": 3}),
                r#"{"n":{"minimum":{"message":"Value must be at least 3","target":3,"value":3}},"m":{"maximum":{"message":"Value must be at most 3","target":3,"value":3}}}"#,
            ),
            (
                decimal,
                json!({"n": 1, "m": 6.5}),
                r#"{"n":{"minimum":{"message":"Value must be at least 2.5","target":2.5,"value":1}},"m":{"maximum":{"message":"Value must be at most 5.0","target":5.0,"value":6.5}}}"#,
            ),
        ] {
            assert_eq!(rendered(schema, data), expected);
        }
    }

    #[test]
    fn a_lone_min_length_is_quoted_whatever_the_byte_length() {
        // "é" is 2 bytes, under minLength 3 either way; with no maxLength to quote, minLength.
        let schema = json!({"type": "object", "properties": {
            "s": {"type": "string", "minLength": 3}}});
        assert_eq!(
            rendered(schema, json!({"s": "é"})),
            r#"{"s":{"minLength":{"message":"String must be at least 3 characters","target":3,"cause":"é","value":"é"}}}"#
        );
    }

    #[test]
    fn extra_keys_are_reported_one_by_one_up_to_max_errors() {
        let schema = json!({"type": "object", "properties": {}, "additionalProperties": false});
        let data: Map<String, Value> = (0..MAX_ERRORS + 50)
            .map(|i| (format!("k{i}"), json!(i)))
            .collect();
        let v = SchemaValidator::from_schema(schema).unwrap();
        let e = v.validate(Value::Object(data)).unwrap_err();
        assert_eq!(e.len(), MAX_ERRORS);
        assert_eq!(
            serde_json::to_string(&e["k7"]).unwrap(),
            r#"{"additionalProperties":{"message":"Strict checking of data is enabled; only include schema-defined properties","value":7}}"#
        );
    }

    #[test]
    fn the_validator_can_be_shared_between_workers() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SchemaValidator>();
    }

    #[test]
    fn the_groups_schema_file_loads_from_disk() {
        let dir = std::env::temp_dir().join(format!("kz-groups-ok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("groups.json");
        std::fs::write(&file, include_str!("../../schemas/groups.json")).unwrap();
        let v = SchemaValidator::from_file(&file).unwrap();
        assert!(v.validate(json!({"name": "x"})).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_broken_schema_file_is_named_in_the_error() {
        let dir = std::env::temp_dir().join(format!("kz-groups-schema-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("broken.json");
        std::fs::write(&bad, "{not json").unwrap();
        let err = SchemaValidator::from_file(&bad).unwrap_err();
        assert!(err.contains("broken.json"), "{err}");
        let missing = dir.join("missing.json");
        let err = SchemaValidator::from_file(&missing).unwrap_err();
        assert!(err.contains("missing.json"), "{err}");
        std::fs::write(&bad, r#"{"type": 12}"#).unwrap();
        let err = SchemaValidator::from_file(&bad).unwrap_err();
        assert!(err.contains("broken.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
