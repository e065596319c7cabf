//! Issuing tokens the way Crossbar's login endpoints do (auth-contract §1.3–§1.6, §2.4): signed
//! with the system key named in `system_config/auth`, carrying an `identity_sig`, so Kazoo and
//! kz-groups accept each other's tokens.
use std::sync::Arc;
use std::time::Duration;

use rsa::RsaPrivateKey;
use serde_json::{json, Map, Value};

use super::{identity, jwt, keys, TtlCell};
use crate::domain::clock;
use crate::domain::ids::{random_hex, AccountId, DbName, DocId};
use crate::store::{Store, StoreError, StoreResult};

/// Crossbar's default `token_auth_expiry_s`.
pub const TOKEN_LIFETIME_SECS: i64 = 3600;

#[derive(Clone)]
struct SigningKey {
    kid: String,
    key: Arc<RsaPrivateKey>,
}

/// Reads go past the caches (`fresh`): a login must see signing material `kz-groups init` has
/// just made, and the identity revision it writes over. Writes go through them (`writes`), so
/// the tokens issued verify at once: every cached copy of a document it writes is dropped
/// before the login answers.
pub struct Issuer {
    fresh: Store,
    writes: Store,
    signing: TtlCell<Option<SigningKey>>,
}

/// Who a token is for.
pub struct Subject<'a> {
    pub account: &'a AccountId,
    /// The user, for `user_auth`; absent for `api_auth`, whose identity is the account.
    pub owner: Option<&'a DocId>,
    /// `cb_api_auth` or `cb_user_auth`.
    pub method: &'a str,
}

impl Issuer {
    /// `fresh`: the store itself; `writes`: the store as requests read it (with its caches).
    pub fn new(fresh: Store, writes: Store, key_ttl: Duration) -> Self {
        Self {
            fresh,
            writes,
            signing: TtlCell::new(key_ttl),
        }
    }

    /// A signed token, or `None` when the signing material is missing or unusable (the login
    /// then answers 401; `kz-groups init` creates the material). A missing key is looked for
    /// again on the next login, so a key created after start is used at once.
    pub async fn issue(&self, subject: &Subject<'_>) -> StoreResult<Option<String>> {
        let Some(signing) = self
            .signing
            .get_or_load_present(self.load_signing_key())
            .await?
        else {
            return Ok(None);
        };
        let Some(server_secret) = self.server_secret().await? else {
            log::warn!(
                "system_config/auth has no default.secret_for_user_signature: logins answer 401 \
                 until `kz-groups init` is run"
            );
            return Ok(None);
        };
        let identity_id = match subject.owner {
            Some(owner) => owner.clone(),
            None => DocId::from(subject.account.clone()),
        };
        let Some(secret) = self.identity_secret(subject.account, &identity_id).await? else {
            return Ok(None);
        };
        let mut claims = Map::new();
        claims.insert("account_id".into(), json!(subject.account.as_str()));
        if let Some(owner) = subject.owner {
            claims.insert("owner_id".into(), json!(owner.as_str()));
        }
        claims.insert("method".into(), json!(subject.method));
        claims.insert("exp".into(), json!(clock::unix_now() + TOKEN_LIFETIME_SECS));
        claims.insert("iss".into(), json!("kazoo"));
        claims.insert(
            "identity_sig".into(),
            json!(identity::identity_sig(
                &secret,
                &server_secret,
                identity_id.as_str()
            )),
        );
        Ok(Some(jwt::sign(
            &claims,
            &signing.kid,
            jwt::Alg::RS256,
            &signing.key,
        )))
    }

    /// What is missing of the signing material logins need, in a sentence that says what to
    /// run; `None` when it is all there (the key is then loaded and cached for the next login).
    pub async fn missing_material(&self) -> StoreResult<Option<String>> {
        let problem = match self.config_auth().await? {
            None => "system_config/auth does not exist",
            Some(doc) if doc.pointer("/default/system_key").is_none() => {
                "system_config/auth has no default.system_key"
            }
            Some(doc) if doc.pointer("/default/secret_for_user_signature").is_none() => {
                "system_config/auth has no default.secret_for_user_signature"
            }
            Some(_) => match self
                .signing
                .get_or_load_present(self.load_signing_key())
                .await?
            {
                None => "the system_auth key named by system_config/auth is missing or unusable",
                Some(_) => return Ok(None),
            },
        };
        Ok(Some(format!(
            "token signing material is missing ({problem}): every login answers 401 until \
             `kz-groups init` is run once against this store"
        )))
    }

    async fn config_auth(&self) -> StoreResult<Option<Value>> {
        let db = DbName::system(DbName::SYSTEM_CONFIG);
        self.fresh
            .get_doc(&db, &DocId::parse("auth").expect("static id"))
            .await
    }

    async fn server_secret(&self) -> StoreResult<Option<String>> {
        Ok(self
            .config_auth()
            .await?
            .as_ref()
            .and_then(|d| d.pointer("/default/secret_for_user_signature"))
            .and_then(Value::as_str)
            .map(str::to_owned))
    }

    async fn load_signing_key(&self) -> StoreResult<Option<SigningKey>> {
        let config = self.config_auth().await?;
        let Some(kid) = config
            .as_ref()
            .and_then(|d| d.pointer("/default/system_key"))
            .and_then(Value::as_str)
            .and_then(DocId::parse)
        else {
            log::warn!(
                "system_config/auth has no default.system_key: logins answer 401 until \
                 `kz-groups init` is run"
            );
            return Ok(None);
        };
        let db = DbName::system(DbName::SYSTEM_AUTH);
        let Some(pem) = self
            .fresh
            .get_attachment(&db, &kid, "private_key.pem")
            .await?
        else {
            log::warn!(
                "system_auth/{kid} has no private_key.pem: logins answer 401 until `kz-groups \
                 init` is run"
            );
            return Ok(None);
        };
        match keys::private_key_from_pem(&String::from_utf8_lossy(&pem)) {
            Ok(key) => Ok(Some(SigningKey {
                kid: kid.to_string(),
                key: Arc::new(key),
            })),
            Err(e) => {
                log::warn!(
                    "system_auth/{kid}: unusable private_key.pem ({e}): logins answer 401 until \
                     a usable one is stored"
                );
                Ok(None)
            }
        }
    }

    /// The identity's `pvt_signature_secret`, created when missing as Kazoo does at issue time
    /// (§1.6): in the user doc, or in both copies of the account doc.
    async fn identity_secret(
        &self,
        account: &AccountId,
        id: &DocId,
    ) -> StoreResult<Option<String>> {
        for _ in 0..5 {
            let Some(Value::Object(mut doc)) = self.fresh.get_doc(&account.db(), id).await? else {
                return Ok(None);
            };
            if let Some(secret) = doc.get("pvt_signature_secret").and_then(Value::as_str) {
                return Ok(Some(secret.to_owned()));
            }
            let secret = random_hex(16);
            doc.insert("pvt_signature_secret".into(), json!(secret));
            match self
                .writes
                .put_doc(&account.db(), id, &Value::Object(doc))
                .await
            {
                Ok(_) => {}
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e),
            }
            if id.as_str() == account.as_str() {
                self.copy_secret_to_accounts_db(id, &secret).await?;
            }
            return Ok(Some(secret));
        }
        Err(StoreError::Conflict)
    }

    async fn copy_secret_to_accounts_db(&self, id: &DocId, secret: &str) -> StoreResult<()> {
        let db = DbName::system(DbName::ACCOUNTS);
        for _ in 0..5 {
            let Some(Value::Object(mut doc)) = self.fresh.get_doc(&db, id).await? else {
                return Ok(());
            };
            doc.insert("pvt_signature_secret".into(), json!(secret));
            match self.writes.put_doc(&db, id, &Value::Object(doc)).await {
                Err(StoreError::Conflict) => continue,
                other => return other.map(|_| ()),
            }
        }
        Err(StoreError::Conflict)
    }
}
