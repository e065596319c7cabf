//! Owns the PATCH deep merge of a request body into a stored group (contract §6.4, cases #30–#33).

use serde_json::{Map, Value};

/// PATCH deep merge (§6.4): objects merge recursively, request null removes the key at any depth,
/// {} in the request replaces a stored object with {}, arrays/scalars replace, unmentioned keys
/// untouched. Both sides are consumed: the result is made of their parts, nothing is copied.
pub fn patch_merge(stored: Value, patch: Value) -> Value {
    match (stored, patch) {
        (Value::Object(stored), Value::Object(patch)) => {
            Value::Object(merge_objects(stored, patch))
        }
        // Nothing to merge into: the request value wins, minus its null-valued keys.
        (_, patch) => without_nulls(patch),
    }
}

fn merge_objects(mut merged: Map<String, Value>, patch: Map<String, Value>) -> Map<String, Value> {
    for (key, value) in patch {
        match value {
            Value::Null => {
                merged.remove(&key);
            }
            // An empty object clears what was stored rather than merging nothing into it [exec].
            Value::Object(inner) if inner.is_empty() => {
                merged.insert(key, Value::Object(Map::new()));
            }
            Value::Object(inner) => match merged.get_mut(&key) {
                Some(Value::Object(old)) => {
                    let old = std::mem::take(old);
                    merged.insert(key, Value::Object(merge_objects(old, inner)));
                }
                _ => {
                    merged.insert(key, without_nulls(Value::Object(inner)));
                }
            },
            other => {
                merged.insert(key, other);
            }
        }
    }
    merged
}

/// A request object that lands where nothing mergeable was stored still loses its null-valued
/// keys, at any depth: null always means "absent" in a PATCH. Array elements are values, not
/// keys, so nulls inside arrays are kept.
fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn stored_group() -> Value {
        json!({
            "name": "G1",
            "endpoints": {"u1": {"type": "user", "weight": 1}},
            "music_on_hold": {"media_id": "m1"},
            "flags": ["a", "b"],
            "custom": {"deep": {"x": 1, "y": 2}}
        })
    }

    #[test]
    fn patching_flags_keeps_the_name() {
        // Case #30.
        let out = patch_merge(stored_group(), json!({"flags": ["f"]}));
        assert_eq!(out["name"], "G1");
        assert_eq!(out["flags"], json!(["f"]));
    }

    #[test]
    fn new_endpoint_is_added_next_to_existing_ones() {
        // Case #31.
        let out = patch_merge(
            stored_group(),
            json!({"endpoints": {"u2": {"type": "user"}}}),
        );
        assert_eq!(
            out["endpoints"],
            json!({"u1": {"type": "user", "weight": 1}, "u2": {"type": "user"}})
        );
    }

    #[test]
    fn null_removes_a_nested_key_and_a_top_level_key() {
        // Case #32.
        let out = patch_merge(
            stored_group(),
            json!({"endpoints": {"u1": null}, "flags": null}),
        );
        assert_eq!(out["endpoints"], json!({}));
        assert!(out.get("flags").is_none());
        assert_eq!(out["name"], "G1");
    }

    #[test]
    fn empty_object_clears_a_stored_object() {
        // Case #33.
        let out = patch_merge(stored_group(), json!({"endpoints": {}}));
        assert_eq!(out["endpoints"], json!({}));
    }

    #[test]
    fn empty_object_clears_at_any_depth() {
        let out = patch_merge(stored_group(), json!({"custom": {"deep": {}}}));
        assert_eq!(out["custom"], json!({"deep": {}}));
    }

    #[test]
    fn arrays_are_replaced_not_merged() {
        let out = patch_merge(stored_group(), json!({"flags": []}));
        assert_eq!(out["flags"], json!([]));
    }

    #[test]
    fn scalars_replace_objects_and_objects_replace_scalars() {
        let out = patch_merge(
            stored_group(),
            json!({"music_on_hold": "none", "name": {"a": 1}}),
        );
        assert_eq!(out["music_on_hold"], "none");
        assert_eq!(out["name"], json!({"a": 1}));
    }

    #[test]
    fn deep_keys_merge_without_touching_siblings() {
        let out = patch_merge(
            stored_group(),
            json!({"custom": {"deep": {"y": 3, "z": 4}}}),
        );
        assert_eq!(out["custom"], json!({"deep": {"x": 1, "y": 3, "z": 4}}));
    }

    #[test]
    fn nulls_inside_a_new_object_are_dropped_but_nulls_in_arrays_stay() {
        let out = patch_merge(
            json!({}),
            json!({"new": {"a": null, "b": [null, 1], "c": {"d": null}}}),
        );
        assert_eq!(out, json!({"new": {"b": [null, 1], "c": {}}}));
    }

    #[test]
    fn null_for_a_key_that_is_not_stored_is_harmless() {
        let out = patch_merge(json!({"name": "x"}), json!({"ghost": null}));
        assert_eq!(out, json!({"name": "x"}));
    }

    #[test]
    fn merged_keys_keep_their_stored_position_and_new_keys_come_last() {
        let out = patch_merge(json!({"a": 1, "b": 2}), json!({"c": 3, "a": 9}));
        assert_eq!(
            serde_json::to_string(&out).unwrap(),
            r#"{"a":9,"b":2,"c":3}"#
        );
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z]{0,4}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                // A small key alphabet so patches and stored docs overlap often.
                prop::collection::vec(("[a-d]", inner), 0..4)
                    .prop_map(|kvs| Value::Object(kvs.into_iter().collect())),
            ]
        })
    }

    fn arb_object() -> impl Strategy<Value = Value> {
        prop::collection::vec(("[a-d]", arb_json()), 0..5)
            .prop_map(|kvs| Value::Object(kvs.into_iter().collect()))
    }

    /// Every (path, value) where the patch sets something: non-object values and empty objects.
    fn set_leaves(
        patch: &Map<String, Value>,
        prefix: &mut Vec<String>,
        out: &mut Vec<(Vec<String>, Value)>,
    ) {
        for (k, v) in patch {
            prefix.push(k.clone());
            match v {
                Value::Object(inner) if !inner.is_empty() => set_leaves(inner, prefix, out),
                Value::Null => {}
                other => out.push((prefix.clone(), without_nulls(other.clone()))),
            }
            prefix.pop();
        }
    }

    fn null_paths(
        patch: &Map<String, Value>,
        prefix: &mut Vec<String>,
        out: &mut Vec<Vec<String>>,
    ) {
        for (k, v) in patch {
            prefix.push(k.clone());
            match v {
                Value::Null => out.push(prefix.clone()),
                Value::Object(inner) => null_paths(inner, prefix, out),
                _ => {}
            }
            prefix.pop();
        }
    }

    fn get<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
        path.iter().try_fold(value, |v, k| v.as_object()?.get(k))
    }

    proptest! {
        #[test]
        fn merging_an_empty_object_changes_nothing(stored in arb_object()) {
            prop_assert_eq!(patch_merge(stored.clone(), json!({})), stored);
        }

        #[test]
        fn keys_set_to_null_are_absent(stored in arb_object(), patch in arb_object()) {
            let out = patch_merge(stored.clone(), patch.clone());
            let mut paths = Vec::new();
            null_paths(patch.as_object().unwrap(), &mut Vec::new(), &mut paths);
            for path in paths {
                prop_assert!(get(&out, &path).is_none(), "{:?} still present in {}", path, out);
            }
        }

        #[test]
        fn every_non_null_patch_leaf_is_in_the_result(stored in arb_object(), patch in arb_object()) {
            let out = patch_merge(stored.clone(), patch.clone());
            let mut leaves = Vec::new();
            set_leaves(patch.as_object().unwrap(), &mut Vec::new(), &mut leaves);
            for (path, value) in leaves {
                prop_assert_eq!(get(&out, &path), Some(&value), "at {:?}", path);
            }
        }

        #[test]
        fn keys_the_patch_does_not_mention_are_untouched(stored in arb_object(), patch in arb_object()) {
            let out = patch_merge(stored.clone(), patch.clone());
            for (k, v) in stored.as_object().unwrap() {
                if !patch.as_object().unwrap().contains_key(k) {
                    prop_assert_eq!(out.get(k), Some(v));
                }
            }
        }

        #[test]
        fn applying_the_same_patch_twice_is_the_same_as_once(stored in arb_object(), patch in arb_object()) {
            let once = patch_merge(stored.clone(), patch.clone());
            prop_assert_eq!(patch_merge(once.clone(), patch.clone()), once);
        }
    }
}
