//! The AMQP bus: one owned background worker that delivers the notices of `notices` to the
//! local zone's RabbitMQ, started by `Application::build` and stopped by its shutdown.
//!
//! Queue bound: at most `KZ_GROUPS_AMQP_QUEUE` notices (default 10 000, about 1 KB each) wait
//! for the broker, those in flight included. When it is full, the new notice is dropped, logged
//! with its database and id, and counted (`dropped` in `/readyz`); the older ones stay. A write
//! never waits for the bus: `announce` only appends to this queue.
//!
//! What keeps it true: a notice leaves the queue only when the broker has confirmed it
//! (publisher confirms). Notices go out strictly in queue order, which is write order; after a
//! lost connection, a nack or an unanswered confirm, the connection is dropped, re-opened with
//! backoff (0.1 s doubling to 5 s), the exchange declared again, and every unconfirmed notice
//! sent again from the oldest. So delivery is at least once: a notice whose confirm was lost
//! with the connection arrives twice (same `Msg-ID`), which Kazoo's consumers (they flush by id)
//! do not mind. On shutdown the worker keeps delivering for `KZ_GROUPS_AMQP_FLUSH_SECS`, then
//! logs every notice still queued.
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Event, ExchangeKind};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::config::AmqpConfig;
use crate::notices::{BusStatus, Change, ChangeNotifier, Notice, EXCHANGE};

/// Notices published before their confirms are awaited.
const MAX_IN_FLIGHT: usize = 64;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A connect, channel setup or batch of confirms that takes longer counts as a failure.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Bus {
    shared: Arc<Shared>,
    worker: Mutex<Option<tokio::task::JoinHandle<()>>>,
    flush_timeout: Duration,
}

struct Shared {
    url: String,
    /// The AMQP `connection_name`, so an operator can find (or close) this connection.
    connection_name: String,
    node: String,
    capacity: usize,
    queue: Mutex<VecDeque<Notice>>,
    wake: Notify,
    connected: AtomicBool,
    dropped: AtomicU64,
    /// `Some(deadline)` once shutdown has begun: flush until then.
    stop: watch::Sender<Option<Instant>>,
}

impl Bus {
    /// Starts the worker on the current Tokio runtime; it connects in the background, so a
    /// broker that is down at start only delays the notices.
    pub fn start(config: &AmqpConfig, node: &str) -> Arc<Self> {
        let (stop, stop_rx) = watch::channel(None);
        let shared = Arc::new(Shared {
            url: config.url.clone(),
            connection_name: format!("kz-groups {node}"),
            node: node.to_owned(),
            capacity: config.queue_capacity,
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            connected: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            stop,
        });
        let worker = tokio::spawn(run(shared.clone(), stop_rx));
        Arc::new(Self {
            shared,
            worker: Mutex::new(Some(worker)),
            flush_timeout: config.flush_timeout,
        })
    }

    /// Stops the worker after it delivered every queued notice or the flush time ran out.
    /// Returns how many notices were left undelivered.
    pub async fn shutdown(&self) -> usize {
        let handle = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(mut handle) = handle else {
            return self.shared.queued();
        };
        let deadline = Instant::now() + self.flush_timeout;
        self.shared.stop.send_replace(Some(deadline));
        self.shared.wake.notify_one();
        // The worker checks the deadline between batches; a batch stuck on the broker is cut.
        if tokio::time::timeout_at(deadline + Duration::from_secs(1), &mut handle)
            .await
            .is_err()
        {
            handle.abort();
        }
        let left = self.shared.drain();
        for notice in &left {
            log::error!(
                "notice not delivered before shutdown: {} (db {}, id {})",
                notice.routing_key,
                notice.db,
                notice.id
            );
        }
        left.len()
    }

    pub fn status(&self) -> BusStatus {
        BusStatus {
            connected: self.shared.connected.load(Ordering::Relaxed),
            queued: self.shared.queued(),
            capacity: self.shared.capacity,
            dropped: self.shared.dropped.load(Ordering::Relaxed),
        }
    }
}

impl ChangeNotifier for Bus {
    fn announce(&self, change: Change) {
        let notice = Notice::build(&change, &self.shared.node);
        let refused = self.shared.lock_queue_then(|queue| {
            if queue.len() >= self.shared.capacity {
                Some(notice)
            } else {
                queue.push_back(notice);
                None
            }
        });
        match refused {
            None => self.shared.wake.notify_one(),
            Some(notice) => {
                let total = self.shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                log::error!(
                    "AMQP queue full ({} notices): dropped {} (db {}, id {}); {total} dropped so far",
                    self.shared.capacity,
                    notice.routing_key,
                    notice.db,
                    notice.id
                );
            }
        }
    }

    fn bus_status(&self) -> Option<BusStatus> {
        Some(self.status())
    }
}

impl Shared {
    fn lock_queue_then<T>(&self, f: impl FnOnce(&mut VecDeque<Notice>) -> T) -> T {
        f(&mut self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn queued(&self) -> usize {
        self.lock_queue_then(|q| q.len())
    }

    /// Copies of the oldest notices; they stay queued until confirmed.
    fn oldest(&self, n: usize) -> Vec<Notice> {
        self.lock_queue_then(|q| q.iter().take(n).cloned().collect())
    }

    /// Only the worker removes, and only from the front, so these are the notices it sent.
    fn confirmed(&self, n: usize) {
        self.lock_queue_then(|q| {
            q.drain(..n.min(q.len()));
        });
    }

    fn drain(&self) -> Vec<Notice> {
        self.lock_queue_then(|q| q.drain(..).collect())
    }

    fn stopping(&self) -> Option<Instant> {
        *self.stop.borrow()
    }
}

/// One open connection with its confirming channel.
struct Link {
    connection: Connection,
    channel: Channel,
    events: std::pin::Pin<Box<dyn Stream<Item = Event> + Send>>,
}

impl Link {
    async fn open(shared: &Shared) -> Result<Self, String> {
        let properties = ConnectionProperties::default()
            .with_connection_name(shared.connection_name.clone().into());
        let connection = Connection::connect(&shared.url, properties)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let events = Box::pin(connection.events_listener());
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| format!("channel: {e}"))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| format!("confirm.select: {e}"))?;
        declare_exchange(&channel).await?;
        Ok(Self {
            connection,
            channel,
            events,
        })
    }

    fn is_open(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

    async fn close(self) {
        if self.connection.status().connected() {
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                self.connection.close(200, "kz-groups stopping"),
            )
            .await;
        }
    }
}

/// Declares `configuration` exactly as Kazoo does (amqp-notices §2.1): any other attribute
/// would make RabbitMQ refuse Kazoo's own later declare; declaring at all covers a broker
/// restarted before any Kazoo app declared it (publishing to a missing exchange closes the
/// channel, and a queue cannot be bound to it).
pub async fn declare_exchange(channel: &Channel) -> Result<(), String> {
    channel
        .exchange_declare(
            EXCHANGE,
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                passive: false,
                durable: false,
                auto_delete: false,
                internal: false,
                nowait: false,
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("exchange.declare {EXCHANGE}: {e}"))
}

/// Publishes `batch` in order and waits for the confirms; returns how many leading notices the
/// broker confirmed, and the error that stopped the rest.
async fn publish(channel: &Channel, batch: &[Notice]) -> (usize, Option<String>) {
    let mut pending = Vec::with_capacity(batch.len());
    let mut failure = None;
    for notice in batch {
        // Kazoo's properties (§4): content type and timestamp only; no headers table, no
        // delivery mode (transient), mandatory=false.
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_timestamp(notice.timestamp);
        match channel
            .basic_publish(
                EXCHANGE,
                &notice.routing_key,
                BasicPublishOptions::default(),
                &notice.body,
                properties,
            )
            .await
        {
            Ok(confirm) => pending.push(confirm),
            Err(e) => {
                failure = Some(format!("publish: {e}"));
                break;
            }
        }
    }
    let mut confirmed = 0;
    for confirm in pending {
        match confirm.await {
            Ok(c) if c.is_ack() => confirmed += 1,
            Ok(_) => return (confirmed, Some("the broker nacked a notice".into())),
            Err(e) => return (confirmed, Some(format!("confirm: {e}"))),
        }
    }
    (confirmed, failure)
}

async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<Option<Instant>>) {
    let mut backoff = MIN_BACKOFF;
    let mut failures: u32 = 0;
    let mut link: Option<Link> = None;
    loop {
        if let Some(deadline) = shared.stopping() {
            if shared.queued() == 0 || Instant::now() >= deadline {
                break;
            }
        }
        if !link.as_ref().is_some_and(Link::is_open) {
            shared.connected.store(false, Ordering::Relaxed);
            if let Some(old) = link.take() {
                old.close().await;
            }
            match tokio::time::timeout(BROKER_TIMEOUT, Link::open(&shared)).await {
                Ok(Ok(open)) => {
                    log::info!("AMQP connected ({} notices queued)", shared.queued());
                    link = Some(open);
                    shared.connected.store(true, Ordering::Relaxed);
                    backoff = MIN_BACKOFF;
                    failures = 0;
                }
                Ok(Err(e)) => {
                    failures += 1;
                    report_failure(&shared, failures, &e);
                    wait(&mut stop, backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(_) => {
                    failures += 1;
                    report_failure(&shared, failures, "connect timed out");
                    wait(&mut stop, backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            continue;
        }
        let Some(open) = link.as_mut() else { continue };
        let batch = shared.oldest(MAX_IN_FLIGHT);
        if batch.is_empty() {
            // Idle: a lost connection is noticed here, so /readyz tells the truth and the
            // reconnect starts before the next write needs it.
            let lost = tokio::select! {
                _ = shared.wake.notified() => false,
                _ = stop.changed() => false,
                event = open.events.next() => match event {
                    Some(Event::Error(e)) => {
                        log::warn!(
                            "AMQP connection to the broker lost ({e}); reconnecting, change \
                             notices wait in the queue ({} queued)",
                            shared.queued()
                        );
                        true
                    }
                    None => true,
                    Some(_) => false,
                },
            };
            if lost {
                shared.connected.store(false, Ordering::Relaxed);
                if let Some(old) = link.take() {
                    old.close().await;
                }
            }
            continue;
        }
        let (confirmed, failure) =
            match tokio::time::timeout(BROKER_TIMEOUT, publish(&open.channel, &batch)).await {
                Ok(outcome) => outcome,
                Err(_) => (0, Some("no confirm from the broker in time".to_owned())),
            };
        shared.confirmed(confirmed);
        if let Some(e) = failure {
            log::warn!(
                "AMQP publishing interrupted ({e}); {} notices queued, reconnecting",
                shared.queued()
            );
            shared.connected.store(false, Ordering::Relaxed);
            if let Some(old) = link.take() {
                old.close().await;
            }
        }
    }
    shared.connected.store(false, Ordering::Relaxed);
    if let Some(open) = link.take() {
        open.close().await;
    }
}

/// The first failure of an outage is a warning; the rest stay quiet until every tenth.
fn report_failure(shared: &Shared, failures: u32, error: &str) {
    if failures == 1 || failures % 10 == 0 {
        log::warn!(
            "AMQP broker unavailable ({error}); {} notices queued, retrying (attempt {failures})",
            shared.queued()
        );
    }
}

/// Sleeps for `backoff`, but not past the flush deadline once shutdown has begun.
async fn wait(stop: &mut watch::Receiver<Option<Instant>>, backoff: Duration) {
    let mut until = Instant::now() + backoff;
    if let Some(deadline) = *stop.borrow() {
        until = until.min(deadline);
    }
    tokio::select! {
        _ = tokio::time::sleep_until(until) => {}
        _ = stop.changed() => {}
    }
}
