//! The Groups resource itself: stages 8–11 of the pipeline (validate, conditional headers,
//! content type, execute) for `create`, `fetch`, `update`, `patch` and `delete`, named as
//! Crossbar's `cb_groups` names them; `summary` is in [`listing`]. Which verb reaches which
//! handler is in the route table (`routes::serve_groups`).
pub mod history;
pub mod listing;
pub mod membership;
pub mod request;

use std::sync::Arc;

use actix_web::http::{Method, StatusCode};
use serde_json::{json, Map, Value};

use crate::domain::document::StoredDoc;
use crate::domain::group;
use crate::domain::history::Action;
use crate::domain::ids::DocId;
use crate::error::{ApiError, StoreContext};
use crate::pipeline::reply::{Outcome, Revision, Success};
use crate::pipeline::AppState;
use crate::store::views::Installed;
use crate::store::StoreError;
use crate::writes::{self, assemble, GroupWrites, Write};
use request::GroupRequest;

/// What every groups request does before its handler: the account's design documents are
/// brought up to date on its first use by this process, the `users/{U}` hook runs (stage 8),
/// and tunnelling is refused unless it came through POST (§1: cowboy's bare 404).
pub async fn prepare(req: &GroupRequest<'_>) -> Result<(Installed, Option<DocId>), ApiError> {
    // Where no server-wide change feed runs, the databases served are those followed for
    // conflicts.
    req.state.resolver.watch(&req.account.db());
    req.state.history_feed.watch(&req.account.db());
    let views = req
        .state
        .views
        .ensure(&req.account)
        .await
        .map_err(|e| ApiError::from_store(e, StoreContext::View))?;
    let user = match &req.user {
        Some(raw) => Some(check_user(req, raw).await?),
        None => None,
    };
    if req.method != Method::POST && req.verb != req.method {
        return Err(ApiError::Bare(StatusCode::NOT_FOUND));
    }
    Ok((views, user))
}

/// `users/{U}` must name an existing, not soft-deleted document of any type (§1).
async fn check_user(req: &GroupRequest<'_>, raw: &str) -> Result<DocId, ApiError> {
    let id = DocId::parse(raw).ok_or_else(|| ApiError::BadIdentifier(raw.to_owned()))?;
    match req.state.store.get_doc(&req.account.db(), &id).await {
        Ok(Some(Value::Object(doc))) if !group::is_soft_deleted(&doc) => Ok(id),
        Ok(_) => Err(ApiError::BadIdentifier(raw.to_owned())),
        Err(e) => Err(ApiError::from_store(e, StoreContext::Hook)),
    }
}

/// The request data with private keys removed; `start_key` is a paging option, not data (§2.3).
fn request_public_data(data: Value) -> Value {
    match data {
        Value::Object(data) => {
            let mut public = group::strip_private(data);
            public.remove("start_key");
            Value::Object(public)
        }
        other => other,
    }
}

fn validate(state: &AppState, data: Value) -> Result<Map<String, Value>, ApiError> {
    writes::validate(&state.schemas, data)
}

/// Loads a document; `Ok(None)` when it is missing, soft-deleted, or (with `groups_only`) of
/// another type, all of which Crossbar answers with 404 `bad_identifier`. A document in conflict
/// is resolved first (within the resolver's budget), so the client sees the merged document;
/// past the budget it sees CouchDB's winner. Either way it is then read again past the caches:
/// where another instance resolved it first (this one then finds nothing left to do, or meets
/// that instance's writes), the cache may still hold the conflicted copy read a moment ago.
async fn load(
    req: &GroupRequest<'_>,
    id: &DocId,
    groups_only: bool,
) -> Result<Option<StoredDoc>, ApiError> {
    let db = req.account.db();
    let mut doc = req.state.store.get_shared(&db, id).await?;
    if doc.as_deref().is_some_and(in_conflict) {
        req.state.resolver.settle(&db, id).await;
        let fresh = req
            .state
            .store
            .get_docs(&db, std::slice::from_ref(id))
            .await?;
        doc = fresh.into_iter().next().flatten().map(Arc::new);
    }
    Ok(doc.and_then(StoredDoc::from_shared).filter(|doc| {
        let fields = doc.fields();
        !group::is_soft_deleted(fields) && (!groups_only || group::is_live_group(fields))
    }))
}

/// CouchDB's `_conflicts`: other live leaves beside the winner.
fn in_conflict(doc: &Value) -> bool {
    doc.get("_conflicts")
        .and_then(Value::as_array)
        .is_some_and(|revs| !revs.is_empty())
}

/// The group the path names, loaded, for a handler that reads or removes it.
async fn load_group(req: &GroupRequest<'_>) -> Result<(DocId, StoredDoc), ApiError> {
    let id = req.group_id()?;
    let doc = load(req, &id, true).await?.ok_or_else(|| req.not_found())?;
    Ok((id, doc))
}

/// The write path, on behalf of the request's caller.
fn writes<'a>(req: &'a GroupRequest<'_>) -> GroupWrites<'a> {
    GroupWrites {
        store: &req.state.store,
        notifier: &*req.state.notifier,
        recent: &req.state.recent,
        account: &req.account,
        request_id: &req.request_id,
        author: Some(&req.author),
        history: &req.state.history,
        actor: &req.actor,
    }
}

/// Saves and announces; a CouchDB conflict is a 409 and nothing is announced. Gives the saved
/// document back, for the answer.
async fn save(
    req: &GroupRequest<'_>,
    id: &DocId,
    doc: Map<String, Value>,
    write: Write<'_>,
) -> Result<(String, Map<String, Value>), ApiError> {
    writes(req)
        .save(id, doc, write)
        .await
        .map_err(|e| write_failed(req, e))
}

/// A write that failed: a document gone meanwhile (another request deleted it between our read
/// and our write) is answered as a missing group, as Crossbar's `handle_datamgr_errors` does
/// (404 `bad_identifier`); anything else as the store said.
fn write_failed(req: &GroupRequest<'_>, e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => req.not_found(),
        e => e.into(),
    }
}

/// PUT: validate, choose the id, create (§4.3, §6.2).
pub async fn create(req: &GroupRequest<'_>, data: Value) -> Result<Outcome, ApiError> {
    let requested = data.as_object().and_then(group::requested_id);
    let chosen = requested.as_ref().map(|raw| match raw {
        Value::String(s) => DocId::parse(s).ok_or(raw),
        other => Err(other),
    });
    let validated = validate(req.state, request_public_data(data));
    let id = match chosen {
        Some(Err(bad)) => {
            // One response carries every error of the request (§6.6).
            let mut errors = match validated {
                Err(ApiError::Validation(errors)) => errors,
                _ => Map::new(),
            };
            errors.insert(
                "id".into(),
                json!({"invalid": {"message": "Invalid document id", "value": bad}}),
            );
            return Err(ApiError::Validation(errors));
        }
        Some(Ok(id)) => id,
        None => DocId::generate(),
    };
    let public = validated?;
    // Any If-Match on a create fails (§3.6 412).
    if let Some(outcome) = req.conditions.check(None, false)? {
        return Ok(outcome);
    }
    req.conditions.check_content_type()?;
    let mut doc = assemble(&id, public, Map::new());
    writes(req).stamp(&mut doc);
    let created = Write {
        action: Action::Created,
        before: None,
    };
    let (rev, doc) = save(req, &id, doc, created).await?;
    Ok(Outcome::Done(Success {
        status: StatusCode::CREATED,
        location: Some(format!("{}/{}", req.path, id)),
        ..Success::ok(Value::Object(group::public_view(&doc)), Revision::Doc(rev))
    }))
}

/// GET one group.
pub async fn fetch(req: &GroupRequest<'_>) -> Result<Outcome, ApiError> {
    let (_, doc) = load_group(req).await?;
    if let Some(outcome) = req.conditions.check(Some(&doc.rev), true)? {
        return Ok(outcome);
    }
    Ok(Outcome::Done(Success {
        is_get: true,
        ..Success::ok(
            Value::Object(group::public_view(doc.fields())),
            Revision::Doc(doc.rev),
        )
    }))
}

/// POST: the body replaces the public part; the stored private fields are kept (§6.3).
pub async fn update(req: &GroupRequest<'_>, data: Value) -> Result<Outcome, ApiError> {
    let public = validate(req.state, request_public_data(data))?;
    let (id, stored) = load_group(req).await?;
    let before = stored.fields().clone();
    let (_, private) = group::split(stored.into_fields());
    write_over(req, &id, public, private, &before, Action::Updated).await
}

/// PATCH: deep-merge into the stored doc, then validate the result (§6.4, §6.5).
pub async fn patch(req: &GroupRequest<'_>, data: Value) -> Result<Outcome, ApiError> {
    let body = request_public_data(data);
    let id = req.group_id();
    // The first load accepts any type; without a doc only the body is validated.
    let stored = match &id {
        Ok(id) => load(req, id, false).await?,
        Err(_) => None,
    };
    let live = stored
        .as_ref()
        .is_some_and(|doc| group::is_live_group(doc.fields()));
    let (public, private, before) = match stored {
        Some(doc) => {
            let before = doc.fields().clone();
            let (public, private) = group::split(doc.into_fields());
            (
                writes::patched(&req.state.schemas, public, body)?,
                private,
                before,
            )
        }
        None => (validate(req.state, body)?, Map::new(), Map::new()),
    };
    let id = id?;
    if !live {
        return Err(req.not_found());
    }
    write_over(req, &id, public, private, &before, Action::Patched).await
}

/// The common end of POST and PATCH: conditions against the stored revision (`before`'s),
/// content type, save over it.
async fn write_over(
    req: &GroupRequest<'_>,
    id: &DocId,
    public: Map<String, Value>,
    private: Map<String, Value>,
    before: &Map<String, Value>,
    action: Action,
) -> Result<Outcome, ApiError> {
    let rev = before.get("_rev").and_then(Value::as_str).unwrap_or("");
    if let Some(outcome) = req.conditions.check(Some(rev), false)? {
        return Ok(outcome);
    }
    req.conditions.check_content_type()?;
    let write = Write {
        action,
        before: Some(before),
    };
    let (new_rev, doc) = writes(req)
        .replace(id, public, private, write)
        .await
        .map_err(|e| write_failed(req, e))?;
    Ok(Outcome::Done(Success::ok(
        Value::Object(group::public_view(&doc)),
        Revision::Doc(new_rev),
    )))
}

/// DELETE: soft unless `should_soft_delete` is given and is not exactly "true" (§4.4).
pub async fn delete(req: &GroupRequest<'_>) -> Result<Outcome, ApiError> {
    let (id, stored) = load_group(req).await?;
    if let Some(outcome) = req.conditions.check(Some(&stored.rev), false)? {
        return Ok(outcome);
    }
    let mut data = group::public_view(stored.fields());
    let soft = req.env.req_flag("should_soft_delete").unwrap_or(true);
    if soft {
        let mut doc = stored.clone().into_fields();
        doc.insert("pvt_deleted".into(), Value::Bool(true));
        writes(req).stamp(&mut doc);
        let deleted = Write {
            action: Action::Deleted,
            before: Some(stored.fields()),
        };
        save(req, &id, doc, deleted).await?;
    } else {
        writes(req)
            .remove(&id, stored.fields(), &stored.rev)
            .await
            .map_err(|e| write_failed(req, e))?;
    }
    data.insert("_read_only".into(), json!({"deleted": true}));
    Ok(Outcome::Done(Success::ok(
        Value::Object(data),
        Revision::Doc(stored.rev),
    )))
}
