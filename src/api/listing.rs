//! Group listings (groups-contract §5): `crossbar_listing`, or `crossbar_listing_by_user` for
//! `users/{U}/groups`, paged with Kazoo's keys or streamed whole with `paginate=false`.
//!
//! Paging `users/{U}/groups` really advances, unlike Crossbar (§5.3's quirk): every row of that
//! view has the key `{U}`, so our cursor is `[U, doc id]` and the doc id is resumed with
//! `startkey_docid`. Servers that ignore `startkey_docid` are detected and read with `skip`.
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use serde_json::{Map, Value};

use super::groups::GroupRequest;
use super::reply::{md5_hex, Outcome, Revision, Streamed, Success};
use crate::domain::filters::Filters;
use crate::domain::ids::{AccountId, DbName, DocId};
use crate::domain::start_key;
use crate::envelope::{self, Tail};
use crate::error::ApiError;
use crate::store::views::{Installed, ViewInstaller};
use crate::store::{Store, StoreError, ViewQuery, ViewRow};

const DESIGN: &str = "groups";
/// Crossbar's `load_view_chunk_size`: rows read per CouchDB call when streaming.
const STREAM_CHUNK: usize = 50;

/// Where a listing (re)starts.
#[derive(Debug, Clone, PartialEq)]
enum Cursor {
    /// `crossbar_listing`: a view key, inclusive.
    Key(Option<Value>),
    /// `crossbar_listing_by_user`: the user's rows from this doc id on, inclusive.
    UserDoc { user: String, docid: Option<String> },
}

/// Reads the rows of one view range in order, a chunk at a time, so memory stays flat.
pub struct RowReader {
    store: Store,
    views: Installed,
    db: DbName,
    view: &'static str,
    cursor: Cursor,
    end_key: Option<Value>,
    descending: bool,
    include_docs: bool,
    chunk: usize,
    buffer: std::collections::VecDeque<ViewRow>,
    exhausted: bool,
    /// Set once the server is seen ignoring `startkey_docid`: rows are then read with `skip`
    /// from the start of the user's range and filtered against `docid_bound`.
    skip: Option<usize>,
    docid_bound: Option<String>,
}

impl RowReader {
    fn before_bound(&self, id: &str) -> bool {
        match &self.docid_bound {
            // Doc ids tie-break equal keys in raw byte order in CouchDB views.
            Some(bound) if self.descending => id > bound.as_str(),
            Some(bound) => id < bound.as_str(),
            None => false,
        }
    }

    async fn fill(&mut self) -> Result<(), StoreError> {
        let mut query = ViewQuery {
            descending: self.descending,
            include_docs: self.include_docs,
            limit: Some(self.chunk + 1),
            ..Default::default()
        };
        match &self.cursor {
            Cursor::Key(key) => {
                query.startkey = key.clone();
                query.endkey = self.end_key.clone();
            }
            Cursor::UserDoc { user, docid } => {
                query.startkey = Some(Value::from(user.as_str()));
                query.endkey = Some(Value::from(user.as_str()));
                if self.skip.is_none() {
                    query.startkey_docid = docid.clone();
                }
            }
        }
        query.skip = self.skip.unwrap_or(0);
        let rows = self
            .views
            .query(&self.store, &self.db, DESIGN, self.view, &query)
            .await?;
        let got = rows.len();
        if self.skip.is_none() && rows.iter().any(|r| self.before_bound(&r.id)) {
            // startkey_docid was ignored: restart this range with skip-based reading.
            self.skip = Some(0);
            return Box::pin(self.fill()).await;
        }
        let mut rows: std::collections::VecDeque<ViewRow> = rows.into();
        let resume = (got > self.chunk).then(|| rows.pop_back()).flatten();
        if let Some(skip) = self.skip.as_mut() {
            *skip += got - usize::from(resume.is_some());
        }
        let bounded: Vec<ViewRow> = rows
            .into_iter()
            .filter(|r| !self.before_bound(&r.id))
            .collect();
        self.buffer.extend(bounded);
        match resume {
            Some(row) => match &mut self.cursor {
                Cursor::Key(key) => *key = Some(row.key),
                Cursor::UserDoc { docid, .. } => {
                    if self.skip.is_none() {
                        *docid = Some(row.id.clone());
                        self.docid_bound = Some(row.id);
                    }
                }
            },
            None => self.exhausted = true,
        }
        Ok(())
    }

    /// The next row, or `None` at the end of the range.
    pub async fn next(&mut self) -> Result<Option<ViewRow>, StoreError> {
        while self.buffer.is_empty() && !self.exhausted {
            self.fill().await?;
        }
        Ok(self.buffer.pop_front())
    }

    /// The next row that passes `filters`.
    async fn next_passing(&mut self, filters: &Filters) -> Result<Option<ViewRow>, StoreError> {
        while let Some(row) = self.next().await? {
            if filters.is_empty() || row.doc.as_ref().is_some_and(|d| filters.matches(d)) {
                return Ok(Some(row));
            }
        }
        Ok(None)
    }
}

/// What the client asked for, parsed (§5.2).
struct ListingRequest {
    paginate: bool,
    page_size: usize,
    descending: bool,
    /// The decoded `start_key`, echoed re-encoded.
    start_key: Option<Value>,
    end_key: Option<Value>,
    filters: Filters,
}

fn request_key(v: Value) -> Value {
    match v {
        Value::String(s) => start_key::parse_request_key(&s),
        other => other,
    }
}

fn parse_request(req: &GroupRequest<'_>) -> Result<ListingRequest, ApiError> {
    let env = &req.env;
    let paginate = env.req_flag("paginate").unwrap_or(true);
    let page_size = match env.req_value("page_size") {
        None => req.state.page_size,
        Some(v) => {
            let n = match &v {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            };
            match n {
                None if paginate => return Err(ApiError::FaultyRequest("invalid page size")),
                Some(n) if n < 1 && paginate => {
                    return Err(ApiError::FaultyRequest("page size must be at least 1"))
                }
                Some(n) if n >= 1 => n as usize,
                _ => req.state.page_size,
            }
        }
    };
    let descending =
        env.query_flag("descending") == Some(true) || env.query_flag("ascending") == Some(false);
    Ok(ListingRequest {
        paginate,
        page_size,
        descending,
        start_key: env.req_value("start_key").map(request_key),
        end_key: env.req_value("end_key").map(request_key),
        filters: Filters::from_query(&env.query),
    })
}

fn reader(
    req: &GroupRequest<'_>,
    views: &Installed,
    user: Option<&DocId>,
    listing: &ListingRequest,
    chunk: usize,
) -> RowReader {
    let (view, cursor, docid_bound) = match user {
        None => (
            "crossbar_listing",
            Cursor::Key(listing.start_key.clone()),
            None,
        ),
        Some(user) => {
            // Our own cursor is [U, docid]; any other start key starts from the user's first row.
            let docid = match &listing.start_key {
                Some(Value::Array(parts)) if parts.len() == 2 && parts[0] == user.as_str() => {
                    parts[1].as_str().map(str::to_owned)
                }
                _ => None,
            };
            (
                "crossbar_listing_by_user",
                Cursor::UserDoc {
                    user: user.as_str().to_owned(),
                    docid: docid.clone(),
                },
                docid,
            )
        }
    };
    RowReader {
        store: req.state.store.clone(),
        views: views.clone(),
        db: req.account.db(),
        view,
        cursor,
        end_key: if user.is_none() {
            listing.end_key.clone()
        } else {
            None
        },
        descending: listing.descending,
        include_docs: !listing.filters.is_empty(),
        chunk,
        buffer: Default::default(),
        exhausted: false,
        skip: None,
        docid_bound,
    }
}

/// The key a following page starts from.
fn resume_key(user: Option<&DocId>, row: &ViewRow) -> Value {
    match user {
        None => row.key.clone(),
        Some(user) => Value::Array(vec![
            Value::from(user.as_str()),
            Value::from(row.id.as_str()),
        ]),
    }
}

fn view_error(views: &ViewInstaller, account: &AccountId, e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => {
            // The design doc or the database went away: check it again next time.
            views.forget(account);
            ApiError::DatastoreMissingView
        }
        other => other.into(),
    }
}

/// GET `…/groups` and `…/users/{U}/groups`.
pub async fn summary(
    req: &GroupRequest<'_>,
    views: &Installed,
    user: Option<&DocId>,
    tail: &Tail,
) -> Result<Outcome, ApiError> {
    let listing = parse_request(req)?;
    let state = req.state;
    if !listing.paginate {
        return stream_all(req, views, user, listing, tail).await;
    }
    let mut rows = reader(req, views, user, &listing, listing.page_size);
    let fail = |e| view_error(&state.views, &req.account, e);
    let mut items = Vec::new();
    while items.len() < listing.page_size {
        match rows.next_passing(&listing.filters).await.map_err(fail)? {
            Some(row) => items.push(row.value),
            None => break,
        }
    }
    let next = if items.len() == listing.page_size {
        rows.next_passing(&listing.filters)
            .await
            .map_err(fail)?
            .map(|row| resume_key(user, &row))
    } else {
        None
    };
    let mut extra = vec![("page_size", Value::from(items.len()))];
    if let Some(key) = &listing.start_key {
        extra.push(("start_key", Value::from(start_key::encode(key))));
    }
    if let Some(key) = &next {
        extra.push(("next_start_key", Value::from(start_key::encode(key))));
    }
    let revision = if items.is_empty() {
        Revision::None
    } else {
        Revision::BodyHash
    };
    Ok(Outcome::Done(Success {
        extra,
        is_get: true,
        ..Success::ok(Value::Array(items), revision)
    }))
}

/// `paginate=false`: every row, read and sent a chunk at a time. The first row is read before
/// the answer starts, so a CouchDB failure up to then is still a proper 503; a failure later
/// aborts the connection rather than end a truncated list as if it were complete.
async fn stream_all(
    req: &GroupRequest<'_>,
    views: &Installed,
    user: Option<&DocId>,
    listing: ListingRequest,
    tail: &Tail,
) -> Result<Outcome, ApiError> {
    let state = req.state;
    let mut rows = reader(req, views, user, &listing, STREAM_CHUNK);
    let first = rows
        .next_passing(&listing.filters)
        .await
        .map_err(|e| view_error(&state.views, &req.account, e))?;
    // Any opaque token will do for a listing's ETag (§3.4); this one is fixed before the body.
    let etag = first.as_ref().map(|row| {
        md5_hex(format!("{}{}{}", tail.request_id, tail.timestamp, row.value).as_bytes())
    });
    let closing: Map<String, Value> = {
        let mut body = envelope::success(Value::Null, etag.as_deref(), &[], tail);
        body.remove("data");
        body
    };
    let closing = format!("],{}", &Value::Object(closing).to_string()[1..]);
    let filters = listing.filters;
    let head = Bytes::from_static(b"{\"data\":[");

    struct State {
        rows: RowReader,
        filters: Filters,
        pending: Option<ViewRow>,
        first: bool,
        closing: Option<String>,
    }
    let body = stream::unfold(
        State {
            rows,
            filters,
            pending: first,
            first: true,
            closing: Some(closing),
        },
        |mut st| async move {
            let row = match st.pending.take() {
                Some(row) => Some(row),
                None => match st.rows.next_passing(&st.filters).await {
                    Ok(row) => row,
                    Err(e) => {
                        log::error!("listing aborted mid-stream: {e}");
                        // Nothing follows an error: no closing, so the list is never complete.
                        st.closing = None;
                        st.rows.exhausted = true;
                        st.rows.buffer.clear();
                        return Some((Err(std::io::Error::other(e.to_string())), st));
                    }
                },
            };
            match row {
                Some(row) => {
                    let sep = if st.first { "" } else { "," };
                    st.first = false;
                    let chunk = Bytes::from(format!("{sep}{}", row.value));
                    Some((Ok(chunk), st))
                }
                None => st.closing.take().map(|c| (Ok(Bytes::from(c)), st)),
            }
        },
    );
    let body = stream::once(async move { Ok(head) }).chain(body);
    Ok(Outcome::Stream(Streamed {
        etag,
        body: body.boxed(),
    }))
}
