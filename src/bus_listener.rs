//! Kazoo's own document-change notices (amqp-notices §1-§3), heard on the local zone's broker
//! when `KZ_GROUPS_AMQP_URL` is set, so a change Kazoo makes leaves the caches at once instead
//! of when the store's change feed reports it. A notice only ever drops entries: the feeds (or
//! the TTL where none runs) are what bound staleness, so a lost connection costs speed, not
//! truth. Notices kz-groups published itself (`Node` is its own) are ignored: its writes have
//! already left its caches.
//!
//! One anonymous queue (exclusive, deleted with the connection) bound to the `configuration`
//! exchange for document notices (`doc_created`, `doc_edited`, `doc_deleted`) and database
//! deletions; reconnected with backoff (0.1 s doubling to 5 s) when lost.
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, Consumer};
use serde::Deserialize;

use crate::notices::EXCHANGE;
use crate::store::Changed;

/// The routing keys heard: every document change, and databases deleted.
const BINDINGS: [&str; 4] = [
    "doc_created.#",
    "doc_edited.#",
    "doc_deleted.#",
    "db_deleted.#",
];
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a change heard on the bus is handed to.
pub type OnChange = Arc<dyn Fn(&Changed) + Send + Sync>;

/// The fields of a notice this listener reads.
#[derive(Debug, Deserialize)]
struct Heard {
    #[serde(rename = "Node")]
    node: Option<String>,
    #[serde(rename = "Type")]
    kind: Option<String>,
    #[serde(rename = "Database")]
    database: String,
    #[serde(rename = "ID")]
    id: String,
}

/// What a notice says changed, unless this node sent it. The database is named as CouchDB
/// names it (Kazoo's notices carry `account%2F…`).
fn changed(payload: &[u8], own_node: &str) -> Option<Changed> {
    let heard: Heard = serde_json::from_slice(payload).ok()?;
    if heard.node.as_deref() == Some(own_node) {
        return None;
    }
    let unencoded = |name: &str| name.replace("%2F", "/").replace("%2f", "/");
    let db = unencoded(&heard.database);
    Some(if heard.kind.as_deref() == Some("database") {
        Changed::Db(db)
    } else {
        Changed::Doc { db, id: heard.id }
    })
}

/// Listens until the task is aborted.
pub fn start(url: String, node: String, on_change: OnChange) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = MIN_BACKOFF;
        let mut failures = 0u32;
        loop {
            match consume(&url, &node).await {
                Ok((connection, mut consumer)) => {
                    log::info!("hearing Kazoo's change notices on the {EXCHANGE} exchange");
                    (backoff, failures) = (MIN_BACKOFF, 0);
                    while let Some(delivery) = consumer.next().await {
                        match delivery {
                            Ok(delivery) => {
                                if let Some(change) = changed(&delivery.data, &node) {
                                    on_change(&change);
                                }
                            }
                            Err(e) => {
                                log::warn!(
                                    "stopped hearing Kazoo's change notices ({e}): the caches \
                                     still follow the store's change feed; reconnecting in \
                                     {backoff:?}"
                                );
                                break;
                            }
                        }
                    }
                    if connection.status().connected() {
                        let _ = connection.close(200, "reconnecting").await;
                    }
                }
                // The first failure of an outage is said, then every tenth.
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures % 10 == 0 {
                        log::warn!(
                            "cannot hear Kazoo's change notices ({e}): the caches follow the \
                             store's change feed alone; retrying in {backoff:?} (attempt \
                             {failures})"
                        );
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    })
}

/// A connection and its consumer of the notices (the consumer lives while the connection does).
async fn consume(url: &str, node: &str) -> Result<(Connection, Consumer), String> {
    let properties = ConnectionProperties::default()
        .with_connection_name(format!("kz-groups {node} (listening)").into());
    let connection = Connection::connect(url, properties)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| format!("channel: {e}"))?;
    crate::bus::declare_exchange(&channel).await?;
    let queue = channel
        .queue_declare(
            "",
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("queue.declare: {e}"))?;
    for key in BINDINGS {
        channel
            .queue_bind(
                queue.name().as_str(),
                EXCHANGE,
                key,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("queue.bind {key}: {e}"))?;
    }
    let consumer = channel
        .basic_consume(
            queue.name().as_str(),
            "kz-groups-caches",
            BasicConsumeOptions {
                no_ack: true,
                exclusive: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("basic.consume: {e}"))?;
    Ok((connection, consumer))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DB: &str = "account%2F4b%2F31%2Fdd1d32ce6d249897c06332375d65";

    #[test]
    fn a_kazoo_notice_names_the_document_as_couchdb_names_its_database() {
        let body = format!(
            r#"{{"Node":"kazoo_apps@kz1","Type":"group","Database":"{DB}","ID":"g1","Rev":"2-a"}}"#
        );
        assert_eq!(
            changed(body.as_bytes(), "kz-groups@here"),
            Some(Changed::Doc {
                db: "account/4b/31/dd1d32ce6d249897c06332375d65".into(),
                id: "g1".into()
            })
        );
    }

    #[test]
    fn its_own_notices_and_garbage_are_ignored_and_databases_are_whole() {
        let own =
            format!(r#"{{"Node":"kz-groups@here","Type":"group","Database":"{DB}","ID":"g"}}"#);
        assert_eq!(changed(own.as_bytes(), "kz-groups@here"), None);
        assert_eq!(changed(b"not json", "kz-groups@here"), None);
        let db = format!(r#"{{"Node":"k@h","Type":"database","Database":"{DB}","ID":"{DB}"}}"#);
        assert_eq!(
            changed(db.as_bytes(), "kz-groups@here"),
            Some(Changed::Db(
                "account/4b/31/dd1d32ce6d249897c06332375d65".into()
            ))
        );
    }
}
