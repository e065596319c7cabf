//! The embedded store's SQLite connections: one writer, and a fixed set of readers that read
//! while it writes (WAL gives each read its own snapshot). Each turn on a connection runs on
//! Tokio's blocking threads; a caller waits for a free connection without holding a thread.
//!
//! Bounds: one writer and `readers` read connections, fixed at open. A caller that finds them
//! all busy waits its turn (first come, first served); callers are requests in flight, which the
//! server's connection limit bounds. A turn is one short piece of work: a read of a view takes
//! one batch per turn (`batches`), so no listing holds a reader past one batch.
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Connection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::fault;
use crate::store::StoreResult;

/// Connections handed out one per turn.
struct Pool {
    idle: Mutex<Vec<Connection>>,
    /// One permit per idle connection: holding a permit guarantees one is there.
    free: Arc<Semaphore>,
}

/// A connection on loan, given back when the turn ends, even by a panic.
struct Loan {
    pool: Arc<Pool>,
    conn: Option<Connection>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Loan {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.idle().push(conn);
        }
        // The permit is released after this, once the connection is back.
    }
}

impl Pool {
    fn new(conns: Vec<Connection>) -> Arc<Self> {
        Arc::new(Self {
            free: Arc::new(Semaphore::new(conns.len())),
            idle: Mutex::new(conns),
        })
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on a connection of this pool, off the async runtime.
    async fn with<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let permit = self.free.clone().acquire_owned().await.map_err(fault)?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.idle().pop();
            let mut loan = Loan {
                pool,
                conn,
                _permit: permit,
            };
            let conn = loan
                .conn
                .as_mut()
                .expect("a permit stands for an idle connection");
            f(conn)
        })
        .await
        .map_err(fault)?
    }
}

/// The writer and the readers of one store file.
pub struct Connections {
    writer: Arc<Pool>,
    readers: Arc<Pool>,
}

impl Connections {
    pub fn new(writer: Connection, readers: Vec<Connection>) -> Self {
        Self {
            writer: Pool::new(vec![writer]),
            readers: Pool::new(readers),
        }
    }

    /// A turn on the writer: every write, with its reads for revision checks, goes here.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.writer.with(f).await
    }

    /// A turn on a reader, inside one read transaction, so all that `f` reads is one snapshot.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.readers
            .with(|conn| {
                // Cached statements: a read is a few microseconds, and parsing `BEGIN` is not.
                conn.prepare_cached("BEGIN")
                    .and_then(|mut begin| begin.execute([]))
                    .map_err(super::sql_error)?;
                let snapshot = Snapshot(conn);
                f(snapshot.0)
            })
            .await
    }
}

/// An open read transaction, ended when dropped (a reader never writes, so it is rolled
/// back), also by a panic, so no reader goes back to the pool holding an old snapshot.
struct Snapshot<'a>(&'a Connection);

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        if !self.0.is_autocommit() {
            let ended = self
                .0
                .prepare_cached("ROLLBACK")
                .and_then(|mut rollback| rollback.execute([]));
            if let Err(e) = ended {
                log::error!(
                    "an embedded store read transaction did not end ({e}): that reader may \
                     answer from an old snapshot until kz-groups restarts"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn memory_connections(n: usize) -> Vec<Connection> {
        (0..n)
            .map(|_| Connection::open_in_memory().unwrap())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_turns_at_once_than_connections() {
        let pool = Pool::new(memory_connections(3));
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let turns = (0..12).map(|_| {
            let (pool, now, most) = (pool.clone(), now.clone(), most.clone());
            tokio::spawn(async move {
                pool.with(move |_| {
                    let at = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(at, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    now.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                })
                .await
            })
        });
        for turn in futures::future::join_all(turns).await {
            turn.unwrap().unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= 3);
        assert_eq!(pool.idle().len(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn as_many_turns_at_once_as_connections() {
        // Each turn waits (a while at most) for the other two to be in their turns too.
        let pool = Pool::new(memory_connections(3));
        let arrived = Arc::new(AtomicUsize::new(0));
        let turns = (0..3).map(|_| {
            let (pool, arrived) = (pool.clone(), arrived.clone());
            tokio::spawn(async move {
                pool.with(move |_| {
                    arrived.fetch_add(1, Ordering::SeqCst);
                    let deadline = std::time::Instant::now() + Duration::from_secs(30);
                    while arrived.load(Ordering::SeqCst) < 3 && std::time::Instant::now() < deadline
                    {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Ok(arrived.load(Ordering::SeqCst))
                })
                .await
            })
        });
        for turn in futures::future::join_all(turns).await {
            assert_eq!(turn.unwrap().unwrap(), 3, "all three turns were in at once");
        }
    }

    #[tokio::test]
    async fn a_panicking_turn_gives_its_connection_back() {
        let pool = Pool::new(memory_connections(1));
        let failed = pool
            .with(|_| -> StoreResult<()> { panic!("a bug in a turn") })
            .await;
        assert!(failed.is_err());
        assert_eq!(pool.idle().len(), 1);
        let answer = pool
            .with(|conn| {
                conn.query_row("SELECT 7", [], |row| row.get::<_, i64>(0))
                    .map_err(fault)
            })
            .await
            .unwrap();
        assert_eq!(answer, 7);
    }

    #[tokio::test]
    async fn a_reader_goes_back_without_its_snapshot_even_after_a_panic() {
        let reader = Connection::open_in_memory().unwrap();
        let conns = Connections::new(Connection::open_in_memory().unwrap(), vec![reader]);
        let failed = conns
            .read(|_| -> StoreResult<()> { panic!("a bug in a read") })
            .await;
        assert!(failed.is_err());
        // The next read begins its own transaction, which fails inside another one.
        let autocommit = conns.read(|conn| Ok(conn.is_autocommit())).await.unwrap();
        assert!(!autocommit, "the read runs in a transaction");
        conns
            .readers
            .with(|conn| {
                assert!(conn.is_autocommit(), "and it ended with the turn");
                Ok(())
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn readers_read_while_the_writer_holds_a_write_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool.sqlite3");
        let writer = Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer
            .execute_batch("CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (1);")
            .unwrap();
        let reader = Connection::open(&path).unwrap();
        let conns = Arc::new(Connections::new(writer, vec![reader]));
        let (started, release) = (
            Arc::new(tokio::sync::Notify::new()),
            Arc::new(std::sync::Barrier::new(2)),
        );
        let write = {
            let (conns, started, release) = (conns.clone(), started.clone(), release.clone());
            tokio::spawn(async move {
                conns
                    .write(move |conn| {
                        let tx = conn
                            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                            .map_err(fault)?;
                        tx.execute("UPDATE t SET n = 2", []).map_err(fault)?;
                        started.notify_one();
                        release.wait();
                        tx.commit().map_err(fault)
                    })
                    .await
            })
        };
        started.notified().await;
        // The write is open and uncommitted: the reader sees the last committed state at once.
        let read = |conns: Arc<Connections>| async move {
            conns
                .read(|conn| {
                    conn.query_row("SELECT n FROM t", [], |row| row.get::<_, i64>(0))
                        .map_err(fault)
                })
                .await
                .unwrap()
        };
        assert_eq!(read(conns.clone()).await, 1);
        release.wait();
        write.await.unwrap().unwrap();
        assert_eq!(read(conns.clone()).await, 2);
    }
}
