//! Token restrictions (auth-contract §5.2): optional rules, read at request time, that can deny a
//! request authorisation would otherwise allow. Nothing is configured by default.
use serde_json::Value;

/// The request as the rules see it.
pub struct RestrictedRequest<'a> {
    /// The last resource noun of the URL (`groups`).
    pub endpoint: &'a str,
    /// That noun's path arguments (`[]` for the collection, `[G]` for one group).
    pub args: &'a [&'a str],
    /// The effective verb, after tunnelling.
    pub verb: &'a str,
    /// The target account of the URL.
    pub account: &'a str,
    /// How the caller relates to it: the caller's own account, an ancestor of it, or neither.
    pub relation: Relation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    Own,
    Ancestor,
    Other,
}

pub const CATCH_ALL: &str = "_";

fn pick<'a>(obj: &'a Value, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| obj.get(CATCH_ALL))
}

/// Whether the restrictions for one priv level (`{<endpoint>: [{allowed_accounts?, rules}]}`)
/// allow the request: endpoint, account, arguments and verb must all match.
pub fn allows(by_endpoint: &Value, req: &RestrictedRequest<'_>) -> bool {
    let Some(entries) = pick(by_endpoint, req.endpoint).and_then(Value::as_array) else {
        return false;
    };
    let accounts: Vec<&str> = match req.relation {
        Relation::Own => vec![CATCH_ALL, req.account, "{AUTH_ACCOUNT_ID}"],
        Relation::Ancestor => vec![CATCH_ALL, req.account, "{DESCENDANT_ACCOUNT_ID}"],
        Relation::Other => vec![CATCH_ALL, req.account],
    };
    let entry = entries
        .iter()
        .find(|entry| match entry.get("allowed_accounts") {
            None | Some(Value::Null) => true,
            Some(Value::Array(allowed)) => {
                allowed.len() == 1 && allowed[0] == CATCH_ALL
                    || allowed
                        .iter()
                        .any(|a| a.as_str().is_some_and(|a| accounts.contains(&a)))
            }
            Some(_) => false,
        });
    let Some(rules) = entry
        .and_then(|e| e.get("rules"))
        .and_then(Value::as_object)
    else {
        return false;
    };
    let Some(verbs) = rules.iter().find_map(|(pattern, verbs)| {
        let parts: Vec<&str> = pattern.split('/').collect();
        let parts = trim_trailing_empty(&parts);
        matches(parts, req.args).then_some(verbs)
    }) else {
        return false;
    };
    verbs.as_array().is_some_and(|verbs| {
        verbs
            .iter()
            .any(|v| v.as_str().is_some_and(|v| v == CATCH_ALL || v == req.verb))
    })
}

fn trim_trailing_empty<'a, 'b>(parts: &'b [&'a str]) -> &'b [&'a str] {
    let mut end = parts.len();
    while end > 0 && parts[end - 1].is_empty() {
        end -= 1;
    }
    &parts[..end]
}

/// Routing-key matching as Kazoo's bindings do it: `*` is exactly one argument, `#` any number.
fn matches(pattern: &[&str], args: &[&str]) -> bool {
    match (pattern.split_first(), args.split_first()) {
        (None, None) => true,
        (Some((&"#", rest)), _) => {
            matches(rest, args)
                || args
                    .split_first()
                    .is_some_and(|(_, tail)| matches(pattern, tail))
        }
        (Some((&"*", rest)), Some((_, tail))) => matches(rest, tail),
        (Some((p, rest)), Some((a, tail))) => p == a && matches(rest, tail),
        _ => false,
    }
}

/// Picks `restrictions.<method>`, else `restrictions._`, from the `token_restrictions` doc.
pub fn for_method<'a>(restrictions: &'a Value, method: &str) -> Option<&'a Value> {
    pick(restrictions, method)
}

/// Picks `<priv_level>`, else `_`.
pub fn for_priv_level<'a>(by_level: &'a Value, level: &str) -> Option<&'a Value> {
    pick(by_level, level)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req<'a>(args: &'a [&'a str], verb: &'a str, relation: Relation) -> RestrictedRequest<'a> {
        RestrictedRequest {
            endpoint: "groups",
            args,
            verb,
            account: "a",
            relation,
        }
    }

    #[test]
    fn contract_case_35_get_one_group_only() {
        let r = json!({"groups": [{"rules": {"*": ["GET"]}}]});
        assert!(allows(&r, &req(&["g"], "GET", Relation::Own)));
        assert!(!allows(&r, &req(&[], "PUT", Relation::Own)));
        assert!(!allows(&r, &req(&["g"], "DELETE", Relation::Own)));
    }

    #[test]
    fn wildcards_and_catch_alls() {
        assert!(matches(&[], &[]));
        assert!(matches(&["#"], &[]));
        assert!(matches(&["#"], &["a", "b"]));
        assert!(!matches(&["*"], &[]));
        assert!(matches(&["x"], &["x"]));
        assert!(!matches(&["x"], &["y"]));
        let r = json!({"_": [{"rules": {"/": ["_"]}}]});
        assert!(allows(&r, &req(&[], "PUT", Relation::Own)));
        assert!(!allows(&r, &req(&["g"], "PUT", Relation::Own)));
    }

    #[test]
    fn allowed_accounts_select_the_entry() {
        let r = json!({"groups": [
            {"allowed_accounts": ["{DESCENDANT_ACCOUNT_ID}"], "rules": {"#": ["GET"]}},
            {"allowed_accounts": ["{AUTH_ACCOUNT_ID}"], "rules": {"#": ["_"]}}
        ]});
        assert!(allows(&r, &req(&[], "PUT", Relation::Own)));
        assert!(!allows(&r, &req(&[], "PUT", Relation::Ancestor)));
        assert!(allows(&r, &req(&[], "GET", Relation::Ancestor)));
        assert!(!allows(&r, &req(&[], "GET", Relation::Other)));
    }

    #[test]
    fn a_missing_endpoint_denies() {
        assert!(!allows(
            &json!({"users": []}),
            &req(&[], "GET", Relation::Own)
        ));
    }
}
