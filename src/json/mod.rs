//! Untrusted JSON at a known cost. A body is first measured (syntax, nesting depth, and the exact
//! memory its tree will take) without building anything, refused when it nests too deep or would
//! cost too much, and only then built, every array and object allocated at its final size. So what
//! a parse costs is known, capped and accounted for before a single node exists.
mod build;
mod measure;
pub mod raw;

use serde_json::{Map, Value};

pub use measure::Measured;

/// A JSON object's members (anything else has none).
pub fn into_object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Deeper nesting is refused as malformed JSON. Kazoo's documents nest four to six levels; 64
/// leaves room for any client's own fields and stays well below serde_json's own limit (128).
pub const MAX_DEPTH: usize = 64;
/// A tree may take this many times the bytes it is parsed from (ordinary Kazoo documents take
/// 5-9 times; arrays of bare numbers or objects of one-letter keys take 25-40 times)...
pub const COST_RATIO: usize = 16;
/// ...or this much, whichever is more, so that small bodies of any shape pass.
pub const MIN_COST_CAP: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonError {
    /// Not JSON, or not UTF-8.
    Syntax,
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// The tree would take more memory than [`cost_cap`] allows for its size.
    TooCostly,
}

/// The most memory the tree of `len` bytes of JSON may take.
pub fn cost_cap(len: usize) -> usize {
    len.saturating_mul(COST_RATIO).max(MIN_COST_CAP)
}

/// Measures `bytes` against [`cost_cap`]; nothing proportional to the input is allocated beyond a
/// list of container sizes, itself bounded by the cap.
pub fn measure(bytes: &[u8]) -> Result<Measured, JsonError> {
    measure::measure(bytes, cost_cap(bytes.len()))
}

/// Builds the tree `measured` describes. When `top_keys` is given, the keys of a top-level object
/// pass through it as they are read, so renaming them copies nothing.
pub fn build(
    bytes: &[u8],
    measured: &Measured,
    top_keys: Option<fn(String) -> String>,
) -> Result<Value, JsonError> {
    build::build(bytes, measured, top_keys)
}

/// The memory an object's tree takes, by [`measure`]'s count (what a parsed document held in
/// memory for a while is charged).
pub fn object_cost(members: &Map<String, Value>) -> usize {
    measure::object_tree_cost(members)
}

/// The memory a value's tree takes, by [`measure`]'s count.
pub fn value_cost(value: &Value) -> usize {
    measure::tree_cost(value)
}

/// Measures, then builds: for JSON that need not be accounted for before it is built.
pub fn parse(bytes: &[u8]) -> Result<Value, JsonError> {
    let measured = measure(bytes)?;
    build(bytes, &measured, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_like_serde_json() {
        for text in [
            r#"{"a":[1,-2,3.5,1e400,"x\u00e9\n",null,true,{}],"b":{"c":[]},"a":2}"#,
            "[]",
            "\"s\"",
            "18446744073709551615",
            "-9223372036854775808",
            " { \"k\" : [ [ [ ] ] ] } ",
        ] {
            let ours = parse(text.as_bytes());
            let theirs = serde_json::from_str::<Value>(text).map_err(|_| JsonError::Syntax);
            assert_eq!(ours, theirs, "{text}");
        }
    }

    #[test]
    fn syntax_errors_are_syntax_errors() {
        for text in ["", "{", "[1,]", "{\"a\":1} x", "\u{0}", "[\"\\x\"]"] {
            assert_eq!(parse(text.as_bytes()), Err(JsonError::Syntax), "{text:?}");
        }
        assert_eq!(parse(b"[\"\xff\"]"), Err(JsonError::Syntax));
    }

    #[test]
    fn depth_is_limited() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(ok.as_bytes()).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(parse(deep.as_bytes()), Err(JsonError::TooDeep));
        // Unclosed: still too deep, found before the end is reached.
        assert_eq!(
            parse("[".repeat(10_000).as_bytes()),
            Err(JsonError::TooDeep)
        );
    }

    #[test]
    fn dense_bodies_are_too_costly_and_ordinary_ones_are_not() {
        let zeros = format!("[{}0]", "0,".repeat(1 << 20));
        assert_eq!(parse(zeros.as_bytes()), Err(JsonError::TooCostly));
        let endpoints: serde_json::Map<String, Value> = (0..20_000)
            .map(|i| (format!("{i:032x}"), json!({"type": "user"})))
            .collect();
        let group = json!({"data": {"name": "Sales", "endpoints": endpoints}}).to_string();
        assert!(group.len() > MIN_COST_CAP / 2);
        assert!(parse(group.as_bytes()).is_ok());
    }

    #[test]
    fn a_built_objects_cost_is_what_measuring_its_text_said() {
        for text in [
            r#"{}"#,
            r#"{"name":"Sales","endpoints":{"u1":{"type":"user","weight":1}},"tags":["a","",[]]}"#,
            r#"{"a":{"b":{"c":{"d":"x\u00e9"}}},"n":[1,2.5,null,true,{"k":"v"}],"e":{}}"#,
        ] {
            let measured = measure(text.as_bytes()).unwrap();
            let tree = into_object(build(text.as_bytes(), &measured, None).unwrap());
            assert!(measured.cost > 0 || text == "{}");
            assert_eq!(object_cost(&tree), measured.cost, "{text}");
        }
    }

    #[test]
    fn top_level_keys_are_renamed_while_building() {
        let text = br#"{"A":{"B":1},"a":2,"C":[{"D":3}]}"#;
        let m = measure(text).unwrap();
        let v = build(text, &m, Some(|k: String| k.to_lowercase())).unwrap();
        assert_eq!(v, json!({"a":2,"c":[{"D":3}]}));
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"a":2,"c":[{"D":3}]}"#
        );
    }
}
