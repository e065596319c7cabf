//! Group listings (groups-contract §5): `crossbar_listing`, or `crossbar_listing_by_user` for
//! `users/{U}/groups`, paged with Kazoo's keys or streamed whole with `paginate=false`.
//!
//! Paging `users/{U}/groups` really advances, unlike Crossbar (§5.3's quirk): every row of that
//! view has the key `{U}`, so our cursor is `[U, doc id]` and the doc id is resumed with
//! `startkey_docid`, which the store gives CouchDB's meaning on every server.
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use serde_json::Value;

use super::request::GroupRequest;
use crate::domain::filters::Filters;
use crate::domain::ids::{AccountId, DbName, DocId};
use crate::domain::start_key;
use crate::envelope::{Data, SuccessBody, Tail};
use crate::error::{ApiError, StoreContext};
use crate::json::raw::Transcoded;
use crate::pipeline::reply::{md5_hex, Outcome, Revision, Streamed, Success};
use crate::store::views::{Installed, ViewInstaller};
use crate::store::{RowStream, Store, StoreError, View, ViewQuery, ViewRow};
/// Rows read per store call when streaming (`paginate=false`). Crossbar reads 50 at a time;
/// each call's rows are streamed as they arrive (memory stays flat whatever this is), so fewer,
/// larger calls only save round trips: 100k groups are 10 calls, not 2,000.
const STREAM_CHUNK: usize = 10_000;

/// Where a listing (re)starts.
#[derive(Debug, Clone, PartialEq)]
enum Cursor {
    /// `crossbar_listing`: a view key, inclusive.
    Key(Option<Value>),
    /// `crossbar_listing_by_user`: the user's rows from this doc id on, inclusive.
    UserDoc { user: String, docid: Option<String> },
}

/// Reads the rows of one view range in order, `chunk` rows per query, each query's rows as they
/// are consumed: memory stays flat however long the range and however large its rows.
pub struct RowReader {
    store: Store,
    views: Installed,
    db: DbName,
    view: View,
    cursor: Cursor,
    end_key: Option<Value>,
    descending: bool,
    include_docs: bool,
    chunk: usize,
    /// The rows of the current query, and how many of them were read.
    rows: Option<RowStream>,
    got: usize,
    exhausted: bool,
}

impl RowReader {
    /// The next query: `chunk` rows and one more, which is where the query after it starts.
    fn query(&self) -> ViewQuery {
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
                query.startkey_docid = docid.clone();
            }
        }
        query
    }

    /// The next row, or `None` at the end of the range.
    pub async fn next(&mut self) -> Result<Option<ViewRow>, StoreError> {
        loop {
            let rows = match &mut self.rows {
                Some(rows) => rows,
                None if self.exhausted => return Ok(None),
                None => {
                    let query = self.query();
                    self.got = 0;
                    self.rows.insert(
                        self.views
                            .rows(&self.store, &self.db, self.view, &query)
                            .await?,
                    )
                }
            };
            let Some(row) = rows.next().await.transpose()? else {
                // The range ended within this query.
                self.rows = None;
                self.exhausted = true;
                return Ok(None);
            };
            self.got += 1;
            if self.got > self.chunk {
                // The row past the chunk: the next query starts with it.
                self.rows = None;
                match &mut self.cursor {
                    Cursor::Key(key) => *key = Some(row.key),
                    Cursor::UserDoc { docid, .. } => *docid = Some(row.id),
                }
                continue;
            }
            return Ok(Some(row));
        }
    }

    /// The next row that passes `filters`, judged on its document's text.
    async fn next_passing(&mut self, filters: &Filters) -> Result<Option<ViewRow>, StoreError> {
        while let Some(row) = self.next().await? {
            if filters.is_empty() || row.doc.as_deref().is_some_and(|d| filters.matches(d)) {
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
            let n = match &*v {
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
        start_key: env
            .req_value("start_key")
            .map(|v| request_key(v.into_owned())),
        end_key: env
            .req_value("end_key")
            .map(|v| request_key(v.into_owned())),
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
    let (view, cursor) = match user {
        None => (View::GroupsListing, Cursor::Key(listing.start_key.clone())),
        Some(user) => {
            // Our own cursor is [U, docid]; any other start key starts from the user's first row.
            let docid = match &listing.start_key {
                Some(Value::Array(parts)) if parts.len() == 2 && parts[0] == user.as_str() => {
                    parts[1].as_str().map(str::to_owned)
                }
                _ => None,
            };
            (
                View::GroupsListingByUser,
                Cursor::UserDoc {
                    user: user.as_str().to_owned(),
                    docid,
                },
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
        rows: None,
        got: 0,
        exhausted: false,
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
    if matches!(e, StoreError::NotFound) {
        // The design doc or the database went away: check it again next time.
        views.forget(account);
    }
    ApiError::from_store(e, StoreContext::View)
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
        ..Success::of(Data::Rows(items), revision)
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
        let value = serde_json::to_string(&Transcoded(&row.value)).unwrap_or_default();
        md5_hex(format!("{}{}{value}", tail.request_id, tail.timestamp).as_bytes())
    });
    let closing = serde_json::to_string(&SuccessBody {
        extra: &[],
        data: None,
        revision: etag.as_deref(),
        tail,
    })
    .unwrap_or_default();
    let closing = format!("],{}", &closing[1..]);
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
                        st.rows.rows = None;
                        return Some((Err(std::io::Error::other(e.to_string())), st));
                    }
                },
            };
            match row {
                Some(row) => {
                    // One row at a time, re-encoded straight from its text.
                    let mut chunk = Vec::with_capacity(row.value.get().len() + 1);
                    if !st.first {
                        chunk.push(b',');
                    }
                    st.first = false;
                    let written = serde_json::to_writer(&mut chunk, &Transcoded(&row.value));
                    Some((
                        written
                            .map(|()| Bytes::from(chunk))
                            .map_err(std::io::Error::other),
                        st,
                    ))
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
