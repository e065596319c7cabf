//! `PUT /v2/api_auth` and `PUT /v2/user_auth` (auth-contract §3, §4): an account API key or a
//! user's credentials in, a Kazoo token out, with the `response_auth` data Kazoo returns.
use serde_json::{json, Map, Value};

use actix_web::http::{Method, StatusCode};

use crate::auth::issuer::Subject;
use crate::domain::account::Account;
use crate::domain::clock;
use crate::domain::group::truthy;
use crate::domain::ids::{AccountId, DbName, DocId};
use crate::error::ApiError;
use crate::json::into_object;
use crate::pipeline::reply::{Outcome, Revision, Success};
use crate::pipeline::AppState;
use crate::store::{self, StoreError, View, ViewQuery};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// `api_auth`
    ApiKey,
    /// `user_auth`
    User,
}

impl Login {
    pub fn path(self) -> &'static str {
        match self {
            Self::ApiKey => "/v2/api_auth",
            Self::User => "/v2/user_auth",
        }
    }
}

/// A successful login: the answer and the new token for the envelope's `auth_token`.
pub struct LoggedIn {
    pub outcome: Outcome,
    pub token: String,
}

pub async fn login(state: &AppState, login: Login, data: Value) -> Result<LoggedIn, ApiError> {
    let (account, owner, method) = match login {
        Login::ApiKey => (api_key_account(state, data).await?, None, "cb_api_auth"),
        Login::User => {
            let (account, owner) = user_credentials(state, data).await?;
            (account, Some(owner), "cb_user_auth")
        }
    };
    let subject = Subject {
        account: &account,
        owner: owner.as_ref(),
        method,
    };
    let token = state
        .issuer
        .issue(&subject)
        .await?
        .ok_or(ApiError::InvalidCredentials)?;
    let data = response_auth(state, &account, owner.as_ref()).await?;
    let success = Success {
        status: StatusCode::CREATED,
        // Both leak from Crossbar's internal view query and are part of its answer (§3.4).
        extra: vec![("page_size", json!(1))],
        location: Some(login.path().to_owned()),
        ..Success::ok(Value::Object(data), Revision::Automatic)
    };
    Ok(LoggedIn {
        outcome: Outcome::Done(success),
        token,
    })
}

fn validated(state: &AppState, login: Login, data: Value) -> Result<Map<String, Value>, ApiError> {
    let schema = match login {
        Login::ApiKey => &state.schemas.api_auth,
        Login::User => &state.schemas.user_auth,
    };
    schema
        .validate(data)
        .map(into_object)
        .map_err(ApiError::Validation)
}

/// §3.2: the key is looked up in `accounts/listing_by_api`; no row is a 404 naming the key.
async fn api_key_account(state: &AppState, data: Value) -> Result<AccountId, ApiError> {
    let data = validated(state, Login::ApiKey, data)?;
    let key = data
        .get("api_key")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if key.is_empty() {
        return Err(ApiError::InvalidCredentials);
    }
    let rows = lookup(state, View::AccountsListingByApi, key).await?;
    rows.into_iter()
        .next()
        .ok_or_else(|| ApiError::UnknownApiKey(key.to_owned()))
}

/// Rows of an `accounts/*` view, as account ids.
async fn lookup(state: &AppState, view: View, key: &str) -> Result<Vec<AccountId>, ApiError> {
    let installed = match state.views.ensure_accounts_db().await {
        // No `accounts` database: no account has an API key, realm or name yet.
        Err(StoreError::NotFound) => return Ok(Vec::new()),
        other => other?,
    };
    let query = ViewQuery {
        key: Some(Value::from(key)),
        ..Default::default()
    };
    let db = DbName::system(DbName::ACCOUNTS);
    let rows = match installed.query(&state.store, &db, view, &query).await {
        Ok(rows) => rows,
        Err(StoreError::NotFound) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    Ok(rows
        .iter()
        .filter_map(|row| row.value_str("account_id"))
        .filter_map(|id| AccountId::parse(&id).ok())
        .collect())
}

/// §4.2–§4.3: the accounts named by realm, else by name; the first whose user view holds the
/// credentials wins; then the account must be neither expired nor disabled.
async fn user_credentials(state: &AppState, data: Value) -> Result<(AccountId, DocId), ApiError> {
    let data = validated(state, Login::User, data)?;
    let credentials = data
        .get("credentials")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let view = match data.get("method").and_then(Value::as_str) {
        Some("sha") => View::UsersCredsBySha,
        _ => View::UsersCredsByMd5,
    };
    let realm = ["account_realm", "realm"]
        .iter()
        .find_map(|k| data.get(*k).and_then(Value::as_str))
        .map(str::to_lowercase);
    let name = data
        .get("account_name")
        .and_then(Value::as_str)
        .map(crate::domain::group::alphanum_name);
    let mut candidates = Vec::new();
    if let Some(realm) = realm {
        candidates = lookup(state, View::AccountsListingByRealm, &realm).await?;
    }
    if candidates.is_empty() {
        if let Some(name) = name {
            candidates = lookup(state, View::AccountsListingByName, &name).await?;
        }
    }
    for account in candidates {
        let installed = state.views.ensure(&account).await?;
        let query = ViewQuery {
            key: Some(Value::from(credentials)),
            ..Default::default()
        };
        let rows = match installed
            .query(&state.store, &account.db(), view, &query)
            .await
        {
            Ok(rows) => rows,
            Err(StoreError::NotFound) => continue,
            Err(e) => return Err(e.into()),
        };
        let Some(owner) = rows
            .iter()
            .find_map(|row| row.value_str("owner_id"))
            .and_then(|id| DocId::parse(&id))
        else {
            continue;
        };
        check_account_usable(state, &account).await?;
        return Ok((account, owner));
    }
    Err(ApiError::InvalidCredentials)
}

/// §4.3: an expired trial or a disabled account cannot log in with user credentials.
async fn check_account_usable(state: &AppState, account: &AccountId) -> Result<(), ApiError> {
    let Some(account) = store::account(&state.store, account).await? else {
        return Ok(());
    };
    if let Some(expires) = account.expired_trial(clock::gregorian_now()) {
        return Err(ApiError::validation(
            "account",
            "expired",
            json!({"message": "account expired", "cause": expires}),
        ));
    }
    if !account.is_enabled() {
        return Err(ApiError::validation(
            "account",
            "disabled",
            json!({"message": "account disabled"}),
        ));
    }
    Ok(())
}

async fn system_config(
    state: &AppState,
    id: &str,
    pointer: &str,
) -> Result<Option<Value>, ApiError> {
    let db = DbName::system(DbName::SYSTEM_CONFIG);
    let doc = state
        .store
        .get_doc(&db, &DocId::parse(id).expect("static id"))
        .await?;
    Ok(doc.and_then(|d| d.pointer(pointer).cloned()))
}

/// `crossbar_util:response_auth` (§3.4); undefined values are omitted.
pub async fn response_auth(
    state: &AppState,
    account: &AccountId,
    owner: Option<&DocId>,
) -> Result<Map<String, Value>, ApiError> {
    let account_doc = store::account(&state.store, account)
        .await?
        .map(|a: Account| a.doc)
        .unwrap_or_default();
    let user_doc = match owner {
        Some(owner) => state.store.get_doc(&account.db(), owner).await?,
        None => None,
    };
    let language = user_doc
        .as_ref()
        .and_then(|u| u.get("language"))
        .or_else(|| account_doc.get("language"))
        .and_then(Value::as_str)
        .unwrap_or("en-US");
    let master = system_config(state, "accounts", "/default/master_account_id").await?;
    let cluster_id = system_config(state, "cluster", "/default/cluster_id").await?;
    let services = DbName::system("services");
    let reseller = match state
        .store
        .get_doc(&services, &DocId::from(account.clone()))
        .await
    {
        Ok(doc) => doc,
        Err(StoreError::NotFound) => None,
        Err(e) => return Err(e.into()),
    };
    let mut data = Map::new();
    data.insert("account_id".into(), json!(account.as_str()));
    if let Some(owner) = owner {
        data.insert("owner_id".into(), json!(owner.as_str()));
    }
    data.insert("apps".into(), json!([]));
    data.insert("language".into(), json!(language));
    if let Some(name) = account_doc.get("name") {
        data.insert("account_name".into(), name.clone());
    }
    if let Some(cluster_id) = cluster_id {
        data.insert("cluster_id".into(), cluster_id);
    }
    if let Some(reseller_id) = reseller.as_ref().and_then(|d| d.get("pvt_reseller_id")) {
        data.insert("reseller_id".into(), reseller_id.clone());
    }
    let is_reseller = reseller
        .as_ref()
        .and_then(|d| d.get("pvt_reseller"))
        .is_some_and(truthy);
    data.insert("is_reseller".into(), json!(is_reseller));
    data.insert(
        "is_master_account".into(),
        json!(master.as_ref().and_then(Value::as_str) == Some(account.as_str())),
    );
    data.insert(
        "capabilities".into(),
        json!({"voicemail": {"transcription": {"available": false, "default": false}}}),
    );
    data.insert("ui_config".into(), json!({}));
    Ok(data)
}

/// `GET /v2/token_auth` (auth-contract §4.5): the token's claims without private keys, `id: null`,
/// and the `response_auth` fields. `DELETE` revokes nothing, as in Kazoo: JWTs are stateless.
pub async fn token_info(
    state: &AppState,
    identity: &crate::auth::Identity,
    verb: &Method,
) -> Result<Outcome, ApiError> {
    if verb == Method::DELETE {
        return Ok(Outcome::Done(Success::ok(json!({}), Revision::None)));
    }
    let mut data = crate::domain::group::strip_private((*identity.claims).clone());
    data.insert("id".into(), Value::Null);
    let owner = identity.owner_id.as_deref().and_then(DocId::parse);
    data.extend(response_auth(state, &identity.account_id, owner.as_ref()).await?);
    Ok(Outcome::Done(Success::ok(
        Value::Object(data),
        Revision::None,
    )))
}
