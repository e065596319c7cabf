//! The building pass: the tree of a measured body, each container allocated at the size the
//! measuring pass counted, so the tree takes what was measured and nothing more.
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::{JsonError, Measured};

struct Builder<'m> {
    sizes: std::slice::Iter<'m, u32>,
    depth: usize,
    top_keys: Option<fn(String) -> String>,
}

impl Builder<'_> {
    fn next_size(&mut self) -> usize {
        self.sizes.next().map_or(0, |n| *n as usize)
    }
}

pub(super) fn build(
    bytes: &[u8],
    measured: &Measured,
    top_keys: Option<fn(String) -> String>,
) -> Result<Value, JsonError> {
    let mut builder = Builder {
        sizes: measured.sizes.iter(),
        depth: 0,
        top_keys,
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = (&mut builder)
        .deserialize(&mut de)
        .map_err(|_| JsonError::Syntax)?;
    de.end().map_err(|_| JsonError::Syntax)?;
    Ok(value)
}

impl<'de> DeserializeSeed<'de> for &mut Builder<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for &mut Builder<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value, E> {
        Ok(Number::from_f64(n).map_or(Value::Null, Value::Number))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(self.next_size());
        self.depth += 1;
        while let Some(item) = seq.next_element_seed(&mut *self)? {
            items.push(item);
        }
        self.depth -= 1;
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::with_capacity(self.next_size());
        self.depth += 1;
        let rename = self.top_keys.filter(|_| self.depth == 1);
        while let Some(key) = map.next_key::<String>()? {
            let key = match rename {
                Some(rename) => rename(key),
                None => key,
            };
            let value = map.next_value_seed(&mut *self)?;
            out.insert(key, value);
        }
        self.depth -= 1;
        Ok(Value::Object(out))
    }
}
