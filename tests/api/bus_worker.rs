//! The bus worker on its own, against the real broker behind a path the test can cut: the
//! queue bound, and the bounded flush on shutdown.
use std::time::Duration;

use kz_groups::bus::Bus;
use kz_groups::domain::ids::{random_hex, AccountId, DbName, DocId};
use kz_groups::notices::{Change, ChangeAction, ChangeNotifier, DocChange};

use crate::helpers::bus::{amqp_config, FaultyLink, Listener, Message};

fn account_db() -> DbName {
    AccountId::parse(&random_hex(16)).unwrap().db()
}

fn created(db: &DbName, n: usize) -> Change {
    Change::Doc(Box::new(DocChange {
        db: db.clone(),
        id: DocId::parse(&format!("g{n}")).unwrap(),
        rev: format!("1-{n}"),
        action: ChangeAction::Created,
        doc_type: Some("group".into()),
        pvt_created: None,
        pvt_modified: None,
        pvt_account_id: None,
    }))
}

fn ids(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m.json["ID"].as_str().unwrap().to_owned())
        .collect()
}

/// A bus whose path to the broker starts cut, the database its notices name, and a listener
/// bound to that database's notices.
async fn start_cut_off(
    capacity: usize,
    flush: Duration,
) -> (FaultyLink, std::sync::Arc<Bus>, DbName, Listener) {
    let link = FaultyLink::start().await;
    link.cut();
    let mut config = amqp_config(&link.url());
    config.queue_capacity = capacity;
    config.flush_timeout = flush;
    let bus = Bus::start(&config, &format!("kz-groups-test-{}@test", random_hex(4)));
    let db = account_db();
    let q = Listener::bind(&[format!("*.{}.*.*", db.encoded())]).await;
    (link, bus, db, q)
}

#[tokio::test]
async fn a_full_queue_drops_the_new_notices_and_counts_them() {
    let (link, bus, db, mut q) = start_cut_off(3, Duration::from_secs(5)).await;
    for n in 0..5 {
        bus.announce(created(&db, n));
    }
    let status = bus.status();
    assert_eq!((status.queued, status.dropped, status.capacity), (3, 2, 3));
    assert!(!status.connected);
    link.restore();
    let got = q.expect(3).await;
    assert_eq!(
        ids(&got),
        ["g0", "g1", "g2"],
        "the oldest are kept, in order"
    );
    assert_eq!(bus.shutdown().await, 0);
}

#[tokio::test]
async fn shutdown_flushes_the_queue_once_the_broker_is_back() {
    let (link, bus, db, mut q) = start_cut_off(100, Duration::from_secs(10)).await;
    for n in 0..3 {
        bus.announce(created(&db, n));
    }
    let stopping = tokio::spawn({
        let bus = bus.clone();
        async move { bus.shutdown().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !stopping.is_finished(),
        "shutdown waits for the queued notices"
    );
    link.restore();
    let left = tokio::time::timeout(Duration::from_secs(15), stopping)
        .await
        .expect("shutdown ends within its flush time")
        .unwrap();
    assert_eq!(left, 0);
    assert_eq!(ids(&q.expect(3).await), ["g0", "g1", "g2"]);
}

#[tokio::test]
async fn shutdown_gives_up_after_the_flush_time_and_reports_what_was_left() {
    let (_link, bus, db, _q) = start_cut_off(100, Duration::from_secs(1)).await;
    bus.announce(created(&db, 0));
    bus.announce(created(&db, 1));
    let left = tokio::time::timeout(Duration::from_secs(10), bus.shutdown())
        .await
        .expect("shutdown is bounded");
    assert_eq!(left, 2);
}
