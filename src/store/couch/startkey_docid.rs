//! `startkey_docid` on every server: CouchDB 3 starts the rows of the key `startkey` at the doc
//! id `startkey_docid`; pouchdb-server (the test server) ignores the parameter and starts at
//! the key's first row. The port promises CouchDB's meaning, so which kind of server answered is
//! told here, per query, from the answer itself, assuming nothing about the server.
//!
//! The query goes out as it is, with `skip` applied here instead (so the answer's first row is
//! the range's first). A server that honours `startkey_docid` never answers a first row of the
//! start key with a doc id before `startkey_docid` (rows of equal keys are in doc id order); a
//! server that ignores it answers exactly such rows first when there are any. So when the first
//! row is one, those rows are dropped, and the rows wanted read on past them with `skip` (after
//! the rows already read), the limit doubling while only dropped rows come back. When it is not
//! one, the answer is right whichever server gave it. Between such calls a write may move rows,
//! as between any two pages.
use std::cmp::Ordering;

use futures::future::BoxFuture;
use futures::StreamExt;

use crate::store::embedded::collation::collate;
use crate::store::{RowStream, StoreResult, ViewQuery, ViewRow};

/// One call to the server: the rows of a view query, as it answers them.
pub trait Fetch:
    Fn(ViewQuery) -> BoxFuture<'static, StoreResult<RowStream>> + Send + 'static
{
}
impl<F> Fetch for F where
    F: Fn(ViewQuery) -> BoxFuture<'static, StoreResult<RowStream>> + Send + 'static
{
}

/// The rows of `query` with CouchDB's `startkey_docid`, whichever server `fetch` calls.
pub async fn rows(fetch: impl Fetch, query: &ViewQuery) -> StoreResult<RowStream> {
    if query.key.is_some() || query.startkey.is_none() || query.startkey_docid.is_none() {
        return fetch(query.clone()).await;
    }
    let asked = query.limit.map(|limit| limit.saturating_add(query.skip));
    let first = ViewQuery {
        skip: 0,
        limit: asked,
        ..query.clone()
    };
    let rows = fetch(first).await?;
    let reader = Resumed {
        fetch,
        query: query.clone(),
        rows,
        asked,
        got: 0,
        read: 0,
        ignored: None,
        in_prefix: true,
        skip: query.skip,
        remaining: query.limit,
    };
    let rows = futures::stream::try_unfold(reader, |mut reader| async move {
        Ok(reader.next().await?.map(|row| (row, reader)))
    });
    Ok(Box::pin(rows))
}

struct Resumed<F> {
    fetch: F,
    query: ViewQuery,
    /// The current call's rows, how many it was asked for and how many it gave so far.
    rows: RowStream,
    asked: Option<usize>,
    got: usize,
    /// Rows of the range read so far, over all calls: where the next call starts.
    read: usize,
    /// Whether the server ignored `startkey_docid`, once the first row told.
    ignored: Option<bool>,
    /// Still at the start key's rows before `startkey_docid`, which an ignoring server gives.
    in_prefix: bool,
    /// The query's `skip` and `limit`, as they are used up.
    skip: usize,
    remaining: Option<usize>,
}

impl<F: Fetch> Resumed<F> {
    /// A row of the start key before `startkey_docid`, in the query's direction (doc ids
    /// compare as raw bytes, as CouchDB orders equal keys).
    fn before_docid(&self, row: &ViewRow) -> bool {
        let (Some(start), Some(docid)) = (&self.query.startkey, &self.query.startkey_docid) else {
            return false;
        };
        let order = row.id.as_bytes().cmp(docid.as_bytes());
        let before = if self.query.descending {
            Ordering::Greater
        } else {
            Ordering::Less
        };
        order == before && collate(&row.key, start) == Ordering::Equal
    }

    async fn next(&mut self) -> StoreResult<Option<ViewRow>> {
        loop {
            if self.remaining == Some(0) {
                return Ok(None);
            }
            let Some(row) = self.rows.next().await.transpose()? else {
                if self.read_on().await? {
                    continue;
                }
                return Ok(None);
            };
            self.got += 1;
            self.read += 1;
            if self.in_prefix {
                let before = self.before_docid(&row);
                let ignored = *self.ignored.get_or_insert(before);
                if ignored && before {
                    continue;
                }
                self.in_prefix = false;
            }
            if self.skip > 0 {
                self.skip -= 1;
                continue;
            }
            if let Some(remaining) = self.remaining.as_mut() {
                *remaining -= 1;
            }
            return Ok(Some(row));
        }
    }

    /// At the end of a call's answer: the range ended there, unless the server ignored
    /// `startkey_docid` and its limit cut the answer before the rows wanted. Then the next call
    /// reads on after the rows read so far, and this says so.
    async fn read_on(&mut self) -> StoreResult<bool> {
        let cut = self.ignored == Some(true) && self.asked.is_some_and(|asked| self.got >= asked);
        if !cut {
            return Ok(false);
        }
        let wanted = self
            .skip
            .saturating_add(self.remaining.unwrap_or(usize::MAX));
        let asked = match self.asked {
            // Only rows to drop came back: ask for more each time.
            Some(asked) if self.in_prefix => wanted.max(asked.saturating_mul(2)),
            _ => wanted,
        };
        let next = ViewQuery {
            startkey_docid: None,
            skip: self.read,
            limit: Some(asked),
            ..self.query.clone()
        };
        self.rows = (self.fetch)(next).await?;
        self.asked = Some(asked);
        self.got = 0;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{FutureExt, TryStreamExt};
    use proptest::prelude::*;
    use serde_json::{json, value::RawValue, Value};
    use std::sync::{Arc, Mutex};

    /// A server holding view rows (already in view order) that honours or ignores
    /// `startkey_docid`, and counts its calls.
    #[derive(Clone)]
    struct Server {
        rows: Arc<Vec<(Value, String)>>,
        honours_docid: bool,
        calls: Arc<Mutex<Vec<ViewQuery>>>,
    }

    impl Server {
        fn new(rows: &[(Value, &str)], honours_docid: bool) -> Self {
            Self {
                rows: Arc::new(
                    rows.iter()
                        .map(|(k, id)| (k.clone(), id.to_string()))
                        .collect(),
                ),
                honours_docid,
                calls: Arc::default(),
            }
        }

        /// What CouchDB answers, or pouchdb-server when it ignores `startkey_docid`.
        fn answer(&self, q: &ViewQuery) -> Vec<ViewRow> {
            let mut rows: Vec<&(Value, String)> = self.rows.iter().collect();
            if q.descending {
                rows.reverse();
            }
            let forward = |o: Ordering| if q.descending { o.reverse() } else { o };
            rows.into_iter()
                .filter(|(key, id)| {
                    let Some(start) = &q.startkey else {
                        return true;
                    };
                    match forward(collate(key, start)) {
                        Ordering::Less => false,
                        Ordering::Greater => true,
                        Ordering::Equal => match (&q.startkey_docid, self.honours_docid) {
                            (Some(docid), true) => {
                                forward(id.as_bytes().cmp(docid.as_bytes())) != Ordering::Less
                            }
                            _ => true,
                        },
                    }
                })
                .filter(|(key, _)| {
                    q.endkey
                        .as_ref()
                        .is_none_or(|end| forward(collate(key, end)) != Ordering::Greater)
                })
                .skip(q.skip)
                .take(q.limit.unwrap_or(usize::MAX))
                .map(|(key, id)| ViewRow {
                    id: id.clone(),
                    key: key.clone(),
                    value: RawValue::from_string("null".into()).unwrap(),
                    doc: None,
                })
                .collect()
        }

        fn fetch(&self) -> impl Fetch {
            let server = self.clone();
            move |q: ViewQuery| {
                server.calls.lock().unwrap().push(q.clone());
                let rows = server.answer(&q);
                async move {
                    let stream: RowStream =
                        Box::pin(futures::stream::iter(rows.into_iter().map(Ok)));
                    Ok(stream)
                }
                .boxed()
            }
        }

        async fn ids(&self, q: &ViewQuery) -> Vec<String> {
            let rows: Vec<ViewRow> = rows(self.fetch(), q)
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            rows.into_iter().map(|r| r.id).collect()
        }
    }

    fn user_rows() -> Vec<(Value, &'static str)> {
        vec![
            (json!("u0"), "g9"),
            (json!("u1"), "g1"),
            (json!("u1"), "g2"),
            (json!("u1"), "g3"),
            (json!("u1"), "g4"),
            (json!("u1"), "g5"),
            (json!("u2"), "g0"),
        ]
    }

    fn from(docid: &str) -> ViewQuery {
        ViewQuery {
            startkey: Some(json!("u1")),
            endkey: Some(json!("u1")),
            startkey_docid: Some(docid.into()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn both_servers_answer_from_the_doc_id() {
        for honours in [true, false] {
            let server = Server::new(&user_rows(), honours);
            assert_eq!(
                server.ids(&from("g3")).await,
                ["g3", "g4", "g5"],
                "{honours}"
            );
            let q = ViewQuery {
                limit: Some(2),
                ..from("g2")
            };
            assert_eq!(server.ids(&q).await, ["g2", "g3"], "{honours}");
            let q = ViewQuery {
                skip: 1,
                limit: Some(1),
                ..from("g2")
            };
            assert_eq!(server.ids(&q).await, ["g3"], "{honours}");
            let q = ViewQuery {
                descending: true,
                ..from("g3")
            };
            assert_eq!(server.ids(&q).await, ["g3", "g2", "g1"], "{honours}");
            // A doc id between the rows, and past them all.
            assert_eq!(
                server.ids(&from("g25")).await,
                ["g3", "g4", "g5"],
                "{honours}"
            );
            assert!(server.ids(&from("g6")).await.is_empty(), "{honours}");
        }
    }

    #[tokio::test]
    async fn a_server_that_honours_it_gets_one_call_as_asked() {
        let server = Server::new(&user_rows(), true);
        let q = ViewQuery {
            limit: Some(2),
            ..from("g4")
        };
        assert_eq!(server.ids(&q).await, ["g4", "g5"]);
        let calls = server.calls.lock().unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].startkey_docid.as_deref(), Some("g4"));
    }

    #[tokio::test]
    async fn a_server_that_ignores_it_is_read_on_with_skip() {
        let server = Server::new(&user_rows(), false);
        let q = ViewQuery {
            limit: Some(1),
            ..from("g5")
        };
        assert_eq!(server.ids(&q).await, ["g5"]);
        let calls = server.calls.lock().unwrap();
        // Asked 1, then 2 more after the first, then 4 after those three: g5 is the fifth row.
        let asked: Vec<(usize, Option<usize>)> = calls.iter().map(|c| (c.skip, c.limit)).collect();
        assert_eq!(asked, [(0, Some(1)), (1, Some(2)), (3, Some(4))]);
        assert!(calls[1..].iter().all(|c| c.startkey_docid.is_none()));
    }

    #[tokio::test]
    async fn keys_equal_in_collation_count_as_the_start_key() {
        // 1 and 1.0 are one key in CouchDB; an ignoring server gives rows of both first.
        let rows = [
            (json!(1), "a"),
            (json!(1.0), "b"),
            (json!(1), "c"),
            (json!(2), "a"),
        ];
        let q = ViewQuery {
            startkey: Some(json!(1.0)),
            startkey_docid: Some("b".into()),
            ..Default::default()
        };
        for honours in [true, false] {
            let server = Server::new(&rows, honours);
            assert_eq!(server.ids(&q).await, ["b", "c", "a"], "{honours}");
        }
    }

    #[tokio::test]
    async fn queries_without_a_start_doc_id_pass_through() {
        let server = Server::new(&user_rows(), false);
        let q = ViewQuery {
            startkey: Some(json!("u1")),
            skip: 2,
            limit: Some(2),
            ..Default::default()
        };
        assert_eq!(server.ids(&q).await, ["g3", "g4"]);
        let calls = server.calls.lock().unwrap();
        assert_eq!((calls.len(), calls[0].skip), (1, 2));
    }

    proptest! {
        /// Whatever the rows and the query, both servers give what CouchDB documents.
        #[test]
        fn ignoring_servers_answer_as_couchdb(
            keys in proptest::collection::vec(0u8..3, 0..20),
            start in 0u8..3,
            docid in 0u8..25,
            skip in 0usize..4,
            limit in proptest::option::of(0usize..6),
            descending in any::<bool>(),
        ) {
            let mut rows: Vec<(Value, String)> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| (json!(k), format!("d{i:02}")))
                .collect();
            rows.sort_by(|a, b| collate(&a.0, &b.0).then_with(|| a.1.cmp(&b.1)));
            let rows: Vec<(Value, &str)> = rows.iter().map(|(k, id)| (k.clone(), id.as_str())).collect();
            let q = ViewQuery {
                startkey: Some(json!(start)),
                startkey_docid: Some(format!("d{docid:02}")),
                skip,
                limit,
                descending,
                ..Default::default()
            };
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let couchdb = Server::new(&rows, true);
            let pouchdb = Server::new(&rows, false);
            let expected: Vec<String> = couchdb.answer(&q).into_iter().map(|r| r.id).collect();
            prop_assert_eq!(runtime.block_on(couchdb.ids(&q)), expected.clone());
            prop_assert_eq!(runtime.block_on(pouchdb.ids(&q)), expected);
        }
    }
}
