//! Stages 4 and 6 of groups-contract §0 for a URL that names an account: the account must exist
//! (404 before any 401), then the authenticated caller must be allowed to act on it (§5.1) and
//! its token restrictions must allow the request (§5.2).
use actix_web::http::Method;

use super::caller::{Authenticated, Caller};
use super::reply::Reply;
use super::{staged, AppState, Stop};
use crate::auth::restrictions::RestrictedRequest;
use crate::auth::Identity;
use crate::domain::account::Account;
use crate::domain::ids::{AccountId, AccountIdError};
use crate::envelope::RequestEnvelope;
use crate::error::{ApiError, StoreContext};
use crate::store;

/// A request past stage 4: the account its URL names, loaded.
pub struct AccountScope {
    caller: Caller,
    account: Account,
}

/// A request past stages 5 and 6: who calls, on which account, allowed.
pub struct Authorised {
    pub reply: Reply,
    pub env: RequestEnvelope,
    pub method: Method,
    pub verb: Method,
    pub identity: Identity,
    pub account: Account,
}

impl Caller {
    /// Stage 4: the URL's account id must be well formed and the account must exist.
    pub async fn account_scope(self, state: &AppState, raw: &str) -> Result<AccountScope, Stop> {
        let id = AccountId::parse(raw).map_err(|e| match e {
            AccountIdError::Missing => ApiError::MalformedAccountId("missing account_id".into()),
            AccountIdError::Malformed(raw) => {
                ApiError::MalformedAccountId(format!("invalid account_id '{raw}'"))
            }
            AccountIdError::NoSuchAccount(raw) => ApiError::BadIdentifier(raw),
        });
        let (reply, id) = staged(self.reply, id)?;
        let caller = Caller { reply, ..self };
        // The token check has just read the caller's own account; an account acting on itself
        // (the common case) is not read twice.
        let known = caller
            .identity()
            .and_then(|identity| identity.account.as_ref())
            .filter(|account| account.id == id)
            .cloned();
        let account = match known {
            Some(account) => Ok(account),
            None => match store::account(&state.store, &id).await {
                Ok(Some(account)) => Ok(account),
                Ok(None) => Err(ApiError::BadIdentifier(id.to_string())),
                // Crossbar's account check answers any datastore failure this way (§3.5).
                Err(e) => Err(ApiError::from_store(e, StoreContext::Hook)),
            },
        };
        let (reply, account) = staged(caller.reply, account)?;
        Ok(AccountScope {
            caller: Caller { reply, ..caller },
            account,
        })
    }
}

impl AccountScope {
    /// Stages 5 and 6: a valid credential, then access to the account (same account, an
    /// ancestor, or a superduper admin) and no token restriction against `endpoint`/`args`.
    pub async fn authorise(
        self,
        state: &AppState,
        endpoint: &'static str,
        args: &[&str],
    ) -> Result<Authorised, Stop> {
        let AccountScope { caller, account } = self;
        let Authenticated {
            reply,
            env,
            method,
            verb,
            identity,
        } = caller.authenticate(state, Some(&account.id))?;
        if !identity.may_access(&account) {
            return Err(Stop::new(reply, ApiError::Forbidden));
        }
        let request = RestrictedRequest {
            endpoint,
            args,
            verb: verb.as_str(),
            account: account.id.as_str(),
            relation: identity.relation(&account),
        };
        let allowed = state
            .auth
            .restrictions_allow(&identity, &request)
            .await
            .map_err(ApiError::from)
            .and_then(|ok| ok.then_some(()).ok_or(ApiError::Restricted));
        let (reply, ()) = staged(reply, allowed)?;
        Ok(Authorised {
            reply,
            env,
            method,
            verb,
            identity,
            account,
        })
    }
}
