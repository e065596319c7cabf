//! A group's history on the wire (kz-groups' extension, issue 18): one group's entries, one
//! entry with the version after it, the account's entries by time, and a restore, which is an
//! ordinary write (`GroupWrites`) of a past version over the current one. Whoever may read the
//! group may read its history (the pipeline's stages 4-6 decide, as for the group); the entries
//! of a group deleted since are still served. Paging is Crossbar's: `page_size`, `start_key`,
//! `next_start_key`, newest first.
use serde_json::{Map, Value};

use super::request::{GroupRequest, Target};
use super::{validate, write_failed, writes};
use crate::domain::group;
use crate::domain::history::{self, Action, Entry};
use crate::domain::ids::DocId;
use crate::envelope::Data;
use crate::error::ApiError;
use crate::pipeline::reply::{Outcome, Revision, Success};
use crate::store::history::AccountRange;
use crate::writes::Write;

/// The greatest key of the account-wide order.
const KEY_END: &str = "\u{fff0}";
/// Rows read per call while an `action` filter skips some.
const CHUNK: usize = 200;
/// The largest page: a larger `page_size` is answered with this many entries.
const MAX_PAGE: usize = 1000;

/// `GET …/history`, `GET …/history/{ENTRY}`, `GET …/groups/_account/history`.
pub async fn serve(req: &GroupRequest<'_>) -> Result<Outcome, ApiError> {
    match &req.target {
        Target::History { group: None, .. } => account(req).await,
        Target::History {
            entry: Some(raw), ..
        } => {
            let (_, entry) = load_entry(req, raw).await?;
            Ok(done(serde_json::to_value(entry).unwrap_or_default(), None))
        }
        _ => group_entries(req).await,
    }
}

fn done(data: Value, extra: Option<Vec<(&'static str, Value)>>) -> Outcome {
    let revision = match &data {
        Value::Array(items) if items.is_empty() => Revision::None,
        _ => Revision::BodyHash,
    };
    Outcome::Done(Success {
        extra: extra.unwrap_or_default(),
        is_get: true,
        ..Success::of(Data::Json(data), revision)
    })
}

/// `page_size` as the listings read it (groups-contract §5.2), at most [`MAX_PAGE`].
fn page_size(req: &GroupRequest<'_>) -> Result<usize, ApiError> {
    let Some(v) = req.env.req_value("page_size") else {
        return Ok(req.state.page_size.min(MAX_PAGE));
    };
    let n = match &*v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    match n {
        None => Err(ApiError::FaultyRequest("invalid page size")),
        Some(n) if n < 1 => Err(ApiError::FaultyRequest("page size must be at least 1")),
        Some(n) => Ok((n as usize).min(MAX_PAGE)),
    }
}

fn start_key(req: &GroupRequest<'_>) -> Option<String> {
    req.env
        .req_value("start_key")
        .and_then(|v| v.as_str().map(str::to_owned))
}

/// A listing entry: the entry without the version (`…/history/{ENTRY}` has it).
fn summary(entry: Entry) -> Value {
    let mut value = serde_json::to_value(entry).unwrap_or_default();
    if let Some(fields) = value.as_object_mut() {
        fields.shift_remove("version");
    }
    value
}

fn paging(n: usize, start: Option<String>, next: Option<String>) -> Vec<(&'static str, Value)> {
    let mut extra = vec![("page_size", Value::from(n))];
    extra.extend(start.map(|s| ("start_key", Value::from(s))));
    extra.extend(next.map(|s| ("next_start_key", Value::from(s))));
    extra
}

/// One group's entries, newest first. A group that never existed (no entry, no document) is
/// Crossbar's 404 for a group it cannot load.
async fn group_entries(req: &GroupRequest<'_>) -> Result<Outcome, ApiError> {
    let id = req.group_id()?;
    let size = page_size(req)?;
    let start = match start_key(req) {
        Some(raw) => Some(
            history::EntryId::parse(&raw).ok_or(ApiError::FaultyRequest("invalid start key"))?,
        ),
        None => None,
    };
    let mut entries = req
        .state
        .history
        .store
        .group(&req.account, &id, start.as_ref(), size + 1)
        .await?;
    if entries.is_empty() && start.is_none() && !group_exists(req, &id).await? {
        return Err(req.not_found());
    }
    let next = (entries.len() > size).then(|| entries.pop().map(|e| e.id.to_string()));
    let items: Vec<Value> = entries.into_iter().map(summary).collect();
    let extra = paging(items.len(), start.map(|s| s.to_string()), next.flatten());
    Ok(done(Value::Array(items), Some(extra)))
}

/// The group's document exists, deleted softly or not (never another type's document).
async fn group_exists(req: &GroupRequest<'_>, id: &DocId) -> Result<bool, ApiError> {
    let doc = req.state.store.get_doc(&req.account.db(), id).await?;
    Ok(doc
        .as_ref()
        .and_then(Value::as_object)
        .is_some_and(group::is_group_type))
}

async fn load_entry(req: &GroupRequest<'_>, raw: &str) -> Result<(DocId, Entry), ApiError> {
    let id = req.group_id()?;
    let missing = || ApiError::BadIdentifier(raw.to_owned());
    let entry_id = history::EntryId::parse(raw).ok_or_else(missing)?;
    let entry = req
        .state
        .history
        .store
        .entry(&req.account, &id, &entry_id)
        .await?
        .ok_or_else(missing)?;
    Ok((id, entry))
}

/// Gregorian seconds from a query value, as Crossbar's `created_from`/`created_to`.
fn seconds(req: &GroupRequest<'_>, key: &str) -> Result<Option<i64>, ApiError> {
    match req.env.req_value(key) {
        None => Ok(None),
        Some(v) => match &*v {
            Value::Number(n) => n.as_i64().map(Some),
            Value::String(s) => s.trim().parse::<i64>().ok().map(Some),
            _ => None,
        }
        .ok_or(ApiError::FaultyRequest("invalid time range")),
    }
}

/// The account's entries, newest first, within `created_from`..`created_to` (Gregorian
/// seconds, inclusive) and of one `action` when given.
async fn account(req: &GroupRequest<'_>) -> Result<Outcome, ApiError> {
    let size = page_size(req)?;
    let (from, to) = (seconds(req, "created_from")?, seconds(req, "created_to")?);
    let action = match req.env.req_value("action") {
        None => None,
        Some(v) => Some(
            v.as_str()
                .and_then(Action::parse)
                .ok_or(ApiError::FaultyRequest("invalid action"))?,
        ),
    };
    let start = start_key(req);
    let mut range = AccountRange {
        upper: start.clone().unwrap_or_else(|| match to {
            Some(to) => format!("{:012}:{KEY_END}", to.max(0)),
            None => KEY_END.to_owned(),
        }),
        lower: format!("{:012}:", from.unwrap_or(0).max(0)),
        limit: if action.is_some() { CHUNK } else { size + 1 },
    };
    let mut found: Vec<(String, Entry)> = Vec::new();
    // The upper bound is inclusive: a read on skips the key it starts at.
    let mut after: Option<String> = None;
    loop {
        let rows = req
            .state
            .history
            .store
            .account(&req.account, &range)
            .await?;
        let exhausted = rows.len() < range.limit;
        let last = rows.last().map(|(key, _)| key.clone());
        found.extend(rows.into_iter().filter(|(key, e)| {
            after.as_ref().is_none_or(|a| key < a) && action.is_none_or(|a| e.action == a)
        }));
        match last {
            Some(last) if !exhausted && found.len() <= size => {
                range.upper = last.clone();
                after = Some(last);
            }
            _ => break,
        }
    }
    found.truncate(size + 1);
    let next = (found.len() > size).then(|| found.pop().map(|(key, _)| key));
    let items: Vec<Value> = found.into_iter().map(|(_, e)| summary(e)).collect();
    let extra = paging(items.len(), start, next.flatten());
    Ok(done(Value::Array(items), Some(extra)))
}

/// `PUT`/`POST …/history/{ENTRY}/restore`: the entry's version written over the current
/// group, over the revision the request names (`data.rev`, else `If-Match`, else the current
/// one): validated, stamped, announced and recorded like a `POST`, as a `restored` change.
pub async fn restore(req: &GroupRequest<'_>) -> Result<Outcome, ApiError> {
    let Target::History {
        entry: Some(raw), ..
    } = &req.target
    else {
        return Err(ApiError::NotFound);
    };
    let (id, entry) = load_entry(req, raw).await?;
    let version = entry.version.ok_or(ApiError::FaultyRequest(
        "the entry's change removed the group: nothing to restore",
    ))?;
    let current = req.state.store.get_doc(&req.account.db(), &id).await?;
    let current = match current {
        Some(Value::Object(doc)) if group::is_group_type(&doc) => Some(doc),
        Some(_) => return Err(req.not_found()),
        None => None,
    };
    let rev = current
        .as_ref()
        .and_then(|d| d.get("_rev"))
        .and_then(Value::as_str);
    if let Some(outcome) = req.conditions.check(rev, false)? {
        return Ok(outcome);
    }
    if let Some(asked) = req.env.data.get("rev") {
        if asked.as_str() != rev {
            return Err(ApiError::Conflict);
        }
    }
    let public = validate(req.state, restorable(version))?;
    let private = current
        .as_ref()
        .map(|doc| {
            let (_, mut private) = group::split(doc.clone());
            private.shift_remove("pvt_deleted");
            private
        })
        .unwrap_or_default();
    let write = Write {
        action: Action::Restored,
        before: current.as_ref(),
    };
    let (new_rev, doc) = writes(req)
        .replace(&id, public, private, write)
        .await
        .map_err(|e| write_failed(req, e))?;
    Ok(Outcome::Done(Success::ok(
        Value::Object(group::public_view(&doc)),
        Revision::Doc(new_rev),
    )))
}

/// A version as the history shows it, made request data again: without `id` and the
/// `deleted` mark.
fn restorable(mut version: Map<String, Value>) -> Value {
    version.shift_remove("id");
    version.shift_remove("deleted");
    Value::Object(version)
}
