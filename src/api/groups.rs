//! The Groups resource itself: stages 8–11 of the pipeline (validate, conditional headers,
//! content type, execute) for `summary`, `create`, `fetch`, `update`, `patch` and `delete`,
//! named as Crossbar's `cb_groups` names them.
use serde_json::{json, Map, Value};

use super::listing;
use super::path::Target;
use super::reply::{Outcome, Revision, Success};
use super::{parse_group_id, AppState};
use crate::domain::clock;
use crate::domain::group::{self, Author, SaveStamp};
use crate::domain::ids::{AccountId, DocId};
use crate::domain::merge::patch_merge;
use crate::envelope::{RequestEnvelope, Tail};
use crate::error::ApiError;
use crate::notices::{Change, ChangeAction, DocChange};
use crate::store::StoreError;

/// A request that passed stages 1–7.
pub struct GroupRequest<'a> {
    pub state: &'a AppState,
    pub account: AccountId,
    /// The raw `{U}` of `users/{U}/groups`.
    pub user: Option<String>,
    pub target: Target,
    pub method: String,
    pub verb: String,
    pub env: RequestEnvelope,
    pub request_id: String,
    pub author: Author,
    /// The request path without a trailing slash, for `Location`.
    pub path: String,
    pub conditions: Conditions,
}

/// Stage 9 and 10 inputs: conditional headers and whether the body's content type is accepted.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
    pub content_type_ok: bool,
}

impl Conditions {
    /// cowboy's conditional checks against the resource's current revision (`None`: the
    /// resource does not exist yet). `Some(outcome)` short-cuts the request with a 304.
    fn check(&self, current: Option<&str>, is_get: bool) -> Result<Option<Outcome>, ApiError> {
        if let Some(if_match) = &self.if_match {
            let ok = match current {
                None => false,
                Some(rev) => if_match.trim() == "*" || etags(if_match, false).any(|t| t == rev),
            };
            if !ok {
                return Err(ApiError::Bare(412));
            }
        }
        if let (Some(if_none_match), Some(rev)) = (&self.if_none_match, current) {
            if if_none_match.trim() == "*" || etags(if_none_match, true).any(|t| t == rev) {
                return if is_get {
                    Ok(Some(Outcome::NotModified {
                        etag: rev.to_owned(),
                    }))
                } else {
                    Err(ApiError::Bare(412))
                };
            }
        }
        Ok(None)
    }

    /// Stage 10, for writes.
    fn check_content_type(&self) -> Result<(), ApiError> {
        if self.content_type_ok {
            Ok(())
        } else {
            Err(ApiError::Bare(415))
        }
    }
}

/// The entity tags of an `If-Match`/`If-None-Match` list; weak tags only when `weak_ok`.
fn etags(header: &str, weak_ok: bool) -> impl Iterator<Item = &str> {
    header.split(',').filter_map(move |t| {
        let t = t.trim();
        let (weak, t) = match t.strip_prefix("W/") {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        if weak && !weak_ok {
            return None;
        }
        t.strip_prefix('"').and_then(|t| t.strip_suffix('"'))
    })
}

pub async fn handle(req: GroupRequest<'_>, tail: &Tail) -> Result<Outcome, ApiError> {
    // The design documents are brought up to date on an account's first use by this process.
    let views = req
        .state
        .views
        .ensure(&req.account)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::DatastoreMissingView,
            other => other.into(),
        })?;
    // Stage 8 starts with the validate_resource hook of `users/{U}`.
    let user = match &req.user {
        Some(raw) => Some(check_user(&req, raw).await?),
        None => None,
    };
    // Tunnelling works only through POST (§1); cowboy answers the rest with a bare 404.
    if req.method != "POST" && req.verb != req.method {
        return Err(ApiError::Bare(404));
    }
    let mut req = req;
    match (&req.target, req.verb.as_str()) {
        (Target::Collection, "GET") => listing::summary(&req, &views, user.as_ref(), tail).await,
        (Target::Entity(_), "GET") => fetch(&req).await,
        (Target::Entity(_), "DELETE") => delete(&req).await,
        // Writes take the request data: it becomes the document, without being copied.
        (Target::Collection, "PUT") => {
            let data = std::mem::take(&mut req.env.data);
            create(&req, data).await
        }
        (Target::Entity(_), "POST") => {
            let data = std::mem::take(&mut req.env.data);
            update(&req, data).await
        }
        (Target::Entity(_), "PATCH") => {
            let data = std::mem::take(&mut req.env.data);
            patch(&req, data).await
        }
        _ => Err(ApiError::InvalidMethod),
    }
}

/// `users/{U}` must name an existing, not soft-deleted document of any type (§1).
async fn check_user(req: &GroupRequest<'_>, raw: &str) -> Result<DocId, ApiError> {
    let id = DocId::parse(raw).ok_or_else(|| ApiError::BadIdentifier(raw.to_owned()))?;
    match req.state.store.get_doc(&req.account.db(), &id).await {
        Ok(Some(Value::Object(doc))) if !group::is_soft_deleted(&doc) => Ok(id),
        Ok(_) => Err(ApiError::BadIdentifier(raw.to_owned())),
        Err(StoreError::Unreachable(_)) => Err(ApiError::DatastoreUnreachable),
        Err(e) => {
            log::warn!("user {raw}: {e}");
            Err(ApiError::DatastoreFatal)
        }
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
    state
        .schemas
        .groups
        .validate(data)
        .map(super::as_map)
        .map_err(ApiError::Validation)
}

/// Loads a document; `Ok(None)` when it is missing, soft-deleted, or (with `groups_only`) of
/// another type, all of which Crossbar answers with 404 `bad_identifier`.
async fn load(
    req: &GroupRequest<'_>,
    id: &DocId,
    groups_only: bool,
) -> Result<Option<Map<String, Value>>, ApiError> {
    let doc = req.state.store.get_doc(&req.account.db(), id).await?;
    Ok(match doc {
        Some(Value::Object(doc)) if !group::is_soft_deleted(&doc) => {
            (!groups_only || group::is_live_group(&doc)).then_some(doc)
        }
        _ => None,
    })
}

fn group_id(req: &GroupRequest<'_>) -> Result<DocId, ApiError> {
    parse_group_id(&req.target).unwrap_or(Err(ApiError::NotFound))
}

fn not_found(req: &GroupRequest<'_>) -> ApiError {
    match &req.target {
        Target::Entity(raw) => ApiError::BadIdentifier(raw.clone()),
        Target::Collection => ApiError::NotFound,
    }
}

fn stamp(req: &GroupRequest<'_>, doc: &mut Map<String, Value>) {
    group::stamp(
        doc,
        &SaveStamp {
            account: &req.account,
            request_id: &req.request_id,
            author: Some(&req.author),
            now_gregorian: clock::gregorian_now(),
        },
    );
}

/// Saves and announces; a CouchDB conflict is a 409 and nothing is announced. Gives the saved
/// document back, for the answer.
async fn save(
    req: &GroupRequest<'_>,
    id: &DocId,
    doc: Map<String, Value>,
    action: ChangeAction,
) -> Result<(String, Map<String, Value>), ApiError> {
    let doc = Value::Object(doc);
    let rev = req.state.store.put_doc(&req.account.db(), id, &doc).await?;
    let doc = super::as_map(doc);
    announce(req, id, &doc, &rev, action);
    Ok((rev, doc))
}

/// One notice per successful write (amqp-notices §1.4), queued for the bus; never waits for it.
fn announce(
    req: &GroupRequest<'_>,
    id: &DocId,
    doc: &Map<String, Value>,
    rev: &str,
    action: ChangeAction,
) {
    let change = DocChange::written(req.account.db(), id, doc, rev, action);
    req.state.notifier.announce(Change::Doc(Box::new(change)));
}

/// `_id` first, then the public part, then the remaining private fields.
fn assemble(
    id: &DocId,
    public: Map<String, Value>,
    mut private: Map<String, Value>,
) -> Map<String, Value> {
    let mut doc = Map::with_capacity(public.len() + private.len() + 1);
    doc.insert("_id".into(), Value::from(id.as_str()));
    if let Some(rev) = private.shift_remove("_rev") {
        doc.insert("_rev".into(), rev);
    }
    doc.extend(public);
    doc.extend(private.into_iter().filter(|(k, _)| k != "_id"));
    doc
}

/// PUT: validate, choose the id, create (§4.3, §6.2).
async fn create(req: &GroupRequest<'_>, data: Value) -> Result<Outcome, ApiError> {
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
    stamp(req, &mut doc);
    let (rev, doc) = save(req, &id, doc, ChangeAction::Created).await?;
    Ok(Outcome::Done(Success {
        status: 201,
        location: Some(format!("{}/{}", req.path, id)),
        ..Success::ok(Value::Object(group::public_view(doc)), Revision::Doc(rev))
    }))
}

fn revision(doc: &Map<String, Value>) -> String {
    doc.get("_rev")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// GET one group.
async fn fetch(req: &GroupRequest<'_>) -> Result<Outcome, ApiError> {
    let id = group_id(req)?;
    let doc = load(req, &id, true).await?.ok_or_else(|| not_found(req))?;
    let rev = revision(&doc);
    if let Some(outcome) = req.conditions.check(Some(&rev), true)? {
        return Ok(outcome);
    }
    Ok(Outcome::Done(Success {
        is_get: true,
        ..Success::ok(Value::Object(group::public_view(doc)), Revision::Doc(rev))
    }))
}

/// POST: the body replaces the public part; the stored private fields are kept (§6.3).
async fn update(req: &GroupRequest<'_>, data: Value) -> Result<Outcome, ApiError> {
    let public = validate(req.state, request_public_data(data))?;
    let id = group_id(req)?;
    let stored = load(req, &id, true).await?.ok_or_else(|| not_found(req))?;
    let (_, private) = group::split(stored);
    write_over(req, &id, public, private).await
}

/// PATCH: deep-merge into the stored doc, then validate the result (§6.4, §6.5).
async fn patch(req: &GroupRequest<'_>, data: Value) -> Result<Outcome, ApiError> {
    let body = request_public_data(data);
    let id = group_id(req);
    // The first load accepts any type; without a doc only the body is validated.
    let stored = match &id {
        Ok(id) => load(req, id, false).await?,
        Err(_) => None,
    };
    let live = stored.as_ref().is_some_and(group::is_live_group);
    let (merged, private) = match stored {
        Some(doc) => {
            let (public, private) = group::split(doc);
            (patch_merge(Value::Object(public), body), private)
        }
        None => (body, Map::new()),
    };
    let public = validate(req.state, merged)?;
    let id = id?;
    if !live {
        return Err(not_found(req));
    }
    write_over(req, &id, public, private).await
}

/// The common end of POST and PATCH: conditions, content type, save over the stored rev.
async fn write_over(
    req: &GroupRequest<'_>,
    id: &DocId,
    public: Map<String, Value>,
    private: Map<String, Value>,
) -> Result<Outcome, ApiError> {
    if let Some(outcome) = req.conditions.check(Some(&revision(&private)), false)? {
        return Ok(outcome);
    }
    req.conditions.check_content_type()?;
    let mut doc = assemble(id, public, private);
    stamp(req, &mut doc);
    let (new_rev, doc) = save(req, id, doc, ChangeAction::Edited).await?;
    Ok(Outcome::Done(Success::ok(
        Value::Object(group::public_view(doc)),
        Revision::Doc(new_rev),
    )))
}

/// DELETE: soft unless `should_soft_delete` is given and is not exactly "true" (§4.4).
async fn delete(req: &GroupRequest<'_>) -> Result<Outcome, ApiError> {
    let id = group_id(req)?;
    let stored = load(req, &id, true).await?.ok_or_else(|| not_found(req))?;
    let rev = revision(&stored);
    if let Some(outcome) = req.conditions.check(Some(&rev), false)? {
        return Ok(outcome);
    }
    let mut data = group::public_view(stored.clone());
    let soft = req.env.req_flag("should_soft_delete").unwrap_or(true);
    if soft {
        let mut doc = stored;
        doc.insert("pvt_deleted".into(), Value::Bool(true));
        stamp(req, &mut doc);
        save(req, &id, doc, ChangeAction::Deleted { soft: true }).await?;
    } else {
        let new_rev = req
            .state
            .store
            .delete_doc(&req.account.db(), &id, &rev)
            .await?;
        // The notice describes the doc as it was before the delete, with the tombstone's rev.
        announce(
            req,
            &id,
            &stored,
            &new_rev,
            ChangeAction::Deleted { soft: false },
        );
    }
    data.insert("_read_only".into(), json!({"deleted": true}));
    Ok(Outcome::Done(Success::ok(
        Value::Object(data),
        Revision::Doc(rev),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conditions(if_match: Option<&str>, if_none_match: Option<&str>) -> Conditions {
        Conditions {
            if_match: if_match.map(Into::into),
            if_none_match: if_none_match.map(Into::into),
            content_type_ok: true,
        }
    }

    #[test]
    fn if_match_must_name_the_current_revision() {
        assert!(conditions(Some("\"1-a\""), None)
            .check(Some("1-a"), false)
            .unwrap()
            .is_none());
        assert!(conditions(Some("\"0-x\", \"1-a\""), None)
            .check(Some("1-a"), false)
            .is_ok());
        assert_eq!(
            conditions(Some("\"1-stale\""), None)
                .check(Some("1-a"), false)
                .unwrap_err(),
            ApiError::Bare(412)
        );
        assert_eq!(
            conditions(Some("W/\"1-a\""), None)
                .check(Some("1-a"), false)
                .unwrap_err(),
            ApiError::Bare(412)
        );
        assert_eq!(
            conditions(Some("*"), None).check(None, false).unwrap_err(),
            ApiError::Bare(412)
        );
    }

    #[test]
    fn if_none_match_gives_304_on_get_and_412_otherwise() {
        assert!(matches!(
            conditions(None, Some("\"1-a\"")).check(Some("1-a"), true),
            Ok(Some(Outcome::NotModified { .. }))
        ));
        assert_eq!(
            conditions(None, Some("\"1-a\""))
                .check(Some("1-a"), false)
                .unwrap_err(),
            ApiError::Bare(412)
        );
        assert!(conditions(None, Some("\"2-b\""))
            .check(Some("1-a"), true)
            .unwrap()
            .is_none());
    }
}
