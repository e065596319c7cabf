//! Sort keys of view keys: bytes whose plain byte order (SQLite's BINARY, `memcmp`) is CouchDB's
//! view collation of the JSON keys (`collation::collate`). They are computed once, when a row is
//! written or a query names a key, so SQLite ranges and orders view rows by comparing bytes and
//! never parses JSON in a comparison.
//!
//! Every value's bytes are self-delimiting, so arrays and objects compare element by element:
//! - `null` 0x10, `false` 0x11, `true` 0x12 (CouchDB's type order is the tag order);
//! - a number 0x13, then 0x02 for zero, else the exact value as ±1.f × 2^e in fixed width:
//!   0x03, e (biased, 2 bytes), f (8 bytes) when positive; 0x01 and both inverted when negative.
//!   Integers (up to 64 bits) and doubles alike fit exactly, so `1` and `1.0` are the same key;
//! - a string 0x14, then the ICU root collator's sort key (tertiary strength, as CouchDB's
//!   `ucol_open("")`), 0x00 bytes escaped as 0x00 0xFF, then 0x00. ICU-equal strings (`"a"`,
//!   `"a\u{200B}"`) have the same sort key: ties are left to the doc id, as in CouchDB;
//! - an array 0x15, its elements, then 0x00; an object 0x16, then per member 0x01, the member's
//!   name as a string's sort key without its tag, its value, then 0x00 after the last member.
//!
//! ICU4X does not promise the same sort keys across its versions, so the store records which
//! ones computed its keys (`schema`) and computes them again when that changes.
use serde_json::{Number, Value};

use super::collation;

const NULL: u8 = 0x10;
const FALSE: u8 = 0x11;
const TRUE: u8 = 0x12;
const NUMBER: u8 = 0x13;
const STRING: u8 = 0x14;
const ARRAY: u8 = 0x15;
const OBJECT: u8 = 0x16;
/// Ends a string, an array or an object: below every byte that can come in its place.
const END: u8 = 0x00;
/// Starts an object member.
const MEMBER: u8 = 0x01;
/// A 0x00 inside a string's sort key is followed by this, so it sorts above the END that
/// closes a shorter string.
const ESCAPED_ZERO: u8 = 0xFF;

const NEGATIVE: u8 = 0x01;
const ZERO: u8 = 0x02;
const POSITIVE: u8 = 0x03;
/// Binary exponents run from -1074 (the least subnormal double) to 1023 (doubles) or 63 (u64).
const EXPONENT_BIAS: i32 = 1100;

/// The sort key of a JSON value.
pub fn of(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    push(value, &mut out);
    out
}

fn push(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(NULL),
        Value::Bool(false) => out.push(FALSE),
        Value::Bool(true) => out.push(TRUE),
        Value::Number(n) => {
            out.push(NUMBER);
            push_number(n, out);
        }
        Value::String(s) => {
            out.push(STRING);
            push_string(s, out);
        }
        Value::Array(items) => {
            out.push(ARRAY);
            for item in items {
                push(item, out);
            }
            out.push(END);
        }
        Value::Object(members) => {
            out.push(OBJECT);
            for (name, value) in members {
                out.push(MEMBER);
                push_string(name, out);
                push(value, out);
            }
            out.push(END);
        }
    }
}

fn push_string(s: &str, out: &mut Vec<u8>) {
    let start = out.len();
    collation::write_sort_key(s, out);
    if out[start..].contains(&0) {
        let key = out.split_off(start);
        for b in key {
            out.push(b);
            if b == 0 {
                out.push(ESCAPED_ZERO);
            }
        }
    }
    out.push(END);
}

fn push_number(n: &Number, out: &mut Vec<u8>) {
    let parts = match (n.as_i64(), n.as_u64()) {
        (Some(i), _) => integer_parts(i < 0, i.unsigned_abs()),
        (None, Some(u)) => integer_parts(false, u),
        // serde_json's other numbers are finite doubles.
        (None, None) => float_parts(n.as_f64().unwrap_or(0.0)),
    };
    let Some(Binary {
        negative,
        exponent,
        fraction,
    }) = parts
    else {
        out.push(ZERO);
        return;
    };
    let exponent = (exponent + EXPONENT_BIAS) as u16;
    if negative {
        out.push(NEGATIVE);
        out.extend_from_slice(&(!exponent).to_be_bytes());
        out.extend_from_slice(&(!fraction).to_be_bytes());
    } else {
        out.push(POSITIVE);
        out.extend_from_slice(&exponent.to_be_bytes());
        out.extend_from_slice(&fraction.to_be_bytes());
    }
}

/// A non-zero number as ±(1 + fraction / 2^64) × 2^exponent: one spelling per value.
#[derive(Debug, PartialEq, Eq)]
struct Binary {
    negative: bool,
    exponent: i32,
    /// The bits after the leading 1, from the top bit down.
    fraction: u64,
}

/// `magnitude` as [`Binary`], scaled by 2^`shift`; `None` for zero.
fn normalise(negative: bool, magnitude: u64, shift: i32) -> Option<Binary> {
    if magnitude == 0 {
        return None;
    }
    let top = 63 - magnitude.leading_zeros() as i32;
    // The bits below the leading 1, moved to the top (nothing is left when it is the only one).
    let fraction = magnitude.checked_shl((64 - top) as u32).unwrap_or(0);
    Some(Binary {
        negative,
        exponent: top + shift,
        fraction,
    })
}

fn integer_parts(negative: bool, magnitude: u64) -> Option<Binary> {
    normalise(negative, magnitude, 0)
}

fn float_parts(f: f64) -> Option<Binary> {
    let bits = f.to_bits();
    let negative = bits >> 63 == 1;
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let mantissa = bits & ((1 << 52) - 1);
    if biased == 0 {
        // Zero (either sign) or subnormal: mantissa × 2^-1074.
        normalise(negative, mantissa, -1074)
    } else {
        // 1.mantissa × 2^(biased - 1023), with the implicit leading 1.
        normalise(negative, mantissa | 1 << 52, biased - 1023 - 52)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::collation::{arbitrary, collate};
    use proptest::prelude::*;
    use serde_json::json;
    use std::cmp::Ordering;

    fn order(a: &Value, b: &Value) -> Ordering {
        of(a).cmp(&of(b))
    }

    #[test]
    fn integers_and_doubles_share_one_spelling() {
        assert_eq!(of(&json!(1)), of(&json!(1.0)));
        assert_eq!(of(&json!(0)), of(&json!(-0.0)));
        assert_eq!(of(&json!(-7)), of(&json!(-7.0)));
        assert_eq!(of(&json!(u64::MAX)).len(), 1 + 1 + 2 + 8);
        assert_eq!(
            float_parts(9_007_199_254_740_992.0),
            integer_parts(false, 1 << 53)
        );
        assert_eq!(
            float_parts(-2.5),
            Some(Binary {
                negative: true,
                exponent: 1,
                fraction: 1 << 62
            })
        );
        // The least subnormal double.
        assert_eq!(
            float_parts(f64::from_bits(1)),
            Some(Binary {
                negative: false,
                exponent: -1074,
                fraction: 0
            })
        );
    }

    #[test]
    fn numbers_by_exact_value() {
        let list = [
            json!(-1e300),
            json!(i64::MIN),
            json!(-2.5),
            json!(-2),
            json!(-f64::from_bits(1)),
            json!(0),
            json!(f64::from_bits(1)),
            json!(1e-300),
            json!(0.5),
            json!(1),
            json!(1.5),
            json!(9_007_199_254_740_992.0),
            json!(9_007_199_254_740_993_i64),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(18_446_744_073_709_551_616.0),
            json!(1e300),
        ];
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                assert_eq!(order(a, b), Ordering::Less, "{a} < {b}");
                assert_eq!(collate(a, b), Ordering::Less, "{a} < {b}");
            }
        }
    }

    #[test]
    fn ties_and_prefixes_inside_arrays_and_objects() {
        // ICU-equal strings are one key; a shorter string closes before a longer one goes on.
        assert_eq!(order(&json!("a"), &json!("a\u{200B}")), Ordering::Equal);
        assert_eq!(
            order(&json!(["a", 2]), &json!(["a\u{200B}", 1])),
            Ordering::Greater
        );
        assert_eq!(order(&json!(["a", 2]), &json!(["ab", 1])), Ordering::Less);
        assert_eq!(order(&json!([1.25, null]), &json!([1.5])), Ordering::Less);
        assert_eq!(order(&json!([]), &json!([null])), Ordering::Less);
        assert_eq!(order(&json!({}), &json!({"": null})), Ordering::Less);
        assert_eq!(
            order(&json!({"a": 1, "b": 2}), &json!({"b": 2, "a": 1})),
            Ordering::Less
        );
        assert_eq!(order(&json!(["XYZ"]), &json!(["XYZ", {}])), Ordering::Less);
        assert_eq!(order(&json!("abc"), &json!("abc\u{fff0}")), Ordering::Less);
    }

    #[test]
    fn zero_bytes_are_escaped() {
        let mut out = Vec::new();
        push_string("", &mut out);
        assert_eq!(out.last(), Some(&END));
        // Whatever ICU writes, an END only ever closes the string.
        for s in ["", "a", "\u{0}", "a\u{0}b", "\u{fffd}"] {
            let key = of(&json!(s));
            let body = &key[1..key.len() - 1];
            assert!(
                body.windows(2).all(|w| w[0] != 0 || w[1] == ESCAPED_ZERO),
                "{s:?}: {key:?}"
            );
        }
    }

    fn tricky_string() -> impl Strategy<Value = String> {
        let chars = prop::sample::select(vec![
            'a',
            'A',
            'b',
            'c',
            'h',
            'e',
            '\u{e9}',
            '\u{301}',
            '\u{300}',
            '\u{327}',
            '\u{308}',
            '\u{e40}',
            '\u{e01}',
            '\u{e02}',
            '\u{e48}',
            '\u{1100}',
            '\u{1161}',
            '\u{11a8}',
            '\u{ac00}',
            '\u{ac01}',
            '\u{93c}',
            '\u{915}',
            '\u{fb00}',
            '\u{df}',
            '\u{17f}',
            '\u{ad}',
            '\u{200b}',
            '\u{200d}',
            '\u{feff}',
            '\u{ff21}',
            '\u{661}',
            '1',
            '\u{0}',
            '\t',
            '-',
            ' ',
            '\u{fffd}',
            '\u{fffe}',
            '\u{ffff}',
            '\u{10ffff}',
            '\u{1f600}',
            '\u{4e00}',
            '\u{20000}',
            '\u{3b1}',
            '\u{3c2}',
            '\u{627}',
            '\u{5d0}',
        ]);
        proptest::collection::vec(chars, 0..6).prop_map(|cs| cs.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The whole point: comparing sort keys is comparing the values CouchDB's way.
        #[test]
        fn byte_order_is_couchdb_collation(a in arbitrary::json_value(), b in arbitrary::json_value()) {
            prop_assert_eq!(order(&a, &b), collate(&a, &b), "{} vs {}", a, b);
        }

        #[test]
        fn any_strings_order_as_icu(a in ".{0,8}", b in ".{0,8}") {
            let (a, b) = (Value::String(a), Value::String(b));
            prop_assert_eq!(order(&a, &b), collate(&a, &b), "{} vs {}", a, b);
            let (x, y) = (json!([a.clone(), 1]), json!([b.clone(), 0]));
            prop_assert_eq!(order(&x, &y), collate(&x, &y), "{} vs {}", x, y);
        }

        /// Scripts where ICU reorders, contracts, expands or ignores: Thai prevowels, Hangul
        /// jamo and syllables, combining marks, ligatures, ignorables, fullwidth and other
        /// digits, controls, and the ends of the BMP.
        #[test]
        fn tricky_strings_order_as_icu(
            a in tricky_string(), b in tricky_string(), tail_a in tricky_string(), tail_b in tricky_string(),
        ) {
            let (x, y) = (Value::String(a.clone()), Value::String(b.clone()));
            prop_assert_eq!(order(&x, &y), collate(&x, &y), "{:?} vs {:?}", a, b);
            let (x, y) = (json!([a.clone(), tail_a.clone()]), json!([b.clone(), tail_b.clone()]));
            prop_assert_eq!(order(&x, &y), collate(&x, &y), "{} vs {}", x, y);
            let (x, y) = (json!({a: tail_a}), json!({b: tail_b}));
            prop_assert_eq!(order(&x, &y), collate(&x, &y), "{} vs {}", x, y);
        }

        #[test]
        fn any_numbers_order_by_value(
            a in prop_oneof![any::<i64>().prop_map(Value::from), any::<u64>().prop_map(Value::from),
                             any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from)],
            b in prop_oneof![any::<i64>().prop_map(Value::from), any::<u64>().prop_map(Value::from),
                             any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from)],
        ) {
            prop_assert_eq!(order(&a, &b), collate(&a, &b), "{} vs {}", a, b);
        }
    }
}
