//! Resolving a document's conflict (issue 10): CouchDB keeps every leaf revision that concurrent
//! writes through different nodes made, and picks one as the winner by revision hash alone. The
//! leaves are merged here so that no acknowledged change is lost.
//!
//! The rule, per field, recursively inside objects (PATCH semantics: a key added, changed or
//! removed on one side):
//! - with the common ancestor, a field changed on one side only takes that side's value
//!   (removed stays removed); changed on both sides to different values, the later write wins;
//! - without the ancestor (compacted away), every key either side has is kept, and where both
//!   have a key with different values, the later write wins (a removal cannot be told from an
//!   addition then, so removals made concurrently may come back);
//! - "later" is the leaf with the greater `pvt_modified` (whole seconds, stamped by every
//!   save), then the greater revision (CouchDB's own tie-break);
//! - a hard delete on any leaf wins: the group was deleted, and an edit made meanwhile to it is
//!   moot.
//!
//! Leaves are merged in the order of that "later" rule, so the result does not depend on the
//! order they are given in, and merging a result again changes nothing.
use std::cmp::Ordering;

use serde_json::{Map, Value};

/// One leaf revision of a conflicted document.
#[derive(Debug, Clone, PartialEq)]
pub struct Leaf {
    pub rev: String,
    pub deleted: bool,
    /// The leaf's fields, `_id` and `_rev` excluded.
    pub fields: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// The fields of the merged revision.
    Merged(Map<String, Value>),
    /// A leaf deleted the document: it stays deleted.
    Deleted,
}

/// Merges every leaf against their common ancestor's fields, when CouchDB still has them.
pub fn resolve(ancestor: Option<&Map<String, Value>>, leaves: &[Leaf]) -> Resolution {
    if leaves.iter().any(|leaf| leaf.deleted) {
        return Resolution::Deleted;
    }
    let mut ordered: Vec<&Leaf> = leaves.iter().collect();
    ordered.sort_by(|a, b| later(a, b));
    let mut merged = match ordered.first() {
        Some(first) => first.fields.clone(),
        None => return Resolution::Merged(Map::new()),
    };
    for leaf in &ordered[1..] {
        merged = merge_maps(ancestor, &merged, &leaf.fields);
    }
    Resolution::Merged(merged)
}

/// Orders leaves from the earliest write to the latest.
fn later(a: &Leaf, b: &Leaf) -> Ordering {
    let modified = |leaf: &Leaf| leaf.fields.get("pvt_modified").and_then(Value::as_i64);
    modified(a)
        .cmp(&modified(b))
        .then_with(|| generation(&a.rev).cmp(&generation(&b.rev)))
        .then_with(|| a.rev.cmp(&b.rev))
}

fn generation(rev: &str) -> u64 {
    rev.split('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `earlier` and `later` merged against `base`: the later side wins where both changed a field.
fn merge_maps(
    base: Option<&Map<String, Value>>,
    earlier: &Map<String, Value>,
    later: &Map<String, Value>,
) -> Map<String, Value> {
    // Keys in the later side's order, then the earlier side's own.
    let keys = later
        .keys()
        .chain(earlier.keys().filter(|k| !later.contains_key(*k)));
    let mut out = Map::new();
    for key in keys {
        let base_value = base.map(|b| b.get(key));
        if let Some(value) = merge_field(base_value, earlier.get(key), later.get(key)) {
            out.insert(key.clone(), value);
        }
    }
    out
}

/// One field: `base` is `None` when there is no ancestor, `Some(None)` when the ancestor lacks
/// the field.
fn merge_field(
    base: Option<Option<&Value>>,
    earlier: Option<&Value>,
    later: Option<&Value>,
) -> Option<Value> {
    if earlier == later {
        return later.cloned();
    }
    match base {
        Some(base) if base == earlier => later.cloned(),
        Some(base) if base == later => earlier.cloned(),
        _ => match (earlier, later) {
            (Some(Value::Object(e)), Some(Value::Object(l))) => {
                let nested_base = match base {
                    Some(Some(Value::Object(b))) => Some(b),
                    // The ancestor had no object here: both sides added to it.
                    Some(_) => Some(&*EMPTY),
                    None => None,
                };
                Some(Value::Object(merge_maps(nested_base, e, l)))
            }
            // Without an ancestor a key only one side has is kept.
            (Some(only), None) | (None, Some(only)) if base.is_none() => Some(only.clone()),
            // Changed on both sides (or changed on one, removed on the other): the later wins.
            _ => later.cloned(),
        },
    }
}

static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn leaf(rev: &str, fields: Value) -> Leaf {
        Leaf {
            rev: rev.into(),
            deleted: false,
            fields: map(fields),
        }
    }

    fn merged(ancestor: Option<Value>, leaves: &[Leaf]) -> Value {
        match resolve(ancestor.map(map).as_ref(), leaves) {
            Resolution::Merged(m) => Value::Object(m),
            Resolution::Deleted => Value::Null,
        }
    }

    #[test]
    fn endpoints_added_on_each_side_are_both_kept() {
        let base = json!({"name": "G", "endpoints": {"u1": {"type": "user"}}, "pvt_modified": 1});
        let a = leaf(
            "2-a",
            json!({"name": "G", "endpoints": {"u1": {"type": "user"}, "u2": {"type": "user"}}, "pvt_modified": 2}),
        );
        let b = leaf(
            "2-b",
            json!({"name": "G", "endpoints": {"u1": {"type": "user"}, "u3": {"type": "user"}}, "pvt_modified": 2}),
        );
        let out = merged(Some(base), &[a, b]);
        assert_eq!(
            out["endpoints"],
            json!({"u1": {"type": "user"}, "u2": {"type": "user"}, "u3": {"type": "user"}})
        );
    }

    #[test]
    fn a_removal_on_one_side_and_a_change_on_the_other_both_hold() {
        let base = json!({"name": "G", "flags": ["x"], "music_on_hold": {}, "pvt_modified": 1});
        let a = leaf(
            "2-a",
            json!({"name": "G", "music_on_hold": {}, "pvt_modified": 2}),
        );
        let b = leaf(
            "2-b",
            json!({"name": "H", "flags": ["x"], "music_on_hold": {}, "pvt_modified": 2}),
        );
        let out = merged(Some(base), &[a, b]);
        assert_eq!(out.get("flags"), None, "the removal holds");
        assert_eq!(out["name"], "H", "the change holds");
    }

    #[test]
    fn both_sides_changing_a_field_keep_the_later_write() {
        let base = json!({"name": "G", "pvt_modified": 1});
        let early = leaf("2-zzz", json!({"name": "early", "pvt_modified": 5}));
        let late = leaf("2-aaa", json!({"name": "late", "pvt_modified": 6}));
        assert_eq!(
            merged(Some(base.clone()), &[late.clone(), early.clone()])["name"],
            "late"
        );
        // Same second: the greater revision, as CouchDB picks its winner.
        let tie_a = leaf("2-aaa", json!({"name": "a", "pvt_modified": 5}));
        let tie_b = leaf("2-bbb", json!({"name": "b", "pvt_modified": 5}));
        assert_eq!(merged(Some(base), &[tie_b, tie_a])["name"], "b");
    }

    #[test]
    fn without_the_ancestor_every_key_is_kept_and_the_later_value_wins() {
        let a = leaf(
            "3-a",
            json!({"name": "a", "endpoints": {"u1": {}}, "x": 1, "pvt_modified": 1}),
        );
        let b = leaf(
            "3-b",
            json!({"name": "b", "endpoints": {"u2": {}}, "y": 2, "pvt_modified": 2}),
        );
        let out = merged(None, &[a, b]);
        assert_eq!(out["name"], "b");
        assert_eq!(out["endpoints"], json!({"u2": {}, "u1": {}}));
        assert_eq!((out["x"].clone(), out["y"].clone()), (json!(1), json!(2)));
    }

    #[test]
    fn a_hard_delete_wins() {
        let live = leaf("2-a", json!({"name": "G"}));
        let gone = Leaf {
            rev: "2-b".into(),
            deleted: true,
            fields: Map::new(),
        };
        assert_eq!(resolve(None, &[live, gone]), Resolution::Deleted);
    }

    #[test]
    fn three_leaves_merge_into_one() {
        let base = json!({"endpoints": {}, "pvt_modified": 1});
        let leaves: Vec<Leaf> = (1..=3)
            .map(|i| {
                leaf(
                    &format!("2-{i}"),
                    json!({"endpoints": {format!("u{i}"): {"type": "user"}}, "pvt_modified": 2}),
                )
            })
            .collect();
        let out = merged(Some(base), &leaves);
        assert_eq!(out["endpoints"].as_object().unwrap().len(), 3);
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::from),
            "[a-z]{0,3}".prop_map(Value::from)
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop::collection::btree_map("[a-e]", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
        })
    }

    fn arb_doc() -> impl Strategy<Value = Map<String, Value>> {
        prop::collection::btree_map("[a-e]", arb_value(), 0..5)
            .prop_map(|m| m.into_iter().collect())
    }

    proptest! {
        #[test]
        fn merging_is_deterministic(base in arb_doc(), a in arb_doc(), b in arb_doc(), c in arb_doc()) {
            let leaves = [leaf_of("2-a", a), leaf_of("2-b", b), leaf_of("2-c", c)];
            let mut reversed = leaves.clone();
            reversed.reverse();
            prop_assert_eq!(resolve(Some(&base), &leaves), resolve(Some(&base), &reversed));
            prop_assert_eq!(resolve(None, &leaves), resolve(None, &reversed));
        }

        #[test]
        fn merging_is_idempotent(base in arb_doc(), a in arb_doc(), b in arb_doc()) {
            let leaves = [leaf_of("2-a", a), leaf_of("2-b", b)];
            let Resolution::Merged(once) = resolve(Some(&base), &leaves) else { unreachable!() };
            let again = [leaf_of("3-x", once.clone()), leaf_of("3-x", once.clone())];
            prop_assert_eq!(resolve(Some(&base), &again), Resolution::Merged(once));
        }

        #[test]
        fn a_key_only_one_side_changed_is_never_dropped(
            base in arb_doc(),
            ours in ("[f-h]", arb_value()),
            theirs in ("[i-k]", arb_value()),
        ) {
            let mut a = base.clone();
            a.insert(ours.0.clone(), ours.1.clone());
            let mut b = base.clone();
            b.insert(theirs.0.clone(), theirs.1.clone());
            let leaves = [leaf_of("2-a", a), leaf_of("2-b", b)];
            for ancestor in [Some(&base), None] {
                let Resolution::Merged(out) = resolve(ancestor, &leaves) else { unreachable!() };
                prop_assert_eq!(out.get(&ours.0), Some(&ours.1));
                prop_assert_eq!(out.get(&theirs.0), Some(&theirs.1));
                for (k, v) in &base {
                    prop_assert_eq!(out.get(k), Some(v), "an untouched key stays");
                }
            }
        }
    }

    fn leaf_of(rev: &str, fields: Map<String, Value>) -> Leaf {
        Leaf {
            rev: rev.into(),
            deleted: false,
            fields,
        }
    }
}
