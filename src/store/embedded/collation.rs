//! CouchDB's view collation of JSON keys (`couch_ejson_compare`): the order the embedded store's
//! sort keys encode (`sort_key`), so it orders, ranges and groups view rows exactly as CouchDB
//! does; `scan` and the CouchDB adapter's `startkey_docid` check compare keys with it too.
//!
//! The rules, from CouchDB's "Views Collation" doc and `couch_ejson_compare.{erl,c}`:
//! `null < false < true < numbers < strings < arrays < objects`; numbers by value; strings by
//! the ICU root collator (UCA with CLDR root data, default strength tertiary); arrays element by
//! element, a prefix first; objects pair by pair in member order (key by ICU, then value), fewer
//! pairs first.
//!
//! Ties: when ICU says two different strings are equal (e.g. `"a"` and `"a\u{200B}"`, or
//! canonically equivalent spellings), CouchDB does NOT break the tie on code points or bytes:
//! `compare_strings` in `couch_ejson_compare.c` returns `ucol_strcollIter`'s result unchanged
//! (root collator from `ucol_open("")`, no attributes set), and CouchDB's own property test
//! `prop_equivalent_unicode_values` asserts `less(<<"a">>, <<"a", ZWSP>>) =:= 0`. The only tie
//! break is at the row level: `less_json_ids` orders rows with equal keys by doc id, as raw
//! bytes (`IdA < IdB` on binaries). So `collate` returns `Equal` for such keys, and a caller
//! sorting rows must break ties by doc id bytewise itself.
use std::cmp::Ordering;
use std::sync::LazyLock;

use icu_collator::options::CollatorOptions;
use icu_collator::{CollatorBorrowed, CollatorPreferences};
use serde_json::{Map, Number, Value};

/// The root collator with default options (tertiary strength, non-ignorable punctuation, no
/// case-first), which is what CouchDB's `ucol_open("")` gives. Built once: construction looks
/// up locale data.
static ROOT: LazyLock<CollatorBorrowed<'static>> = LazyLock::new(|| {
    CollatorBorrowed::try_new(CollatorPreferences::default(), CollatorOptions::default())
        .expect("ICU4X compiled data has the root collation")
});

/// CouchDB view collation of two JSON values.
pub fn collate(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y),
        (Value::String(x), Value::String(y)) => collate_str(x, y),
        (Value::Array(x), Value::Array(y)) => compare_arrays(x, y),
        (Value::Object(x), Value::Object(y)) => compare_objects(x, y),
        // Same rank here means null/null or two booleans, which `type_rank` already tells.
        _ => type_rank(a).cmp(&type_rank(b)),
    }
}

/// Only the string part, for callers that compare raw strings.
pub fn collate_str(a: &str, b: &str) -> Ordering {
    // Byte-equal strings are always ICU-equal; skip the collator for the common case.
    if a == b {
        return Ordering::Equal;
    }
    ROOT.compare(a, b)
}

/// Appends the root collator's sort key of `s`: byte order of sort keys is [`collate_str`].
pub fn write_sort_key(s: &str, out: &mut Vec<u8>) {
    let Ok(()) = ROOT.write_sort_key_to(s, out);
}

/// CouchDB's type order; `false` and `true` get separate ranks since they are atoms with a
/// fixed order (`atom_sort`: null 1, false 2, true 3).
fn type_rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(false) => 1,
        Value::Bool(true) => 2,
        Value::Number(_) => 3,
        Value::String(_) => 4,
        Value::Array(_) => 5,
        Value::Object(_) => 6,
    }
}

fn compare_arrays(a: &[Value], b: &[Value]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = collate(x, y);
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

fn compare_objects(a: &Map<String, Value>, b: &Map<String, Value>) -> Ordering {
    // Member order matters (`less_props` walks both proplists in order), which is why this
    // relies on serde_json's `preserve_order`.
    for ((ka, va), (kb, vb)) in a.iter().zip(b) {
        let o = collate_str(ka, kb).then_with(|| collate(va, vb));
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

/// Numbers by exact mathematical value, as Erlang's term comparison does (`enif_compare`):
/// `1` and `1.0` are equal, and a large integer is not rounded to a float before comparing.
fn compare_numbers(a: &Number, b: &Number) -> Ordering {
    match (as_integer(a), as_integer(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(x), None) => compare_int_float(x, float_of(b)),
        (None, Some(y)) => compare_int_float(y, float_of(a)).reverse(),
        // serde_json numbers are finite, so `total_cmp` only matters for -0.0 vs 0.0, which
        // must be equal.
        (None, None) => {
            let (x, y) = (float_of(a), float_of(b));
            if x == y {
                Ordering::Equal
            } else {
                x.total_cmp(&y)
            }
        }
    }
}

fn as_integer(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

fn float_of(n: &Number) -> f64 {
    // Only called for numbers that are neither i64 nor u64, i.e. floats.
    n.as_f64().unwrap_or(0.0)
}

/// Exact comparison of an integer (any i64/u64) with a finite float.
fn compare_int_float(i: i128, f: f64) -> Ordering {
    // 2^127: beyond it, every float is beyond every i64/u64 too; below it, `trunc` fits i128
    // exactly, so the integer parts compare exactly and the fraction decides the rest.
    const LIMIT: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
    let t = f.trunc();
    if t >= LIMIT {
        return Ordering::Less;
    }
    if t <= -LIMIT {
        return Ordering::Greater;
    }
    i.cmp(&(t as i128)).then_with(|| {
        if f > t {
            Ordering::Less
        } else if f < t {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    })
}

/// Values for property tests: small alphabets, so that ties, case pairs, accents and nesting
/// come up often.
#[cfg(test)]
pub mod arbitrary {
    use proptest::prelude::*;
    use serde_json::Value;

    fn json_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            prop_oneof![
                Just(0.0),
                Just(-0.0),
                Just(1.0),
                Just(2.5),
                Just(9.007199254740992e15)
            ]
            .prop_map(Value::from),
            (-3i64..4).prop_map(Value::from),
            string_strategy().prop_map(Value::String),
        ]
    }

    /// Strings from a small alphabet so that ties, case pairs and accents come up often.
    pub fn string_strategy() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just('a'),
                Just('A'),
                Just('b'),
                Just('B'),
                Just('e'),
                Just('\u{e9}'),
                Just('\u{301}'),
                Just('\u{200B}'),
                Just('1'),
                Just('_'),
                Just('-'),
                Just(' '),
                Just('\u{3b1}'),
                Just('\u{4e00}'),
                any::<char>(),
            ],
            0..5,
        )
        .prop_map(|cs| cs.into_iter().collect())
    }

    pub fn json_value() -> impl Strategy<Value = Value> {
        json_leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec((string_strategy(), inner), 0..4)
                    .prop_map(|kvs| Value::Object(kvs.into_iter().collect())),
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::arbitrary::json_value;
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use std::cmp::Ordering::{Equal, Greater, Less};

    /// Every pair (i < j) of `list` must collate Less, and the reverse Greater.
    fn assert_strictly_ascending(list: &[Value]) {
        for (i, a) in list.iter().enumerate() {
            assert_eq!(collate(a, a), Equal, "{a} vs itself");
            for b in &list[i + 1..] {
                assert_eq!(collate(a, b), Less, "{a} < {b}");
                assert_eq!(collate(b, a), Greater, "{b} > {a}");
            }
        }
    }

    #[test]
    fn documented_collation_specification() {
        // The list under "Collation Specification" in CouchDB's "Views Collation" doc, in
        // order, element by element.
        let list = vec![
            json!(null),
            json!(false),
            json!(true),
            json!(1),
            json!(2),
            json!(3.0),
            json!(4),
            json!("a"),
            json!("A"),
            json!("aa"),
            json!("b"),
            json!("B"),
            json!("ba"),
            json!("bb"),
            json!(["a"]),
            json!(["b"]),
            json!(["b", "c"]),
            json!(["b", "c", "a"]),
            json!(["b", "d"]),
            json!(["b", "d", "e"]),
            json!({"a": 1}),
            json!({"a": 2}),
            json!({"b": 1}),
            json!({"b": 2}),
            json!({"b": 2, "a": 1}),
            json!({"b": 2, "c": 2}),
        ];
        assert_strictly_ascending(&list);
    }

    #[test]
    fn couchdb_test_values() {
        // TEST_VALUES of couch_ejson_compare_tests.erl (without the invalid-UTF-8 max
        // sentinel, which no JSON string can be).
        let list = vec![
            json!(null),
            json!(false),
            json!(true),
            json!(-2),
            json!(-0.1),
            json!(0),
            json!(0.1),
            json!(1),
            json!(2),
            json!(3.0),
            json!(4),
            json!("a"),
            json!("A"),
            json!("aa"),
            json!("b"),
            json!("B"),
            json!("ba"),
            json!("bb"),
            json!(["a"]),
            json!(["b"]),
            json!(["b", "c"]),
            json!(["b", "d"]),
            json!(["b", "d", "e"]),
            json!({"a": 1}),
            json!({"a": 2}),
            json!({"b": 1}),
            json!({"b": 2}),
            json!({"b": 2, "a": 1}),
            json!({"b": 2, "c": 2}),
        ];
        assert_strictly_ascending(&list);
    }

    #[test]
    fn member_order_matters() {
        assert_eq!(
            collate(&json!({"a": 1, "b": 2}), &json!({"b": 2, "a": 1})),
            Less
        );
        assert_eq!(collate(&json!({}), &json!({"a": null})), Less);
        assert_eq!(collate(&json!({"a": 1}), &json!({"A": 1})), Less);
    }

    #[test]
    fn case_ordering() {
        // Lower case first only at the tertiary level: a different letter sequence wins first.
        let list = ["a", "A", "aa", "aA", "Aa", "AA", "ab", "b", "B"].map(|s| json!(s));
        assert_strictly_ascending(&list);
        // The doc's key-range example: `abc < Abc < ABC < abc1 < AbcZZZZZ`.
        let list = ["abc", "Abc", "ABC", "abc1", "AbcZZZZZ"].map(|s| json!(s));
        assert_strictly_ascending(&list);
        // So a range from "Abc" to "AbcZZZZ" misses "abc" but holds "ABC" and "abc1".
        assert_eq!(collate_str("abc", "Abc"), Less);
        assert_eq!(collate_str("Abc", "ABC"), Less);
        assert_eq!(collate_str("abc1", "AbcZZZZ"), Less);
    }

    #[test]
    fn high_sentinel_ends_a_prefix_range() {
        // The doc's advice: endkey="abc\ufff0" holds every string starting with "abc".
        for s in [
            "abc",
            "abcZZZZ",
            "abcz",
            "abc~",
            "abcé",
            "abc\u{4e00}",
            "abc\u{1F600}",
        ] {
            assert_eq!(collate_str(s, "abc\u{fff0}"), Less, "{s:?}");
        }
        assert_eq!(collate_str("abd", "abc\u{fff0}"), Greater);
    }

    #[test]
    fn printable_ascii_order() {
        // The doc's ASCII listing ("` ^ _ - , ; ...") was made with an older ICU; CLDR root,
        // which CouchDB's libicu (>= 59) uses, moved ` and ^ among the symbols after %. This
        // string is what ICU4C 78's root collator gives (checked with Node's Intl.Collator).
        let expected = " _-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$0123456789\
                        aAbBcCdDeEfFgGhHiIjJkKlLmMnNoOpPqQrRsStTuUvVwWxXyYzZ";
        let mut ascii: Vec<String> = (32u8..127).map(|c| char::from(c).to_string()).collect();
        ascii.sort_by(|a, b| collate_str(a, b));
        assert_eq!(ascii.concat(), expected);
        // "All symbols sort before numbers and letters (even the high symbols like tilde)".
        assert_eq!(collate_str("~", "0"), Less);
        assert_eq!(collate_str("9", "a"), Less);
    }

    #[test]
    fn accents_are_secondary() {
        // Base letters first, then accents, then case.
        let list = ["e", "E", "é", "É", "f"].map(|s| json!(s));
        assert_strictly_ascending(&list);
        assert_eq!(collate_str("resume", "résumé"), Less);
        assert_eq!(collate_str("résumé", "resumes"), Less);
    }

    #[test]
    fn icu_equal_strings_tie() {
        // No code-point tie break: CouchDB's prop_equivalent_unicode_values.
        assert_eq!(collate_str("a", "a\u{200B}"), Equal);
        assert_eq!(collate_str("\u{200C}a\u{200D}", "a"), Equal);
        // Canonically equivalent spellings (precomposed vs combining acute).
        assert_eq!(collate_str("\u{e9}", "e\u{301}"), Equal);
        assert_eq!(collate(&json!(["\u{e9}"]), &json!(["e\u{301}"])), Equal);
        assert_eq!(
            collate(&json!({"\u{e9}": 1}), &json!({"e\u{301}": 1})),
            Equal
        );
    }

    #[test]
    fn numbers_by_value() {
        let list = [
            json!(-1e300),
            json!(i64::MIN),
            json!(-1.5),
            json!(-1),
            json!(0),
            json!(1),
            json!(1.5),
            json!(2),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(1e300),
        ];
        assert_strictly_ascending(&list);
        assert_eq!(collate(&json!(1), &json!(1.0)), Equal);
        assert_eq!(collate(&json!(3.0), &json!(3)), Equal);
        assert_eq!(collate(&json!(0), &json!(-0.0)), Equal);
        assert_eq!(collate(&json!(-0.0), &json!(0.0)), Equal);
        // Exact, not through f64: 2^53 + 1 is above the float 2^53 it would round to.
        let big = 9_007_199_254_740_993_i64;
        assert_eq!(
            collate(&json!(big), &json!(9_007_199_254_740_992.0)),
            Greater
        );
        assert_eq!(
            collate(&json!(big - 1), &json!(9_007_199_254_740_992.0)),
            Equal
        );
        assert_eq!(
            collate(&json!(u64::MAX), &json!(18_446_744_073_709_551_616.0)),
            Less
        );
        assert_eq!(collate(&json!(-3), &json!(-2.5)), Less);
        assert_eq!(collate(&json!(-2), &json!(-2.5)), Greater);
    }

    #[test]
    fn nested_arrays() {
        let list = [
            json!([]),
            json!([null]),
            json!([null, null]),
            json!([false]),
            json!([1, "a"]),
            json!([1, [2]]),
            json!([1, [2, 0]]),
            json!([1, [2, {}]]),
            json!([1, [3]]),
            json!([1, ["a"]]),
            json!([1, {}]),
            json!(["a", {}]),
            json!([[]]),
            json!([[[]]]),
            json!([{}]),
        ];
        assert_strictly_ascending(&list);
        // The doc's range trick: ["XYZ"] <= ["XYZ", anything] <= ["XYZ", {}].
        for v in [json!(null), json!("zzz"), json!(["bar", "baz"]), json!(99)] {
            assert_eq!(collate(&json!(["XYZ"]), &json!(["XYZ", v])), Less);
            assert_eq!(collate(&json!(["XYZ", v]), &json!(["XYZ", {}])), Less);
        }
        assert_eq!(
            collate(&json!(["XYZ", {"an": "object"}]), &json!(["XYZ", {}])),
            Greater
        );
    }

    proptest! {
        #[test]
        fn reflexive(a in json_value()) {
            prop_assert_eq!(collate(&a, &a), Equal);
            prop_assert_eq!(collate(&a, &a.clone()), Equal);
        }

        #[test]
        fn antisymmetric(a in json_value(), b in json_value()) {
            prop_assert_eq!(collate(&a, &b), collate(&b, &a).reverse());
        }

        #[test]
        fn transitive(a in json_value(), b in json_value(), c in json_value()) {
            let (ab, bc, ac) = (collate(&a, &b), collate(&b, &c), collate(&a, &c));
            if ab != Greater && bc != Greater {
                prop_assert_ne!(ac, Greater);
            }
            if ab == Equal && bc == Equal {
                prop_assert_eq!(ac, Equal);
            }
            if ab == Less && bc != Greater {
                prop_assert_eq!(ac, Less);
            }
        }

        /// Sorting a batch must leave every pair in order: a stronger transitivity check,
        /// since random triples rarely chain.
        #[test]
        fn sorts_consistently(mut vs in proptest::collection::vec(json_value(), 0..24)) {
            vs.sort_by(collate);
            for i in 0..vs.len() {
                for j in i + 1..vs.len() {
                    prop_assert_ne!(collate(&vs[i], &vs[j]), Greater, "{} vs {}", vs[i], vs[j]);
                }
            }
        }

        #[test]
        fn equal_strings_are_equal(s in ".*") {
            prop_assert_eq!(collate_str(&s, &s.clone()), Equal);
            prop_assert_eq!(collate(&Value::String(s.clone()), &Value::String(s)), Equal);
        }

        #[test]
        fn zero_width_is_ignored(s in "[a-zA-Z]{1,6}", at in 0usize..7) {
            let at = at.min(s.len());
            let padded = format!("{}\u{200B}{}", &s[..at], &s[at..]);
            prop_assert_eq!(collate_str(&s, &padded), Equal);
        }

        #[test]
        fn integers_agree_with_equal_floats(i in -(1i64 << 51)..(1i64 << 51)) {
            prop_assert_eq!(collate(&json!(i), &json!(i as f64)), Equal);
            prop_assert_eq!(collate(&json!(i), &json!(i as f64 + 0.5)), Less);
            prop_assert_eq!(collate(&json!(i), &json!(i as f64 - 0.5)), Greater);
        }
    }
}
