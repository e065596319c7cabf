//! Rust ports of the map functions in `couch_views/*.json`, so the embedded store indexes
//! documents without a JavaScript engine and gets exactly the rows CouchDB's couchjs emits.
//!
//! The ports follow JavaScript semantics where a document's shape could make them differ:
//! truthiness, `!=` against a string literal, `for…in` order and what it walks for arrays and
//! strings, property reads on primitives, and throws. couchjs runs each map function in a
//! `try`; on a throw it logs and keeps no row of that document for that view, even rows emitted
//! before the throw, so a throw here is `Err(Thrown)` and becomes an empty `Vec`. Emitted keys
//! and values are what couchjs's `JSON.stringify` and CouchDB's JSON decoding give back: object
//! members in JavaScript property order, numbers as JavaScript numbers, `undefined` members
//! dropped.
use serde_json::{Map, Number, Value};

use crate::store::View;

/// The rows a view emits for one document: (key, value) pairs, in emit order. `doc` is the
/// full stored document (with _id).
pub fn emit(view: View, doc: &Value) -> Vec<(Value, Value)> {
    // A document is always an object in CouchDB; anything else has no `pvt_type`, which every
    // view here checks first, so it emits nothing.
    let Value::Object(doc) = doc else {
        return Vec::new();
    };
    let rows = match view {
        View::GroupsListing => groups_crossbar_listing(doc),
        View::GroupsListingByUser => groups_crossbar_listing_by_user(doc),
        View::UsersCredsByMd5 => users_creds(doc, "pvt_md5_auth"),
        View::UsersCredsBySha => users_creds(doc, "pvt_sha1_auth"),
        View::UsersListByUsername => users_list_by_username(doc),
        View::AccountsListingByApi => accounts_listing_by_api(doc),
        View::AccountsListingByRealm => accounts_listing_by_realm(doc),
        View::AccountsListingByName => accounts_listing_by_name(doc),
        View::AttributesOwned => attributes_owned(doc),
        View::CallflowsListing => callflows_crossbar_listing(doc),
    };
    rows.unwrap_or_default()
}

type Doc = Map<String, Value>;
type Rows = Result<Vec<(Value, Value)>, Thrown>;

/// The map function threw (a TypeError in every case here).
#[derive(Debug)]
struct Thrown;

// --- The views, each a line-by-line port of its JavaScript. ---

/// `if (doc.pvt_type != 'group' || doc.pvt_deleted) return; … emit(doc._id, summary)`
fn groups_crossbar_listing(doc: &Doc) -> Rows {
    if loose_ne(prop(doc, "pvt_type"), "group")? || truthy(prop(doc, "pvt_deleted")) {
        return Ok(Vec::new());
    }
    let summary = group_summary(doc)?;
    // emit(undefined, …) reaches CouchDB as a null key (couchjs stringifies the row array).
    let key = prop(doc, "_id").to_json().unwrap_or(Value::Null);
    Ok(vec![(key, summary)])
}

/// Same summary, emitted once per endpoint whose `type === 'user'`, keyed by the endpoint id.
fn groups_crossbar_listing_by_user(doc: &Doc) -> Rows {
    if loose_ne(prop(doc, "pvt_type"), "group")? || truthy(prop(doc, "pvt_deleted")) {
        return Ok(Vec::new());
    }
    let summary = group_summary(doc)?;
    let mut rows = Vec::new();
    // `var members = doc.endpoints || {}`: a falsy value walks like `{}` (nothing).
    for (member, entry) in for_in(prop(doc, "endpoints")) {
        // `members[member].type` throws on a null entry; `===` wants the very string.
        if entry.get("type")?.is_str("user") {
            rows.push((Value::String(member), summary.clone()));
        }
    }
    Ok(rows)
}

/// `{'id': doc._id, 'name': doc.name, 'features': features, 'endpoints': count,
/// 'flags': doc.flags || []}`, with `features` and `count` computed as the JS does.
fn group_summary(doc: &Doc) -> Result<Value, Thrown> {
    let mut features = Vec::new();
    // for (var name in smartpbx) if (smartpbx[name].enabled) features.push(name);
    for (name, entry) in for_in(prop(doc, "smartpbx")) {
        if truthy(entry.get("enabled")?) {
            features.push(Value::String(name));
        }
    }
    // if (doc.music_on_hold && doc.music_on_hold.media_id) features.push('music_on_hold');
    let moh = prop(doc, "music_on_hold");
    if truthy(moh) && truthy(moh.get("media_id")?) {
        features.push(Value::from("music_on_hold"));
    }
    // for (var key in members) if (members.hasOwnProperty(key)) count++;
    let members = prop(doc, "endpoints");
    let mut count: u64 = 0;
    for _ in for_in(members) {
        // for…in only yields own keys of a parsed JSON value, so the test is always true,
        // unless the object has its own `hasOwnProperty` member, which shadows the method and
        // is not callable: TypeError.
        if members.has_own_member("hasOwnProperty") {
            return Err(Thrown);
        }
        count += 1;
    }

    let mut summary = Map::new();
    insert_defined(&mut summary, "id", prop(doc, "_id"));
    insert_defined(&mut summary, "name", prop(doc, "name"));
    summary.insert("features".into(), Value::Array(features));
    summary.insert("endpoints".into(), Value::from(count));
    summary.insert("flags".into(), flags_or_empty(doc));
    Ok(Value::Object(summary))
}

/// creds_by_md5 / creds_by_sha: `if (doc.pvt_type != 'user' || doc.pvt_deleted || !doc.enabled
/// || !doc.<field>) return; emit(doc.<field>, {'owner_id': doc._id, 'account_id':
/// doc.pvt_account_id});`
fn users_creds(doc: &Doc, field: &str) -> Rows {
    let creds = prop(doc, field);
    if loose_ne(prop(doc, "pvt_type"), "user")?
        || truthy(prop(doc, "pvt_deleted"))
        || !truthy(prop(doc, "enabled"))
        || !truthy(creds)
    {
        return Ok(Vec::new());
    }
    let mut value = Map::new();
    insert_defined(&mut value, "owner_id", prop(doc, "_id"));
    insert_defined(&mut value, "account_id", prop(doc, "pvt_account_id"));
    let key = creds.to_json().unwrap_or(Value::Null);
    Ok(vec![(key, Value::Object(value))])
}

/// `if (doc.pvt_type != 'user' || doc.pvt_deleted || !doc.username) return;
/// emit(doc.username.toLowerCase(), null);`
fn users_list_by_username(doc: &Doc) -> Rows {
    let username = prop(doc, "username");
    if loose_ne(prop(doc, "pvt_type"), "user")?
        || truthy(prop(doc, "pvt_deleted"))
        || !truthy(username)
    {
        return Ok(Vec::new());
    }
    Ok(vec![(Value::String(to_lower_case(username)?), Value::Null)])
}

/// `if (doc.pvt_type != 'account' || doc.pvt_deleted || !doc.pvt_api_key) return;
/// emit(doc.pvt_api_key, {'account_id': doc.pvt_account_id});`
fn accounts_listing_by_api(doc: &Doc) -> Rows {
    let api_key = prop(doc, "pvt_api_key");
    if loose_ne(prop(doc, "pvt_type"), "account")?
        || truthy(prop(doc, "pvt_deleted"))
        || !truthy(api_key)
    {
        return Ok(Vec::new());
    }
    let mut value = Map::new();
    insert_defined(&mut value, "account_id", prop(doc, "pvt_account_id"));
    let key = api_key.to_json().unwrap_or(Value::Null);
    Ok(vec![(key, Value::Object(value))])
}

/// `if (doc.pvt_type != 'account' || doc.pvt_deleted || !doc.realm) return;
/// emit(doc.realm.toLowerCase(), {'account_id': doc._id, 'account_db': doc.pvt_account_db});`
fn accounts_listing_by_realm(doc: &Doc) -> Rows {
    let realm = prop(doc, "realm");
    if loose_ne(prop(doc, "pvt_type"), "account")?
        || truthy(prop(doc, "pvt_deleted"))
        || !truthy(realm)
    {
        return Ok(Vec::new());
    }
    let key = to_lower_case(realm)?;
    Ok(vec![(Value::String(key), account_ref(doc))])
}

/// `if (doc.pvt_type != 'account' || doc.pvt_deleted || !doc.name) return;
/// emit(doc.name.toLowerCase().replace(/[^a-z0-9]/g, ''), {'account_id': doc._id,
/// 'account_db': doc.pvt_account_db});`
fn accounts_listing_by_name(doc: &Doc) -> Rows {
    let name = prop(doc, "name");
    if loose_ne(prop(doc, "pvt_type"), "account")?
        || truthy(prop(doc, "pvt_deleted"))
        || !truthy(name)
    {
        return Ok(Vec::new());
    }
    // Without the `u` flag the regex sees UTF-16 code units, but every unit of a non-ASCII
    // character is outside [a-z0-9] just as the character is, so filtering chars is the same.
    let key: String = to_lower_case(name)?
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .collect();
    Ok(vec![(Value::String(key), account_ref(doc))])
}

// --- Kazoo's views (membership.md §2), ported from Kazoo's account design documents, which
// kz-groups never installs (`View::is_kazoos`). ---

/// `attributes/owned`: nothing for a document with a truthy `pvt_deleted`; otherwise, when
/// `hotdesk.users` has at least one own key (the test calls `hasOwnProperty` on it), one row
/// `[user, pvt_type]` per key of `hotdesk.users`, else, when `owner_id` is truthy, one row
/// `[owner_id, pvt_type]`; each valued with the document's `_id`. `pvt_type` is not checked: a
/// device, a voicemail box or a callflow may be owned.
fn attributes_owned(doc: &Doc) -> Rows {
    if truthy(prop(doc, "pvt_deleted")) {
        return Ok(Vec::new());
    }
    let hotdesk = prop(doc, "hotdesk");
    // `(doc.hotdesk || {}).users || {}`
    let users = if truthy(hotdesk) {
        hotdesk.get("users")?
    } else {
        Js::Undefined
    };
    let keys = for_in(users);
    // The loop calls `users.hasOwnProperty(key)` once before it breaks: an own member of that
    // name shadows the method and is not callable.
    if !keys.is_empty() && users.has_own_member("hasOwnProperty") {
        return Err(Thrown);
    }
    let has_users = !keys.is_empty();
    let pvt_type = prop(doc, "pvt_type").to_json().unwrap_or(Value::Null);
    let id = prop(doc, "_id").to_json().unwrap_or(Value::Null);
    let row = |owner: Value| (Value::Array(vec![owner, pvt_type.clone()]), id.clone());
    if truthy(hotdesk) && truthy(users) && has_users {
        return Ok(keys
            .into_iter()
            .map(|(user, _)| row(Value::String(user)))
            .collect());
    }
    let owner = prop(doc, "owner_id");
    if truthy(owner) {
        return Ok(vec![row(owner.to_json().unwrap_or(Value::Null))]);
    }
    Ok(Vec::new())
}

/// `callflows/crossbar_listing`: for a live callflow (`pvt_type` loosely `callflow`, no truthy
/// `pvt_deleted`), one row keyed by `_id`, valued with `id`, `name`, `type`, `numbers`,
/// `patterns`, `featurecode` (false when falsy), `owner_id`, `group_id`, `modules` and `flags`
/// (`[]` when falsy), undefined members left out. `modules`: walking the flow from `doc.flow`
/// (when truthy) through every own key of each node's truthy `children`, the truthy `module` of
/// each node whose `data` is truthy and whose `data.skip_module` is not `true`, first
/// occurrences only (strict equality).
fn callflows_crossbar_listing(doc: &Doc) -> Rows {
    if loose_ne(prop(doc, "pvt_type"), "callflow")? || truthy(prop(doc, "pvt_deleted")) {
        return Ok(Vec::new());
    }
    let featurecode = prop(doc, "featurecode");
    let mut modules: Vec<Value> = Vec::new();
    let flow = prop(doc, "flow");
    if truthy(flow) {
        walk_flow(flow, &mut modules)?;
    }
    let mut value = Map::new();
    insert_defined(&mut value, "id", prop(doc, "_id"));
    insert_defined(&mut value, "name", prop(doc, "name"));
    insert_defined(&mut value, "type", prop(doc, "type"));
    insert_defined(&mut value, "numbers", prop(doc, "numbers"));
    insert_defined(&mut value, "patterns", prop(doc, "patterns"));
    let featurecode = if truthy(featurecode) {
        featurecode.to_json().unwrap_or(Value::Null)
    } else {
        Value::Bool(false)
    };
    value.insert("featurecode".into(), featurecode);
    insert_defined(&mut value, "owner_id", prop(doc, "owner_id"));
    insert_defined(&mut value, "group_id", prop(doc, "group_id"));
    value.insert("modules".into(), Value::Array(modules));
    value.insert("flags".into(), flags_or_empty(doc));
    let key = prop(doc, "_id").to_json().unwrap_or(Value::Null);
    Ok(vec![(key, Value::Object(value))])
}

/// One node of the walk: a property read on `undefined` or `null` throws (a child that is
/// null); other primitives have none of these properties.
fn walk_flow(node: Js, modules: &mut Vec<Value>) -> Result<(), Thrown> {
    let module = node.get("module")?;
    let data = node.get("data")?;
    if truthy(module)
        && truthy(data)
        && !matches!(data.get("skip_module")?, Js::Json(Value::Bool(true)))
    {
        if let Some(module) = module.to_json() {
            // `indexOf(value) === index`: primitives compare by value, objects and arrays
            // only with themselves (a node's module is never met twice).
            let seen = !module.is_object()
                && !module.is_array()
                && modules.iter().any(|m| strict_eq(m, &module));
            if !seen {
                modules.push(module);
            }
        }
    }
    let children = node.get("children")?;
    if truthy(children) {
        let keys = for_in(children);
        if !keys.is_empty() && children.has_own_member("hasOwnProperty") {
            return Err(Thrown);
        }
        for (_, child) in keys {
            walk_flow(child, modules)?;
        }
    }
    Ok(())
}

/// `===` between two primitives as JavaScript holds them (numbers as doubles).
fn strict_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => false,
        _ => a == b,
    }
}

/// `doc.flags || []`
fn flags_or_empty(doc: &Doc) -> Value {
    let flags = prop(doc, "flags");
    if truthy(flags) {
        flags.to_json().unwrap_or(Value::Null)
    } else {
        Value::Array(Vec::new())
    }
}

/// `{'account_id': doc._id, 'account_db': doc.pvt_account_db}`
fn account_ref(doc: &Doc) -> Value {
    let mut value = Map::new();
    insert_defined(&mut value, "account_id", prop(doc, "_id"));
    insert_defined(&mut value, "account_db", prop(doc, "pvt_account_db"));
    Value::Object(value)
}

// --- A little of JavaScript, as much as these functions touch. ---

/// A JavaScript value the map functions can hold.
#[derive(Clone, Copy)]
enum Js<'a> {
    Undefined,
    Json(&'a Value),
    /// A one-code-unit string from indexing a string (`for (k in "ab") s[k]`): truthy, and
    /// without any property these views read. Kept apart because it may be half a surrogate
    /// pair, which no Rust string can hold.
    StrUnit,
}

/// `doc.name`: a member of the (object) document, or `undefined`. Object.prototype has no
/// property by any of the names these views read off a document.
fn prop<'a>(doc: &'a Doc, name: &str) -> Js<'a> {
    doc.get(name).map_or(Js::Undefined, Js::Json)
}

impl<'a> Js<'a> {
    /// `v.name` for the fixed names the views read (`enabled`, `media_id`, `type`): a TypeError
    /// on undefined/null; an object's own member; `undefined` on other primitives and arrays,
    /// since neither their prototypes nor Object.prototype have properties by those names.
    fn get(self, name: &str) -> Result<Js<'a>, Thrown> {
        match self {
            Js::Undefined | Js::Json(Value::Null) => Err(Thrown),
            Js::Json(Value::Object(m)) => Ok(m.get(name).map_or(Js::Undefined, Js::Json)),
            _ => Ok(Js::Undefined),
        }
    }

    /// `v === 'literal'`
    fn is_str(self, literal: &str) -> bool {
        matches!(self, Js::Json(Value::String(s)) if s == literal)
    }

    /// An object with its own member `name` (which then shadows any Object.prototype method).
    fn has_own_member(self, name: &str) -> bool {
        matches!(self, Js::Json(Value::Object(m)) if m.contains_key(name))
    }

    /// The value as couchjs's `JSON.stringify` and CouchDB's decoding give it back, or `None`
    /// for `undefined` (which `JSON.stringify` drops from objects).
    fn to_json(self) -> Option<Value> {
        match self {
            Js::Json(v) => Some(js_json(v)),
            Js::Undefined => None,
            // Never read out by these views (only `.type` / `.enabled` of it are).
            Js::StrUnit => None,
        }
    }
}

/// `if (v)`: `undefined`, `null`, `false`, `0`, `-0`, `NaN` and `""` are falsy; every object,
/// `[]` and `{}` included, is truthy.
fn truthy(v: Js) -> bool {
    match v {
        Js::Undefined => false,
        Js::StrUnit => true,
        Js::Json(v) => match v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
            Value::String(s) => !s.is_empty(),
            Value::Array(_) | Value::Object(_) => true,
        },
    }
}

/// `v != 'literal'` (loose), for a literal that is a non-empty word of letters, as all of
/// these views' are: null and undefined are never equal to a string; booleans and numbers
/// compare as numbers, and a word is NaN; arrays and objects are converted to a primitive
/// first (which may throw) and then compared as strings.
fn loose_ne(v: Js, literal: &str) -> Result<bool, Thrown> {
    match v {
        Js::Undefined | Js::StrUnit => Ok(true),
        Js::Json(v) => match v {
            Value::Null | Value::Bool(_) | Value::Number(_) => Ok(true),
            Value::String(s) => Ok(s != literal),
            Value::Array(_) | Value::Object(_) => Ok(to_primitive_string(v)? != literal),
        },
    }
}

/// ToPrimitive of a parsed-JSON array or object, as a string, or ToString of any value inside
/// one. An array gives `join(',')` of its elements (null → ""); an object gives
/// "[object Object]" unless it has its own `toString` member: that shadows the method and is
/// not callable, and `valueOf` yields no primitive either, so it is a TypeError. Numbers here
/// use Rust's formatting, not JavaScript's: they only ever meet a word literal, which no
/// number's string can equal in either spelling.
fn to_primitive_string(v: &Value) -> Result<String, Thrown> {
    match v {
        Value::Null => Ok(String::new()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(items) => {
            let parts = items
                .iter()
                .map(to_primitive_string)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(parts.join(","))
        }
        Value::Object(m) if m.contains_key("toString") => Err(Thrown),
        Value::Object(_) => Ok("[object Object]".into()),
    }
}

/// `for (var k in v)`: (key, `v[k]`) pairs. An object's own keys in JavaScript property order;
/// an array's indexes; a string's UTF-16 code unit indexes; nothing for undefined, null,
/// booleans and numbers. (Nothing in Object.prototype or Array.prototype is enumerable.)
fn for_in(v: Js) -> Vec<(String, Js)> {
    match v {
        Js::Json(Value::Object(m)) => js_member_order(m)
            .into_iter()
            .map(|(k, v)| (k.clone(), Js::Json(v)))
            .collect(),
        Js::Json(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), Js::Json(v)))
            .collect(),
        Js::Json(Value::String(s)) => (0..s.encode_utf16().count())
            .map(|i| (i.to_string(), Js::StrUnit))
            .collect(),
        Js::StrUnit => vec![("0".into(), Js::StrUnit)],
        _ => Vec::new(),
    }
}

/// `v.toLowerCase()`: Unicode default lower-casing (Rust's `to_lowercase` does the same full
/// mapping, final sigma included). A TypeError for anything but a string: numbers, booleans,
/// arrays and objects have no callable `toLowerCase`.
fn to_lower_case(v: Js) -> Result<String, Thrown> {
    match v {
        Js::Json(Value::String(s)) => Ok(s.to_lowercase()),
        _ => Err(Thrown),
    }
}

fn insert_defined(target: &mut Map<String, Value>, key: &str, v: Js) {
    if let Some(v) = v.to_json() {
        target.insert(key.into(), v);
    }
}

/// An object's members in JavaScript's own-property order (`for…in`, `JSON.stringify`):
/// array-index keys (canonical decimal integers up to 2^32 - 2) first, ascending, then the
/// other keys in insertion order.
fn js_member_order(m: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut indexed: Vec<(u32, (&String, &Value))> = Vec::new();
    let mut named = Vec::new();
    for (k, v) in m {
        match array_index(k) {
            Some(i) => indexed.push((i, (k, v))),
            None => named.push((k, v)),
        }
    }
    indexed.sort_by_key(|(i, _)| *i);
    indexed.into_iter().map(|(_, kv)| kv).chain(named).collect()
}

fn array_index(k: &str) -> Option<u32> {
    let canonical = k == "0" || (!k.starts_with('0') && k.bytes().all(|b| b.is_ascii_digit()));
    if !canonical {
        return None;
    }
    k.parse::<u32>().ok().filter(|&i| i != u32::MAX)
}

/// A JSON value after a trip through JavaScript and back: `JSON.parse` in couchjs, then
/// `JSON.stringify`, then CouchDB's decoding.
fn js_json(v: &Value) -> Value {
    match v {
        Value::Number(n) => js_number(n),
        Value::Array(items) => Value::Array(items.iter().map(js_json).collect()),
        Value::Object(m) => Value::Object(
            js_member_order(m)
                .into_iter()
                .map(|(k, v)| (k.clone(), js_json(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A number as a JavaScript double, printed by `JSON.stringify` and read back: an integral
/// value below 1e21 prints as plain digits (the shortest round-trip ones, padded with zeros)
/// and comes back an integer, so `2.0` becomes `2` and 2^53 + 1 becomes 2^53; anything else
/// comes back the same double.
fn js_number(n: &Number) -> Value {
    let Some(f) = n.as_f64() else {
        return Value::Number(n.clone());
    };
    if f == 0.0 {
        // -0 prints as "0".
        return Value::from(0);
    }
    if f.fract() == 0.0 && f.abs() < 1e21 {
        // Rust's `Display` for f64 prints the same shortest round-trip digits, without an
        // exponent.
        let digits = f.to_string();
        if let Ok(i) = digits.parse::<i64>() {
            return Value::from(i);
        }
        if let Ok(u) = digits.parse::<u64>() {
            return Value::from(u);
        }
        // Past u64 CouchDB would hold a big integer; serde_json can only hold the double.
    }
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(view: View, doc: Value) -> Vec<(Value, Value)> {
        emit(view, &doc)
    }

    /// Rows as compact JSON text, so member order is checked too (`Map`'s `==` ignores it).
    fn text(rows: &[(Value, Value)]) -> String {
        let arr: Vec<Value> = rows
            .iter()
            .map(|(k, v)| Value::Array(vec![k.clone(), v.clone()]))
            .collect();
        serde_json::to_string(&arr).unwrap()
    }

    fn assert_rows(view: View, doc: Value, expected: Value) {
        let got = text(&emit(view, &doc));
        assert_eq!(
            got,
            serde_json::to_string(&expected).unwrap(),
            "{view} on {doc}"
        );
    }

    // --- The JavaScript the ports follow; a change there must be ported here too. ---

    const JS_SOURCES: &[(&str, &str)] = &[
        ("groups", include_str!("../../../couch_views/groups.json")),
        ("users", include_str!("../../../couch_views/users.json")),
        (
            "accounts",
            include_str!("../../../couch_views/accounts.json"),
        ),
    ];

    /// The map source each port follows, as the design docs hold it (lines concatenated).
    const PORTED: &[(View, &str)] = &[
        (
            View::GroupsListing,
            "function(doc) {  if (doc.pvt_type != 'group' || doc.pvt_deleted) return;  var features = [];  var smartpbx = doc.smartpbx || {};  for (var name in smartpbx) {    if (smartpbx[name].enabled) features.push(name);  }  if (doc.music_on_hold && doc.music_on_hold.media_id) features.push('music_on_hold');  var count = 0;  var members = doc.endpoints || {};  for (var key in members) {    if (members.hasOwnProperty(key)) count++;  }  emit(doc._id, {'id': doc._id, 'name': doc.name, 'features': features, 'endpoints': count, 'flags': doc.flags || []});}",
        ),
        (
            View::GroupsListingByUser,
            "function(doc) {  if (doc.pvt_type != 'group' || doc.pvt_deleted) return;  var features = [];  var smartpbx = doc.smartpbx || {};  for (var name in smartpbx) {    if (smartpbx[name].enabled) features.push(name);  }  if (doc.music_on_hold && doc.music_on_hold.media_id) features.push('music_on_hold');  var count = 0;  var members = doc.endpoints || {};  for (var key in members) {    if (members.hasOwnProperty(key)) count++;  }  var summary = {'id': doc._id, 'name': doc.name, 'features': features, 'endpoints': count, 'flags': doc.flags || []};  for (var member in members) {    if (members[member].type === 'user') emit(member, summary);  }}",
        ),
        (
            View::UsersCredsByMd5,
            "function(doc) {  if (doc.pvt_type != 'user' || doc.pvt_deleted || !doc.enabled || !doc.pvt_md5_auth) return;  emit(doc.pvt_md5_auth, {'owner_id': doc._id, 'account_id': doc.pvt_account_id});}",
        ),
        (
            View::UsersCredsBySha,
            "function(doc) {  if (doc.pvt_type != 'user' || doc.pvt_deleted || !doc.enabled || !doc.pvt_sha1_auth) return;  emit(doc.pvt_sha1_auth, {'owner_id': doc._id, 'account_id': doc.pvt_account_id});}",
        ),
        (
            View::UsersListByUsername,
            "function(doc) {  if (doc.pvt_type != 'user' || doc.pvt_deleted || !doc.username) return;  emit(doc.username.toLowerCase(), null);}",
        ),
        (
            View::AccountsListingByApi,
            "function(doc) {  if (doc.pvt_type != 'account' || doc.pvt_deleted || !doc.pvt_api_key) return;  emit(doc.pvt_api_key, {'account_id': doc.pvt_account_id});}",
        ),
        (
            View::AccountsListingByRealm,
            "function(doc) {  if (doc.pvt_type != 'account' || doc.pvt_deleted || !doc.realm) return;  emit(doc.realm.toLowerCase(), {'account_id': doc._id, 'account_db': doc.pvt_account_db});}",
        ),
        (
            View::AccountsListingByName,
            "function(doc) {  if (doc.pvt_type != 'account' || doc.pvt_deleted || !doc.name) return;  emit(doc.name.toLowerCase().replace(/[^a-z0-9]/g, ''), {'account_id': doc._id, 'account_db': doc.pvt_account_db});}",
        ),
    ];

    #[test]
    fn ports_match_the_design_docs() {
        let mut found = Vec::new();
        for (design, source) in JS_SOURCES {
            let ddoc: Value = serde_json::from_str(source).unwrap();
            assert_eq!(ddoc["_id"], format!("_design/{design}"));
            for (view, def) in ddoc["views"].as_object().unwrap() {
                let map = match &def["map"] {
                    Value::String(s) => s.clone(),
                    Value::Array(lines) => lines.iter().map(|l| l.as_str().unwrap()).collect(),
                    other => panic!("{design}/{view}: map is {other}"),
                };
                let ported = View::find(design, view)
                    .and_then(|v| PORTED.iter().find(|(p, _)| *p == v))
                    .unwrap_or_else(|| panic!("{design}/{view} has no native port"));
                assert_eq!(map, ported.1, "{design}/{view} changed: port it again");
                found.push(ported.0);
            }
        }
        // Every view of ours has its port, and no port is left over; Kazoo's views are ported
        // from Kazoo's design documents, which are not in couch_views/ (tests below).
        let ours: Vec<View> = View::ALL.into_iter().filter(|v| !v.is_kazoos()).collect();
        assert_eq!(found.len(), ours.len());
        assert!(ours.iter().all(|v| found.contains(v)));
    }

    #[test]
    fn non_objects_emit_nothing() {
        let doc = json!({"_id": "g1", "pvt_type": "group"});
        assert!(emit(View::GroupsListing, &json!([doc])).is_empty());
        assert!(emit(View::GroupsListing, &json!("group")).is_empty());
        for view in View::ALL {
            assert!(emit(view, &json!(null)).is_empty());
            assert!(emit(view, &json!({})).is_empty());
        }
    }

    // --- groups ---

    fn group() -> Value {
        json!({
            "_id": "g1",
            "_rev": "1-a",
            "pvt_type": "group",
            "name": "Sales",
            "smartpbx": {"call_recording": {"enabled": true}, "ring": {"enabled": false}},
            "music_on_hold": {"media_id": "m1"},
            "endpoints": {"u1": {"type": "user"}, "d1": {"type": "device"}, "u2": {"type": "user"}},
            "flags": ["x"]
        })
    }

    #[test]
    fn crossbar_listing_full() {
        assert_rows(
            View::GroupsListing,
            group(),
            json!([["g1", {"id": "g1", "name": "Sales",
                "features": ["call_recording", "music_on_hold"], "endpoints": 3, "flags": ["x"]}]]),
        );
    }

    #[test]
    fn crossbar_listing_minimal_drops_undefined_name() {
        assert_rows(
            View::GroupsListing,
            json!({"_id": "g2", "pvt_type": "group"}),
            json!([["g2", {"id": "g2", "features": [], "endpoints": 0, "flags": []}]]),
        );
        // null is not undefined: it stays.
        assert_rows(
            View::GroupsListing,
            json!({"_id": "g2", "pvt_type": "group", "name": null}),
            json!([["g2", {"id": "g2", "name": null, "features": [], "endpoints": 0, "flags": []}]]),
        );
        // A doc without _id (never stored so, but) emits a null key and no "id".
        assert_rows(
            View::GroupsListing,
            json!({"pvt_type": "group"}),
            json!([[null, {"features": [], "endpoints": 0, "flags": []}]]),
        );
    }

    #[test]
    fn crossbar_listing_skips_deleted_and_other_types() {
        for doc in [
            json!({"_id": "g", "pvt_type": "group", "pvt_deleted": true}),
            json!({"_id": "g", "pvt_type": "group", "pvt_deleted": 1}),
            json!({"_id": "g", "pvt_type": "group", "pvt_deleted": "yes"}),
            json!({"_id": "g", "pvt_type": "group", "pvt_deleted": {}}),
            json!({"_id": "g", "pvt_type": "group", "pvt_deleted": []}),
            json!({"_id": "g", "pvt_type": "user"}),
            json!({"_id": "g", "pvt_type": "Group"}),
            json!({"_id": "g", "pvt_type": null}),
            json!({"_id": "g"}),
            json!({"_id": "g", "pvt_type": true}),
            json!({"_id": "g", "pvt_type": ["group", "x"]}),
            json!({"_id": "g", "pvt_type": {}}),
        ] {
            assert!(rows(View::GroupsListing, doc.clone()).is_empty(), "{doc}");
            assert!(
                rows(View::GroupsListingByUser, doc.clone()).is_empty(),
                "{doc}"
            );
        }
        // Falsy pvt_deleted values do not skip.
        for deleted in [json!(false), json!(0), json!(0.0), json!(""), json!(null)] {
            let doc = json!({"_id": "g", "pvt_type": "group", "pvt_deleted": deleted});
            assert_eq!(rows(View::GroupsListing, doc).len(), 1, "{deleted}");
        }
    }

    #[test]
    fn loose_inequality_with_arrays() {
        // ['group'] == 'group' in JavaScript (the array joins to "group"), nested ones too.
        for t in [json!(["group"]), json!([["group"]])] {
            let doc = json!({"_id": "g", "pvt_type": t});
            assert_eq!(rows(View::GroupsListing, doc).len(), 1, "{t}");
        }
        // An object with its own toString cannot be converted: the comparison throws.
        let doc = json!({"_id": "g", "pvt_type": {"toString": "group"}});
        assert!(rows(View::GroupsListing, doc).is_empty());
        let doc = json!({"_id": "g", "pvt_type": ["a", {"toString": 1}]});
        assert!(rows(View::GroupsListing, doc).is_empty());
        assert!(loose_ne(Js::Json(&json!({"toString": 1})), "group").is_err());
        assert!(loose_ne(Js::Json(&json!({"valueOf": 1})), "group").unwrap());
        assert!(!loose_ne(Js::Json(&json!([null, "x"])), ",x").unwrap());
    }

    #[test]
    fn smartpbx_features() {
        let base = |smartpbx: Value| json!({"_id": "g", "pvt_type": "group", "smartpbx": smartpbx});
        let features = |doc: Value| -> Option<Value> {
            let r = rows(View::GroupsListing, doc);
            r.first().map(|(_, v)| v["features"].clone())
        };
        // Truthiness of `enabled`.
        let f = features(base(json!({
            "a": {"enabled": 1}, "b": {"enabled": 0}, "c": {"enabled": ""}, "d": {"enabled": "no"},
            "e": {"enabled": []}, "f": {"enabled": {}}, "g": {"enabled": null}, "h": {},
            "i": {"enabled": -0.0}, "j": {"enabled": 0.5}, "k": 7, "l": "s", "m": [true],
            "n": true, "o": false
        })));
        assert_eq!(f, Some(json!(["a", "d", "e", "f", "j"])));
        // Index-like keys come first, ascending (JavaScript property order).
        let f = features(base(json!({
            "b": {"enabled": true}, "10": {"enabled": true}, "2": {"enabled": true},
            "a": {"enabled": true}, "01": {"enabled": true}, "4294967295": {"enabled": true},
            "4294967294": {"enabled": true}
        })));
        assert_eq!(
            f,
            Some(json!([
                "2",
                "10",
                "4294967294",
                "b",
                "a",
                "01",
                "4294967295"
            ]))
        );
        // An array walks its indexes; a string its code units (whose .enabled is undefined);
        // falsy values and numbers walk nothing.
        let f = features(base(json!([{"enabled": true}, {}, {"enabled": 1}])));
        assert_eq!(f, Some(json!(["0", "2"])));
        for s in [
            json!("abc"),
            json!(5),
            json!(true),
            json!(false),
            json!(0),
            json!(""),
        ] {
            assert_eq!(features(base(s.clone())), Some(json!([])), "{s}");
        }
        // A null member throws: the whole doc is dropped, from both views.
        for s in [json!({"a": {"enabled": true}, "b": null}), json!([null])] {
            assert!(rows(View::GroupsListing, base(s.clone())).is_empty(), "{s}");
            let mut doc = base(s.clone());
            doc["endpoints"] = json!({"u1": {"type": "user"}});
            assert!(rows(View::GroupsListingByUser, doc).is_empty(), "{s}");
        }
    }

    #[test]
    fn music_on_hold_feature() {
        let moh = |m: Value| -> Value {
            let doc = json!({"_id": "g", "pvt_type": "group", "music_on_hold": m});
            rows(View::GroupsListing, doc)[0].1["features"].clone()
        };
        assert_eq!(moh(json!({"media_id": "x"})), json!(["music_on_hold"]));
        assert_eq!(moh(json!({"media_id": {}})), json!(["music_on_hold"]));
        for m in [
            json!({"media_id": ""}),
            json!({"media_id": null}),
            json!({"media_id": 0}),
            json!({"media_id": false}),
            json!({}),
            json!(null),
            json!(""),
            json!("media"),
            json!(["x"]),
            json!(1),
            json!(true),
        ] {
            assert_eq!(moh(m.clone()), json!([]), "{m}");
        }
        // After the smartpbx features.
        let doc = json!({"_id": "g", "pvt_type": "group", "music_on_hold": {"media_id": "m"},
            "smartpbx": {"z": {"enabled": true}}});
        assert_eq!(
            rows(View::GroupsListing, doc)[0].1["features"],
            json!(["z", "music_on_hold"])
        );
    }

    #[test]
    fn endpoint_counts() {
        let count = |e: Value| -> Option<Value> {
            let doc = json!({"_id": "g", "pvt_type": "group", "endpoints": e});
            rows(View::GroupsListing, doc)
                .first()
                .map(|(_, v)| v["endpoints"].clone())
        };
        assert_eq!(count(json!({"a": null, "b": 1, "c": {}})), Some(json!(3)));
        assert_eq!(count(json!([1, 2])), Some(json!(2)));
        // A string counts its UTF-16 code units.
        assert_eq!(count(json!("ab\u{e9}\u{1F600}")), Some(json!(5)));
        for e in [
            json!({}),
            json!([]),
            json!(null),
            json!(7),
            json!(true),
            json!(""),
        ] {
            assert_eq!(count(e.clone()), Some(json!(0)), "{e}");
        }
        // An own `hasOwnProperty` member shadows the method: calling it throws.
        assert_eq!(count(json!({"a": {}, "hasOwnProperty": true})), None);
    }

    #[test]
    fn flags_and_values_as_javascript_gives_them_back() {
        let summary = |extra: Value| -> String {
            let mut doc = json!({"_id": "g", "pvt_type": "group"});
            for (k, v) in extra.as_object().unwrap() {
                doc[k] = v.clone();
            }
            let r = rows(View::GroupsListing, doc);
            serde_json::to_string(&r[0].1).unwrap()
        };
        // `doc.flags || []`
        for falsy in [json!(null), json!(false), json!(0), json!("")] {
            assert!(summary(json!({"flags": falsy})).ends_with(r#""flags":[]}"#));
        }
        assert!(summary(json!({"flags": "f"})).ends_with(r#""flags":"f"}"#));
        assert!(summary(json!({"flags": {}})).ends_with(r#""flags":{}}"#));
        assert!(summary(json!({"flags": 2.0})).ends_with(r#""flags":2}"#));
        // Numbers become JavaScript numbers; objects are re-ordered index keys first.
        assert_eq!(
            summary(json!({"name": {"b": 1.0, "1": -0.0, "a": [1.5, 9007199254740993_u64]}})),
            r#"{"id":"g","name":{"1":0,"b":1,"a":[1.5,9007199254740992]},"features":[],"endpoints":0,"flags":[]}"#
        );
    }

    #[test]
    fn by_user_emits_per_user_endpoint() {
        let rows_ = rows(View::GroupsListingByUser, group());
        let summary = json!({"id": "g1", "name": "Sales",
            "features": ["call_recording", "music_on_hold"], "endpoints": 3, "flags": ["x"]});
        assert_eq!(
            text(&rows_),
            serde_json::to_string(&json!([["u1", summary], ["u2", summary]])).unwrap()
        );
        // Index-like endpoint ids first, as for…in walks them.
        let doc = json!({"_id": "g", "pvt_type": "group",
            "endpoints": {"b": {"type": "user"}, "7": {"type": "user"}}});
        let keys: Vec<Value> = rows(View::GroupsListingByUser, doc)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![json!("7"), json!("b")]);
    }

    #[test]
    fn by_user_type_must_be_the_string_user() {
        let doc = json!({"_id": "g", "pvt_type": "group", "endpoints": {
            "a": {"type": "User"}, "b": {"type": ["user"]}, "c": {}, "d": "user", "e": 1,
            "f": [], "g": {"type": "user"}, "h": {"type": null}
        }});
        let keys: Vec<Value> = rows(View::GroupsListingByUser, doc)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![json!("g")]);
        // An array of endpoints is keyed by index; a string walks code units, none a user.
        let doc = json!({"_id": "g", "pvt_type": "group",
            "endpoints": [{"type": "device"}, {"type": "user"}]});
        assert_eq!(rows(View::GroupsListingByUser, doc)[0].0, json!("1"));
        let doc = json!({"_id": "g", "pvt_type": "group", "endpoints": "user"});
        assert!(rows(View::GroupsListingByUser, doc).is_empty());
        // No endpoints: no rows, but crossbar_listing still lists the group.
        let doc = json!({"_id": "g", "pvt_type": "group"});
        assert!(rows(View::GroupsListingByUser, doc.clone()).is_empty());
        assert_eq!(rows(View::GroupsListing, doc).len(), 1);
    }

    #[test]
    fn by_user_null_endpoint_drops_all_rows() {
        // Rows emitted before the throw are dropped too.
        for endpoints in [
            json!({"u1": {"type": "user"}, "u2": null}),
            json!([{"type": "user"}, null]),
        ] {
            let doc = json!({"_id": "g", "pvt_type": "group", "endpoints": endpoints});
            assert!(rows(View::GroupsListingByUser, doc.clone()).is_empty());
            // crossbar_listing only counts them, which does not read the entries.
            assert_eq!(rows(View::GroupsListing, doc).len(), 1);
        }
    }

    // --- users ---

    fn user() -> Value {
        json!({"_id": "u1", "pvt_type": "user", "enabled": true, "username": "Alice",
            "pvt_md5_auth": "md5hash", "pvt_sha1_auth": "shahash", "pvt_account_id": "acc1"})
    }

    #[test]
    fn creds_views() {
        assert_rows(
            View::UsersCredsByMd5,
            user(),
            json!([["md5hash", {"owner_id": "u1", "account_id": "acc1"}]]),
        );
        assert_rows(
            View::UsersCredsBySha,
            user(),
            json!([["shahash", {"owner_id": "u1", "account_id": "acc1"}]]),
        );
        // No account id: the member is dropped.
        let mut doc = user();
        doc.as_object_mut().unwrap().remove("pvt_account_id");
        assert_rows(
            View::UsersCredsByMd5,
            doc,
            json!([["md5hash", {"owner_id": "u1"}]]),
        );
        // The key is whatever truthy value the field holds, as JavaScript gives it back.
        let mut doc = user();
        doc["pvt_md5_auth"] = json!({"z": 1.0, "0": true});
        assert_rows(
            View::UsersCredsByMd5,
            doc,
            json!([[{"0": true, "z": 1}, {"owner_id": "u1", "account_id": "acc1"}]]),
        );
    }

    #[test]
    fn creds_need_enabled_and_a_hash() {
        for (field, value) in [
            ("enabled", json!(false)),
            ("enabled", json!(0)),
            ("enabled", json!("")),
            ("enabled", json!(null)),
            ("pvt_md5_auth", json!("")),
            ("pvt_md5_auth", json!(null)),
            ("pvt_md5_auth", json!(0)),
            ("pvt_deleted", json!(true)),
            ("pvt_type", json!("account")),
        ] {
            let mut doc = user();
            doc[field] = value.clone();
            assert!(
                rows(View::UsersCredsByMd5, doc).is_empty(),
                "{field}: {value}"
            );
        }
        for missing in ["enabled", "pvt_md5_auth", "pvt_type"] {
            let mut doc = user();
            doc.as_object_mut().unwrap().remove(missing);
            assert!(rows(View::UsersCredsByMd5, doc).is_empty(), "{missing}");
        }
        // Truthy but odd `enabled` values count as enabled.
        for enabled in [json!("false"), json!([]), json!({}), json!(1)] {
            let mut doc = user();
            doc["enabled"] = enabled.clone();
            assert_eq!(rows(View::UsersCredsBySha, doc).len(), 1, "{enabled}");
        }
    }

    #[test]
    fn list_by_username() {
        assert_rows(View::UsersListByUsername, user(), json!([["alice", null]]));
        // Disabled users are listed: this view does not check `enabled`.
        let mut doc = user();
        doc["enabled"] = json!(false);
        assert_rows(View::UsersListByUsername, doc, json!([["alice", null]]));
        // Unicode lower-casing, final sigma included.
        let mut doc = user();
        doc["username"] = json!("ÀÉÎ ΟΔΟΣ İ");
        assert_rows(
            View::UsersListByUsername,
            doc,
            json!([["àéî οδος i\u{307}", null]]),
        );
        // Falsy: skipped. Truthy but not a string: toLowerCase throws, no row.
        for name in [json!(""), json!(null), json!(0), json!(false)] {
            let mut doc = user();
            doc["username"] = name.clone();
            assert!(rows(View::UsersListByUsername, doc).is_empty(), "{name}");
        }
        for name in [
            json!(5),
            json!(true),
            json!(["a"]),
            json!({"toLowerCase": "x"}),
        ] {
            let mut doc = user();
            doc["username"] = name.clone();
            assert!(rows(View::UsersListByUsername, doc).is_empty(), "{name}");
        }
        let mut doc = user();
        doc["pvt_deleted"] = json!(true);
        assert!(rows(View::UsersListByUsername, doc).is_empty());
    }

    // --- accounts ---

    fn account() -> Value {
        json!({"_id": "a1", "pvt_type": "account", "realm": "Sip.Example.COM",
            "name": "Acme, Inc. #2 Ünïcode", "pvt_api_key": "k1", "pvt_account_id": "a1",
            "pvt_account_db": "account%2Fa1"})
    }

    #[test]
    fn accounts_views() {
        assert_rows(
            View::AccountsListingByApi,
            account(),
            json!([["k1", {"account_id": "a1"}]]),
        );
        assert_rows(
            View::AccountsListingByRealm,
            account(),
            json!([["sip.example.com", {"account_id": "a1", "account_db": "account%2Fa1"}]]),
        );
        assert_rows(
            View::AccountsListingByName,
            account(),
            json!([["acmeinc2ncode", {"account_id": "a1", "account_db": "account%2Fa1"}]]),
        );
        // listing_by_api takes account_id from pvt_account_id, not _id.
        let mut doc = account();
        doc["pvt_account_id"] = json!("other");
        assert_rows(
            View::AccountsListingByApi,
            doc,
            json!([["k1", {"account_id": "other"}]]),
        );
        // Missing pvt_account_db: dropped from the value.
        let mut doc = account();
        doc.as_object_mut().unwrap().remove("pvt_account_db");
        assert_rows(
            View::AccountsListingByRealm,
            doc,
            json!([["sip.example.com", {"account_id": "a1"}]]),
        );
    }

    #[test]
    fn listing_by_name_edge_cases() {
        let key = |name: Value| -> Option<Value> {
            let mut doc = account();
            doc["name"] = name;
            rows(View::AccountsListingByName, doc)
                .first()
                .map(|(k, _)| k.clone())
        };
        // Everything outside [a-z0-9] after lower-casing goes, to the empty string.
        assert_eq!(key(json!("!!!")), Some(json!("")));
        assert_eq!(key(json!("日本")), Some(json!("")));
        // The Kelvin sign lower-cases to ASCII k.
        assert_eq!(key(json!("\u{212A}9")), Some(json!("k9")));
        assert_eq!(key(json!("")), None);
        assert_eq!(key(json!(42)), None);
        assert_eq!(key(json!({"a": 1})), None);
    }

    #[test]
    fn accounts_skip_rules() {
        for view in [
            View::AccountsListingByApi,
            View::AccountsListingByRealm,
            View::AccountsListingByName,
        ] {
            for (field, value) in [
                ("pvt_type", json!("user")),
                ("pvt_deleted", json!(true)),
                ("pvt_type", json!(null)),
            ] {
                let mut doc = account();
                doc[field] = value.clone();
                assert!(rows(view, doc).is_empty(), "{view} {field}: {value}");
            }
        }
        let mut doc = account();
        doc["realm"] = json!(["sip.example.com"]);
        assert!(rows(View::AccountsListingByRealm, doc.clone()).is_empty());
        assert_eq!(rows(View::AccountsListingByApi, doc).len(), 1);
        let mut doc = account();
        doc["pvt_api_key"] = json!(0);
        assert!(rows(View::AccountsListingByApi, doc).is_empty());
    }

    // --- Kazoo's attributes/owned ---

    #[test]
    fn owned_by_owner_id_or_else_by_every_hotdesk_user() {
        assert_rows(
            View::AttributesOwned,
            json!({"_id": "d1", "pvt_type": "device", "owner_id": "u1"}),
            json!([[["u1", "device"], "d1"]]),
        );
        // Hotdesk users replace the owner, one row each, in JavaScript key order.
        assert_rows(
            View::AttributesOwned,
            json!({"_id": "d1", "pvt_type": "device", "owner_id": "u1",
                   "hotdesk": {"users": {"u3": {}, "u2": {}}}}),
            json!([[["u3", "device"], "d1"], [["u2", "device"], "d1"]]),
        );
        // An empty hotdesk list leaves the owner; any type is owned, a missing one is null.
        assert_rows(
            View::AttributesOwned,
            json!({"_id": "v1", "pvt_type": "vmbox", "owner_id": "u1", "hotdesk": {"users": {}}}),
            json!([[["u1", "vmbox"], "v1"]]),
        );
        assert_rows(
            View::AttributesOwned,
            json!({"_id": "x", "owner_id": "u1"}),
            json!([[["u1", null], "x"]]),
        );
    }

    #[test]
    fn owned_skips_deleted_and_unowned_documents() {
        for doc in [
            json!({"_id": "d1", "pvt_type": "device", "owner_id": "u1", "pvt_deleted": true}),
            json!({"_id": "d1", "pvt_type": "device"}),
            json!({"_id": "d1", "pvt_type": "device", "owner_id": ""}),
            json!({"_id": "d1", "pvt_type": "device", "hotdesk": {"users": {}}}),
            // An own `hasOwnProperty` member shadows the method: the call throws.
            json!({"_id": "d1", "owner_id": "u1", "hotdesk": {"users": {"hasOwnProperty": 1}}}),
            // A null hotdesk is falsy and walks nothing; no owner either.
            json!({"_id": "d1", "hotdesk": null}),
        ] {
            assert!(rows(View::AttributesOwned, doc.clone()).is_empty(), "{doc}");
        }
        // `hotdesk` a string: `("x").users` is undefined, so the owner counts.
        assert_rows(
            View::AttributesOwned,
            json!({"_id": "d1", "owner_id": "u1", "hotdesk": "x"}),
            json!([[["u1", null], "d1"]]),
        );
    }

    // --- Kazoo's callflows/crossbar_listing ---

    #[test]
    fn callflow_listing_summarises_and_walks_the_flow() {
        let doc = json!({
            "_id": "c1", "pvt_type": "callflow", "name": "Sales", "numbers": ["100"],
            "patterns": [], "group_id": "g1",
            "flow": {"module": "ring_group", "data": {"endpoints": []}, "children": {
                "_": {"module": "voicemail", "data": {"skip_module": true}, "children": {
                    "_": {"module": "ring_group", "data": {}, "children": {}}}},
                "1": {"module": "play", "data": {"skip_module": false}}
            }}
        });
        assert_rows(
            View::CallflowsListing,
            doc,
            json!([["c1", {"id": "c1", "name": "Sales", "numbers": ["100"], "patterns": [],
                "featurecode": false, "group_id": "g1", "modules": ["ring_group", "play"],
                "flags": []}]]),
        );
        // A node without data is not listed; a truthy featurecode is kept as it is.
        assert_rows(
            View::CallflowsListing,
            json!({"_id": "c2", "pvt_type": "callflow", "featurecode": {"name": "x"},
                   "flow": {"module": "user"}}),
            json!([["c2", {"id": "c2", "featurecode": {"name": "x"}, "modules": [],
                "flags": []}]]),
        );
    }

    #[test]
    fn callflow_listing_skips_and_throws_as_javascript_does() {
        for doc in [
            json!({"_id": "c", "pvt_type": "callflow", "pvt_deleted": true}),
            json!({"_id": "c", "pvt_type": "device"}),
            // A null child: `flow.module` of null throws.
            json!({"_id": "c", "pvt_type": "callflow",
                   "flow": {"module": "a", "data": {}, "children": {"_": null}}}),
        ] {
            assert!(
                rows(View::CallflowsListing, doc.clone()).is_empty(),
                "{doc}"
            );
        }
        // A falsy flow is not walked.
        assert_eq!(
            rows(
                View::CallflowsListing,
                json!({"_id": "c", "pvt_type": "callflow", "flow": 0})
            )[0]
            .1["modules"],
            json!([])
        );
    }

    #[test]
    fn js_numbers() {
        let n = |v: Value| serde_json::to_string(&js_json(&v)).unwrap();
        assert_eq!(n(json!(1.0)), "1");
        assert_eq!(n(json!(-0.0)), "0");
        assert_eq!(n(json!(1.5)), "1.5");
        assert_eq!(n(json!(-7)), "-7");
        // JavaScript prints the shortest digits that round-trip, padded with zeros.
        assert_eq!(
            n(json!(12_345_678_901_234_567_891_u64)),
            "12345678901234567000"
        );
        assert_eq!(n(json!(9_007_199_254_740_993_u64)), "9007199254740992");
        // Past u64 (CouchDB would hold a big integer) and from 1e21 on (JavaScript prints an
        // exponent, read back as a float), the double itself.
        for big in [json!(u64::MAX), json!(1e20), json!(1e21), json!(-1e300)] {
            let back = js_json(&big);
            assert!(back.is_f64(), "{big} -> {back}");
            assert_eq!(back.as_f64(), big.as_f64());
        }
    }
}
