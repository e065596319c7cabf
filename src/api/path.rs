//! Crossbar's path split (groups-contract §1): `/vN/` then resource nouns and their arguments.
//! Only the shapes of the Groups resource are served; segments are URL-decoded after the split,
//! so `%2F` stays inside its segment.
use percent_encoding::percent_decode_str;

use super::login::Login;

/// The group part of the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Collection,
    Entity(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupsPath {
    /// Raw (decoded, unparsed) account id segment.
    pub account: String,
    /// Raw user id segment of `users/{U}/groups`.
    pub user: Option<String>,
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v1/...`: 410.
    Gone,
    /// A path that is not a Crossbar API path at all.
    Unknown,
    /// `/vN/groups...` without an account (§7.3).
    NoAccount,
    /// `/vN/accounts/{A}/...` in a shape the groups resource refuses: 404 `not_found`.
    NotServed,
    Groups(GroupsPath),
    /// `/vN/api_auth` or `/vN/user_auth`.
    Login(Login),
    /// `/vN/token_auth`.
    TokenAuth,
}

impl GroupsPath {
    /// Methods allowed before verb tunnelling (§1 table).
    pub fn allowed_methods(&self) -> &'static [&'static str] {
        match self.target {
            Target::Collection => &["GET", "PUT"],
            Target::Entity(_) => &["GET", "POST", "PATCH", "DELETE"],
        }
    }
}

pub fn parse(path: &str) -> Route {
    let mut segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // A trailing slash is ignored.
    if segments.len() > 1 && segments.last() == Some(&"") {
        segments.pop();
    }
    let Some((version, rest)) = segments.split_first() else {
        return Route::Unknown;
    };
    let Some(n) = version.strip_prefix('v') else {
        return Route::Unknown;
    };
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Route::Unknown;
    }
    if n.parse::<u64>().ok() == Some(1) {
        return Route::Gone;
    }
    let decoded: Vec<String> = rest
        .iter()
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let words: Vec<&str> = decoded.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["groups", ..] => Route::NoAccount,
        ["api_auth"] => Route::Login(Login::ApiKey),
        ["user_auth"] => Route::Login(Login::User),
        ["token_auth"] => Route::TokenAuth,
        ["accounts", account, rest @ ..] => {
            let account = (*account).to_owned();
            let (user, groups) = match rest {
                ["users", user, groups @ ..] => (Some((*user).to_owned()), groups),
                other => (None, other),
            };
            let target = match groups {
                ["groups"] => Target::Collection,
                ["groups", id] => Target::Entity((*id).to_owned()),
                _ => return Route::NotServed,
            };
            Route::Groups(GroupsPath {
                account,
                user,
                target,
            })
        }
        _ => Route::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "4b31dd1d32ce6d249897c06332375d65";

    fn groups(account: &str, user: Option<&str>, target: Target) -> Route {
        Route::Groups(GroupsPath {
            account: account.into(),
            user: user.map(Into::into),
            target,
        })
    }

    #[test]
    fn collection_entity_and_user_shapes() {
        assert_eq!(
            parse(&format!("/v2/accounts/{A}/groups")),
            groups(A, None, Target::Collection)
        );
        assert_eq!(
            parse(&format!("/v2/accounts/{A}/groups/g1/")),
            groups(A, None, Target::Entity("g1".into()))
        );
        assert_eq!(
            parse(&format!("/v3/accounts/{A}/users/u1/groups")),
            groups(A, Some("u1"), Target::Collection)
        );
        assert_eq!(
            parse(&format!("/v2/accounts/{A}/users/u1/groups/g1")),
            groups(A, Some("u1"), Target::Entity("g1".into()))
        );
    }

    #[test]
    fn segments_are_decoded_after_the_split() {
        assert_eq!(
            parse(&format!("/v2/accounts/{A}/groups/_design%2Fgroups")),
            groups(A, None, Target::Entity("_design/groups".into()))
        );
        assert_eq!(
            parse("/v2/accounts/account%2F4b%2F31%2Fdd1d32ce6d249897c06332375d65/groups"),
            groups(
                "account/4b/31/dd1d32ce6d249897c06332375d65",
                None,
                Target::Collection
            )
        );
    }

    #[test]
    fn other_shapes() {
        assert_eq!(parse(&format!("/v1/accounts/{A}/groups")), Route::Gone);
        assert_eq!(
            parse(&format!("/v2/accounts/{A}/groups/g/extra")),
            Route::NotServed
        );
        assert_eq!(parse(&format!("/v2/accounts/{A}")), Route::NotServed);
        assert_eq!(
            parse(&format!("/v2/accounts/{A}/users/u1")),
            Route::NotServed
        );
        assert_eq!(parse("/v2/groups"), Route::NoAccount);
        assert_eq!(parse("/v2/api_auth"), Route::Login(Login::ApiKey));
        assert_eq!(parse("/v2/user_auth/"), Route::Login(Login::User));
        assert_eq!(parse("/v2/user_auth/tok"), Route::Unknown);
        assert_eq!(parse("/v2/devices"), Route::Unknown);
        assert_eq!(parse("/accounts"), Route::Unknown);
        assert_eq!(parse("/vx/accounts"), Route::Unknown);
        assert_eq!(
            parse("/v2/accounts//groups"),
            groups("", None, Target::Collection)
        );
    }
}
