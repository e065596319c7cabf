//! The announcement of each group write, the hook where Kazoo's AMQP document-change notices
//! (../shared/kazoo/amqp-notices.md §1.4) will be published. Today the notice is only logged.
use crate::domain::ids::{AccountId, DocId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeAction {
    Created,
    Edited,
    Deleted { soft: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocChange {
    pub account: AccountId,
    pub id: DocId,
    pub rev: String,
    pub action: ChangeAction,
}

/// Receives one call per successful write, after CouchDB acknowledged it.
pub trait ChangeNotifier: Send + Sync {
    fn announce(&self, change: DocChange);
}

/// Writes the notice to the log at debug level.
pub struct LogNotifier;

impl ChangeNotifier for LogNotifier {
    fn announce(&self, change: DocChange) {
        log::debug!(
            "group {:?} {} rev {} in account {}",
            change.action,
            change.id,
            change.rev,
            change.account
        );
    }
}
