//! A document as the store holds it: its revision, and its fields in their stored order (`_id`
//! and `_rev` among them, as CouchDB returns them).
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct StoredDoc {
    pub rev: String,
    pub fields: Map<String, Value>,
}

impl StoredDoc {
    /// A document read from the store; anything but an object is no document.
    pub fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Object(fields) => Some(Self {
                rev: fields
                    .get("_rev")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                fields,
            }),
            _ => None,
        }
    }
}
