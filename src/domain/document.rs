//! A document as the store holds it: its revision, and its fields in their stored order (`_id`
//! and `_rev` among them, as CouchDB returns them), shared with the store's cache.
use std::sync::Arc;

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct StoredDoc {
    pub rev: String,
    /// Always an object.
    doc: Arc<Value>,
}

impl StoredDoc {
    /// A document read from the store; anything but an object is no document.
    pub fn from_shared(doc: Arc<Value>) -> Option<Self> {
        let rev = doc.as_object()?.get("_rev").and_then(Value::as_str);
        Some(Self {
            rev: rev.unwrap_or_default().to_owned(),
            doc,
        })
    }

    /// The fields, CouchDB's `_conflicts` among them when it is in conflict.
    pub fn fields(&self) -> &Map<String, Value> {
        self.doc
            .as_object()
            .expect("a stored document is an object")
    }

    /// The fields to write over, without `_conflicts` (what CouchDB reports, never stores).
    pub fn into_fields(self) -> Map<String, Value> {
        let mut fields = match Arc::unwrap_or_clone(self.doc) {
            Value::Object(fields) => fields,
            _ => unreachable!("a stored document is an object"),
        };
        fields.remove("_conflicts");
        fields
    }
}
