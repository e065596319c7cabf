//! Stored JSON read without building its tree: a path into a document, the leaf a listing filter
//! compares, and re-encoding for a response. Whatever the document's shape, nothing larger than
//! one leaf's text is allocated.
use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Number;

/// The member of an object by name (the last of duplicates, as serde_json keeps it), or inside
/// an array the element at a **1-based** index, as kz_json paths count.
pub fn child<'a>(raw: &'a RawValue, segment: &str) -> Option<&'a RawValue> {
    let mut de = serde_json::Deserializer::from_str(raw.get());
    de::Deserializer::deserialize_any(&mut de, Child { segment }).ok()?
}

/// The value at a path of segments, as [`child`] reads each.
pub fn lookup<'a>(raw: &'a RawValue, path: &[String]) -> Option<&'a RawValue> {
    path.iter()
        .try_fold(raw, |value, segment| child(value, segment))
}

struct Child<'s> {
    segment: &'s str,
}

impl<'de> Visitor<'de> for Child<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object or an array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(Key(key)) = map.next_key()? {
            if key == self.segment {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let index = self.segment.parse::<usize>().unwrap_or(0);
        let mut found = None;
        let mut position = 0;
        loop {
            position += 1;
            if position == index {
                match seq.next_element::<&'de RawValue>()? {
                    Some(item) => found = Some(item),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
        }
        Ok(found)
    }

    // Scalars have no children.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// An object key, borrowed from the text unless it has escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// What a filter needs to know of a value: scalars as they are; of an object only whether it is
/// empty; of an array whether it is empty and, when every element is a string, their
/// concatenation (Kazoo's text of a list).
#[derive(Debug, Clone, PartialEq)]
pub enum Leaf {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Object { empty: bool },
    Array { empty: bool, text: Option<String> },
}

impl Leaf {
    pub fn of(raw: &RawValue) -> Option<Leaf> {
        serde_json::from_str(raw.get()).ok()
    }
}

impl<'de> Deserialize<'de> for Leaf {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LeafVisitor)
    }
}

struct LeafVisitor;

impl<'de> Visitor<'de> for LeafVisitor {
    type Value = Leaf;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Leaf, E> {
        Ok(Leaf::Bool(b))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Leaf, E> {
        Ok(Leaf::Number(n.into()))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Leaf, E> {
        Ok(Leaf::Number(n.into()))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Leaf, E> {
        Ok(Number::from_f64(n).map_or(Leaf::Null, Leaf::Number))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Leaf, E> {
        Ok(Leaf::String(s.to_owned()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Leaf, E> {
        Ok(Leaf::Null)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Leaf, A::Error> {
        let mut empty = true;
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
            empty = false;
        }
        Ok(Leaf::Object { empty })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Leaf, A::Error> {
        let mut empty = true;
        let mut text = Some(String::new());
        while let Some(item) = seq.next_element::<Element>()? {
            empty = false;
            match (item, text.as_mut()) {
                (Element::Text(s), Some(all)) => all.push_str(&s),
                _ => text = None,
            }
        }
        Ok(Leaf::Array { empty, text })
    }
}

/// An array element: its text when it is a string, else skipped.
enum Element<'a> {
    Text(Cow<'a, str>),
    Other,
}

impl<'de> Deserialize<'de> for Element<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ElementVisitor;
        impl<'de> Visitor<'de> for ElementVisitor {
            type Value = Element<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Element<'de>, E> {
                Ok(Element::Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Element<'de>, E> {
                Ok(Element::Text(Cow::Owned(s.to_owned())))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Element<'de>, E> {
                Ok(Element::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Element<'de>, E> {
                Ok(Element::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Element<'de>, E> {
                Ok(Element::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Element<'de>, E> {
                Ok(Element::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Element<'de>, E> {
                Ok(Element::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Element<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Element::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Element<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Element::Other)
            }
        }
        deserializer.deserialize_any(ElementVisitor)
    }
}

/// Serialises stored JSON as serde_json would serialise its tree (the same bytes a parsed and
/// re-encoded value gives), straight from the text: no tree is built.
pub struct Transcoded<'a>(pub &'a RawValue);

impl Serialize for Transcoded<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut de = serde_json::Deserializer::from_str(self.0.get());
        serde_transcode::transcode(&mut de, serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn raw(v: &Value) -> Box<RawValue> {
        RawValue::from_string(v.to_string()).unwrap()
    }

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn lookup_follows_keys_and_one_based_indexes() {
        let doc = raw(&json!({"a": {"b": [10, {"c": "x"}]}, "a\"q": 1, "dup": 1, "dup": 2}));
        let at = |p: &str| lookup(&doc, &path(p)).map(|r| r.get().to_owned());
        assert_eq!(at("a.b.1").as_deref(), Some("10"));
        assert_eq!(at("a.b.2.c").as_deref(), Some("\"x\""));
        assert_eq!(at("a.b.0"), None);
        assert_eq!(at("a.b.3"), None);
        assert_eq!(at("a.b.x"), None);
        assert_eq!(at("a.b.1.z"), None);
        assert_eq!(at("a\"q").as_deref(), Some("1"));
        assert_eq!(at("missing"), None);
    }

    #[test]
    fn duplicate_keys_read_as_serde_json_reads_them() {
        let doc = RawValue::from_string(r#"{"k":1,"k":2}"#.into()).unwrap();
        let tree: Value = serde_json::from_str(doc.get()).unwrap();
        assert_eq!(child(&doc, "k").unwrap().get(), tree["k"].to_string());
    }

    #[test]
    fn leaves_summarise_values() {
        let leaf = |v: Value| Leaf::of(&raw(&v)).unwrap();
        assert_eq!(leaf(json!(null)), Leaf::Null);
        assert_eq!(
            leaf(json!(1.5)),
            Leaf::Number(Number::from_f64(1.5).unwrap())
        );
        assert_eq!(leaf(json!("é")), Leaf::String("é".into()));
        assert_eq!(leaf(json!({})), Leaf::Object { empty: true });
        assert_eq!(leaf(json!({"a": [1]})), Leaf::Object { empty: false });
        assert_eq!(
            leaf(json!(["ab", "c"])),
            Leaf::Array {
                empty: false,
                text: Some("abc".into())
            }
        );
        assert_eq!(
            leaf(json!(["a", 1])),
            Leaf::Array {
                empty: false,
                text: None
            }
        );
        assert_eq!(
            leaf(json!([])),
            Leaf::Array {
                empty: true,
                text: Some(String::new())
            }
        );
    }

    #[test]
    fn transcoding_gives_the_bytes_of_the_re_encoded_tree() {
        let text = "{ \"b\" : [1, 2.50, -0, 1E3, \"\\u00e9\\/\"], \"a\":{ } }";
        let tree: Value = serde_json::from_str(text).unwrap();
        let raw = RawValue::from_string(text.into()).unwrap();
        assert_eq!(
            serde_json::to_string(&Transcoded(&raw)).unwrap(),
            serde_json::to_string(&tree).unwrap()
        );
        assert_eq!(
            serde_json::to_string_pretty(&Transcoded(&raw)).unwrap(),
            serde_json::to_string_pretty(&tree).unwrap()
        );
    }
}
