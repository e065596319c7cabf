//! The measuring pass: walks the JSON with serde, counting what the tree will allocate, and stops
//! at the first node past the depth limit or the cost cap.
use std::fmt;
use std::mem::size_of;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{JsonError, MAX_DEPTH};

/// What a body will cost as a tree, and the size of each of its containers in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measured {
    /// Bytes the tree will allocate, allocator bookkeeping included.
    pub cost: usize,
    pub(super) sizes: Vec<u32>,
}

/// An allocator's bookkeeping per allocation, as a round figure.
const ALLOC_OVERHEAD: usize = 16;

fn alloc(bytes: usize) -> usize {
    if bytes == 0 {
        0
    } else {
        bytes.next_multiple_of(16) + ALLOC_OVERHEAD
    }
}

pub(super) fn string_cost(len: usize) -> usize {
    alloc(len)
}

pub(super) fn array_cost(len: usize) -> usize {
    alloc(len * size_of::<Value>())
}

/// serde_json's map (preserve_order) is an IndexMap: a vector of (hash, key, value) entries and a
/// hash table of indices sized as hashbrown sizes it.
pub(super) fn object_cost(len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    let entry = size_of::<usize>() + size_of::<String>() + size_of::<Value>();
    let buckets = match len {
        0..4 => 4,
        4..8 => 8,
        _ => (len * 8 / 7).next_power_of_two(),
    };
    alloc(len * entry) + alloc(buckets * size_of::<usize>() + buckets + 16)
}

/// What a tree already built takes, counted as [`measure`] counts it: exact for a tree built at
/// its final sizes (`json::build`), close for any other.
pub(super) fn tree_cost(value: &Value) -> usize {
    match value {
        Value::String(s) => string_cost(s.len()),
        Value::Array(items) => array_cost(items.len()) + items.iter().map(tree_cost).sum::<usize>(),
        Value::Object(members) => object_tree_cost(members),
        _ => 0,
    }
}

pub(super) fn object_tree_cost(members: &Map<String, Value>) -> usize {
    object_cost(members.len())
        + members
            .iter()
            .map(|(key, value)| string_cost(key.len()) + tree_cost(value))
            .sum::<usize>()
}

#[derive(Default)]
struct Meter {
    depth: usize,
    cost: usize,
    cap: usize,
    sizes: Vec<u32>,
    failure: Option<JsonError>,
}

impl Meter {
    fn add<E: de::Error>(&mut self, cost: usize) -> Result<(), E> {
        self.cost = self.cost.saturating_add(cost);
        if self.cost > self.cap {
            return Err(self.fail(JsonError::TooCostly));
        }
        Ok(())
    }

    fn fail<E: de::Error>(&mut self, failure: JsonError) -> E {
        self.failure = Some(failure);
        E::custom("measure")
    }

    fn enter<E: de::Error>(&mut self) -> Result<usize, E> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.fail(JsonError::TooDeep));
        }
        self.sizes.push(0);
        Ok(self.sizes.len() - 1)
    }

    fn leave(&mut self, slot: usize, len: u32) {
        self.sizes[slot] = len;
        self.depth -= 1;
    }
}

pub(super) fn measure(bytes: &[u8], cap: usize) -> Result<Measured, JsonError> {
    let mut meter = Meter {
        cap,
        ..Default::default()
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result = (&mut meter).deserialize(&mut de).and_then(|()| de.end());
    match result {
        Ok(()) => Ok(Measured {
            cost: meter.cost,
            sizes: meter.sizes,
        }),
        Err(_) => Err(meter.failure.unwrap_or(JsonError::Syntax)),
    }
}

impl<'de> DeserializeSeed<'de> for &mut Meter {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for &mut Meter {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        self.add(string_cost(s.len()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let slot = self.enter()?;
        let mut len = 0usize;
        while seq.next_element_seed(&mut *self)?.is_some() {
            len += 1;
            // Charged as it grows, so a long array stops as soon as it is too costly.
            self.add(size_of::<Value>())?;
        }
        self.add(array_cost(len).saturating_sub(len * size_of::<Value>()))?;
        self.leave(slot, len.try_into().unwrap_or(u32::MAX));
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let slot = self.enter()?;
        let entry = size_of::<usize>() + size_of::<String>() + size_of::<Value>();
        let mut len = 0usize;
        while let Some(key_len) = map.next_key_seed(KeyLength)? {
            self.add(string_cost(key_len) + entry)?;
            map.next_value_seed(&mut *self)?;
            len += 1;
        }
        self.add(object_cost(len).saturating_sub(len * entry))?;
        self.leave(slot, len.try_into().unwrap_or(u32::MAX));
        Ok(())
    }
}

/// A map key, measured: its length.
struct KeyLength;

impl<'de> DeserializeSeed<'de> for KeyLength {
    type Value = usize;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<usize, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyLength {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<usize, E> {
        Ok(s.len())
    }
}
