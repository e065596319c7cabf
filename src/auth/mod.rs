//! Verification of Kazoo-issued tokens against the material Kazoo keeps in CouchDB
//! (auth-contract §1.7, §2.3) and the authorisation rule of §5.1. Nothing here ever writes:
//! unknown kids, missing secrets and missing identity docs are plain rejections (§1.8).
pub mod identity;
pub mod issuer;
pub mod jwt;
pub mod keys;
pub mod restrictions;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rsa::RsaPublicKey;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::cache::Bounded;
use crate::domain::account::Account;
use crate::domain::clock;
use crate::domain::group::Author;
use crate::domain::ids::{AccountId, DbName, DocId};
use crate::store::{self, Store, StoreResult};
use jwt::{Jwt, JwtError};
use restrictions::{Relation, RestrictedRequest};

/// A signature failure re-reads a cached key's doc at most this often per kid, so tokens of a
/// freshly rotated key verify at once without letting bad tokens hammer CouchDB.
const KEY_RECHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The outcome of checking one token.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenCheck {
    Valid(Box<Identity>),
    /// Signature good, `exp` passed: 401 variant B at the early stage.
    Expired,
    /// The token's account trial has expired: 400 at the early stage (§1.7 step 9).
    TrialExpired(Value),
    /// Anything else: 401 variant A.
    Invalid,
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The account the request acts as: the token's `account_id`, or the `as` account.
    pub account_id: AccountId,
    pub owner_id: Option<String>,
    /// The token's `method` claim (`cb_user_auth`, `cb_api_auth`, ...).
    pub method: Option<String>,
    /// That account, when its document exists (for the superduper rule).
    pub account: Option<Account>,
    pub author: Author,
    /// Every claim of the token (the "auth doc"), for `GET /v2/token_auth`.
    pub claims: Arc<Map<String, Value>>,
}

impl Identity {
    pub fn is_superduper(&self) -> bool {
        self.account.as_ref().is_some_and(Account::is_superduper)
    }

    /// How this caller relates to a target account.
    pub fn relation(&self, target: &Account) -> Relation {
        if self.account_id == target.id {
            Relation::Own
        } else if target.descends_from(&self.account_id) {
            Relation::Ancestor
        } else {
            Relation::Other
        }
    }

    /// §5.1: same account, an ancestor in the target's `pvt_tree`, or a superduper admin.
    pub fn may_access(&self, target: &Account) -> bool {
        self.is_superduper() || self.relation(target) != Relation::Other
    }

    /// §7.3: a URL without an account is for superduper admins only.
    pub fn may_access_without_account(&self) -> bool {
        self.is_superduper()
    }
}

/// A value read from CouchDB and trusted for a while.
struct TtlCell<T> {
    ttl: Duration,
    value: RwLock<Option<(T, Instant)>>,
}

impl<T: Clone> TtlCell<T> {
    fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            value: RwLock::new(None),
        }
    }
}

impl<T: Clone> TtlCell<Option<T>> {
    /// Like [`TtlCell::get_or_load`], but an absent value is never remembered: the next call
    /// reads again, so material created after start (`kz-groups init`) is seen at once.
    async fn get_or_load_present<F>(&self, load: F) -> StoreResult<Option<T>>
    where
        F: std::future::Future<Output = StoreResult<Option<T>>>,
    {
        {
            let cached = self.value.read().unwrap_or_else(|p| p.into_inner());
            if let Some((Some(value), at)) = cached.as_ref() {
                if at.elapsed() < self.ttl {
                    return Ok(Some(value.clone()));
                }
            }
        }
        let value = load.await?;
        let mut cached = self.value.write().unwrap_or_else(|p| p.into_inner());
        *cached = value.clone().map(|v| (Some(v), Instant::now()));
        Ok(value)
    }
}

struct CachedKey {
    rev: String,
    key: RsaPublicKey,
    checked: Instant,
}

/// A token whose signature verified: with which key (its kid and that key document's
/// revision), so a reset key stops it at once; and the token parsed.
#[derive(Clone)]
struct Verified {
    kid: String,
    key_rev: String,
    jwt: Arc<Jwt>,
}

/// What the verified-token cache may hold per entry it is sized for: a Kazoo token is about
/// 650 characters, its entry (digest, kid, key revision, the token parsed) about 1.6 KB.
const VERIFIED_BUDGET: usize = 2048;

/// The weight of a verified token's entry: its fixed part, and the parsed token at about twice
/// the token's length (its claims and header as maps, the signed text, the signature).
fn verified_weight(token: &str) -> usize {
    256 + 2 * token.len()
}

pub struct Authenticator {
    store: Store,
    /// Tokens whose RSA signature verified, keyed by the token's SHA-256 (a token is never kept
    /// in clear), so a token is verified once (`KZ_GROUPS_TOKEN_CACHE_ENTRIES`). An entry holds
    /// only while the key it verified with is the one `system_auth` holds; claims, expiry and
    /// identity are checked on every request as before.
    verified: Bounded<[u8; 32], Verified>,
    /// A cached key is used this long before its doc's revision is checked again, so a reset
    /// key (deleted and recreated under the same kid, §2.2) stops verifying old tokens.
    key_ttl: Duration,
    keys: RwLock<HashMap<String, CachedKey>>,
}

fn field<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key).and_then(Value::as_str)
}

impl Authenticator {
    pub fn new(store: Store, key_ttl: Duration, verified_tokens: usize) -> Self {
        Self {
            store,
            verified: Bounded::new(
                verified_tokens,
                verified_tokens.saturating_mul(VERIFIED_BUDGET),
            ),
            key_ttl,
            keys: RwLock::new(HashMap::new()),
        }
    }

    /// How the verified-token cache is doing.
    pub fn token_stats(&self) -> crate::cache::CacheStats {
        self.verified.stats()
    }

    /// §1.7 steps 2–11. `account_header` is `X-Auth-Account-Id`. CouchDB failures surface as
    /// errors (503), never as a rejection.
    pub async fn check(
        &self,
        token: &str,
        account_header: Option<&str>,
    ) -> StoreResult<TokenCheck> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // A token verified before is not parsed again.
        let known = self.verified.get(&digest);
        let jwt = match &known {
            Some(verified) => verified.jwt.clone(),
            None => match Jwt::parse(token) {
                Ok(jwt) => Arc::new(jwt),
                Err(_) => return Ok(TokenCheck::Invalid),
            },
        };
        let claims = jwt.claims();
        // §1.8: only Kazoo's own issuer is accepted.
        if field(claims, "iss") != Some("kazoo") || jwt.alg().is_err() {
            return Ok(TokenCheck::Invalid);
        }
        let Some(kid) = jwt.kid().and_then(DocId::parse) else {
            return Ok(TokenCheck::Invalid);
        };
        let verified = (digest, verified_weight(token));
        if !self.signature_ok(&jwt, verified, known, &kid).await? {
            return Ok(TokenCheck::Invalid);
        }
        match jwt.check_expiry(clock::unix_now()) {
            Ok(()) => {}
            Err(JwtError::Expired) => return Ok(TokenCheck::Expired),
            Err(_) => return Ok(TokenCheck::Invalid),
        }
        let Some(account_id) = field(claims, "account_id").and_then(|s| AccountId::parse(s).ok())
        else {
            return Ok(TokenCheck::Invalid);
        };
        if claims.contains_key("identity_sig") && !self.identity_ok(claims, &account_id).await? {
            return Ok(TokenCheck::Invalid);
        }
        if account_header.is_some_and(|h| h != account_id.as_str()) {
            return Ok(TokenCheck::Invalid);
        }
        let account = store::account(&self.store, &account_id).await?;
        if let Some(expires) = account
            .as_ref()
            .and_then(|a| a.expired_trial(clock::gregorian_now()))
        {
            return Ok(TokenCheck::TrialExpired(expires.clone()));
        }
        let owner_id = field(claims, "owner_id").map(str::to_owned);
        let mut identity = Identity {
            account_id: account_id.clone(),
            owner_id: owner_id.clone(),
            method: field(claims, "method").map(str::to_owned),
            claims: jwt.shared_claims(),
            account,
            author: Author {
                account_id: Some(account_id.to_string()),
                owner_id,
                original_account_id: field(claims, "original_account_id").map(str::to_owned),
                original_owner_id: field(claims, "original_owner_id").map(str::to_owned),
            },
        };
        if let Some(masquerade) = claims.get("as").and_then(Value::as_object) {
            if let (Some(as_account), Some(as_owner)) = (
                field(masquerade, "account_id"),
                field(masquerade, "owner_id"),
            ) {
                match self.masquerade(&account_id, as_account).await? {
                    Some(as_account) => {
                        let as_id = as_account.id.clone();
                        identity.account_id = as_id.clone();
                        identity.owner_id = Some(as_owner.to_owned());
                        identity.account = Some(as_account);
                        identity.author.account_id = Some(as_id.to_string());
                        identity.author.owner_id = Some(as_owner.to_owned());
                    }
                    None => return Ok(TokenCheck::Invalid),
                }
            }
        }
        Ok(TokenCheck::Valid(Box::new(identity)))
    }

    /// §1.7 step 10: `as` must name a strict descendant, i.e. an account whose `pvt_tree`
    /// holds the token's account.
    async fn masquerade(
        &self,
        token_account: &AccountId,
        as_account: &str,
    ) -> StoreResult<Option<Account>> {
        let Ok(as_id) = AccountId::parse(as_account) else {
            return Ok(None);
        };
        if &as_id == token_account {
            return Ok(None);
        }
        Ok(store::account(&self.store, &as_id)
            .await?
            .filter(|account| account.descends_from(token_account)))
    }

    /// Whether the token's signature verifies with the key `kid` names. `known`: the token's
    /// entry among the verified ones, which holds while that key's document is unchanged;
    /// `(digest, weight)`: where a verification is remembered, and what it weighs.
    async fn signature_ok(
        &self,
        jwt: &Arc<Jwt>,
        (digest, weight): ([u8; 32], usize),
        known: Option<Verified>,
        kid: &DocId,
    ) -> StoreResult<bool> {
        let cached = {
            let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
            keys.get(kid.as_str())
                .map(|k| (k.key.clone(), k.checked, k.rev.clone()))
        };
        let (key, checked, rev) = match cached {
            Some(fresh) if fresh.1.elapsed() < self.key_ttl => fresh,
            _ => match self.load_key(kid).await? {
                Some((key, rev)) => (key, Instant::now(), rev),
                None => return Ok(false),
            },
        };
        if known.is_some_and(|v| v.kid == kid.as_str() && v.key_rev == rev) {
            return Ok(true);
        }
        let remember = |rev: String| {
            let entry = Verified {
                kid: kid.as_str().to_owned(),
                key_rev: rev,
                jwt: jwt.clone(),
            };
            self.verified.insert(digest, entry, weight);
        };
        if jwt.verify_signature(&key).is_ok() {
            remember(rev);
            return Ok(true);
        }
        if checked.elapsed() < KEY_RECHECK_INTERVAL {
            return Ok(false);
        }
        Ok(match self.load_key(kid).await? {
            Some((fresh, rev)) if fresh != key && jwt.verify_signature(&fresh).is_ok() => {
                remember(rev);
                true
            }
            _ => false,
        })
    }

    /// Reads `system_auth/<kid>` (§2.3) and returns its key, fetching and parsing the
    /// `private_key.pem` attachment only when the doc's revision changed; (n, e) is cached with
    /// that revision. A missing or foreign doc is `None`; nothing is ever created.
    async fn load_key(&self, kid: &DocId) -> StoreResult<Option<(RsaPublicKey, String)>> {
        let db = DbName::system(DbName::SYSTEM_AUTH);
        let forget = || {
            let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
            keys.remove(kid.as_str());
        };
        let Some(doc) = self.store.get_shared(&db, kid).await? else {
            forget();
            return Ok(None);
        };
        let has_pem = doc
            .get("_attachments")
            .and_then(|a| a.get("private_key.pem"))
            .is_some();
        if doc.get("pvt_type").and_then(Value::as_str) != Some("system_key") || !has_pem {
            forget();
            return Ok(None);
        }
        let rev = doc
            .get("_rev")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        {
            let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
            if let Some(cached) = keys.get_mut(kid.as_str()).filter(|k| k.rev == rev) {
                cached.checked = Instant::now();
                return Ok(Some((cached.key.clone(), rev)));
            }
        }
        let Some(pem) = self
            .store
            .get_attachment(&db, kid, "private_key.pem")
            .await?
        else {
            forget();
            return Ok(None);
        };
        let key = match keys::public_key_from_private_pem(&String::from_utf8_lossy(&pem)) {
            Ok(key) => key,
            Err(e) => {
                log::warn!(
                    "system_auth/{kid}: unusable private_key.pem ({e}): tokens of that key \
                     answer 401 until a usable one is stored"
                );
                forget();
                return Ok(None);
            }
        };
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        keys.insert(
            kid.as_str().to_owned(),
            CachedKey {
                rev: rev.clone(),
                key: key.clone(),
                checked: Instant::now(),
            },
        );
        Ok(Some((key, rev)))
    }

    /// §1.6: HMAC over the identity with the identity's secret and the server secret, both read
    /// fresh enough that a reset revokes promptly.
    async fn identity_ok(
        &self,
        claims: &Map<String, Value>,
        account: &AccountId,
    ) -> StoreResult<bool> {
        let Some(received) = field(claims, "identity_sig").filter(|s| !s.is_empty()) else {
            return Ok(false);
        };
        let identity = ["device_id", "owner_id", "account_id"]
            .iter()
            .find_map(|k| claims.get(*k))
            .and_then(Value::as_str)
            .and_then(DocId::parse);
        let Some(identity) = identity else {
            return Ok(false);
        };
        let Some(doc) = self.store.get_shared(&account.db(), &identity).await? else {
            return Ok(false);
        };
        let Some(secret) = doc.get("pvt_signature_secret").and_then(Value::as_str) else {
            return Ok(false);
        };
        let Some(server_secret) = self.server_secret().await? else {
            return Ok(false);
        };
        Ok(identity::verify_identity_sig(
            secret,
            &server_secret,
            identity.as_str(),
            received,
        ))
    }

    /// The server half of the identity HMAC key (`system_config/auth`), read through the
    /// store's coherent cache, so a reset is seen at once.
    async fn server_secret(&self) -> StoreResult<Option<String>> {
        let doc = self.system_config("auth").await?;
        Ok(doc
            .as_ref()
            .and_then(|d| d.pointer("/default/secret_for_user_signature"))
            .and_then(Value::as_str)
            .map(str::to_owned))
    }

    async fn system_config(&self, id: &str) -> StoreResult<Option<Arc<Value>>> {
        let db = DbName::system(DbName::SYSTEM_CONFIG);
        match DocId::parse(id) {
            Some(id) => self.store.get_shared(&db, &id).await,
            None => Ok(None),
        }
    }

    /// Token restrictions (§5.2): read at request time from the caller's account, else from
    /// `system_config`; superduper admins are never restricted.
    pub async fn restrictions_allow(
        &self,
        identity: &Identity,
        request: &RestrictedRequest<'_>,
    ) -> StoreResult<bool> {
        if identity.is_superduper() {
            return Ok(true);
        }
        let config = self.system_config("crossbar.token_restrictions").await?;
        let config_default = config.as_ref().and_then(|c| c.get("default"));
        let method = identity
            .method
            .as_deref()
            .unwrap_or(restrictions::CATCH_ALL);
        let db = identity.account_id.db();
        let doc_id = DocId::parse("token_restrictions").expect("static id");
        let by_level = match self.store.get_shared(&db, &doc_id).await? {
            Some(doc) => doc
                .get("restrictions")
                .and_then(|r| restrictions::for_method(r, method))
                .cloned(),
            None => config_default
                .and_then(|d| restrictions::for_method(d, method))
                .cloned(),
        };
        let Some(by_level) = by_level else {
            return Ok(true);
        };
        let user = match identity.owner_id.as_deref().and_then(DocId::parse) {
            Some(owner) => self.store.get_shared(&db, &owner).await?,
            None => None,
        };
        let level = match user {
            Some(user) => user
                .get("priv_level")
                .and_then(Value::as_str)
                .unwrap_or("user")
                .to_owned(),
            None => config_default
                .and_then(|d| d.get("default_priv_level"))
                .and_then(Value::as_str)
                .unwrap_or("admin")
                .to_owned(),
        };
        Ok(match restrictions::for_priv_level(&by_level, &level) {
            Some(by_endpoint) => restrictions::allows(by_endpoint, request),
            None => true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id(s: &str) -> AccountId {
        AccountId::parse(s).unwrap()
    }

    fn account(account: &str, doc: Value) -> Account {
        Account {
            id: id(account),
            doc: std::sync::Arc::new(doc),
        }
    }

    fn identity(me: &str, doc: Value) -> Identity {
        Identity {
            account_id: id(me),
            owner_id: None,
            method: None,
            claims: Arc::default(),
            account: Some(account(me, doc)),
            author: Author::default(),
        }
    }

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const P: &str = "pppppppppppppppppppppppppppppppp";
    const S: &str = "ssssssssssssssssssssssssssssssss";

    #[test]
    fn same_account_and_ancestors_may_access() {
        let a = account(A, json!({"pvt_tree": [P]}));
        assert!(identity(A, json!({})).may_access(&a));
        assert!(identity(P, json!({})).may_access(&a));
    }

    #[test]
    fn children_and_siblings_may_not() {
        let p = account(P, json!({"pvt_tree": []}));
        assert!(!identity(A, json!({})).may_access(&p));
        let a = account(A, json!({"pvt_tree": [P]}));
        assert!(!identity(S, json!({})).may_access(&a));
    }

    #[test]
    fn superduper_admins_may_access_anything() {
        for flag in [json!(true), json!("true")] {
            let me = identity(S, json!({ "pvt_superduper_admin": flag }));
            assert!(me.may_access(&account(A, json!({}))));
            assert!(me.may_access_without_account());
        }
        assert!(!identity(S, json!({"pvt_superduper_admin": false})).may_access_without_account());
    }
}
