//! Identifiers parsed at the edge: nothing downstream handles a raw string from a URL, a body or
//! a token. Parsing is what keeps every request inside the group documents of one account db.
use std::fmt;

use rand::RngCore;

/// A Kazoo account id: 32 characters. Kazoo only checks the length (groups-contract §4.1); we
/// also require the characters CouchDB allows in a database name, so an id can never name another
/// database (`_users`, `_replicator`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountIdError {
    /// Empty segment: `missing account_id`.
    Missing,
    /// Not 32 bytes: `invalid account_id '<raw>'` (404, groups-contract §3.5).
    Malformed(String),
    /// 32 bytes, but no CouchDB database can carry it, so no such account exists.
    NoSuchAccount(String),
}

impl AccountId {
    pub fn parse(raw: &str) -> Result<Self, AccountIdError> {
        if raw.is_empty() {
            return Err(AccountIdError::Missing);
        }
        if raw.len() != 32 {
            return Err(AccountIdError::Malformed(raw.to_owned()));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(AccountIdError::NoSuchAccount(raw.to_owned()));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The account's own database.
    pub fn db(&self) -> DbName {
        let (a, rest) = self.0.split_at(2);
        let (b, rest) = rest.split_at(2);
        DbName(format!("account/{a}/{b}/{rest}"))
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A CouchDB database name, unencoded (`account/4b/31/dd1d...`). Built only from parsed ids or
/// fixed system names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DbName(String);

impl DbName {
    pub const ACCOUNTS: &'static str = "accounts";
    pub const SYSTEM_AUTH: &'static str = "system_auth";
    pub const SYSTEM_CONFIG: &'static str = "system_config";

    pub fn system(name: &'static str) -> Self {
        Self(name.to_owned())
    }

    /// Recognises an account database in an `_all_dbs` listing, which CouchDB gives unencoded
    /// (`account/4b/31/...`) and some servers give encoded (`account%2F4b%2F31%2F...`).
    /// Monthly databases (`...-202411`) are not account databases.
    pub fn parse_account_db(listed: &str) -> Option<AccountId> {
        // pouchdb-server (the test server) strips the slashes from database names.
        if let Some(id) = listed.strip_prefix("account").filter(|id| id.len() == 32) {
            return AccountId::parse(id).ok();
        }
        let decoded = listed.replace("%2F", "/").replace("%2f", "/");
        let rest = decoded.strip_prefix("account/")?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [a, b, tail] if a.len() == 2 && b.len() == 2 && tail.len() == 28 => {
                AccountId::parse(&format!("{a}{b}{tail}")).ok()
            }
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form Kazoo stores in `pvt_account_db` and uses as the URL path segment.
    pub fn encoded(&self) -> String {
        self.0.replace('/', "%2F")
    }
}

impl fmt::Display for DbName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of an ordinary document inside an account database: a group, a user, an account doc,
/// a key doc. Ids that CouchDB treats specially (`_design/...`, `_all_docs`, `_changes`), that
/// would leave the path segment (`/`), or that URL normalisation rewrites (`.`, `..`) are refused,
/// so a DocId can only ever address a plain document.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocId(String);

pub const MAX_DOC_ID_LEN: usize = 255;

impl DocId {
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = !raw.is_empty()
            && raw.len() <= MAX_DOC_ID_LEN
            && !raw.starts_with('_')
            && raw != "."
            && raw != ".."
            && !raw.chars().any(|c| c == '/' || c == '\\' || c.is_control());
        ok.then(|| Self(raw.to_owned()))
    }

    /// Kazoo's generated ids: 16 random bytes as 32 lower-case hex (groups-contract §4.3).
    pub fn generate() -> Self {
        Self(random_hex(16))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<AccountId> for DocId {
    fn from(id: AccountId) -> Self {
        Self(id.0)
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `n` random bytes as lower-case hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex(&bytes)
}

/// Bytes as lower-case hex, as Kazoo writes digests and ids.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn account_id_must_be_32_bytes() {
        assert_eq!(AccountId::parse(""), Err(AccountIdError::Missing));
        assert_eq!(
            AccountId::parse("abc"),
            Err(AccountIdError::Malformed("abc".into()))
        );
        let encoded = "account%2F4b%2F31%2Fdd1d32ce6d249897c06332375d65";
        assert!(matches!(
            AccountId::parse(encoded),
            Err(AccountIdError::Malformed(_))
        ));
    }

    #[test]
    fn account_id_with_foreign_characters_names_no_account() {
        for raw in [
            "_users__________________________",
            "4B31DD1D32CE6D249897C06332375D65",
            "4b31dd1d32ce6d24/897c06332375d65",
        ] {
            assert_eq!(raw.len(), 32);
            assert!(matches!(
                AccountId::parse(raw),
                Err(AccountIdError::NoSuchAccount(_))
            ));
        }
    }

    #[test]
    fn account_db_name_splits_2_2_28() {
        let id = AccountId::parse("4b31dd1d32ce6d249897c06332375d65").unwrap();
        assert_eq!(
            id.db().as_str(),
            "account/4b/31/dd1d32ce6d249897c06332375d65"
        );
        assert_eq!(
            id.db().encoded(),
            "account%2F4b%2F31%2Fdd1d32ce6d249897c06332375d65"
        );
    }

    #[test]
    fn account_dbs_are_recognised_in_both_listing_forms() {
        let want = AccountId::parse("4b31dd1d32ce6d249897c06332375d65").ok();
        assert_eq!(
            DbName::parse_account_db("account/4b/31/dd1d32ce6d249897c06332375d65"),
            want
        );
        assert_eq!(
            DbName::parse_account_db("account%2F4b%2F31%2Fdd1d32ce6d249897c06332375d65"),
            want
        );
        assert_eq!(
            DbName::parse_account_db("account/4b/31/dd1d32ce6d249897c06332375d65-202411"),
            None
        );
        assert_eq!(
            DbName::parse_account_db("account4b31dd1d32ce6d249897c06332375d65"),
            want
        );
        assert_eq!(DbName::parse_account_db("_users"), None);
        assert_eq!(DbName::parse_account_db("accounts"), None);
    }

    #[test]
    fn doc_ids_that_reach_other_couch_resources_are_refused() {
        for raw in [
            "",
            "_design/groups",
            "_all_docs",
            "_changes",
            "..",
            ".",
            "a/b",
            "a\\b",
            "x\ny",
        ] {
            assert_eq!(DocId::parse(raw), None, "{raw:?}");
        }
        assert!(DocId::parse(&"a".repeat(256)).is_none());
    }

    #[test]
    fn ordinary_ids_are_accepted() {
        for raw in ["my-group", "1743724cd775bf6994380dbc79c1af09", "a.b", "..."] {
            assert_eq!(DocId::parse(raw).unwrap().as_str(), raw);
        }
    }

    #[test]
    fn generated_ids_are_32_lower_hex() {
        let id = DocId::generate();
        assert_eq!(id.as_str().len(), 32);
        assert!(id
            .as_str()
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }

    proptest! {
        #[test]
        fn parsed_doc_ids_never_start_with_underscore_or_contain_slash(raw in ".{0,40}") {
            if let Some(id) = DocId::parse(&raw) {
                prop_assert!(!id.as_str().starts_with('_'));
                prop_assert!(!id.as_str().contains('/'));
                prop_assert!(id.as_str() != "..");
            }
        }

        #[test]
        fn parsed_account_ids_always_give_a_plain_account_db(raw in "[a-z0-9_/%.]{30,34}") {
            if let Ok(id) = AccountId::parse(&raw) {
                let db = id.db();
                prop_assert!(db.as_str().starts_with("account/"));
                prop_assert_eq!(db.as_str().matches('/').count(), 3);
            }
        }
    }
}
