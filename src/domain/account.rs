//! An account as requests see it (auth-contract §5.1, §6.2): its document, and the rules read
//! from it (enabled, trial expiry, ancestors, superduper), each written once.
use std::sync::Arc;

use serde_json::Value;

use super::group::truthy;
use super::ids::AccountId;

#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub id: AccountId,
    /// The account document (a JSON object) from the account's own database, shared with the
    /// store's cache.
    pub doc: Arc<Value>,
}

impl Account {
    /// `pvt_enabled` absent or true (Kazoo's `kz_term:is_true`).
    pub fn is_enabled(&self) -> bool {
        self.doc.get("pvt_enabled").is_none_or(truthy)
    }

    /// The trial's `pvt_trial_expires` (Gregorian seconds) when it has passed at `now`.
    pub fn expired_trial(&self, now_gregorian: i64) -> Option<&Value> {
        self.doc
            .get("pvt_trial_expires")
            .filter(|expires| expires.as_i64().is_some_and(|ts| ts <= now_gregorian))
    }

    /// Whether `ancestor` is in this account's `pvt_tree` (root first, itself excluded).
    pub fn descends_from(&self, ancestor: &AccountId) -> bool {
        self.tree().any(|id| id == ancestor.as_str())
    }

    /// The ids of `pvt_tree`, root first.
    pub fn tree(&self) -> impl Iterator<Item = &str> {
        self.doc
            .get("pvt_tree")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
    }

    pub fn is_superduper(&self) -> bool {
        self.doc.get("pvt_superduper_admin").is_some_and(truthy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn account(doc: Value) -> Account {
        Account {
            id: AccountId::parse("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").unwrap(),
            doc: Arc::new(doc),
        }
    }

    #[test]
    fn enabled_unless_disabled_explicitly() {
        assert!(account(json!({})).is_enabled());
        assert!(account(json!({"pvt_enabled": true})).is_enabled());
        assert!(account(json!({"pvt_enabled": "true"})).is_enabled());
        assert!(!account(json!({"pvt_enabled": false})).is_enabled());
        assert!(!account(json!({"pvt_enabled": "no"})).is_enabled());
    }

    #[test]
    fn a_trial_expires_at_its_second() {
        let a = account(json!({"pvt_trial_expires": 100}));
        assert_eq!(a.expired_trial(99), None);
        assert_eq!(a.expired_trial(100), Some(&json!(100)));
        assert_eq!(
            account(json!({"pvt_trial_expires": "100"})).expired_trial(200),
            None
        );
        assert_eq!(account(json!({})).expired_trial(200), None);
    }

    #[test]
    fn ancestors_come_from_the_tree() {
        let p = AccountId::parse("pppppppppppppppppppppppppppppppp").unwrap();
        let a = account(json!({"pvt_tree": [p.as_str()]}));
        assert!(a.descends_from(&p));
        assert!(!account(json!({"pvt_tree": []})).descends_from(&p));
        assert!(!account(json!({})).descends_from(&p));
    }
}
