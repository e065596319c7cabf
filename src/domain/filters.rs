//! Owns Crossbar's query-string filters for listings (contract §5.4): which parameters are
//! filters, and whether a full stored document (private fields included) passes all of them.

use serde_json::value::RawValue;
use serde_json::Value;

use crate::json::raw::{self, Leaf};

/// The filters of one listing request, in query-string order. Repeated parameters are all kept
/// and all applied, because Kazoo does not merge repeated keys (§2.3).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    filters: Vec<Filter>,
}

/// A path is `None` when the parameter had no `=value`: Kazoo then gets JSON `true` as the path,
/// cannot split it, throws, and the document is excluded.
type Path = Option<Vec<String>>;

#[derive(Debug, Clone, PartialEq)]
enum Filter {
    Equals {
        path: Vec<String>,
        expected: String,
        negate: bool,
    },
    HasKey(Path),
    KeyMissing(Path),
    HasValue(Path),
    ValueMissing(Path),
    /// `None` bound: the parameter was not an integer, which excludes every document.
    Created(Bound, Option<i64>),
    Modified(Bound, Option<i64>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Bound {
    From,
    To,
}

impl Filters {
    /// `params`: the query string as (key, value) pairs in order; value None = a bare key with no "=" (Kazoo gives it JSON true).
    /// Keeps only the parameters that are filters; everything else is ignored.
    pub fn from_query(params: &[(String, Option<String>)]) -> Filters {
        let filters = params
            .iter()
            .filter_map(|(name, value)| Filter::parse(name, value.as_deref()))
            .collect();
        Filters { filters }
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// AND of all filters; a filter that "throws" (e.g. non-integer created_from) excludes the doc.
    /// The document is read as stored JSON text, so a large one is never built into a tree.
    pub fn matches(&self, doc: &RawValue) -> bool {
        self.filters.iter().all(|f| f.matches(doc))
    }
}

impl Filter {
    fn parse(name: &str, value: Option<&str>) -> Option<Filter> {
        let path = || value.map(split_path);
        // `filter_not_` must be tried before its own prefix `filter_`.
        if let Some(key) = name.strip_prefix("filter_not_") {
            return Some(Filter::equals(key, value, true));
        }
        if let Some(key) = name.strip_prefix("filter_") {
            return Some(Filter::equals(key, value, false));
        }
        // Prefix matches, as Kazoo's is_filter_key does: `has_key_x` counts as `has_key`.
        if name.starts_with("has_key") {
            return Some(Filter::HasKey(path()));
        }
        if name.starts_with("key_missing") {
            return Some(Filter::KeyMissing(path()));
        }
        if name.starts_with("has_value") {
            return Some(Filter::HasValue(path()));
        }
        if name.starts_with("value_missing") {
            return Some(Filter::ValueMissing(path()));
        }
        // Exact names only; `missing_value` (the name in Kazoo's docs) is not a filter (§9).
        let bound = value.and_then(parse_integer);
        match name {
            "created_from" => Some(Filter::Created(Bound::From, bound)),
            "created_to" => Some(Filter::Created(Bound::To, bound)),
            "modified_from" => Some(Filter::Modified(Bound::From, bound)),
            "modified_to" => Some(Filter::Modified(Bound::To, bound)),
            _ => None,
        }
    }

    fn equals(key: &str, value: Option<&str>, negate: bool) -> Filter {
        Filter::Equals {
            path: split_path(key),
            // A bare `filter_x` compares against kz_term:to_binary(true).
            expected: value.unwrap_or("true").to_string(),
            negate,
        }
    }

    fn matches(&self, doc: &RawValue) -> bool {
        let leaf = |path: &[String]| raw::lookup(doc, path).and_then(Leaf::of);
        match self {
            Filter::Equals {
                path,
                expected,
                negate,
            } => value_matches(leaf(path).as_ref(), expected) != *negate,
            Filter::HasKey(path) => path.as_ref().is_some_and(|p| raw::lookup(doc, p).is_some()),
            Filter::KeyMissing(path) => {
                path.as_ref().is_some_and(|p| raw::lookup(doc, p).is_none())
            }
            Filter::HasValue(path) => path.as_ref().is_some_and(|p| has_value(leaf(p).as_ref())),
            Filter::ValueMissing(path) => {
                path.as_ref().is_some_and(|p| !has_value(leaf(p).as_ref()))
            }
            Filter::Created(bound, limit) => in_range(field(doc, "pvt_created"), *bound, *limit),
            Filter::Modified(bound, limit) => in_range(field(doc, "pvt_modified"), *bound, *limit),
        }
    }
}

/// A top-level member of the document.
fn field(doc: &RawValue, name: &str) -> Option<Leaf> {
    raw::child(doc, name).and_then(Leaf::of)
}

/// Dot-separated, every piece kept (Kazoo's `binary:split(Key, <<".">>, [global])`).
fn split_path(path: &str) -> Vec<String> {
    path.split('.').map(str::to_string).collect()
}

/// `filter_{path}={v}` (§5.4): equal as text, else `v` read as JSON: a list passes when it holds
/// the text as a string element, a string passes when equal; anything else fails.
fn value_matches(doc_value: Option<&Leaf>, expected: &str) -> bool {
    let Some(text) = doc_text(doc_value) else {
        return false;
    };
    if text == expected {
        return true;
    }
    match serde_json::from_str::<Value>(expected) {
        Ok(Value::Array(options)) => options.iter().any(|o| o.as_str() == Some(text.as_str())),
        Ok(Value::String(s)) => s == text,
        _ => false,
    }
}

/// The document value as kz_json:get_binary_value(Path, Doc, <<>>) gives it. Missing values and
/// objects become ""; null is the atom `null`, so "null"; floats use Erlang's shortest form.
/// A list is concatenated when every element is a string; any other list is `None` and never
/// equals anything (so `filter_not_` passes).
fn doc_text(value: Option<&Leaf>) -> Option<String> {
    Some(match value {
        None | Some(Leaf::Object { .. }) => String::new(),
        Some(Leaf::Null) => "null".to_string(),
        Some(Leaf::Bool(b)) => b.to_string(),
        Some(Leaf::String(s)) => s.clone(),
        Some(Leaf::Number(n)) => match n.as_f64() {
            Some(f) if n.is_f64() => erlang_float_text(f),
            _ => n.to_string(),
        },
        Some(Leaf::Array { text, .. }) => text.clone()?,
    })
}

/// Kazoo's kz_term:is_empty/1 as used by `has_value` (§5.4).
fn has_value(value: Option<&Leaf>) -> bool {
    match value {
        None | Some(Leaf::Null) => false,
        Some(Leaf::String(s)) => !matches!(s.as_str(), "" | "0" | "NULL" | "undefined"),
        Some(Leaf::Number(n)) => n.as_f64() != Some(0.0),
        Some(Leaf::Array { empty, .. } | Leaf::Object { empty }) => !empty,
        Some(Leaf::Bool(_)) => true,
    }
}

/// `created_*` / `modified_*`: both bounds inclusive, Gregorian seconds. A bound that is not an
/// integer, or a document field that is missing or not an integer, excludes the document.
fn in_range(field: Option<Leaf>, bound: Bound, limit: Option<i64>) -> bool {
    let stamp = match field {
        Some(Leaf::Number(n)) => n.as_i64(),
        _ => None,
    };
    let (Some(limit), Some(stamp)) = (limit, stamp) else {
        return false;
    };
    match bound {
        Bound::From => stamp >= limit,
        Bound::To => stamp <= limit,
    }
}

/// An optional sign and decimal digits, as Erlang's list_to_integer/1 accepts.
fn parse_integer(text: &str) -> Option<i64> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// mochinum:digits/1, which kz_term:to_binary/1 uses for floats: the shortest round-trip digits,
/// written plainly for moderate exponents and as `d.ddde±x` otherwise ("1.0e+20", "1.0e-7").
pub fn erlang_float_text(f: f64) -> String {
    if f == 0.0 {
        return "0.0".to_string();
    }
    // Rust's `{:e}` prints the same shortest round-trip digits: "1.2345e-7".
    let sci = format!("{:e}", f.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let place = exponent.parse::<i32>().unwrap_or(0) + 1;
    let text = insert_decimal(place, &digits);
    if f < 0.0 {
        format!("-{text}")
    } else {
        text
    }
}

fn insert_decimal(place: i32, digits: &str) -> String {
    let len = digits.len() as i32;
    if place == 0 {
        return format!("0.{digits}");
    }
    if place > 0 {
        let extra = place - len;
        return match extra {
            0 => format!("{digits}.0"),
            n if n < 0 => {
                let (whole, frac) = digits.split_at((len + n) as usize);
                format!("{whole}.{frac}")
            }
            n if n < 6 => format!("{digits}{}.0", "0".repeat(n as usize)),
            _ => insert_decimal_exp(place, digits),
        };
    }
    if place > -6 {
        return format!("0.{}{digits}", "0".repeat(place.unsigned_abs() as usize));
    }
    insert_decimal_exp(place, digits)
}

fn insert_decimal_exp(place: i32, digits: &str) -> String {
    let (first, rest) = digits.split_at(1.min(digits.len()));
    let rest = if rest.is_empty() { "0" } else { rest };
    let sign = if place < 0 { "e-" } else { "e+" };
    format!("{first}.{rest}{sign}{}", (place - 1).unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    impl Filters {
        fn matches_json(&self, doc: &Value) -> bool {
            self.matches(&RawValue::from_string(doc.to_string()).unwrap())
        }
    }

    fn q(pairs: &[(&str, Option<&str>)]) -> Filters {
        let params: Vec<(String, Option<String>)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect();
        Filters::from_query(&params)
    }

    fn one(name: &str, value: &str) -> Filters {
        q(&[(name, Some(value))])
    }

    fn docs() -> Vec<Value> {
        vec![
            json!({"_id": "g1", "name": "G1", "endpoints": {}, "pvt_type": "group",
                   "pvt_created": 63_880_000_100_i64, "pvt_modified": 63_880_000_500_i64}),
            json!({"_id": "g2", "name": "G2", "endpoints": {}, "flags": ["f1"], "custom": {"a": 1},
                   "pvt_type": "group", "pvt_created": 63_880_000_200_i64, "pvt_modified": 63_880_000_200_i64}),
            json!({"_id": "g3", "name": "G3", "endpoints": {}, "flags": [],
                   "pvt_type": "group", "pvt_created": 63_880_000_300_i64, "pvt_modified": 63_880_000_300_i64}),
        ]
    }

    fn ids(filters: &Filters) -> Vec<String> {
        docs()
            .iter()
            .filter(|d| filters.matches_json(d))
            .map(|d| d["_id"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn case_56_each_filter_selects_the_documented_groups() {
        assert_eq!(ids(&one("filter_name", "G1")), ["g1"]);
        assert_eq!(ids(&one("filter_not_name", "G1")), ["g2", "g3"]);
        assert_eq!(ids(&one("has_key", "custom")), ["g2"]);
        assert_eq!(ids(&one("key_missing", "flags")), ["g1"]);
        assert_eq!(ids(&one("filter_pvt_type", "group")), ["g1", "g2", "g3"]);
        let ignored = one("missing_value", "flags");
        assert!(ignored.is_empty());
        assert_eq!(ids(&ignored), ["g1", "g2", "g3"]);
    }

    #[test]
    fn case_57_created_from_keeps_later_groups_and_garbage_keeps_none() {
        assert_eq!(ids(&one("created_from", "63880000200")), ["g2", "g3"]);
        assert_eq!(ids(&one("created_from", "abc")), Vec::<String>::new());
    }

    #[test]
    fn time_bounds_are_inclusive_on_both_ends() {
        assert_eq!(ids(&one("created_to", "63880000200")), ["g1", "g2"]);
        assert_eq!(ids(&one("modified_from", "63880000300")), ["g1", "g3"]);
        assert_eq!(ids(&one("modified_to", "63880000200")), ["g2"]);
        assert_eq!(
            ids(&q(&[
                ("created_from", Some("63880000200")),
                ("created_to", Some("63880000200"))
            ])),
            ["g2"]
        );
    }

    #[test]
    fn time_bounds_need_integers_on_both_sides() {
        assert_eq!(ids(&one("created_to", "1.5")), Vec::<String>::new());
        assert_eq!(ids(&q(&[("modified_to", None)])), Vec::<String>::new());
        assert!(one("created_from", "+5").matches_json(&json!({"pvt_created": 5})));
        assert!(one("created_to", "-5").matches_json(&json!({"pvt_created": -5})));
        assert!(!one("created_from", "5").matches_json(&json!({})));
        assert!(!one("created_from", "5").matches_json(&json!({"pvt_created": "9"})));
        assert!(!one("created_from", "5").matches_json(&json!({"pvt_created": 9.5})));
    }

    #[test]
    fn filters_are_anded_and_repeated_keys_all_apply() {
        assert_eq!(
            ids(&q(&[
                ("filter_pvt_type", Some("group")),
                ("has_key", Some("flags"))
            ])),
            ["g2", "g3"]
        );
        assert_eq!(
            ids(&q(&[
                ("filter_not_name", Some("G1")),
                ("filter_not_name", Some("G2"))
            ])),
            ["g3"]
        );
    }

    #[test]
    fn non_filter_parameters_are_ignored() {
        let f = q(&[
            ("page_size", Some("2")),
            ("paginate", None),
            ("start_key", Some("x")),
            ("missing_value", Some("a")),
        ]);
        assert!(f.is_empty());
        assert!(f.matches_json(&json!({})));
    }

    #[test]
    fn key_filters_match_by_prefix() {
        assert_eq!(ids(&one("has_key_custom", "custom")), ["g2"]);
        assert_eq!(ids(&one("key_missing2", "flags")), ["g1"]);
        assert_eq!(ids(&one("has_value_x", "flags")), ["g2"]);
        assert_eq!(ids(&one("value_missing_y", "flags")), ["g1", "g3"]);
    }

    #[test]
    fn bare_key_filters_exclude_everything() {
        for name in [
            "has_key",
            "key_missing",
            "has_value",
            "value_missing",
            "created_from",
        ] {
            assert_eq!(ids(&q(&[(name, None)])), Vec::<String>::new(), "{name}");
        }
    }

    #[test]
    fn bare_filter_compares_with_true() {
        let f = q(&[("filter_enabled", None)]);
        assert!(f.matches_json(&json!({"enabled": true})));
        assert!(!f.matches_json(&json!({"enabled": false})));
    }

    #[test]
    fn has_key_counts_null_as_present() {
        assert!(one("has_key", "a").matches_json(&json!({"a": null})));
        assert!(!one("key_missing", "a").matches_json(&json!({"a": null})));
        assert!(!one("has_key", "a").matches_json(&json!({"b": 1})));
    }

    #[test]
    fn paths_are_dot_separated_and_index_arrays_from_one() {
        let doc = json!({"endpoints": {"u1": {"type": "user"}}, "flags": ["x", "y"]});
        assert!(one("has_key", "endpoints.u1.type").matches_json(&doc));
        assert!(one("filter_endpoints.u1.type", "user").matches_json(&doc));
        assert!(one("filter_flags.1", "x").matches_json(&doc));
        assert!(one("filter_flags.2", "y").matches_json(&doc));
        assert!(one("key_missing", "flags.0").matches_json(&doc));
        assert!(one("key_missing", "flags.3").matches_json(&doc));
        assert!(one("key_missing", "endpoints.u1.type.deeper").matches_json(&doc));
    }

    #[test]
    fn has_value_treats_kazoo_empties_as_missing() {
        for empty in [
            json!(""),
            json!("0"),
            json!(0),
            json!(0.0),
            json!([]),
            json!({}),
            json!(null),
            json!("NULL"),
            json!("undefined"),
        ] {
            let doc = json!({ "v": empty });
            assert!(!one("has_value", "v").matches_json(&doc), "{empty}");
            assert!(one("value_missing", "v").matches_json(&doc), "{empty}");
        }
        for full in [
            json!("x"),
            json!("false"),
            json!(false),
            json!(true),
            json!(1),
            json!(0.5),
            json!([0]),
            json!({"a": null}),
        ] {
            let doc = json!({ "v": full });
            assert!(one("has_value", "v").matches_json(&doc), "{full}");
            assert!(!one("value_missing", "v").matches_json(&doc), "{full}");
        }
        assert!(one("value_missing", "v").matches_json(&json!({})));
    }

    #[test]
    fn filter_converts_the_document_value_to_text() {
        let doc = json!({"n": 5, "f": 1.5, "b": false, "z": null, "o": {"a": 1},
                         "l": ["ab", "c"], "m": ["a", 1], "e": []});
        assert!(one("filter_n", "5").matches_json(&doc));
        assert!(one("filter_f", "1.5").matches_json(&doc));
        assert!(one("filter_b", "false").matches_json(&doc));
        assert!(one("filter_z", "null").matches_json(&doc));
        assert!(
            one("filter_o", "").matches_json(&doc),
            "objects read as empty text"
        );
        assert!(
            one("filter_missing", "").matches_json(&doc),
            "missing reads as empty text"
        );
        assert!(
            one("filter_l", "abc").matches_json(&doc),
            "string lists concatenate"
        );
        assert!(one("filter_e", "").matches_json(&doc));
        assert!(
            !one("filter_m", "a1").matches_json(&doc),
            "mixed lists never match"
        );
        assert!(!one("filter_m", "").matches_json(&doc));
        assert!(one("filter_not_m", "a1").matches_json(&doc));
    }

    #[test]
    fn filter_value_as_json_list_or_string() {
        let doc = json!({"name": "G1", "n": 5});
        assert!(one("filter_name", r#"["G0","G1"]"#).matches_json(&doc));
        assert!(!one("filter_name", r#"["G0","G2"]"#).matches_json(&doc));
        assert!(one("filter_name", r#""G1""#).matches_json(&doc));
        assert!(
            !one("filter_n", "[5]").matches_json(&doc),
            "only string elements can match"
        );
        assert!(one("filter_n", r#"["5"]"#).matches_json(&doc));
        assert!(!one("filter_name", "{\"G1\":1}").matches_json(&doc));
        assert!(!one("filter_name", "[G1").matches_json(&doc));
        assert!(one("filter_not_name", r#"["G0"]"#).matches_json(&doc));
        assert!(!one("filter_not_name", r#"["G1"]"#).matches_json(&doc));
    }

    #[test]
    fn filter_not_is_checked_before_filter() {
        // "filter_not_name" must not be read as a filter on the key "not_name".
        let doc = json!({"name": "x", "not_name": "x"});
        assert!(!one("filter_not_name", "x").matches_json(&doc));
    }

    #[test]
    fn floats_print_like_erlang_mochinum() {
        for (f, text) in [
            (1.5, "1.5"),
            (1.0, "1.0"),
            (100.0, "100.0"),
            (123456.0, "123456.0"),
            (1_000_000.0, "1.0e+6"),
            (1e20, "1.0e+20"),
            (0.5, "0.5"),
            (0.001, "0.001"),
            (1.5e-7, "1.5e-7"),
            (-2.25, "-2.25"),
            (0.0, "0.0"),
            (0.1, "0.1"),
        ] {
            assert_eq!(erlang_float_text(f), text, "{f}");
        }
    }
}
