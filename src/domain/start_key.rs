//! Owns Kazoo's opaque paging keys (contract §5.2, §5.3): base64url without padding of the Erlang
//! external term format (`term_to_binary`) of the CouchDB view key, in both directions.
//!
//! JSON maps to the terms Kazoo's kz_json uses: strings are binaries, true/false/null are atoms,
//! arrays are lists and objects are `{Proplist}` tuples of `{BinaryKey, Value}` pairs.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde_json::{Map, Number, Value};

const VERSION: u8 = 131;
const NEW_FLOAT_EXT: u8 = 70;
const FLOAT_EXT: u8 = 99;
const SMALL_INTEGER_EXT: u8 = 97;
const INTEGER_EXT: u8 = 98;
const ATOM_EXT: u8 = 100;
const SMALL_TUPLE_EXT: u8 = 104;
const LARGE_TUPLE_EXT: u8 = 105;
const NIL_EXT: u8 = 106;
const STRING_EXT: u8 = 107;
const LIST_EXT: u8 = 108;
const BINARY_EXT: u8 = 109;
const SMALL_BIG_EXT: u8 = 110;
const LARGE_BIG_EXT: u8 = 111;
const MAP_EXT: u8 = 116;
const SMALL_ATOM_EXT: u8 = 115;
const ATOM_UTF8_EXT: u8 = 118;
const SMALL_ATOM_UTF8_EXT: u8 = 119;

/// Nesting deeper than this is refused while decoding, so a hostile key cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

/// Kazoo's kz_base64url: the URL-safe alphabet, padding stripped on output and optional on input.
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Encodes a view key the way Kazoo emits `next_start_key` / `start_key`.
pub fn encode(key: &Value) -> String {
    let mut bytes = vec![VERSION];
    write_term(key, &mut bytes);
    URL_SAFE_LENIENT.encode(bytes)
}

/// base64url (padding optional; standard alphabet +/ also accepted) then ETF parse; None if either fails.
pub fn decode(encoded: &str) -> Option<Value> {
    // kz_base64url maps the URL-safe characters back onto the standard ones before decoding, so
    // keys written with either alphabet (or a mix of both) are accepted.
    let normalised: String = encoded
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            other => other,
        })
        .collect();
    let bytes = URL_SAFE_LENIENT.decode(normalised).ok()?;
    let (&version, rest) = bytes.split_first()?;
    if version != VERSION {
        return None;
    }
    let mut reader = Reader { bytes: rest };
    let value = reader.term(0)?;
    // Trailing bytes mean this was not a key we (or Kazoo) issued.
    reader.bytes.is_empty().then_some(value)
}

/// Kazoo's maybe_decode_start_key: decode, else the raw string as a JSON string.
pub fn parse_request_key(raw: &str) -> Value {
    decode(raw).unwrap_or_else(|| Value::String(raw.to_string()))
}

fn write_term(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => write_atom("null", out),
        Value::Bool(true) => write_atom("true", out),
        Value::Bool(false) => write_atom("false", out),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_binary(s, out),
        Value::Array(items) => {
            write_list_header(items.len(), out);
            for item in items {
                write_term(item, out);
            }
            if !items.is_empty() {
                out.push(NIL_EXT);
            }
        }
        Value::Object(map) => {
            // {Proplist}: a 1-tuple around a list of {Key, Value} 2-tuples; {} is {[]}.
            out.extend_from_slice(&[SMALL_TUPLE_EXT, 1]);
            write_list_header(map.len(), out);
            for (k, v) in map {
                out.extend_from_slice(&[SMALL_TUPLE_EXT, 2]);
                write_binary(k, out);
                write_term(v, out);
            }
            if !map.is_empty() {
                out.push(NIL_EXT);
            }
        }
    }
}

/// Writes `[]` for an empty list, else the LIST_EXT header; the caller adds the NIL tail.
fn write_list_header(len: usize, out: &mut Vec<u8>) {
    if len == 0 {
        out.push(NIL_EXT);
    } else {
        out.push(LIST_EXT);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

fn write_atom(name: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&[SMALL_ATOM_UTF8_EXT, name.len() as u8]);
    out.extend_from_slice(name.as_bytes());
}

fn write_binary(s: &str, out: &mut Vec<u8>) {
    out.push(BINARY_EXT);
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_number(n: &Number, out: &mut Vec<u8>) {
    if let Some(i) = n.as_i64() {
        if (0..=255).contains(&i) {
            out.extend_from_slice(&[SMALL_INTEGER_EXT, i as u8]);
        } else if let Ok(small) = i32::try_from(i) {
            out.push(INTEGER_EXT);
            out.extend_from_slice(&small.to_be_bytes());
        } else {
            write_big(i < 0, i.unsigned_abs(), out);
        }
    } else if let Some(u) = n.as_u64() {
        write_big(false, u, out);
    } else {
        // serde_json numbers are always finite, so this is a plain IEEE double.
        out.push(NEW_FLOAT_EXT);
        out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_be_bytes());
    }
}

fn write_big(negative: bool, magnitude: u64, out: &mut Vec<u8>) {
    let digits = magnitude.to_le_bytes();
    let len = 8 - magnitude.leading_zeros() as usize / 8;
    out.extend_from_slice(&[SMALL_BIG_EXT, len as u8, u8::from(negative)]);
    out.extend_from_slice(&digits[..len]);
}

/// A cursor over untrusted bytes: every read is bounds-checked and returns None when short.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }

    fn u32(&mut self) -> Option<usize> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn term(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.u8()? {
            SMALL_INTEGER_EXT => self.u8().map(Value::from),
            INTEGER_EXT => {
                let b = self.take(4)?;
                Some(Value::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])))
            }
            SMALL_BIG_EXT => {
                let n = self.u8()? as usize;
                self.big(n)
            }
            LARGE_BIG_EXT => {
                let n = self.u32()?;
                self.big(n)
            }
            NEW_FLOAT_EXT => {
                let b: [u8; 8] = self.take(8)?.try_into().ok()?;
                Number::from_f64(f64::from_be_bytes(b)).map(Value::Number)
            }
            FLOAT_EXT => {
                // The pre-R13 31-byte "%.20e" text form.
                let text = std::str::from_utf8(self.take(31)?).ok()?;
                let f: f64 = text.trim_end_matches('\0').trim().parse().ok()?;
                Number::from_f64(f).map(Value::Number)
            }
            SMALL_ATOM_UTF8_EXT => {
                let n = self.u8()? as usize;
                self.utf8_atom(n)
            }
            ATOM_UTF8_EXT => {
                let n = self.u16()?;
                self.utf8_atom(n)
            }
            SMALL_ATOM_EXT => {
                let n = self.u8()? as usize;
                self.latin1_atom(n)
            }
            ATOM_EXT => {
                let n = self.u16()?;
                self.latin1_atom(n)
            }
            BINARY_EXT => {
                let n = self.u32()?;
                let b = self.take(n)?;
                std::str::from_utf8(b).ok().map(Value::from)
            }
            NIL_EXT => Some(Value::Array(Vec::new())),
            STRING_EXT => {
                // Erlang's compact form of a list of small integers, e.g. [1,2,3].
                let n = self.u16()?;
                Some(Value::Array(
                    self.take(n)?.iter().map(|&b| Value::from(b)).collect(),
                ))
            }
            LIST_EXT => {
                let n = self.u32()?;
                let items = self.list_items(n, depth)?;
                Some(Value::Array(items))
            }
            SMALL_TUPLE_EXT => {
                let arity = self.u8()? as usize;
                self.tuple(arity, depth)
            }
            LARGE_TUPLE_EXT => {
                let arity = self.u32()?;
                self.tuple(arity, depth)
            }
            MAP_EXT => {
                let n = self.u32()?;
                let mut map = Map::new();
                for _ in 0..n {
                    let key = self.key(depth)?;
                    let value = self.term(depth + 1)?;
                    map.insert(key, value);
                }
                Some(Value::Object(map))
            }
            _ => None,
        }
    }

    /// `n` list elements followed by a NIL tail (improper lists have no JSON form).
    fn list_items(&mut self, n: usize, depth: usize) -> Option<Vec<Value>> {
        // The length is untrusted: every element needs at least one byte.
        let mut items = Vec::with_capacity(n.min(self.bytes.len()));
        for _ in 0..n {
            items.push(self.term(depth + 1)?);
        }
        (self.u8()? == NIL_EXT).then_some(items)
    }

    /// Only kz_json's `{Proplist}` tuple has a JSON form.
    fn tuple(&mut self, arity: usize, depth: usize) -> Option<Value> {
        if arity != 1 {
            return None;
        }
        let pairs = match self.u8()? {
            NIL_EXT => 0,
            LIST_EXT => self.u32()?,
            _ => return None,
        };
        let mut map = Map::new();
        for _ in 0..pairs {
            if self.u8()? != SMALL_TUPLE_EXT || self.u8()? != 2 {
                return None;
            }
            let key = self.key(depth + 1)?;
            let value = self.term(depth + 2)?;
            map.insert(key, value);
        }
        if pairs > 0 && self.u8()? != NIL_EXT {
            return None;
        }
        Some(Value::Object(map))
    }

    /// An object key: a binary, or an atom as jiffy also accepts.
    fn key(&mut self, depth: usize) -> Option<String> {
        match self.term(depth + 1)? {
            Value::String(s) => Some(s),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null => Some("null".to_string()),
            _ => None,
        }
    }

    fn big(&mut self, n: usize) -> Option<Value> {
        let sign = self.u8()?;
        let digits = self.take(n)?;
        let mut magnitude: u64 = 0;
        for (i, &d) in digits.iter().enumerate() {
            if i >= 8 {
                // Beyond 64 bits serde_json cannot hold the number exactly.
                if d != 0 {
                    return None;
                }
                continue;
            }
            magnitude |= u64::from(d) << (8 * i);
        }
        match sign {
            0 => Some(Value::from(magnitude)),
            1 if magnitude <= i64::MAX as u64 + 1 => {
                Some(Value::from((-(i128::from(magnitude))) as i64))
            }
            _ => None,
        }
    }

    fn utf8_atom(&mut self, n: usize) -> Option<Value> {
        let name = std::str::from_utf8(self.take(n)?).ok()?;
        Some(atom_value(name))
    }

    fn latin1_atom(&mut self, n: usize) -> Option<Value> {
        let name: String = self.take(n)?.iter().map(|&b| char::from(b)).collect();
        Some(atom_value(&name))
    }
}

/// true/false/null are JSON literals; any other atom is encoded by jiffy as its name.
fn atom_value(name: &str) -> Value {
    match name {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "null" => Value::Null,
        other => Value::String(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_LENIENT.encode(bytes)
    }

    #[test]
    fn a_document_id_encodes_exactly_as_kazoo_does() {
        let key = json!("18ccfd6cea456cbdd38133e5aa726ec4");
        let encoded = encode(&key);
        assert_eq!(
            encoded,
            "g20AAAAgMThjY2ZkNmNlYTQ1NmNiZGQzODEzM2U1YWE3MjZlYzQ"
        );
        assert_eq!(decode(&encoded), Some(key));
    }

    #[test]
    fn a_compound_key_encodes_exactly_as_kazoo_does() {
        let key = json!(["a", 1]);
        let encoded = encode(&key);
        assert_eq!(encoded, "g2wAAAACbQAAAAFhYQFq");
        assert_eq!(decode(&encoded), Some(key));
    }

    #[test]
    fn integers_use_the_smallest_erlang_form() {
        let bytes = |v: Value| URL_SAFE_LENIENT.decode(encode(&v)).unwrap();
        assert_eq!(bytes(json!(0)), [131, 97, 0]);
        assert_eq!(bytes(json!(255)), [131, 97, 255]);
        assert_eq!(bytes(json!(256)), [131, 98, 0, 0, 1, 0]);
        assert_eq!(bytes(json!(-1)), [131, 98, 255, 255, 255, 255]);
        assert_eq!(
            bytes(json!(2_147_483_648_i64)),
            [131, 110, 4, 0, 0, 0, 0, 128]
        );
        assert_eq!(
            bytes(json!(-2_147_483_649_i64)),
            [131, 110, 4, 1, 1, 0, 0, 128]
        );
        assert_eq!(
            bytes(json!(u64::MAX)),
            [131, 110, 8, 0, 255, 255, 255, 255, 255, 255, 255, 255]
        );
    }

    #[test]
    fn floats_atoms_and_objects_use_kazoo_terms() {
        let bytes = |v: Value| URL_SAFE_LENIENT.decode(encode(&v)).unwrap();
        let mut float = vec![131, 70];
        float.extend_from_slice(&1.5f64.to_be_bytes());
        assert_eq!(bytes(json!(1.5)), float);
        assert_eq!(bytes(json!(true)), [131, 119, 4, b't', b'r', b'u', b'e']);
        assert_eq!(bytes(json!(null)), [131, 119, 4, b'n', b'u', b'l', b'l']);
        assert_eq!(bytes(json!([])), [131, 106]);
        assert_eq!(bytes(json!({})), [131, 104, 1, 106]);
        assert_eq!(
            bytes(json!({"k": 1})),
            [131, 104, 1, 108, 0, 0, 0, 1, 104, 2, 109, 0, 0, 0, 1, b'k', 97, 1, 106]
        );
    }

    #[test]
    fn extremes_round_trip() {
        for v in [
            json!(i64::MIN),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(i32::MIN),
            json!(-0.0),
            json!(f64::MAX),
            json!({"a": [null, false, {"b": []}], "": ""}),
        ] {
            assert_eq!(decode(&encode(&v)), Some(v.clone()), "{v}");
        }
    }

    #[test]
    fn padding_and_the_standard_alphabet_are_accepted() {
        // term_to_binary(<<"a?>">>) has both '+'/'-' style characters in its base64.
        let key = json!("ÿÿ?>");
        let url = encode(&key);
        let standard = url.replace('-', "+").replace('_', "/");
        assert_ne!(url, standard, "test key must exercise the alphabet");
        assert_eq!(decode(&standard), Some(key.clone()));
        let padded = format!("{url}{}", "=".repeat((4 - url.len() % 4) % 4));
        assert_eq!(decode(&padded), Some(key));
    }

    #[test]
    fn other_atom_spellings_and_string_ext_are_accepted() {
        assert_eq!(
            decode(&b64(&[131, 100, 0, 4, b't', b'r', b'u', b'e'])),
            Some(json!(true))
        );
        assert_eq!(
            decode(&b64(&[131, 118, 0, 5, b'f', b'a', b'l', b's', b'e'])),
            Some(json!(false))
        );
        assert_eq!(
            decode(&b64(&[131, 115, 4, b'n', b'u', b'l', b'l'])),
            Some(json!(null))
        );
        assert_eq!(
            decode(&b64(&[131, 115, 3, b'f', b'o', b'o'])),
            Some(json!("foo"))
        );
        assert_eq!(
            decode(&b64(&[131, 107, 0, 3, 1, 2, 3])),
            Some(json!([1, 2, 3]))
        );
    }

    #[test]
    fn raw_document_ids_are_used_as_they_are() {
        // "abc" is valid base64 but not an Erlang term.
        assert_eq!(decode("abc"), None);
        assert_eq!(parse_request_key("abc"), json!("abc"));
        assert_eq!(
            parse_request_key("18ccfd6cea456cbdd38133e5aa726ec4"),
            json!("18ccfd6cea456cbdd38133e5aa726ec4")
        );
        assert_eq!(
            parse_request_key("g20AAAAgMThjY2ZkNmNlYTQ1NmNiZGQzODEzM2U1YWE3MjZlYzQ"),
            json!("18ccfd6cea456cbdd38133e5aa726ec4")
        );
        assert_eq!(parse_request_key(""), json!(""));
        assert_eq!(parse_request_key("not base64!"), json!("not base64!"));
    }

    #[test]
    fn malformed_terms_are_refused() {
        for bytes in [
            &[][..],
            &[131],
            &[130, 97, 1],                                // wrong version
            &[131, 97, 1, 0],                             // trailing garbage
            &[131, 109, 0, 0, 0, 5, b'a'],                // short binary
            &[131, 109, 0, 0, 0, 2, 0xff, 0xfe],          // not UTF-8
            &[131, 108, 0, 0, 0, 1, 97, 1, 97, 2],        // improper list
            &[131, 104, 2, 97, 1, 97, 2],                 // a 2-tuple has no JSON form
            &[131, 104, 1, 108, 0, 0, 0, 1, 97, 1, 106],  // proplist element not a pair
            &[131, 108, 255, 255, 255, 255, 106],         // absurd length
            &[131, 110, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], // beyond 64 bits
            &[131, 70, 127, 248, 0, 0, 0, 0, 0, 0],       // NaN
            &[131, 88],                                   // unknown tag
        ] {
            assert_eq!(decode(&b64(bytes)), None, "{bytes:?}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_overflowing_the_stack() {
        let mut bytes = vec![131];
        for _ in 0..100_000 {
            bytes.extend_from_slice(&[108, 0, 0, 0, 1]);
        }
        assert_eq!(decode(&b64(&bytes)), None);
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter_map("finite", Number::from_f64)
                .prop_map(Value::Number),
            any::<String>().prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((any::<String>(), inner), 0..4)
                    .prop_map(|kvs| Value::Object(kvs.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn strings_round_trip(s in any::<String>()) {
            let v = Value::from(s);
            prop_assert_eq!(decode(&encode(&v)), Some(v));
        }

        #[test]
        fn arrays_of_strings_and_integers_round_trip(
            items in prop::collection::vec(
                prop_oneof![any::<String>().prop_map(Value::from), any::<i64>().prop_map(Value::from)],
                0..8,
            )
        ) {
            let v = Value::Array(items);
            prop_assert_eq!(decode(&encode(&v)), Some(v));
        }

        #[test]
        fn any_json_round_trips(v in arb_json()) {
            prop_assert_eq!(decode(&encode(&v)), Some(v));
        }

        #[test]
        fn encoded_keys_are_url_safe_without_padding(v in arb_json()) {
            let encoded = encode(&v);
            prop_assert!(encoded.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        }

        #[test]
        fn trailing_bytes_are_refused(v in arb_json(), extra in prop::collection::vec(any::<u8>(), 1..4)) {
            let mut bytes = URL_SAFE_LENIENT.decode(encode(&v)).unwrap();
            bytes.extend_from_slice(&extra);
            prop_assert_eq!(decode(&b64(&bytes)), None);
        }

        #[test]
        fn decoding_random_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&b64(&bytes));
            let mut versioned = vec![VERSION];
            versioned.extend_from_slice(&bytes);
            let _ = decode(&b64(&versioned));
        }

        #[test]
        fn decoding_random_strings_never_panics(s in any::<String>()) {
            match decode(&s) {
                Some(v) => prop_assert_eq!(parse_request_key(&s), v),
                None => prop_assert_eq!(parse_request_key(&s), Value::String(s.clone())),
            }
        }
    }
}
