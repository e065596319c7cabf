//! Configuration from the environment: typed, with defaults, and errors that name the variable.
use std::path::PathBuf;
use std::time::Duration;

use crate::envelope::DEFAULT_MAX_UPLOAD_BYTES;

/// Where the documents live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// `COUCHDB_URL`, credentials included.
    CouchDb { url: String },
    /// No `COUCHDB_URL`: the embedded store in `KZ_GROUPS_DATA` (default `./data`).
    Embedded { dir: PathBuf },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub backend: Backend,
    /// `KZ_GROUPS_LISTEN`; port 0 picks a free port.
    pub listen: String,
    /// `KZ_GROUPS_COUCH_TIMEOUT_MS`: every CouchDB call, connect included.
    pub couch_timeout: Duration,
    /// `KZ_GROUPS_PAGE_SIZE`: Crossbar's `pagination_page_size`.
    pub page_size: usize,
    /// `KZ_GROUPS_MAX_UPLOAD_BYTES`: Crossbar's `max_upload_size`.
    pub max_upload_bytes: usize,
    /// `KZ_GROUPS_NODE`: the name hashed into the envelope's `node`.
    pub node_name: String,
    /// `KZ_GROUPS_VERSION`: the `version` reported to authenticated clients.
    pub version: String,
    /// `KZ_GROUPS_KEY_CACHE_SECS`: how long a signing key read from `system_auth` is trusted
    /// before its document is checked for a reset (0: check on every request).
    pub key_cache: Duration,
    /// `KZ_GROUPS_BODY_TIMEOUT_MS`: the time a request body has to arrive in full.
    pub body_timeout: Duration,
    /// `KZ_GROUPS_REQUEST_MEMORY_MB`: what request bodies and their parsed JSON may hold at once.
    pub request_memory_bytes: usize,
    /// `KZ_GROUPS_MAX_CONNECTIONS`: simultaneous client connections (default: what the open-file
    /// limit leaves room for, see `startup::connection_limit`).
    pub max_connections: Option<usize>,
}

impl Config {
    pub fn from_env() -> Result<Self, String> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let backend = match lookup("COUCHDB_URL").filter(|s| !s.trim().is_empty()) {
            Some(url) => Backend::CouchDb { url },
            None => Backend::Embedded {
                dir: lookup("KZ_GROUPS_DATA")
                    .filter(|s| !s.trim().is_empty())
                    .unwrap_or_else(|| "./data".into())
                    .into(),
            },
        };
        let integer = |name: &str, default: u64, min: u64| -> Result<u64, String> {
            match lookup(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n >= min)
                    .ok_or_else(|| {
                        format!("{name} must be an integer of at least {min}, got {v:?}")
                    }),
            }
        };
        let number = |name: &str, default: u64| integer(name, default, 1);
        Ok(Self {
            backend,
            listen: lookup("KZ_GROUPS_LISTEN").unwrap_or_else(|| "127.0.0.1:8000".into()),
            couch_timeout: Duration::from_millis(number("KZ_GROUPS_COUCH_TIMEOUT_MS", 5000)?),
            page_size: number("KZ_GROUPS_PAGE_SIZE", 50)? as usize,
            max_upload_bytes: number(
                "KZ_GROUPS_MAX_UPLOAD_BYTES",
                DEFAULT_MAX_UPLOAD_BYTES as u64,
            )? as usize,
            node_name: lookup("KZ_GROUPS_NODE").unwrap_or_else(default_node_name),
            version: lookup("KZ_GROUPS_VERSION").unwrap_or_else(|| "4.3.0".into()),
            key_cache: Duration::from_secs(integer("KZ_GROUPS_KEY_CACHE_SECS", 10, 0)?),
            body_timeout: Duration::from_millis(number("KZ_GROUPS_BODY_TIMEOUT_MS", 15_000)?),
            request_memory_bytes: number("KZ_GROUPS_REQUEST_MEMORY_MB", 256)?
                .saturating_mul(1 << 20) as usize,
            max_connections: match lookup("KZ_GROUPS_MAX_CONNECTIONS") {
                None => None,
                Some(_) => Some(number("KZ_GROUPS_MAX_CONNECTIONS", 0)? as usize),
            },
        })
    }
}

fn default_node_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("kz_groups@{host}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn without_couchdb_url_the_embedded_store_is_used() {
        let c = config(&[]).unwrap();
        assert_eq!(
            c.backend,
            Backend::Embedded {
                dir: "./data".into()
            }
        );
        let c = config(&[("KZ_GROUPS_DATA", "/var/lib/kz")]).unwrap();
        assert_eq!(
            c.backend,
            Backend::Embedded {
                dir: "/var/lib/kz".into()
            }
        );
        let c = config(&[("COUCHDB_URL", "http://x:5984")]).unwrap();
        assert_eq!(
            c.backend,
            Backend::CouchDb {
                url: "http://x:5984".into()
            }
        );
    }

    #[test]
    fn defaults_apply() {
        let c = config(&[("COUCHDB_URL", "http://127.0.0.1:5984")]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8000");
        assert_eq!(c.page_size, 50);
        assert_eq!(c.max_upload_bytes, 8_000_000);
        assert_eq!(c.couch_timeout, Duration::from_secs(5));
    }

    #[test]
    fn errors_name_the_variable() {
        let e =
            config(&[("COUCHDB_URL", "http://x"), ("KZ_GROUPS_PAGE_SIZE", "zero")]).unwrap_err();
        assert!(e.contains("KZ_GROUPS_PAGE_SIZE"), "{e}");
        let e = config(&[
            ("COUCHDB_URL", "http://x"),
            ("KZ_GROUPS_COUCH_TIMEOUT_MS", "0"),
        ])
        .unwrap_err();
        assert!(e.contains("KZ_GROUPS_COUCH_TIMEOUT_MS"), "{e}");
    }
}
