//! What points at a group (`../shared/kazoo/membership.md` §7): no view indexes it, so every
//! live callflow's flow is walked for the six ways a node names a group, a callflow's own
//! `group_id` (SmartPBX), and the indirect ways (a `callflow` node running one that does, a
//! pickup feature code reaching an extension whose ring group starts with the group). Also the
//! `ring_group` node of a callflow that rings a group, for `domain::membership::ringing`.
use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;

/// One place a callflow names the group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reference {
    /// The node's module (`None` for the callflow's own `group_id`).
    pub module: Option<String>,
    /// The branch keys from the flow's root to the node (`None` for `group_id`).
    pub path: Option<Vec<String>>,
    /// Where in the node (or the callflow) the id is: `group_id`, `data.id`,
    /// `data.endpoints.<i>`, `data.group_id`, `data.approved_group_id`.
    pub field: String,
    /// The node has `data.skip_module: true`: it holds the reference but never runs.
    pub skipped: bool,
    /// For an indirect reference: the callflow this node leads to (`callflow` module, or the
    /// extension a `group_pickup_feature` would pick up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// A callflow, as an answer names it, with its references.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallflowRefs {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<Value>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub cf_type: Option<Value>,
    pub numbers: Vec<Value>,
    pub patterns: Vec<Value>,
    pub references: Vec<Reference>,
    /// Indirect only: `callflow` (a node runs a callflow that references the group) or
    /// `group_pickup_feature` (a pickup feature code reaches an extension whose first ring
    /// group member is the group).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
}

/// What one callflow holds for a references report: its direct references to the group, the
/// callflows its `callflow` nodes run, its `group_pickup_feature` nodes, and whether its root
/// is a ring or page group whose first member is the group (a pickup feature's target).
#[derive(Debug, Clone, PartialEq)]
pub struct CallflowScan {
    pub summary: CallflowRefs,
    pub runs: Vec<Reference>,
    pub pickup_features: Vec<Reference>,
    pub pickup_target: bool,
}

impl CallflowScan {
    /// Whether the report needs to keep it.
    pub fn matters(&self) -> bool {
        !self.summary.references.is_empty()
            || !self.runs.is_empty()
            || !self.pickup_features.is_empty()
            || self.pickup_target
    }
}

fn list(v: Option<&Value>) -> Vec<Value> {
    v.and_then(Value::as_array).cloned().unwrap_or_default()
}

/// An endpoint entry of a node naming the group: `endpoint_type` `group`, id `_id` else `id`.
fn names_group(entry: &Value, group: &str) -> bool {
    let id = entry
        .get("_id")
        .filter(|v| !v.is_null())
        .or_else(|| entry.get("id"));
    entry.get("endpoint_type").and_then(Value::as_str) == Some("group")
        && id.and_then(Value::as_str) == Some(group)
}

/// Reads a callflow document for the references to `group` (§7 rules 1-6, and what the
/// indirect ones need).
pub fn scan_callflow(group: &str, id: &str, doc: &Value) -> CallflowScan {
    let mut scan = CallflowScan {
        summary: CallflowRefs {
            id: id.to_owned(),
            name: doc.get("name").cloned(),
            cf_type: doc.get("type").cloned(),
            numbers: list(doc.get("numbers")),
            patterns: list(doc.get("patterns")),
            references: Vec::new(),
            kind: None,
        },
        runs: Vec::new(),
        pickup_features: Vec::new(),
        pickup_target: false,
    };
    if doc.get("group_id").and_then(Value::as_str) == Some(group) {
        scan.summary.references.push(Reference {
            module: None,
            path: None,
            field: "group_id".into(),
            skipped: false,
            target: None,
        });
    }
    if let Some(flow) = doc.get("flow") {
        let root_first = flow
            .pointer("/data/endpoints/0")
            .is_some_and(|first| names_group(first, group));
        let root_module = flow.get("module").and_then(Value::as_str);
        scan.pickup_target = root_first && matches!(root_module, Some("ring_group" | "page_group"));
        let mut path = Vec::new();
        walk(group, flow, &mut path, &mut scan, 0);
    }
    scan
}

/// The deepest flow walked: a document's JSON nests no deeper (the parser's own limit).
const MAX_FLOW_DEPTH: usize = 128;

fn walk(group: &str, node: &Value, path: &mut Vec<String>, scan: &mut CallflowScan, depth: usize) {
    let Some(fields) = node.as_object() else {
        return;
    };
    if depth > MAX_FLOW_DEPTH {
        return;
    }
    let module = fields.get("module").and_then(Value::as_str).unwrap_or("");
    let data = fields.get("data").cloned().unwrap_or(Value::Null);
    let skipped = data.get("skip_module") == Some(&Value::Bool(true));
    let reference = |field: String, target: Option<String>| Reference {
        module: Some(module.to_owned()),
        path: Some(path.clone()),
        field,
        skipped,
        target,
    };
    let is = |key: &str| data.get(key).and_then(Value::as_str) == Some(group);
    let mut found = Vec::new();
    if matches!(module, "ring_group" | "page_group" | "group") {
        for (i, entry) in list(data.get("endpoints")).iter().enumerate() {
            if names_group(entry, group) {
                found.push(format!("data.endpoints.{i}"));
            }
        }
    }
    if module == "group" && is("id") {
        found.push("data.id".into());
    }
    if matches!(module, "group_pickup" | "intercept" | "eavesdrop_feature") && is("group_id") {
        found.push("data.group_id".into());
    }
    if matches!(
        module,
        "group_pickup" | "intercept" | "eavesdrop_feature" | "eavesdrop" | "intercept_feature"
    ) && is("approved_group_id")
    {
        found.push("data.approved_group_id".into());
    }
    for field in found {
        scan.summary.references.push(reference(field, None));
    }
    if module == "callflow" {
        if let Some(target) = data.get("id").and_then(Value::as_str) {
            scan.runs
                .push(reference("data.id".into(), Some(target.to_owned())));
        }
    }
    let extension = match data.get("type") {
        None | Some(Value::Null) => true,
        Some(t) => t.as_str() == Some("extension"),
    };
    if module == "group_pickup_feature" && extension {
        scan.pickup_features
            .push(reference("data.type".into(), None));
    }
    if let Some(Value::Object(children)) = fields.get("children") {
        for (key, child) in children {
            path.push(key.clone());
            walk(group, child, path, scan, depth + 1);
            path.pop();
        }
    }
}

/// The indirect references among the callflows that matter (§7 a, b): those whose `callflow`
/// nodes run a callflow that references the group, directly or through other such nodes; and
/// those with a `group_pickup_feature` node when some callflow is a pickup target (a feature
/// code reaches whichever extension is dialled after it).
pub fn indirect(scans: &[CallflowScan]) -> Vec<CallflowRefs> {
    let mut referencing: HashSet<&str> = scans
        .iter()
        .filter(|s| !s.summary.references.is_empty())
        .map(|s| s.summary.id.as_str())
        .collect();
    let mut via: HashMap<&str, Vec<Reference>> = HashMap::new();
    // To a fixed point: every round adds at least one callflow, or ends.
    loop {
        let mut added = false;
        for scan in scans {
            let id = scan.summary.id.as_str();
            if referencing.contains(id) {
                continue;
            }
            let leads: Vec<Reference> = scan
                .runs
                .iter()
                .filter(|r| r.target.as_deref().is_some_and(|t| referencing.contains(t)))
                .cloned()
                .collect();
            if !leads.is_empty() {
                via.insert(id, leads);
                referencing.insert(id);
                added = true;
            }
        }
        if !added {
            break;
        }
    }
    let targets: Vec<&str> = scans
        .iter()
        .filter(|s| s.pickup_target)
        .map(|s| s.summary.id.as_str())
        .collect();
    let mut out = Vec::new();
    for scan in scans {
        if let Some(refs) = via.remove(scan.summary.id.as_str()) {
            out.push(CallflowRefs {
                references: refs,
                kind: Some("callflow"),
                ..scan.summary.clone()
            });
        }
        if !scan.pickup_features.is_empty() && !targets.is_empty() {
            let references = scan
                .pickup_features
                .iter()
                .flat_map(|r| {
                    targets.iter().map(|t| Reference {
                        target: Some((*t).to_owned()),
                        ..r.clone()
                    })
                })
                .collect();
            out.push(CallflowRefs {
                references,
                kind: Some("group_pickup_feature"),
                ..scan.summary.clone()
            });
        }
    }
    out
}

/// The first node of a callflow's flow, in walk order, that `ringing` can apply for `group`:
/// a `ring_group` (or a `group` node with `data.endpoints`, which behaves the same) whose
/// members name the group, else, for a callflow whose `group_id` is the group (SmartPBX), its
/// first such node whatever its members. Returns the node's path and `data`.
pub fn ring_group_node(group: &str, doc: &Value) -> Option<(Vec<String>, Value)> {
    let mut nodes = Vec::new();
    if let Some(flow) = doc.get("flow") {
        collect_ring_nodes(flow, &mut Vec::new(), &mut nodes, 0);
    }
    let naming = nodes.iter().find(|(_, data)| {
        list(data.get("endpoints"))
            .iter()
            .any(|e| names_group(e, group))
    });
    if let Some(found) = naming {
        return Some(found.clone());
    }
    let linked = doc.get("group_id").and_then(Value::as_str) == Some(group);
    linked.then(|| nodes.into_iter().next()).flatten()
}

fn collect_ring_nodes(
    node: &Value,
    path: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, Value)>,
    depth: usize,
) {
    let Some(fields) = node.as_object() else {
        return;
    };
    if depth > MAX_FLOW_DEPTH {
        return;
    }
    let data = fields.get("data").cloned().unwrap_or(Value::Null);
    let has_members = data
        .get("endpoints")
        .and_then(Value::as_array)
        .is_some_and(|e| !e.is_empty());
    match fields.get("module").and_then(Value::as_str) {
        Some("ring_group") => out.push((path.clone(), data)),
        Some("group") if has_members => out.push((path.clone(), data)),
        _ => {}
    }
    if let Some(Value::Object(children)) = fields.get("children") {
        for (key, child) in children {
            path.push(key.clone());
            collect_ring_nodes(child, path, out, depth + 1);
            path.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn callflow_references_follow_the_six_rules() {
        let cf = json!({
            "group_id": "g", "name": "Sales", "numbers": ["200"],
            "flow": {"module": "ring_group", "data": {"endpoints": [
                {"id": "u1", "endpoint_type": "user"}, {"id": "g", "endpoint_type": "group"}]},
             "children": {
                "_": {"module": "group", "data": {"id": "g", "skip_module": true}, "children": {
                    "_": {"module": "group_pickup", "data": {"approved_group_id": "g"}}}},
                "1": {"module": "eavesdrop", "data": {"approved_group_id": "g", "group_id": "g"}},
                "2": {"module": "page_group", "data": {"endpoints": [{"_id": "g", "id": "x",
                      "endpoint_type": "group"}]}}
             }}
        });
        let scan = scan_callflow("g", "c1", &cf);
        type Row<'a> = (Option<&'a str>, Option<Vec<String>>, &'a str, bool);
        let refs: Vec<Row> = scan
            .summary
            .references
            .iter()
            .map(|r| {
                (
                    r.module.as_deref(),
                    r.path.clone(),
                    r.field.as_str(),
                    r.skipped,
                )
            })
            .collect();
        let p = |keys: &[&str]| Some(keys.iter().map(|k| k.to_string()).collect::<Vec<_>>());
        assert_eq!(
            refs,
            [
                (None, None, "group_id", false),
                (Some("ring_group"), p(&[]), "data.endpoints.1", false),
                (Some("group"), p(&["_"]), "data.id", true),
                (
                    Some("group_pickup"),
                    p(&["_", "_"]),
                    "data.approved_group_id",
                    false
                ),
                (
                    Some("eavesdrop"),
                    p(&["1"]),
                    "data.approved_group_id",
                    false
                ),
                (Some("page_group"), p(&["2"]), "data.endpoints.0", false),
            ]
        );
        assert!(!scan.pickup_target, "the first member is a user");
    }

    #[test]
    fn indirect_references_through_callflow_nodes_and_pickup_features() {
        let base = scan_callflow(
            "g",
            "base",
            &json!({"flow": {"module": "ring_group",
                "data": {"endpoints": [{"id": "g", "endpoint_type": "group"}]}}}),
        );
        assert!(base.pickup_target);
        let user_group = scan_callflow(
            "g",
            "ug",
            &json!({"flow": {"module": "callflow", "data": {"id": "base"}}}),
        );
        let outer = scan_callflow(
            "g",
            "outer",
            &json!({"flow": {"module": "callflow", "data": {"id": "ug"}}}),
        );
        let feature = scan_callflow(
            "g",
            "pickup",
            &json!({"flow": {"module": "group_pickup_feature", "data": {}}}),
        );
        let unrelated = scan_callflow(
            "g",
            "other",
            &json!({"flow": {"module": "callflow", "data": {"id": "nothing"}}}),
        );
        let found = indirect(&[base, user_group, outer, feature, unrelated]);
        let ids: Vec<(&str, Option<&str>)> =
            found.iter().map(|c| (c.id.as_str(), c.kind)).collect();
        assert_eq!(
            ids,
            [
                ("ug", Some("callflow")),
                ("outer", Some("callflow")),
                ("pickup", Some("group_pickup_feature")),
            ]
        );
        assert_eq!(found[2].references[0].target.as_deref(), Some("base"));
    }

    #[test]
    fn the_ring_group_node_of_a_callflow() {
        let cf = json!({"flow": {"module": "ring_group", "data": {"endpoints": [{"id": "u"}]},
            "children": {"_": {"module": "ring_group", "data": {"endpoints": [
                {"id": "g", "endpoint_type": "group"}]}}}}});
        let (path, _) = ring_group_node("g", &cf).unwrap();
        assert_eq!(path, ["_"]);
        // SmartPBX: linked by group_id, its ring group lists users only.
        let cf = json!({"group_id": "g", "flow": {"module": "ring_group",
            "data": {"endpoints": [{"id": "u", "endpoint_type": "user"}]}}});
        assert_eq!(ring_group_node("g", &cf).unwrap().0, Vec::<String>::new());
        assert!(ring_group_node("other", &cf).is_none());
    }
}
