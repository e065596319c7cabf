//! Group membership as Kazoo 4.3 uses it at call time (`../shared/kazoo/membership.md`): who a
//! `ring_group` node would ring and why a device would not (§3), and what a group's members'
//! documents say and which of them are gone (§1, §3.7); what points at a group is in
//! `references`. Pure: the documents come in as [`Facts`] (read by `store::membership`), the
//! answers go out as serialisable reports.
//!
//! Kazoo's surprises are followed on purpose and said in the answers' `notes`: a user member's
//! document is never read (a deleted or disabled user's devices ring), a soft-deleted nested
//! group still expands, de-duplication is by device, delay and timeout together, a `single`
//! strategy keeps only weighted entries of a group, and nothing guards against a cycle of
//! nested groups (reported here, never followed).
use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_json::{Map, Value};

/// The most entries (members, devices of users, members of nested groups) one expansion
/// resolves; past it the answer says `truncated`. Kazoo has no bound (§3.3).
pub const MAX_ENTRIES: usize = 5_000;

/// Document types `kz_endpoint:build/3` accepts as an endpoint (§3.6).
const ENDPOINT_TYPES: [&str; 5] = ["device", "user", "account", "click2call", "conference"];

// --- What the documents say ---

/// Whether a document is there: `Missing` covers a hard-deleted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DocState {
    Found,
    Missing,
    SoftDeleted,
}

/// The kind of leg a device builds, from `device_type` (§1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointKind {
    Sip,
    Mobile,
    Skype,
    Push,
    /// Builds no leg.
    Unknown,
}

/// `call_forward`, as far as the legs depend on it (§3.6).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallForward {
    pub enabled: Option<bool>,
    pub number: Option<String>,
    pub direct_calls_only: Option<bool>,
    pub substitute: Option<bool>,
}

impl CallForward {
    fn read(doc: &Map<String, Value>) -> Self {
        let Some(Value::Object(cf)) = doc.get("call_forward") else {
            return Self::default();
        };
        Self {
            enabled: cf.get("enabled").and_then(kz_bool),
            number: cf.get("number").and_then(Value::as_str).map(str::to_owned),
            direct_calls_only: cf.get("direct_calls_only").and_then(kz_bool),
            substitute: cf.get("substitute").and_then(kz_bool),
        }
    }

    /// `self` with what `over` sets laid over it.
    fn merged(mut self, over: &CallForward) -> Self {
        self.enabled = over.enabled.or(self.enabled);
        self.number = over.number.clone().or(self.number);
        self.direct_calls_only = over.direct_calls_only.or(self.direct_calls_only);
        self.substitute = over.substitute.or(self.substitute);
        self
    }
}

/// One document as the rules read it, whatever its type (a member id may name any document).
#[derive(Debug, Clone, PartialEq)]
pub struct DocFacts {
    pub state: DocState,
    pub pvt_type: Option<String>,
    /// `name`, or a user's `first_name last_name`.
    pub name: Option<String>,
    /// False only when `enabled` is false (`kz_json:is_false`).
    pub enabled: bool,
    pub do_not_disturb: bool,
    pub owner_id: Option<String>,
    /// The keys of `hotdesk.users`: when there are any, they own the device instead.
    pub hotdesk_users: Vec<String>,
    pub device_type: Option<Value>,
    pub kind: EndpointKind,
    pub call_forward: CallForward,
    /// A group's `endpoints`, in stored order.
    pub endpoints: Vec<(String, Value)>,
}

/// `kz_term:is_true` / `is_false` on a JSON value.
fn kz_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s == "true" => Some(true),
        Value::String(s) if s == "false" => Some(false),
        _ => None,
    }
}

fn is_true(v: Option<&Value>) -> bool {
    v.and_then(kz_bool) == Some(true)
}

/// `kz_json:get_ne_value`: present and not null, `""`, `[]` or `{}`.
fn non_empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    }
}

/// `kz_endpoint:get_endpoint_type/1`: the first of `endpoint_type`, `device_type` that is
/// defined, converted; else guessed from the `mobile`, `sip`, `skype` sub-objects; else unknown.
fn endpoint_kind(doc: &Map<String, Value>) -> EndpointKind {
    let named = doc
        .get("endpoint_type")
        .filter(|v| !v.is_null())
        .or_else(|| doc.get("device_type").filter(|v| !v.is_null()));
    if let Some(Value::String(t)) = named {
        match t.as_str() {
            t if t.starts_with("sip_") => return EndpointKind::Sip,
            "smartphone" | "softphone" | "cellphone" | "landline" | "fax" => {
                return EndpointKind::Sip
            }
            "skype" => return EndpointKind::Skype,
            "mobile" => return EndpointKind::Mobile,
            "push" => return EndpointKind::Push,
            _ => {}
        }
    }
    if non_empty(doc.get("mobile")) {
        EndpointKind::Mobile
    } else if non_empty(doc.get("sip")) {
        EndpointKind::Sip
    } else if non_empty(doc.get("skype")) {
        EndpointKind::Skype
    } else {
        EndpointKind::Unknown
    }
}

impl DocFacts {
    /// A document that is not there.
    pub fn missing() -> Self {
        Self {
            state: DocState::Missing,
            pvt_type: None,
            name: None,
            enabled: true,
            do_not_disturb: false,
            owner_id: None,
            hotdesk_users: Vec::new(),
            device_type: None,
            kind: EndpointKind::Unknown,
            call_forward: CallForward::default(),
            endpoints: Vec::new(),
        }
    }

    /// What a stored document says (`None`: not there).
    pub fn read(doc: Option<&Value>) -> Self {
        let Some(Value::Object(doc)) = doc else {
            return Self::missing();
        };
        let deleted = is_true(doc.get("pvt_deleted")) || is_true(doc.get("_deleted"));
        let pvt_type = doc
            .get("pvt_type")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let text = |k: &str| doc.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
        let name = match (text("name"), text("first_name"), text("last_name")) {
            (Some(name), _, _) => Some(name.to_owned()),
            (None, None, None) => None,
            (None, first, last) => Some(
                [first, last]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        };
        let hotdesk_users = doc
            .get("hotdesk")
            .and_then(|h| h.get("users"))
            .and_then(Value::as_object)
            .map(|users| users.keys().cloned().collect())
            .unwrap_or_default();
        let endpoints = match doc.get("endpoints") {
            Some(Value::Object(e)) => e.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            _ => Vec::new(),
        };
        Self {
            state: if deleted {
                DocState::SoftDeleted
            } else {
                DocState::Found
            },
            pvt_type,
            name,
            enabled: doc.get("enabled").and_then(kz_bool) != Some(false),
            do_not_disturb: is_true(doc.get("do_not_disturb").and_then(|d| d.get("enabled"))),
            owner_id: text("owner_id").map(str::to_owned),
            hotdesk_users,
            device_type: doc.get("device_type").cloned(),
            kind: endpoint_kind(doc),
            call_forward: CallForward::read(doc),
            endpoints,
        }
    }

    /// Who owns the document: its hotdesk users when it has any, else `owner_id`
    /// (`attributes/owned`, and the owner the endpoint builder merges).
    pub fn owners(&self) -> Vec<String> {
        if self.hotdesk_users.is_empty() {
            self.owner_id.iter().cloned().collect()
        } else {
            self.hotdesk_users.clone()
        }
    }

    fn is(&self, pvt_type: &str) -> bool {
        self.pvt_type.as_deref() == Some(pvt_type)
    }
}

/// The documents an answer needs, by id, and the devices `attributes/owned` gives each user.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub docs: HashMap<String, DocFacts>,
    /// User id to device ids, in device-id order (the view's rows for `[user, "device"]`).
    pub owned: HashMap<String, Vec<String>>,
    /// The account document: its `do_not_disturb` and `call_forward` apply to every device.
    pub account: Option<DocFacts>,
}

impl Facts {
    pub fn doc(&self, id: &str) -> DocFacts {
        self.docs.get(id).cloned().unwrap_or_else(DocFacts::missing)
    }

    fn owned_devices(&self, user: &str) -> &[String] {
        self.owned.get(user).map_or(&[], Vec::as_slice)
    }
}

// --- Members of a ring group (§3.1, §3.2) ---

/// `data.strategy` of a `ring_group` node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    Simultaneous,
    Single,
    WeightedRandom,
    /// Any other string: the module crashes at ordering time.
    Other(String),
}

impl Strategy {
    pub fn read(v: Option<&Value>) -> Self {
        match v {
            None | Some(Value::Null) => Strategy::Simultaneous,
            Some(Value::String(s)) => match s.as_str() {
                "simultaneous" => Strategy::Simultaneous,
                "single" => Strategy::Single,
                "weighted_random" => Strategy::WeightedRandom,
                other => Strategy::Other(other.to_owned()),
            },
            Some(other) => Strategy::Other(other.to_string()),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Strategy::Simultaneous => "simultaneous",
            Strategy::Single => "single",
            Strategy::WeightedRandom => "weighted_random",
            Strategy::Other(s) => s,
        }
    }
}

/// A member's `endpoint_type` (default `device`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberType {
    Device,
    User,
    Group,
    /// No clause matches it: the module crashes.
    Other(Value),
}

impl MemberType {
    fn read(v: Option<&Value>) -> Self {
        match v {
            None | Some(Value::Null) => MemberType::Device,
            Some(Value::String(s)) if s == "device" => MemberType::Device,
            Some(Value::String(s)) if s == "user" => MemberType::User,
            Some(Value::String(s)) if s == "group" => MemberType::Group,
            Some(other) => MemberType::Other(other.clone()),
        }
    }

    fn as_json(&self) -> Value {
        match self {
            MemberType::Device => Value::from("device"),
            MemberType::User => Value::from("user"),
            MemberType::Group => Value::from("group"),
            MemberType::Other(v) => v.clone(),
        }
    }
}

/// An integer as `kz_json:get_integer_value` reads one: a number (truncated) or a numeric
/// string; anything else is the default.
fn integer(v: Option<&Value>, default: i64) -> i64 {
    match v {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f.trunc() as i64))
            .unwrap_or(default),
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .ok()
            .or_else(|| s.trim().parse::<f64>().ok().map(|f| f.trunc() as i64))
            .unwrap_or(default),
        _ => default,
    }
}

/// One member of a `ring_group` node, read as `resolve_endpoint_id/4` reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// `_id`, else `id`.
    pub id: String,
    pub endpoint_type: MemberType,
    /// Default 0.
    pub delay: i64,
    /// Default 20.
    pub timeout: i64,
    /// Clamped to 1..100, default 20.
    pub weight: i64,
    /// Gregorian seconds; the member is inactive unless it is before now (default 0).
    pub disable_until: i64,
    /// The member as stored: a nested group's members are copies of it (§3.3).
    json: Map<String, Value>,
}

impl Member {
    pub fn read(json: Map<String, Value>) -> Self {
        let id = ["_id", "id"]
            .iter()
            .find_map(|k| json.get(*k).filter(|v| !v.is_null()))
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_default();
        Self {
            id,
            endpoint_type: MemberType::read(json.get("endpoint_type")),
            delay: integer(json.get("delay"), 0),
            timeout: integer(json.get("timeout"), 20),
            weight: integer(json.get("weight"), 20).clamp(1, 100),
            disable_until: integer(json.get("disable_until"), 0),
            json,
        }
    }

    /// The member a ring group gets for a group alone: `{id, endpoint_type: "group"}`.
    pub fn group(id: &str) -> Self {
        let mut json = Map::new();
        json.insert("id".into(), Value::from(id));
        json.insert("endpoint_type".into(), Value::from("group"));
        Self::read(json)
    }

    fn key(&self) -> (String, i64, i64) {
        (self.id.clone(), self.delay, self.timeout)
    }
}

/// A group's entry left out when it is expanded, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dropped {
    pub id: String,
    pub reason: &'static str,
}

/// The members a group member expands to (`get_group_members/5`): each is the parent member
/// with `endpoint_type`, `id`, `delay` and `timeout` taken from the group's entry where it sets
/// them (an entry without `type` stays a group) and the parent's weight. `single` keeps only
/// entries with a weight, ascending, one per weight (the later in stored order); the other
/// strategies take every entry, in reverse stored order.
pub fn group_members(
    parent: &Member,
    endpoints: &[(String, Value)],
    strategy: &Strategy,
) -> (Vec<Member>, Vec<Dropped>) {
    let sub = |key: &str, entry: &Value| {
        let mut json = parent.json.clone();
        if let Some(t) = entry.get("type").filter(|t| !t.is_null()) {
            json.insert("endpoint_type".into(), t.clone());
        }
        json.insert("id".into(), Value::from(key));
        let delay = entry.get("delay").filter(|d| !d.is_null());
        json.insert(
            "delay".into(),
            delay.cloned().unwrap_or(parent.delay.into()),
        );
        let timeout = entry.get("timeout").filter(|t| !t.is_null());
        json.insert(
            "timeout".into(),
            timeout.cloned().unwrap_or(parent.timeout.into()),
        );
        json.insert("weight".into(), Value::from(parent.weight));
        Member::read(json)
    };
    let mut dropped = Vec::new();
    if *strategy != Strategy::Single {
        let members = endpoints.iter().rev().map(|(k, e)| sub(k, e)).collect();
        return (members, dropped);
    }
    // orddict:store by clamped weight: a later entry of the same weight replaces the earlier.
    let mut by_weight: Vec<(i64, &str, &Value)> = Vec::new();
    for (key, entry) in endpoints {
        let Some(weight) = entry.get("weight").filter(|w| !w.is_null()) else {
            dropped.push(Dropped {
                id: key.clone(),
                reason: "no_weight",
            });
            continue;
        };
        let weight = integer(Some(weight), 20).clamp(1, 100);
        match by_weight.iter_mut().find(|(w, _, _)| *w == weight) {
            Some(slot) => {
                dropped.push(Dropped {
                    id: slot.1.to_owned(),
                    reason: "same_weight",
                });
                *slot = (weight, key, entry);
            }
            None => by_weight.push((weight, key, entry)),
        }
    }
    by_weight.sort_by_key(|(w, _, _)| *w);
    let members = by_weight.iter().map(|(_, k, e)| sub(k, e)).collect();
    (members, dropped)
}

// --- Who would ring (§3.2 - §3.7) ---

/// What a document says, as an answer shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocView {
    pub state: DocState,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub pvt_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hotdesk_users: Vec<String>,
}

impl DocView {
    pub fn of(doc: &DocFacts) -> Self {
        let found = doc.state != DocState::Missing;
        Self {
            state: doc.state,
            pvt_type: doc.pvt_type.clone(),
            name: doc.name.clone(),
            enabled: found.then_some(doc.enabled),
            owner_id: doc.owner_id.clone(),
            hotdesk_users: doc.hotdesk_users.clone(),
        }
    }
}

/// Whether a device would ring when a ring group reaches it, and if not why (§3.6), in the
/// order Kazoo checks: `duplicate` (resolved again with the same delay and timeout by a later
/// member), `not_found`, `not_device_nor_user`, `endpoint_deleted`, `endpoint_disabled`,
/// `do_not_disturb` (`on` says where it is set), `unknown_endpoint_type` (no leg to build).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub rings: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub do_not_disturb: Vec<&'static str>,
    /// The legs it builds: `call_forward` and/or its kind (`sip`, `mobile`, `skype`, `push`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub legs: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<EndpointKind>,
}

impl Verdict {
    fn silent(reason: &'static str) -> Self {
        Self {
            rings: false,
            reason: Some(reason),
            do_not_disturb: Vec::new(),
            legs: Vec::new(),
            kind: None,
        }
    }
}

fn kind_name(kind: EndpointKind) -> Option<&'static str> {
    match kind {
        EndpointKind::Sip => Some("sip"),
        EndpointKind::Mobile => Some("mobile"),
        EndpointKind::Skype => Some("skype"),
        EndpointKind::Push => Some("push"),
        EndpointKind::Unknown => None,
    }
}

/// `kz_endpoint:build/3` for device `id` with source `cf_ring_group`, without a caller (the
/// caller's own devices are left out at call time, §3.5).
pub fn verdict(facts: &Facts, id: &str) -> Verdict {
    let doc = facts.doc(id);
    if doc.state == DocState::Missing {
        return Verdict::silent("not_found");
    }
    if !doc
        .pvt_type
        .as_deref()
        .is_some_and(|t| ENDPOINT_TYPES.contains(&t))
    {
        return Verdict::silent("not_device_nor_user");
    }
    if doc.state == DocState::SoftDeleted {
        return Verdict::silent("endpoint_deleted");
    }
    if !doc.enabled {
        return Verdict::silent("endpoint_disabled");
    }
    // A soft-deleted owner is still merged; a missing one merges as nothing.
    let owners: Vec<DocFacts> = doc
        .owners()
        .iter()
        .filter_map(|o| facts.docs.get(o))
        .filter(|o| o.state != DocState::Missing)
        .cloned()
        .collect();
    let mut dnd = Vec::new();
    if facts.account.as_ref().is_some_and(|a| a.do_not_disturb) {
        dnd.push("account");
    }
    if owners.iter().any(|o| o.do_not_disturb) {
        dnd.push("owner");
    }
    if doc.do_not_disturb {
        dnd.push("device");
    }
    if !dnd.is_empty() {
        return Verdict {
            do_not_disturb: dnd,
            ..Verdict::silent("do_not_disturb")
        };
    }
    // The device's own forward when it is enabled, else account, device and owners merged.
    let forward = if doc.call_forward.enabled == Some(true) {
        doc.call_forward.clone()
    } else {
        let account = facts
            .account
            .as_ref()
            .map(|a| a.call_forward.clone())
            .unwrap_or_default();
        owners
            .iter()
            .fold(account.merged(&doc.call_forward), |cf, o| {
                cf.merged(&o.call_forward)
            })
    };
    let forwards = forward.enabled == Some(true)
        && forward.number.as_deref().is_some_and(|n| !n.is_empty())
        && forward.direct_calls_only != Some(true);
    let mut legs = Vec::new();
    if forwards {
        legs.push("call_forward");
    }
    if !(forwards && forward.substitute == Some(true)) {
        legs.extend(kind_name(doc.kind));
    }
    Verdict {
        rings: !legs.is_empty(),
        reason: legs.is_empty().then_some("unknown_endpoint_type"),
        do_not_disturb: Vec::new(),
        legs,
        kind: Some(doc.kind),
    }
}

/// One member as the expansion met it: a tree of what each member's document says, users
/// expanded to their devices, nested groups to their members.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    pub id: String,
    pub endpoint_type: Value,
    pub delay: i64,
    pub timeout: i64,
    pub weight: i64,
    pub document: DocView,
    /// A top-level member whose `disable_until` is not before now: left out (§3.2 step 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_until: Option<i64>,
    /// Skipped: `duplicate` (a later member resolved the same id, delay and timeout), `no_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<&'static str>,
    /// A device's fate (device members, and each device of a user).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ring: Option<Verdict>,
    /// A user's devices, as `attributes/owned` gives them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<Node>>,
    /// A group's members, in the order Kazoo lists them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<Node>>,
    /// A group's entries left out (a `single` strategy's unweighted or same-weight ones).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<Dropped>,
    /// A group already being expanded above: the groups of the loop, this one first and last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cycle: Option<Vec<String>>,
    /// An `endpoint_type` no clause matches: the module crashes here.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub crashes: bool,
    /// Not expanded: the expansion reached [`MAX_ENTRIES`].
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// A leg the ring group would dial, in dial order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Leg {
    pub device_id: String,
    pub delay: i64,
    pub timeout: i64,
    pub weight: i64,
    pub legs: Vec<&'static str>,
}

/// What the callflow does with the ring group: `rings` (at least one leg), `no_endpoints`
/// (nothing to ring: the callflow continues to its `_` child), `never_resolves` (a cycle of
/// nested groups: Kazoo's expansion never ends), `crashes` (an unknown `endpoint_type` or
/// `strategy`: the module dies and the callflow continues to its `_` child).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Rings,
    NoEndpoints,
    NeverResolves,
    Crashes,
}

/// A surprise of Kazoo's that an answer shows, with the section of membership.md behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Note {
    /// A user member that is missing, soft-deleted or disabled still has its devices ring.
    UserNotChecked,
    /// A soft-deleted nested group still expands.
    DeletedGroupExpands,
    /// A device with hotdesk users is owned by them, not by its `owner_id`.
    HotdeskOwners,
    /// The same device twice with other timings rings twice; the same timings once.
    DedupeByTimings,
    /// `single` keeps only a group's weighted entries, one per weight.
    SingleKeepsWeighted,
    /// A cycle of nested groups: Kazoo never finishes expanding.
    Cycle,
    /// `weighted_random` dials in a random order, weighted.
    RandomOrder,
    /// The caller's own devices are left out at call time.
    CallerExcluded,
}

impl Note {
    pub fn message(self) -> &'static str {
        match self {
            Note::UserNotChecked => {
                "Kazoo never reads a user member's document: the devices \
                attributes/owned gives for a missing, deleted or disabled user still ring \
                (membership.md §3.2, §3.6)"
            }
            Note::DeletedGroupExpands => {
                "a soft-deleted nested group still expands: Kazoo \
                loads it without checking pvt_deleted (membership.md §3.3)"
            }
            Note::HotdeskOwners => {
                "a device with hotdesk users belongs to them, not to its \
                owner_id, while they are logged in (attributes/owned, membership.md §2)"
            }
            Note::DedupeByTimings => {
                "duplicates are dropped by device, delay and timeout \
                together: the later member wins (membership.md §3.5)"
            }
            Note::SingleKeepsWeighted => {
                "a single strategy keeps only the weighted entries of \
                a group, one per weight (membership.md §3.3)"
            }
            Note::Cycle => {
                "nested groups form a cycle: Kazoo expands it without end, so the \
                call never rings (UNCONFIRMED runtime effect, membership.md §3.3)"
            }
            Note::RandomOrder => {
                "weighted_random dials one leg at a time in a random order \
                weighted by each member's weight (membership.md §3.2)"
            }
            Note::CallerExcluded => {
                "at call time the caller's own device, and unless a member \
                sets can_call_self the caller's other devices, are left out too (membership.md \
                §3.5)"
            }
        }
    }
}

/// The whole answer about a ring group.
#[derive(Debug, Clone, PartialEq)]
pub struct Ringing {
    pub outcome: Outcome,
    pub strategy: Strategy,
    pub legs: Vec<Leg>,
    pub members: Vec<Node>,
    pub cycles: Vec<Vec<String>>,
    pub notes: Vec<Note>,
    pub truncated: bool,
}

/// What the expansion keeps while it runs: Kazoo's accumulator (`(id, delay, timeout)` of
/// every entry resolved so far, markers included), the device entries in reverse order, and
/// the groups being expanded.
struct Expansion<'a> {
    facts: &'a Facts,
    strategy: &'a Strategy,
    resolved: HashSet<(String, i64, i64)>,
    devices: Vec<Leg>,
    path: Vec<String>,
    entries: usize,
    /// The first thing that stops Kazoo, in its processing order.
    stop: Option<Outcome>,
    cycles: Vec<Vec<String>>,
    notes: HashSet<Note>,
    truncated: bool,
}

impl Expansion<'_> {
    /// `resolve_endpoint_ids/4`: members processed last to first (Kazoo's `foldr`); the nodes
    /// come back in list order.
    fn resolve(&mut self, members: &[Member]) -> Vec<Node> {
        let mut nodes: Vec<Node> = members.iter().rev().map(|m| self.member(m)).collect();
        nodes.reverse();
        nodes
    }

    fn node(&self, m: &Member, doc: &DocFacts) -> Node {
        Node {
            id: m.id.clone(),
            endpoint_type: m.endpoint_type.as_json(),
            delay: m.delay,
            timeout: m.timeout,
            weight: m.weight,
            document: DocView::of(doc),
            disabled_until: None,
            skipped: None,
            ring: None,
            devices: None,
            members: None,
            dropped: Vec::new(),
            cycle: None,
            crashes: false,
            truncated: false,
        }
    }

    fn member(&mut self, m: &Member) -> Node {
        let doc = self.facts.doc(&m.id);
        let mut node = self.node(m, &doc);
        if self.entries >= MAX_ENTRIES {
            self.truncated = true;
            node.truncated = true;
            return node;
        }
        self.entries += 1;
        if m.id.is_empty() {
            node.skipped = Some("no_id");
            return node;
        }
        if self.resolved.contains(&m.key()) {
            node.skipped = Some("duplicate");
            self.notes.insert(Note::DedupeByTimings);
            if m.endpoint_type == MemberType::Device {
                node.ring = Some(Verdict::silent("duplicate"));
            }
            return node;
        }
        match &m.endpoint_type {
            MemberType::Device => {
                self.resolved.insert(m.key());
                self.device(m, &m.id, &mut node);
            }
            MemberType::User => {
                self.resolved.insert(m.key());
                if doc.state != DocState::Found || !doc.enabled || !doc.is("user") {
                    self.notes.insert(Note::UserNotChecked);
                }
                // Kazoo's foldr over the owned ids: the last is processed first.
                let owned = self.facts.owned_devices(&m.id);
                let mut devices: Vec<Node> = owned
                    .iter()
                    .rev()
                    .map(|device| {
                        let sub = Member {
                            id: device.clone(),
                            endpoint_type: MemberType::Device,
                            ..m.clone()
                        };
                        let device_doc = self.facts.doc(device);
                        if !device_doc.hotdesk_users.is_empty() {
                            self.notes.insert(Note::HotdeskOwners);
                        }
                        let mut dnode = self.node(&sub, &device_doc);
                        if self.resolved.contains(&sub.key()) {
                            dnode.skipped = Some("duplicate");
                            dnode.ring = Some(Verdict::silent("duplicate"));
                            self.notes.insert(Note::DedupeByTimings);
                        } else {
                            self.resolved.insert(sub.key());
                            self.device(&sub, device, &mut dnode);
                        }
                        dnode
                    })
                    .collect();
                devices.reverse();
                node.devices = Some(devices);
            }
            MemberType::Group => {
                if let Some(at) = self.path.iter().position(|g| *g == m.id) {
                    let mut cycle: Vec<String> = self.path[at..].to_vec();
                    cycle.push(m.id.clone());
                    self.cycles.push(cycle.clone());
                    self.notes.insert(Note::Cycle);
                    self.stop.get_or_insert(Outcome::NeverResolves);
                    node.cycle = Some(cycle);
                    return node;
                }
                if doc.state == DocState::SoftDeleted {
                    self.notes.insert(Note::DeletedGroupExpands);
                }
                // A missing group adds nothing; any other document expands its `endpoints`
                // (none, for a user or a device).
                let (subs, dropped) = group_members(m, &doc.endpoints, self.strategy);
                if !dropped.is_empty() {
                    self.notes.insert(Note::SingleKeepsWeighted);
                }
                self.path.push(m.id.clone());
                node.members = Some(self.resolve(&subs));
                self.path.pop();
                node.dropped = dropped;
                // The group's marker comes after its members (which is why a cycle never ends).
                self.resolved.insert(m.key());
            }
            MemberType::Other(_) => {
                self.stop.get_or_insert(Outcome::Crashes);
                node.crashes = true;
            }
        }
        node
    }

    /// A device entry: added to the list, and its fate.
    fn device(&mut self, m: &Member, id: &str, node: &mut Node) {
        let verdict = verdict(self.facts, id);
        self.devices.push(Leg {
            device_id: id.to_owned(),
            delay: m.delay,
            timeout: m.timeout,
            weight: m.weight,
            legs: verdict.legs.clone(),
        });
        node.ring = Some(verdict);
    }
}

/// Who a `ring_group` node with these members and this strategy would ring, at Gregorian
/// second `now` (§3.2): the members' tree with each device's fate, and the legs in dial order.
pub fn ringing(facts: &Facts, members: &[Member], strategy: Strategy, now: i64) -> Ringing {
    let mut expansion = Expansion {
        facts,
        strategy: &strategy,
        resolved: HashSet::new(),
        devices: Vec::new(),
        path: Vec::new(),
        entries: 0,
        stop: None,
        cycles: Vec::new(),
        notes: HashSet::from([Note::CallerExcluded]),
        truncated: false,
    };
    // Step 2: inactive members are left out (top level only); their nodes stay in the answer.
    let active: Vec<Member> = members
        .iter()
        .filter(|m| m.disable_until < now)
        .cloned()
        .collect();
    let mut resolved = expansion.resolve(&active).into_iter();
    let nodes: Vec<Node> = members
        .iter()
        .map(|m| {
            if m.disable_until < now {
                resolved.next().expect("one node per active member")
            } else {
                let mut node = expansion.node(m, &facts.doc(&m.id));
                node.disabled_until = Some(m.disable_until);
                node
            }
        })
        .collect();
    // Step 4: the device entries, in member order, that build a leg.
    let mut devices = std::mem::take(&mut expansion.devices);
    devices.reverse();
    let mut legs: Vec<Leg> = devices.into_iter().filter(|l| !l.legs.is_empty()).collect();
    // Steps 5 and 7.
    let mut stop = expansion.stop;
    match &strategy {
        Strategy::Simultaneous => legs.sort_by_key(|l| l.delay.max(0)),
        Strategy::WeightedRandom => {
            expansion.notes.insert(Note::RandomOrder);
        }
        Strategy::Single => {}
        Strategy::Other(_) => {
            stop.get_or_insert(Outcome::Crashes);
        }
    }
    let outcome = match stop {
        Some(stop) => stop,
        None if legs.is_empty() => Outcome::NoEndpoints,
        None => Outcome::Rings,
    };
    let mut notes: Vec<Note> = expansion.notes.into_iter().collect();
    notes.sort();
    Ringing {
        outcome,
        strategy: strategy.clone(),
        legs: if matches!(outcome, Outcome::Rings) {
            legs
        } else {
            Vec::new()
        },
        members: nodes,
        cycles: expansion.cycles,
        notes,
        truncated: expansion.truncated,
    }
}

/// The members of a `ring_group` node's `data` (`data.endpoints`, a list of objects), with its
/// strategy. Anything but an object in the list is a member without an id.
pub fn node_members(data: &Value) -> (Vec<Member>, Strategy) {
    let members = data
        .get("endpoints")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|m| Member::read(m.as_object().cloned().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    (members, Strategy::read(data.get("strategy")))
}

// --- Dangling members ---

/// Something wrong with one member of a group (direct members only; a nested group's members
/// are its own group's findings).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The member's id (or, with `via`, the device's).
    pub id: String,
    /// The entry's `type`, as stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_type: Option<Value>,
    pub document: DocView,
    /// `missing` and `soft_deleted` (the document is gone), `user_disabled` (a disabled user
    /// whose devices ring), `device_never_rings`, `type_mismatch` (the entry's `type` is not the
    /// document's).
    pub problem: &'static str,
    /// Removed by `kz-groups doctor --fix`: the document is gone.
    pub fixable: bool,
    /// Why a device never rings (a [`Verdict`] reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// A device of this user member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// Devices that still ring through this member (a gone or disabled user's devices, a
    /// soft-deleted group's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices_still_ringing: Option<Vec<String>>,
}

/// What `attributes/owned` gives a user that would ring.
fn ringing_devices(facts: &Facts, user: &str) -> Vec<String> {
    facts
        .owned_devices(user)
        .iter()
        .filter(|d| verdict(facts, d).rings)
        .cloned()
        .collect()
}

/// The devices a group member would still ring (as a simultaneous ring group's member).
fn group_rings(facts: &Facts, group: &str) -> Vec<String> {
    let r = ringing(
        facts,
        &[Member::group(group)],
        Strategy::Simultaneous,
        i64::MAX,
    );
    let mut ids: Vec<String> = r.legs.into_iter().map(|l| l.device_id).collect();
    ids.dedup();
    ids
}

/// Whether an entry's `type` fits the document it names.
fn type_fits(entry_type: Option<&str>, doc: &DocFacts) -> bool {
    match (entry_type, doc.pvt_type.as_deref()) {
        (Some("user"), Some(t)) => t == "user",
        (Some("device"), Some(t)) => ENDPOINT_TYPES.contains(&t) && t != "user",
        (Some("group"), Some(t)) => t == "group",
        _ => true,
    }
}

/// The dangling members of a group with these `endpoints` (stored order).
pub fn findings(facts: &Facts, endpoints: &[(String, Value)]) -> Vec<Finding> {
    let mut found = Vec::new();
    for (id, entry) in endpoints {
        let doc = facts.doc(id);
        let entry_type = entry.get("type").cloned();
        let typed = entry_type.as_ref().and_then(Value::as_str);
        let is_user = typed == Some("user") || (typed.is_none() && doc.is("user"));
        let is_group = typed == Some("group") || (typed.is_none() && doc.is("group"));
        let finding = |problem: &'static str| Finding {
            id: id.clone(),
            endpoint_type: entry_type.clone(),
            document: DocView::of(&doc),
            problem,
            fixable: false,
            reason: None,
            via: None,
            devices_still_ringing: None,
        };
        match doc.state {
            DocState::Missing | DocState::SoftDeleted => {
                let mut f = finding(if doc.state == DocState::Missing {
                    "missing"
                } else {
                    "soft_deleted"
                });
                f.fixable = true;
                if is_user {
                    f.devices_still_ringing = Some(ringing_devices(facts, id));
                } else if is_group && doc.state == DocState::SoftDeleted {
                    f.devices_still_ringing = Some(group_rings(facts, id));
                }
                found.push(f);
            }
            DocState::Found if !type_fits(typed, &doc) => found.push(finding("type_mismatch")),
            DocState::Found if is_user => {
                if !doc.enabled {
                    let mut f = finding("user_disabled");
                    f.devices_still_ringing = Some(ringing_devices(facts, id));
                    found.push(f);
                }
                for device in facts.owned_devices(id) {
                    let v = verdict(facts, device);
                    if !v.rings {
                        let device_doc = facts.doc(device);
                        found.push(Finding {
                            id: device.clone(),
                            endpoint_type: None,
                            document: DocView::of(&device_doc),
                            problem: "device_never_rings",
                            fixable: false,
                            reason: v.reason,
                            via: Some(id.clone()),
                            devices_still_ringing: None,
                        });
                    }
                }
            }
            DocState::Found if !is_group => {
                let v = verdict(facts, id);
                if !v.rings {
                    let mut f = finding("device_never_rings");
                    f.reason = v.reason;
                    found.push(f);
                }
            }
            DocState::Found => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Gregorian seconds, 2025.
    const NOW: i64 = 63_900_000_000;

    fn facts(docs: &[(&str, Value)], owned: &[(&str, &[&str])]) -> Facts {
        Facts {
            docs: docs
                .iter()
                .map(|(id, doc)| (id.to_string(), DocFacts::read(Some(doc))))
                .collect(),
            owned: owned
                .iter()
                .map(|(u, ds)| (u.to_string(), ds.iter().map(|d| d.to_string()).collect()))
                .collect(),
            account: None,
        }
    }

    fn device(owner: &str) -> Value {
        json!({"pvt_type": "device", "owner_id": owner, "device_type": "sip_device",
               "sip": {"username": "x"}})
    }

    fn user() -> Value {
        json!({"pvt_type": "user", "first_name": "Ann", "last_name": "Lee"})
    }

    fn group(endpoints: Value) -> Value {
        json!({"pvt_type": "group", "name": "G", "endpoints": endpoints})
    }

    fn legs(r: &Ringing) -> Vec<(String, i64, i64)> {
        r.legs
            .iter()
            .map(|l| (l.device_id.clone(), l.delay, l.timeout))
            .collect()
    }

    fn ring_group(facts: &Facts, members: Value, strategy: &str) -> Ringing {
        let (members, strategy) =
            node_members(&json!({"endpoints": members, "strategy": strategy}));
        ringing(facts, &members, strategy, NOW)
    }

    #[test]
    fn members_are_read_with_kazoos_defaults_and_clamps() {
        let m = Member::read(json!({"id": "d1"}).as_object().unwrap().clone());
        assert_eq!(
            (m.endpoint_type.clone(), m.delay, m.timeout, m.weight),
            (MemberType::Device, 0, 20, 20)
        );
        let m = Member::read(
            json!({"_id": "a", "id": "b", "delay": "5", "timeout": 7.9, "weight": 500,
                   "endpoint_type": "user"})
            .as_object()
            .unwrap()
            .clone(),
        );
        assert_eq!(
            (m.id.as_str(), m.delay, m.timeout, m.weight),
            ("a", 5, 7, 100)
        );
        assert_eq!(m.endpoint_type, MemberType::User);
        let m = Member::read(
            json!({"id": "x", "weight": -3})
                .as_object()
                .unwrap()
                .clone(),
        );
        assert_eq!(m.weight, 1);
    }

    #[test]
    fn a_deleted_or_disabled_users_devices_still_ring() {
        for user_doc in [
            None,
            Some(json!({"pvt_type": "user", "pvt_deleted": true})),
            Some(json!({"pvt_type": "user", "enabled": false})),
        ] {
            let mut docs = vec![("d1", device("u1"))];
            if let Some(u) = &user_doc {
                docs.push(("u1", u.clone()));
            }
            let f = facts(&docs, &[("u1", &["d1"])]);
            let r = ring_group(
                &f,
                json!([{"id": "u1", "endpoint_type": "user"}]),
                "simultaneous",
            );
            assert_eq!(r.outcome, Outcome::Rings, "{user_doc:?}");
            assert_eq!(legs(&r), [("d1".to_string(), 0, 20)]);
            assert!(r.notes.contains(&Note::UserNotChecked));
        }
    }

    #[test]
    fn devices_that_ring_nothing_say_why() {
        let f = facts(
            &[
                ("gone", json!({"pvt_type": "device", "pvt_deleted": true})),
                (
                    "off",
                    json!({"pvt_type": "device", "enabled": false, "sip": {"u": 1}}),
                ),
                (
                    "dnd",
                    json!({"pvt_type": "device", "device_type": "softphone",
                               "do_not_disturb": {"enabled": true}}),
                ),
                (
                    "odd",
                    json!({"pvt_type": "device", "device_type": "toaster"}),
                ),
                ("vm", json!({"pvt_type": "vmbox"})),
                (
                    "ok",
                    json!({"pvt_type": "device", "device_type": "toaster", "sip": {"u": 1}}),
                ),
            ],
            &[],
        );
        let reason = |id: &str| verdict(&f, id).reason;
        assert_eq!(reason("missing"), Some("not_found"));
        assert_eq!(reason("gone"), Some("endpoint_deleted"));
        assert_eq!(reason("off"), Some("endpoint_disabled"));
        assert_eq!(reason("dnd"), Some("do_not_disturb"));
        assert_eq!(verdict(&f, "dnd").do_not_disturb, ["device"]);
        assert_eq!(reason("odd"), Some("unknown_endpoint_type"));
        assert_eq!(reason("vm"), Some("not_device_nor_user"));
        // An unknown type is guessed from the sip sub-object.
        assert_eq!(verdict(&f, "ok").legs, ["sip"]);
    }

    #[test]
    fn dnd_on_the_owner_or_account_silences_a_device() {
        let mut f = facts(
            &[
                ("d1", device("u1")),
                (
                    "u1",
                    json!({"pvt_type": "user", "do_not_disturb": {"enabled": true}}),
                ),
            ],
            &[],
        );
        assert_eq!(verdict(&f, "d1").do_not_disturb, ["owner"]);
        f.docs.insert("u1".into(), DocFacts::read(Some(&user())));
        assert!(verdict(&f, "d1").rings);
        f.account = Some(DocFacts::read(Some(
            &json!({"pvt_type": "account", "do_not_disturb": {"enabled": "true"}}),
        )));
        assert_eq!(verdict(&f, "d1").do_not_disturb, ["account"]);
    }

    #[test]
    fn call_forward_builds_a_leg_and_may_replace_the_device() {
        let mut f = facts(
            &[(
                "d1",
                json!({"pvt_type": "device", "device_type": "sip_device",
                       "call_forward": {"enabled": true, "number": "+1555"}}),
            )],
            &[],
        );
        assert_eq!(verdict(&f, "d1").legs, ["call_forward", "sip"]);
        f.docs.insert(
            "d1".into(),
            DocFacts::read(Some(&json!({"pvt_type": "device", "device_type": "x",
                "call_forward": {"enabled": true, "number": "+1555", "substitute": true}}))),
        );
        assert_eq!(verdict(&f, "d1").legs, ["call_forward"]);
        // A ring group does not forward a direct-calls-only forward.
        f.docs.insert(
            "d1".into(),
            DocFacts::read(Some(&json!({"pvt_type": "device", "device_type": "x",
                "call_forward": {"enabled": true, "number": "+1", "direct_calls_only": true}}))),
        );
        assert_eq!(verdict(&f, "d1").reason, Some("unknown_endpoint_type"));
    }

    #[test]
    fn duplicates_go_by_device_delay_and_timeout_and_the_later_member_wins() {
        let f = facts(&[("d1", device("u1")), ("u1", user())], &[("u1", &["d1"])]);
        let r = ring_group(
            &f,
            json!([
                {"id": "d1", "delay": 0, "timeout": 20},
                {"id": "u1", "endpoint_type": "user"},
                {"id": "d1", "delay": 5}
            ]),
            "single",
        );
        // The first d1 is a duplicate of u1's (same timings); d1 with delay 5 rings again.
        assert_eq!(r.members[0].skipped, Some("duplicate"));
        assert_eq!(legs(&r), [("d1".into(), 0, 20), ("d1".into(), 5, 20)]);
    }

    #[test]
    fn simultaneous_sorts_legs_by_delay() {
        let f = facts(&[("d1", device("u")), ("d2", device("u"))], &[]);
        let r = ring_group(
            &f,
            json!([{"id": "d1", "delay": 10}, {"id": "d2", "delay": 0}]),
            "simultaneous",
        );
        assert_eq!(legs(&r), [("d2".into(), 0, 20), ("d1".into(), 10, 20)]);
    }

    #[test]
    fn nested_groups_expand_in_reverse_stored_order_with_inherited_timings() {
        let f = facts(
            &[
                ("d1", device("u")),
                ("d2", device("u")),
                (
                    "g",
                    group(json!({"d1": {"type": "device"}, "d2": {"type": "device", "delay": 3}})),
                ),
            ],
            &[],
        );
        let r = ring_group(
            &f,
            json!([{"id": "g", "endpoint_type": "group", "timeout": 30}]),
            "simultaneous",
        );
        let listed: Vec<&str> = r.members[0]
            .members
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.id.as_str())
            .collect();
        assert_eq!(listed, ["d2", "d1"]);
        // Simultaneous legs are sorted by delay.
        assert_eq!(legs(&r), [("d1".into(), 0, 30), ("d2".into(), 3, 30)]);
    }

    #[test]
    fn single_keeps_weighted_entries_one_per_weight() {
        let f = facts(
            &[
                ("d1", device("u")),
                ("d2", device("u")),
                ("d3", device("u")),
                ("d4", device("u")),
                (
                    "g",
                    group(json!({
                        "d1": {"type": "device", "weight": 5},
                        "d2": {"type": "device"},
                        "d3": {"type": "device", "weight": 1},
                        "d4": {"type": "device", "weight": 5}
                    })),
                ),
            ],
            &[],
        );
        let r = ringing(&f, &[Member::group("g")], Strategy::Single, NOW);
        assert_eq!(legs(&r), [("d3".into(), 0, 20), ("d4".into(), 0, 20)]);
        let dropped = &r.members[0].dropped;
        assert!(dropped.contains(&Dropped {
            id: "d2".into(),
            reason: "no_weight"
        }));
        assert!(dropped.contains(&Dropped {
            id: "d1".into(),
            reason: "same_weight"
        }));
    }

    #[test]
    fn an_untyped_group_entry_is_a_nested_group_and_soft_deleted_groups_expand() {
        let f = facts(
            &[
                ("d1", device("u")),
                (
                    "h",
                    json!({"pvt_type": "group", "pvt_deleted": true,
                             "endpoints": {"d1": {"type": "device"}}}),
                ),
                ("g", group(json!({"h": {}}))),
            ],
            &[],
        );
        let r = ringing(&f, &[Member::group("g")], Strategy::Simultaneous, NOW);
        assert_eq!(legs(&r), [("d1".into(), 0, 20)]);
        assert!(r.notes.contains(&Note::DeletedGroupExpands));
    }

    #[test]
    fn cycles_are_reported_not_followed() {
        let f = facts(
            &[
                ("d1", device("u")),
                (
                    "g",
                    group(json!({"h": {"type": "group"}, "d1": {"type": "device"}})),
                ),
                ("h", group(json!({"g": {"type": "group"}}))),
            ],
            &[],
        );
        let r = ringing(&f, &[Member::group("g")], Strategy::Simultaneous, NOW);
        assert_eq!(r.outcome, Outcome::NeverResolves);
        assert_eq!(r.cycles, [vec!["g".to_string(), "h".into(), "g".into()]]);
        assert!(r.legs.is_empty());
        // A group containing itself.
        let f = facts(&[("s", group(json!({"s": {}})))], &[]);
        let r = ringing(&f, &[Member::group("s")], Strategy::Simultaneous, NOW);
        assert_eq!(r.cycles, [vec!["s".to_string(), "s".into()]]);
    }

    #[test]
    fn unknown_types_and_strategies_crash_and_empty_groups_ring_nothing() {
        let f = facts(&[("d1", device("u"))], &[]);
        let r = ring_group(
            &f,
            json!([{"id": "d1", "endpoint_type": "phone"}]),
            "simultaneous",
        );
        assert_eq!(r.outcome, Outcome::Crashes);
        let r = ring_group(&f, json!([{"id": "d1"}]), "round_robin");
        assert_eq!(r.outcome, Outcome::Crashes);
        let r = ring_group(&f, json!([]), "simultaneous");
        assert_eq!(r.outcome, Outcome::NoEndpoints);
        let r = ringing(&f, &[Member::group("nowhere")], Strategy::Simultaneous, NOW);
        assert_eq!(r.outcome, Outcome::NoEndpoints);
    }

    #[test]
    fn inactive_members_are_left_out() {
        let f = facts(&[("d1", device("u"))], &[]);
        let r = ring_group(
            &f,
            json!([{"id": "d1", "disable_until": 66269664000_i64}]),
            "simultaneous",
        );
        assert_eq!(r.outcome, Outcome::NoEndpoints);
        assert_eq!(r.members[0].disabled_until, Some(66269664000));
    }

    #[test]
    fn findings_name_gone_disabled_and_silent_members() {
        let f = facts(
            &[
                ("u2", json!({"pvt_type": "user", "pvt_deleted": true})),
                ("u3", json!({"pvt_type": "user", "enabled": false})),
                ("d3", device("u3")),
                ("d4", json!({"pvt_type": "device", "enabled": false})),
                ("d5", json!({"pvt_type": "device", "owner_id": "u5"})),
                ("u5", user()),
                ("h", json!({"pvt_type": "group", "pvt_deleted": true})),
            ],
            &[("u3", &["d3"]), ("u5", &["d5"])],
        );
        let endpoints: Vec<(String, Value)> = [
            ("u1", json!({"type": "user"})),
            ("u2", json!({"type": "user"})),
            ("u3", json!({"type": "user"})),
            ("d4", json!({"type": "device"})),
            ("u5", json!({"type": "user"})),
            ("h", json!({"type": "group"})),
            ("gone", json!({"type": "group"})),
            ("u5x", json!({"type": "device"})),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let found = findings(&f, &endpoints);
        let problems: Vec<(&str, &str, bool)> = found
            .iter()
            .map(|f| (f.id.as_str(), f.problem, f.fixable))
            .collect();
        assert_eq!(
            problems,
            [
                ("u1", "missing", true),
                ("u2", "soft_deleted", true),
                ("u3", "user_disabled", false),
                ("d4", "device_never_rings", false),
                ("d5", "device_never_rings", false),
                ("h", "soft_deleted", true),
                ("gone", "missing", true),
                ("u5x", "missing", true),
            ]
        );
        assert_eq!(found[2].devices_still_ringing, Some(vec!["d3".to_string()]));
        assert_eq!(found[4].via.as_deref(), Some("u5"));
        assert_eq!(found[4].reason, Some("unknown_endpoint_type"));
    }
}
