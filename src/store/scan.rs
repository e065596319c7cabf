//! Views answered without a design document, for databases whose design document belongs to
//! someone else (Kazoo) and lacks a view kz-groups reads: every live document is read with
//! `_all_docs?include_docs=true` (which CouchDB 3 documents and every store here serves), the
//! view's rows are emitted by the embedded store's Rust ports (`embedded::native_views`), and
//! the query (keys, range, direction, skip, limit) is applied here with CouchDB's collation.
//!
//! Memory is bounded by the query: only the best `skip + limit` rows are kept while reading (a
//! max-heap), never the whole database; the price is a full read of the database per query.
use std::cmp::Ordering;
use std::collections::BinaryHeap;

use futures::TryStreamExt;
use serde_json::value::RawValue;
use serde_json::Value;

use super::embedded::collation::collate;
use super::embedded::native_views;
use super::{Store, StoreError, StoreResult, View, ViewQuery, ViewRow};
use crate::domain::ids::DbName;

/// One candidate row, ordered as the query returns rows (reversed when descending).
struct Ranked {
    row: ViewRow,
    descending: bool,
}

impl Ranked {
    fn order(&self, other: &Self) -> Ordering {
        // View rows sort by key (CouchDB collation), equal keys by doc id (raw bytes).
        let natural = collate(&self.row.key, &other.row.key)
            .then_with(|| self.row.id.as_bytes().cmp(other.row.id.as_bytes()));
        if self.descending {
            natural.reverse()
        } else {
            natural
        }
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.order(other) == Ordering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.order(other)
    }
}

/// Whether a row falls inside the query's range, in the query's direction.
fn in_range(q: &ViewQuery, key: &Value, id: &str) -> bool {
    if let Some(wanted) = &q.key {
        return collate(key, wanted) == Ordering::Equal;
    }
    // "After" in the query's direction.
    let forward = |o: Ordering| if q.descending { o.reverse() } else { o };
    if let Some(start) = &q.startkey {
        match forward(collate(key, start)) {
            Ordering::Less => return false,
            Ordering::Equal => {
                if let Some(docid) = &q.startkey_docid {
                    if forward(id.as_bytes().cmp(docid.as_bytes())) == Ordering::Less {
                        return false;
                    }
                }
            }
            Ordering::Greater => {}
        }
    }
    if let Some(end) = &q.endkey {
        if forward(collate(key, end)) == Ordering::Greater {
            return false;
        }
    }
    true
}

/// The rows `view` would give for `q`, computed from the documents, which are read one at a
/// time.
pub async fn query(
    store: &Store,
    db: &DbName,
    view: View,
    q: &ViewQuery,
) -> StoreResult<Vec<ViewRow>> {
    let keep = q.limit.map(|l| l.saturating_add(q.skip));
    let mut best: BinaryHeap<Ranked> = BinaryHeap::new();
    let mut docs = store.all_docs(db).await?;
    while let Some(row) = docs.try_next().await? {
        let Some(text) = row.doc else { continue };
        // Only this document's tree exists at a time.
        let Ok(doc) = serde_json::from_str::<Value>(text.get()) else {
            continue;
        };
        for (key, value) in native_views::emit(view, &doc) {
            if !in_range(q, &key, &row.id) {
                continue;
            }
            let candidate = Ranked {
                row: ViewRow {
                    id: row.id.clone(),
                    key,
                    value: raw(&value)?,
                    doc: q.include_docs.then(|| text.clone()),
                },
                descending: q.descending,
            };
            match keep {
                Some(0) => {}
                Some(n) if best.len() >= n => {
                    // The heap's top is the worst row kept; a better one replaces it.
                    if best.peek().is_some_and(|worst| candidate < *worst) {
                        best.pop();
                        best.push(candidate);
                    }
                }
                _ => best.push(candidate),
            }
        }
    }
    Ok(best
        .into_sorted_vec()
        .into_iter()
        .skip(q.skip)
        .map(|r| r.row)
        .collect())
}

fn raw(value: &Value) -> StoreResult<Box<RawValue>> {
    serde_json::value::to_raw_value(value).map_err(|e| StoreError::Other {
        status: 200,
        error: "bad_answer".into(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q() -> ViewQuery {
        ViewQuery::default()
    }

    #[test]
    fn ranges_follow_the_direction() {
        let asc = ViewQuery {
            startkey: Some(json!("b")),
            endkey: Some(json!("d")),
            ..q()
        };
        assert!(!in_range(&asc, &json!("a"), "x"));
        assert!(in_range(&asc, &json!("b"), "x"));
        assert!(in_range(&asc, &json!("d"), "x"));
        assert!(!in_range(&asc, &json!("e"), "x"));
        let desc = ViewQuery {
            startkey: Some(json!("d")),
            endkey: Some(json!("b")),
            descending: true,
            ..q()
        };
        assert!(in_range(&desc, &json!("c"), "x"));
        assert!(!in_range(&desc, &json!("e"), "x"));
        assert!(!in_range(&desc, &json!("a"), "x"));
    }

    #[test]
    fn startkey_docid_bounds_rows_of_the_start_key() {
        let query = ViewQuery {
            startkey: Some(json!("u")),
            endkey: Some(json!("u")),
            startkey_docid: Some("g2".into()),
            ..q()
        };
        assert!(!in_range(&query, &json!("u"), "g1"));
        assert!(in_range(&query, &json!("u"), "g2"));
        assert!(in_range(&query, &json!("u"), "g3"));
    }

    #[test]
    fn keys_collate_as_couchdb_does() {
        let query = ViewQuery {
            key: Some(json!("abc")),
            ..q()
        };
        assert!(in_range(&query, &json!("abc"), "x"));
        assert!(!in_range(&query, &json!("ABC"), "x"));
    }
}
