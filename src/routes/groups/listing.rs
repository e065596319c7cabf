//! Group listings (groups-contract §5): `crossbar_listing`, or `crossbar_listing_by_user` for
//! `users/{U}/groups`, paged with Kazoo's keys or streamed whole with `paginate=false`.
//!
//! Paging `users/{U}/groups` really advances, unlike Crossbar (§5.3's quirk): every row of that
//! view has the key `{U}`, so our cursor is `[U, doc id]` and the doc id is resumed with
//! `startkey_docid`, which the store gives CouchDB's meaning on every server.
//!
//! Read your writes (issue 10): when this process acknowledged a write of a group of the account
//! in the last few seconds (`recent_writes`) and the rows read disagree with it (a live group
//! missing from the range they cover, a deleted one present), the rows are read again after
//! [`REREAD_PAUSE`], for at most [`REREAD_BUDGET`]. With no such write, nothing more is read.
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use serde_json::Value;

use super::request::GroupRequest;
use crate::csv;
use crate::domain::filters::Filters;
use crate::domain::ids::random_hex;
use crate::domain::ids::{DbName, DocId};
use crate::domain::line::{to_integer, PageSizeError};
use crate::domain::start_key;
use crate::envelope::{self, Data, RequestEnvelope, SuccessBody, Tail};
use crate::error::{ApiError, StoreContext};
use crate::json::raw::Transcoded;
use crate::pipeline::reply::{md5_hex, CsvBody, Outcome, Revision, Streamed, Success};
use crate::pipeline::Reply;
use crate::recent_writes::Written;
use crate::store::embedded::collation::collate;
use crate::store::views::Installed;
use crate::store::{RowStream, Store, StoreError, View, ViewQuery, ViewRow};
/// Rows read per store call when streaming (`paginate=false`). Crossbar reads 50 at a time;
/// each call's rows are streamed as they arrive (memory stays flat whatever this is), so fewer,
/// larger calls only save round trips: 100k groups are 10 calls, not 2,000.
const STREAM_CHUNK: usize = 10_000;
/// How long a listing may wait for a view to show this process's recent writes.
pub const REREAD_BUDGET: Duration = Duration::from_secs(2);
/// The pause before reading a listing's rows again.
pub const REREAD_PAUSE: Duration = Duration::from_millis(100);
/// A `paginate=false` listing is checked against recent writes only up to this many rows (it
/// is then held whole); a longer one is streamed as it is read.
const CHECKED_ROWS: usize = 10_000;

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
    /// Read past any cache (a re-read after rows older than a recent write).
    fresh: bool,
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
            fresh: self.fresh,
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

    /// The rows of one query: `chunk` rows and the one past them, if any.
    async fn query_once(&self) -> Result<Vec<ViewRow>, StoreError> {
        let query = self.query();
        let mut rows = self
            .views
            .rows(&self.store, &self.db, self.view, &query)
            .await?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await.transpose()? {
            out.push(row);
        }
        Ok(out)
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

/// What the client asked for, parsed (§5.2), by the rules of the Crossbar line answered.
#[derive(Clone)]
struct ListingRequest {
    paginate: bool,
    page_size: usize,
    descending: bool,
    /// The decoded `start_key`, echoed re-encoded.
    start_key: Option<Value>,
    end_key: Option<Value>,
    filters: Filters,
    /// Rows in reverse view order (Kazoo 4.3, see `CrossbarLine::reverses_rows`).
    reverse: bool,
    /// `is_chunked=true` on master: streamed with the string-valued trailer.
    chunked: bool,
}

/// `crossbar.load_view_chunk_size`'s default: the largest `chunk_size` master accepts.
const MAX_CHUNK_SIZE: i64 = 50;

fn request_key(v: Value) -> Value {
    match v {
        Value::String(s) => start_key::parse_request_key(&s),
        other => other,
    }
}

/// Master's `crossbar_view:get_chunk_size/2`, run for every listing before the page size is
/// read: a bad `chunk_size` is refused even without `is_chunked`. Only its validity matters
/// here: rows are streamed as they are read whatever the chunk (the bytes are the same).
fn check_chunk_size(env: &RequestEnvelope) -> Result<(), ApiError> {
    let Some(value) = env.query_value("chunk_size") else {
        return Ok(());
    };
    match to_integer(&value) {
        Some(n) if (1..=MAX_CHUNK_SIZE).contains(&n) => Ok(()),
        // No clause of `get_chunk_size/2` matches 0: `build_load_params/3` catches the crash.
        Some(0) => Err(ApiError::DatastoreBuildFault),
        Some(n) if n < 0 => Err(ApiError::FaultyRequest("chunk size must be at least 1")),
        Some(_) => Err(ApiError::FaultyRequest("chunk size must be lower than 50")),
        None => Err(ApiError::FaultyRequest("invalid chunk size")),
    }
}

fn parse_request(req: &GroupRequest<'_>) -> Result<ListingRequest, ApiError> {
    let env = &req.env;
    let line = req.state.crossbar;
    if line.chunks() {
        check_chunk_size(env)?;
    }
    let paginate = env.req_flag("paginate").unwrap_or(true);
    let page_size = line
        .page_size(
            env.req_value("page_size").as_deref(),
            req.state.page_size,
            paginate,
        )
        .map_err(|e| match e {
            PageSizeError::Invalid => ApiError::FaultyRequest("invalid page size"),
            PageSizeError::TooSmall => ApiError::FaultyRequest("page size must be at least 1"),
        })?;
    let descending = line.honours_direction()
        && (env.query_flag("descending") == Some(true)
            || env.query_flag("ascending") == Some(false));
    let end_key = env
        .req_value("end_key")
        .filter(|_| line.honours_end_key())
        .map(|v| request_key(v.into_owned()));
    Ok(ListingRequest {
        paginate,
        page_size,
        descending,
        start_key: env
            .req_value("start_key")
            .map(|v| request_key(v.into_owned())),
        end_key,
        filters: Filters::from_query(&env.query),
        reverse: line.reverses_rows(),
        chunked: line.chunks() && env.query_flag("is_chunked") == Some(true),
    })
}

fn reader(
    req: &GroupRequest<'_>,
    views: &Installed,
    user: Option<&DocId>,
    listing: &ListingRequest,
    chunk: usize,
    fresh: bool,
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
        fresh,
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

fn view_error(req: &GroupRequest<'_>, e: StoreError) -> ApiError {
    if matches!(e, StoreError::NotFound) {
        // The design doc or the database went away: check it again next time.
        req.state.views.forget(&req.account);
    }
    ApiError::from_store(e, StoreContext::View)
}

/// Reads with `read` (its argument: whether to read past the caches) until what it read agrees
/// with the writes this process acknowledged before the read (`stale` says whether it does
/// not), or [`REREAD_BUDGET`] is spent: the read-your-writes loop of every checked listing.
async fn read_own_writes<T, Fut>(
    req: &GroupRequest<'_>,
    mut read: impl FnMut(bool) -> Fut,
    stale: impl Fn(&T, &[Written]) -> bool,
) -> Result<T, ApiError>
where
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let state = req.state;
    let db = req.account.db();
    let deadline = Instant::now() + REREAD_BUDGET;
    let mut fresh = false;
    loop {
        let before = state.recent.of(&db);
        let read_now = read(fresh).await?;
        let writes = settled(before, &state.recent.of(&db));
        if writes.is_empty() || Instant::now() >= deadline || !stale(&read_now, &writes) {
            return Ok(read_now);
        }
        fresh = true;
        state.metrics.listing_rereads.inc();
        tokio::time::sleep(REREAD_PAUSE).await;
    }
}

/// GET `…/groups` and `…/users/{U}/groups`, as JSON or (`reply.csv`) CSV.
pub async fn summary(
    req: &GroupRequest<'_>,
    views: &Installed,
    user: Option<&DocId>,
    reply: &Reply,
) -> Result<Outcome, ApiError> {
    let listing = parse_request(req)?;
    let csv = reply.csv.is_some();
    if !listing.paginate && csv {
        return csv_all(req, views, user, &listing).await;
    }
    if !listing.paginate {
        if !listing.chunked && !req.state.recent.of(&req.account.db()).is_empty() {
            if let Some(outcome) = whole_checked(req, views, user, &listing).await? {
                return Ok(outcome);
            }
        }
        return stream_all(req, views, user, listing, &reply.tail).await;
    }
    if listing.chunked && !csv {
        return stream_all(req, views, user, listing, &reply.tail).await;
    }
    let page = read_page(req, views, user, &listing).await?;
    let mut items: Vec<_> = page.rows.into_iter().map(|row| row.value).collect();
    if listing.reverse {
        items.reverse();
    }
    let mut extra = vec![("page_size", Value::from(items.len()))];
    if let Some(key) = &page.start_key {
        extra.push(("start_key", Value::from(start_key::encode(key))));
    }
    if let Some(key) = &page.next {
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

/// One page of a listing: its rows in view order, the start key the envelope echoes and the
/// key the next page starts from.
struct Page {
    rows: Vec<ViewRow>,
    start_key: Option<Value>,
    next: Option<Value>,
}

/// A page, read again while it disagrees with this process's recent writes (within
/// [`REREAD_BUDGET`]).
async fn read_page(
    req: &GroupRequest<'_>,
    views: &Installed,
    user: Option<&DocId>,
    listing: &ListingRequest,
) -> Result<Page, ApiError> {
    read_own_writes(
        req,
        |fresh| async move {
            if listing.reverse {
                page_v4_3(req, views, user, listing, fresh).await
            } else {
                page_master(req, views, user, listing, fresh).await
            }
            .map_err(|e| view_error(req, e))
        },
        |page: &Page, writes| stale(&page.rows, page.next.is_some(), listing, user, writes),
    )
    .await
}

/// Master (`crossbar_view`): the page's passing rows, then the next passing row, where the
/// next page starts.
async fn page_master(
    req: &GroupRequest<'_>,
    views: &Installed,
    user: Option<&DocId>,
    listing: &ListingRequest,
    fresh: bool,
) -> Result<Page, StoreError> {
    let chunk = listing.page_size.saturating_add(1);
    let mut reader = reader(req, views, user, listing, chunk, fresh);
    let mut rows = Vec::new();
    while rows.len() < listing.page_size {
        match reader.next_passing(&listing.filters).await? {
            Some(row) => rows.push(row),
            None => break,
        }
    }
    let next = if rows.len() == listing.page_size {
        reader.next_passing(&listing.filters).await?
    } else {
        None
    };
    Ok(Page {
        rows,
        start_key: listing.start_key.clone(),
        next: next.map(|row| resume_key(user, &row)),
    })
}

/// Kazoo 4.3 (`crossbar_doc:load_view/1`, `handle_datamgr_pagination_success/2`): queries of
/// `remaining + 1` rows, each filtered, until the page is full or a query comes back short.
/// The row past a query's `remaining` is the next start key whether it passes the filters or
/// not, and it stays the envelope's when a later query comes back short; the envelope's start
/// key is the last query's.
async fn page_v4_3(
    req: &GroupRequest<'_>,
    views: &Installed,
    user: Option<&DocId>,
    listing: &ListingRequest,
    fresh: bool,
) -> Result<Page, StoreError> {
    let mut remaining = listing.page_size;
    let mut start = listing.start_key.clone();
    let mut page = Page {
        rows: Vec::new(),
        start_key: None,
        next: None,
    };
    loop {
        let mut from = listing.clone();
        from.start_key = start.clone();
        let mut batch = reader(req, views, user, &from, remaining, fresh)
            .query_once()
            .await?;
        if start.is_some() {
            page.start_key = start.clone();
        }
        let past = (batch.len() > remaining).then(|| batch.split_off(remaining));
        for row in batch {
            let passes = listing.filters.is_empty()
                || row
                    .doc
                    .as_deref()
                    .is_some_and(|d| listing.filters.matches(d));
            if passes {
                remaining -= 1;
                page.rows.push(row);
            }
        }
        let Some(next) = past.and_then(|mut rows| rows.pop()) else {
            return Ok(page);
        };
        let key = resume_key(user, &next);
        page.next = Some(key.clone());
        if remaining == 0 {
            return Ok(page);
        }
        start = Some(key);
    }
}

/// The recent writes a read must show: those acknowledged before it began (`before`) and not
/// written again while it ran (still in `after` under the same sequence number). A write made
/// while the read ran may or may not be in it, so the read is not held to it.
fn settled(before: Vec<Written>, after: &[Written]) -> Vec<Written> {
    before
        .into_iter()
        .filter(|w| after.iter().any(|a| a.seq == w.seq))
        .collect()
}

/// Whether `rows` (the rows of one page, `more` when rows follow it) disagree with a recent write
/// in the range they cover: a group it left live (and passing the listing's filters) missing,
/// or one it deleted present. A write kept without its document is judged on presence only
/// when the listing has filters.
fn stale(
    rows: &[ViewRow],
    more: bool,
    listing: &ListingRequest,
    user: Option<&DocId>,
    writes: &[Written],
) -> bool {
    let user_id = user.map(DocId::as_str);
    writes.iter().filter(|w| !w.pending).any(|w| {
        let present = rows.iter().any(|row| row.id == w.id);
        let listed = w.listed_for(user_id);
        if present && !listed {
            return true;
        }
        let expected = listed
            && (listing.filters.is_empty()
                || w.doc.as_deref().is_some_and(|d| listing.filters.matches(d)));
        !present && expected && covers(rows, more, listing, user, &w.id)
    })
}

/// Whether the range `rows` cover holds the row of document `id`: from the request's start to
/// the last row (or, on the last page, to the request's end).
fn covers(
    rows: &[ViewRow],
    more: bool,
    listing: &ListingRequest,
    user: Option<&DocId>,
    id: &str,
) -> bool {
    use std::cmp::Ordering::{Greater, Less};
    // In the listing's direction: `Less` means before.
    let order = |o: std::cmp::Ordering| if listing.descending { o.reverse() } else { o };
    match user {
        None => {
            let key = Value::from(id);
            let after_start = listing
                .start_key
                .as_ref()
                .is_none_or(|start| order(collate(&key, start)) != Less);
            let before_end = match (more, rows.last()) {
                (true, Some(last)) => order(collate(&key, &last.key)) != Greater,
                _ => listing
                    .end_key
                    .as_ref()
                    .is_none_or(|end| order(collate(&key, end)) != Greater),
            };
            after_start && before_end
        }
        Some(user) => {
            // The user's rows, by doc id (bytewise); our cursor is `[U, doc id]`.
            let start = match &listing.start_key {
                Some(Value::Array(parts)) if parts.len() == 2 && parts[0] == user.as_str() => {
                    parts[1].as_str()
                }
                _ => None,
            };
            let after_start = start.is_none_or(|s| order(id.cmp(s)) != Less);
            let before_end = match (more, rows.last()) {
                (true, Some(last)) => order(id.cmp(last.id.as_str())) != Greater,
                _ => true,
            };
            after_start && before_end
        }
    }
}

/// `paginate=false` right after a write of this process's: every row read at once and checked
/// against the recent writes (read again while they disagree, within the budget), then answered
/// whole. `None` when there are more than [`CHECKED_ROWS`] rows: streamed as usual then.
async fn whole_checked(
    req: &GroupRequest<'_>,
    views: &Installed,
    user: Option<&DocId>,
    listing: &ListingRequest,
) -> Result<Option<Outcome>, ApiError> {
    let read = read_own_writes(
        req,
        |fresh| async move {
            let mut reader = reader(req, views, user, listing, STREAM_CHUNK, fresh);
            let mut rows = Vec::new();
            while let Some(mut row) = reader
                .next_passing(&listing.filters)
                .await
                .map_err(|e| view_error(req, e))?
            {
                if rows.len() == CHECKED_ROWS {
                    return Ok(None);
                }
                // Only the summary is answered: the document a filter read is not held.
                row.doc = None;
                rows.push(row);
            }
            Ok(Some(rows))
        },
        |rows: &Option<Vec<ViewRow>>, writes| {
            rows.as_ref()
                .is_some_and(|rows| stale(rows, false, listing, user, writes))
        },
    )
    .await?;
    let Some(rows) = read else {
        return Ok(None);
    };
    let revision = if rows.is_empty() {
        Revision::None
    } else {
        Revision::BodyHash
    };
    let mut items: Vec<_> = rows.into_iter().map(|row| row.value).collect();
    if listing.reverse {
        // 4.3 answers a whole listing in descending order.
        items.reverse();
    }
    Ok(Some(Outcome::Done(Success {
        is_get: true,
        ..Success::of(Data::Rows(items), revision)
    })))
}

/// The reader of a whole listing (`paginate=false`, or master's chunked page): in view order,
/// or on 4.3 in descending order, the request's `start_key` then bounding its end. (4.3's
/// by-user start key restarts the user's rows anyway, §5.3.)
fn whole_reader(
    req: &GroupRequest<'_>,
    views: &Installed,
    user: Option<&DocId>,
    listing: &ListingRequest,
) -> RowReader {
    let mut rows = reader(req, views, user, listing, STREAM_CHUNK, false);
    if listing.reverse && !listing.paginate {
        rows.descending = true;
        match &mut rows.cursor {
            Cursor::Key(key) => rows.end_key = key.take(),
            Cursor::UserDoc { docid, .. } => *docid = None,
        }
    }
    rows
}

/// How a streamed listing ends.
enum Closing {
    /// `paginate=false`, not chunked: the envelope's end, fixed before the body.
    Fixed(String),
    /// Master's `is_chunked=true`: `api_util:close_chunk_json_envelope/2`'s trailer, written
    /// once the rows sent (and the next start key) are known.
    Trailer {
        tail: Box<Tail>,
        start_key: Option<Value>,
        user: Option<DocId>,
    },
}

/// What a streamed listing holds between two of its chunks.
struct StreamState {
    rows: RowReader,
    filters: Filters,
    pending: Option<ViewRow>,
    sent: usize,
    /// A page's size (master's chunked page); `None`: every row.
    limit: Option<usize>,
    closing: Option<Closing>,
}

impl StreamState {
    /// The next chunk of the body: a row, then the closing, then nothing. A store failure
    /// mid-stream ends the body without its closing, so the list is never taken as complete.
    async fn next_chunk(mut self) -> Option<(Result<Bytes, std::io::Error>, Self)> {
        let full = self.limit.is_some_and(|limit| self.sent >= limit);
        let row = match self.pending.take() {
            Some(row) => Ok(Some(row)),
            None if full => Ok(None),
            None => self.rows.next_passing(&self.filters).await,
        };
        match row {
            Ok(Some(row)) => {
                // One row at a time, re-encoded straight from its text.
                let mut chunk = Vec::with_capacity(row.value.get().len() + 1);
                if self.sent > 0 {
                    chunk.push(b',');
                }
                self.sent += 1;
                let written = serde_json::to_writer(&mut chunk, &Transcoded(&row.value));
                let chunk = written
                    .map(|()| Bytes::from(chunk))
                    .map_err(std::io::Error::other);
                Some((chunk, self))
            }
            Ok(None) => {
                let closing = self.closing.take()?;
                let next = match &closing {
                    Closing::Trailer { user, .. } if full => self.next_key(user.as_ref()).await,
                    _ => Ok(None),
                };
                match next {
                    Ok(next) => Some((Ok(Bytes::from(self.close(closing, next))), self)),
                    Err(e) => self.abort(e),
                }
            }
            Err(e) => self.abort(e),
        }
    }

    /// The key the next page starts from: the row after the page's last, if any.
    async fn next_key(&mut self, user: Option<&DocId>) -> Result<Option<Value>, StoreError> {
        let row = self.rows.next_passing(&self.filters).await?;
        Ok(row.map(|row| resume_key(user, &row)))
    }

    fn close(&self, closing: Closing, next: Option<Value>) -> String {
        match closing {
            Closing::Fixed(text) => text,
            Closing::Trailer {
                tail, start_key, ..
            } => {
                let mut paging = Vec::new();
                if let Some(next) = &next {
                    paging.push(("next_start_key", start_key::encode(next)));
                }
                if self.limit.is_some() {
                    paging.push(("page_size", self.sent.to_string()));
                    if let Some(start) = &start_key {
                        paging.push(("start_key", start_key::encode(start)));
                    }
                }
                envelope::chunk_trailer(&paging, &tail)
            }
        }
    }

    fn abort(mut self, e: StoreError) -> Option<(Result<Bytes, std::io::Error>, Self)> {
        log::error!("listing aborted mid-stream: {e}");
        self.closing = None;
        self.rows.exhausted = true;
        self.rows.rows = None;
        Some((Err(std::io::Error::other(e.to_string())), self))
    }
}

/// `paginate=false`, or master's `is_chunked=true`: rows read and sent a chunk at a time. The
/// first row is read before the answer starts, so a store failure up to then is still a proper
/// 503, and a chunked listing without rows is answered as an ordinary one
/// (`api_resource:finish_chunked_response/1`); a failure later aborts the connection rather
/// than end a truncated list as if it were complete.
async fn stream_all(
    req: &GroupRequest<'_>,
    views: &Installed,
    user: Option<&DocId>,
    listing: ListingRequest,
    tail: &Tail,
) -> Result<Outcome, ApiError> {
    let mut rows = whole_reader(req, views, user, &listing);
    let first = rows
        .next_passing(&listing.filters)
        .await
        .map_err(|e| view_error(req, e))?;
    let (etag, closing) = if listing.chunked {
        if first.is_none() {
            return Ok(empty_listing(&listing));
        }
        let closing = Closing::Trailer {
            tail: Box::new(tail.clone()),
            start_key: listing.start_key.clone(),
            user: user.cloned(),
        };
        (None, closing)
    } else {
        // Any opaque token will do for a listing's ETag (§3.4); this one is fixed before the
        // body.
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
        (etag, Closing::Fixed(format!("],{}", &closing[1..])))
    };
    let head = Bytes::from_static(b"{\"data\":[");
    let state = StreamState {
        rows,
        filters: listing.filters,
        pending: first,
        sent: 0,
        limit: listing.paginate.then_some(listing.page_size),
        closing: Some(closing),
    };
    let body = stream::unfold(state, StreamState::next_chunk);
    // actix writes out what it has encoded only once the body is pending: were the rows after
    // the head all at hand and a store failure among them, the connection would be dropped
    // before a byte of the answer was sent. The stream therefore pauses once after the head, so
    // the answer has begun (status and head sent) before any further row is read.
    let pause = stream::once(tokio::task::yield_now()).filter_map(|()| async { None });
    let body = stream::once(async move { Ok(head) })
        .chain(pause)
        .chain(body);
    Ok(Outcome::Stream(Streamed {
        etag,
        body: body.boxed(),
    }))
}

/// An ordinary answer with no rows.
fn empty_listing(listing: &ListingRequest) -> Outcome {
    let mut extra = Vec::new();
    if listing.paginate {
        extra.push(("page_size", Value::from(0)));
        if let Some(key) = &listing.start_key {
            extra.push(("start_key", Value::from(start_key::encode(key))));
        }
    }
    Outcome::Done(Success {
        extra,
        is_get: true,
        ..Success::of(Data::Rows(Vec::new()), Revision::None)
    })
}

/// `paginate=false` as CSV: the rows are written to a spool file as they are read (Kazoo
/// writes them to a temporary file too: the header, known only after the last row, goes in
/// front), then the header and the file are sent with their length. Memory holds the columns
/// and one buffer, whatever the number of rows.
async fn csv_all(
    req: &GroupRequest<'_>,
    views: &Installed,
    user: Option<&DocId>,
    listing: &ListingRequest,
) -> Result<Outcome, ApiError> {
    let fail = |e| view_error(req, e);
    let mut rows = whole_reader(req, views, user, listing);
    let mut spool = Spool::create().map_err(spool_error)?;
    let mut columns = csv::Columns::default();
    let mut buffer = Vec::new();
    while let Some(row) = rows.next_passing(&listing.filters).await.map_err(fail)? {
        let value: Value = serde_json::from_str(row.value.get()).unwrap_or(Value::Null);
        columns.write_row(&value, &mut buffer);
        if buffer.len() >= SPOOL_BUFFER {
            spool.write(&buffer).map_err(spool_error)?;
            buffer.clear();
        }
    }
    if columns.is_empty() {
        return Ok(Outcome::Csv(None));
    }
    spool.write(&buffer).map_err(spool_error)?;
    let header = columns.header();
    let length = header.len() as u64 + spool.len;
    let body = stream::once(async move { Ok(Bytes::from(header)) })
        .chain(spool.into_stream())
        .boxed();
    Ok(Outcome::Csv(Some(CsvBody::Sized { length, body })))
}

fn spool_error(e: std::io::Error) -> ApiError {
    log::error!("CSV spool file: {e}");
    ApiError::DatastoreFault("csv_spool".into())
}

/// What a CSV spool writes and reads at a time.
const SPOOL_BUFFER: usize = 64 * 1024;

/// A private temporary file, unlinked as soon as it is made: it goes away with its handle.
struct Spool {
    file: std::fs::File,
    len: u64,
}

impl Spool {
    fn create() -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = std::env::temp_dir().join(format!("kz-groups-csv-{}", random_hex(11)));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        std::fs::remove_file(&path)?;
        Ok(Self { file, len: 0 })
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// The file from its start, a buffer at a time.
    fn into_stream(mut self) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
        use std::io::{Read, Seek};
        let rewound = self
            .file
            .seek(std::io::SeekFrom::Start(0))
            .map(|_| self.file);
        stream::unfold(Some(rewound), |state| async move {
            let mut file = match state? {
                Ok(file) => file,
                Err(e) => return Some((Err(e), None)),
            };
            let mut chunk = vec![0; SPOOL_BUFFER];
            match file.read(&mut chunk) {
                Ok(0) => None,
                Ok(n) => {
                    chunk.truncate(n);
                    Some((Ok(Bytes::from(chunk)), Some(Ok(file))))
                }
                Err(e) => Some((Err(e), None)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::AccountId;
    use crate::recent_writes::RecentWrites;
    use serde_json::json;

    fn listing(start: Option<Value>, descending: bool) -> ListingRequest {
        ListingRequest {
            paginate: true,
            page_size: 2,
            descending,
            start_key: start,
            end_key: None,
            filters: Filters::default(),
            reverse: false,
            chunked: false,
        }
    }

    fn row(id: &str, key: Value) -> ViewRow {
        serde_json::from_value(json!({"id": id, "key": key, "value": {"id": id}})).unwrap()
    }

    /// The writes `RecentWrites` remembers after writing `docs` (`None`: a hard delete).
    fn writes(docs: &[(&str, Option<Value>)]) -> Vec<Written> {
        let recent = RecentWrites::new();
        let db = AccountId::parse("4b31dd1d32ce6d249897c06332375d65")
            .unwrap()
            .db();
        for (id, doc) in docs {
            let id = DocId::parse(id).unwrap();
            recent.record(&db, &id, doc.as_ref().and_then(Value::as_object));
        }
        recent.of(&db)
    }

    #[test]
    fn a_created_group_missing_from_the_range_read_is_stale() {
        let created = writes(&[("b", Some(json!({"pvt_type": "group"})))]);
        let rows = [row("a", json!("a")), row("c", json!("c"))];
        assert!(stale(&rows, false, &listing(None, false), None, &created));
        // Past the page's last row (rows follow): another page's business.
        let rows = [row("a", json!("a")), row("a2", json!("a2"))];
        assert!(!stale(&rows, true, &listing(None, false), None, &created));
        // Before the page's start.
        assert!(!stale(
            &[],
            false,
            &listing(Some(json!("c")), false),
            None,
            &created
        ));
        // Descending from "c": "b" is within.
        assert!(stale(
            &[],
            false,
            &listing(Some(json!("c")), true),
            None,
            &created
        ));
        let rows = [row("a", json!("a")), row("b", json!("b"))];
        assert!(!stale(&rows, false, &listing(None, false), None, &created));
    }

    #[test]
    fn a_deleted_group_still_listed_is_stale() {
        let deleted = writes(&[
            ("a", None),
            ("b", Some(json!({"pvt_type": "group", "pvt_deleted": true}))),
        ]);
        assert!(stale(
            &[row("a", json!("a"))],
            true,
            &listing(None, false),
            None,
            &deleted
        ));
        assert!(stale(
            &[row("b", json!("b"))],
            true,
            &listing(None, false),
            None,
            &deleted
        ));
        assert!(!stale(
            &[row("c", json!("c"))],
            false,
            &listing(None, false),
            None,
            &deleted
        ));
    }

    #[test]
    fn a_user_listing_expects_the_groups_the_user_is_in() {
        let u = DocId::parse("u1").unwrap();
        let member = json!({"pvt_type": "group", "endpoints": {"u1": {"type": "user"}}});
        let other = json!({"pvt_type": "group", "endpoints": {"u2": {"type": "user"}}});
        let recent = writes(&[("g1", Some(member)), ("g2", Some(other))]);
        assert!(stale(&[], false, &listing(None, false), Some(&u), &recent));
        let rows = [row("g1", json!("u1"))];
        assert!(!stale(
            &rows,
            false,
            &listing(None, false),
            Some(&u),
            &recent
        ));
        // g2 left u1: listed for u1, it is stale.
        let rows = [row("g1", json!("u1")), row("g2", json!("u1"))];
        assert!(stale(
            &rows,
            false,
            &listing(None, false),
            Some(&u),
            &recent
        ));
        // Resumed after g1 by our own cursor: g1 is on an earlier page.
        let resumed = listing(Some(json!(["u1", "g1x"])), false);
        assert!(!stale(&[], false, &resumed, Some(&u), &recent[..1]));
    }

    #[test]
    fn a_filtered_listing_expects_the_created_groups_that_pass_its_filters() {
        let created = writes(&[
            ("g1", Some(json!({"pvt_type": "group", "name": "G1"}))),
            ("g2", Some(json!({"pvt_type": "group", "name": "G2"}))),
        ]);
        let mut by_name = listing(None, false);
        by_name.filters = Filters::from_query(&[("filter_name".into(), Some("G1".into()))]);
        // g1 passes `filter_name=G1` and is missing: stale; g2 does not pass, so its absence is
        // as it should be.
        assert!(stale(&[], false, &by_name, None, &created));
        assert!(!stale(
            &[row("g1", json!("g1"))],
            false,
            &by_name,
            None,
            &created
        ));
    }

    #[test]
    fn a_read_is_held_only_to_the_writes_settled_before_it_and_not_rewritten_during_it() {
        let recent = RecentWrites::new();
        let db = AccountId::parse("4b31dd1d32ce6d249897c06332375d65")
            .unwrap()
            .db();
        let (g1, g2) = (DocId::parse("g1").unwrap(), DocId::parse("g2").unwrap());
        let group = json!({"pvt_type": "group"});
        recent.record(&db, &g1, group.as_object());
        recent.record(&db, &g2, group.as_object());
        let before = recent.of(&db);
        // While the read runs: g1 is hard-deleted, g3 is created.
        recent.record(&db, &g1, None);
        recent.record(&db, &DocId::parse("g3").unwrap(), group.as_object());
        let judged = settled(before, &recent.of(&db));
        let ids: Vec<&str> = judged.iter().map(|w| w.id.as_str()).collect();
        assert_eq!(ids, ["g2"]);
        // So a view that no longer holds g1 (nor yet g3) is not stale.
        let rows = [row("g2", json!("g2"))];
        assert!(!stale(&rows, false, &listing(None, false), None, &judged));
        // A write sent to the store but not yet answered holds a read to nothing: g2 may be
        // gone from the view before its delete is acknowledged.
        let without_g2 = [row("g3", json!("g3"))];
        let judged = settled(recent.of(&db), &recent.of(&db));
        assert!(stale(
            &without_g2,
            false,
            &listing(None, false),
            None,
            &judged
        ));
        recent.begin(&db, &g2);
        let judged = settled(recent.of(&db), &recent.of(&db));
        assert!(!stale(
            &without_g2,
            false,
            &listing(None, false),
            None,
            &judged
        ));
    }
}
