//! Configuration from the environment: typed, with defaults, and errors that name the variable.
use std::path::PathBuf;
use std::time::Duration;

use crate::domain::clock::Clock;
use crate::domain::line::CrossbarLine;
use crate::envelope::DEFAULT_MAX_UPLOAD_BYTES;
use crate::store::cached::CacheLimits;
use crate::store::couch::tls::CouchCa;

/// How log lines are written (`KZ_GROUPS_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `[time LEVEL target] message request_id=…` (the default).
    #[default]
    Text,
    /// One JSON object a line: `time`, `level`, `target`, `message`, `request_id`.
    Json,
}

impl LogFormat {
    /// `KZ_GROUPS_LOG_FORMAT`, read on its own: logging starts before the rest is checked.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        match lookup("KZ_GROUPS_LOG_FORMAT").as_deref().map(str::trim) {
            None | Some("") | Some("text") => Ok(Self::Text),
            Some("json") => Ok(Self::Json),
            Some(other) => Err(format!(
                "KZ_GROUPS_LOG_FORMAT must be \"text\" or \"json\", got {other:?}"
            )),
        }
    }
}

/// Libraries whose lines say nothing an operator can act on, kept out unless `RUST_LOG` names
/// them: lapin's connection loop is a `tracing` span at ERROR level (its enter and exit lines
/// carry no message), and lapin warns of "vanished promises" when a connection drops. kz-groups
/// says what happens to the broker connection in its own words (`bus`, `bus_listener`).
const QUIET_TARGETS: &[&str] = &["tracing::span", "lapin"];

/// The log filter: `RUST_LOG` (default `info`) with [`QUIET_TARGETS`] turned off where it does
/// not name them itself.
pub fn log_filter(rust_log: Option<&str>) -> String {
    let mut filter = rust_log
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("info")
        .to_owned();
    for target in QUIET_TARGETS {
        if !filter.contains(target) {
            filter.push_str(&format!(",{target}=off"));
        }
    }
    filter
}

/// Where the documents live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// `COUCHDB_URL` (or the file `COUCHDB_URL_FILE` names), credentials included.
    CouchDb { url: String },
    /// No `COUCHDB_URL`: the embedded store in `KZ_GROUPS_DATA` (default `./data`).
    Embedded { dir: PathBuf },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub backend: Backend,
    /// `KZ_GROUPS_COUCHDB_CA`: CA certificates trusted for an `https://` `COUCHDB_URL`, besides
    /// the system's roots; read and checked with the rest of the configuration.
    pub couch_ca: Option<CouchCa>,
    /// `KZ_GROUPS_LISTEN`, checked to be `host:port`; port 0 picks a free port.
    pub listen: String,
    /// `KZ_GROUPS_LOG_FORMAT`.
    pub log_format: LogFormat,
    /// `KZ_GROUPS_COUCH_TIMEOUT_MS`: every CouchDB call, connect included.
    pub couch_timeout: Duration,
    /// `KZ_GROUPS_PAGE_SIZE`: Crossbar's `pagination_page_size`.
    pub page_size: usize,
    /// `KZ_GROUPS_CROSSBAR`: which Crossbar line every request is answered as (`4.3`, the
    /// default, or `master`).
    pub crossbar: CrossbarLine,
    /// `KZ_GROUPS_HISTORY_DAYS` (90) and `KZ_GROUPS_HISTORY_MAX_PER_GROUP` (1000): how long
    /// group history entries are kept, and how many of each group.
    pub history: HistoryBounds,
    /// `KZ_GROUPS_MAX_UPLOAD_BYTES`: Crossbar's `max_upload_size`.
    pub max_upload_bytes: usize,
    /// `KZ_GROUPS_NODE`: the name hashed into the envelope's `node` and sent as the `Node` of
    /// every AMQP notice; never shaped like a Kazoo node's name (see `check_node_name`).
    pub node_name: String,
    /// `KZ_GROUPS_VERSION`: the `version` reported to authenticated clients.
    pub version: String,
    /// `KZ_GROUPS_KEY_CACHE_SECS`: how long a signing key read from `system_auth` is trusted
    /// before its document is checked for a reset (0: check on every request).
    pub key_cache: Duration,
    /// `KZ_GROUPS_TOKEN_CACHE_ENTRIES`: tokens whose signature verified, kept (0: off).
    pub token_cache_entries: usize,
    /// `KZ_GROUPS_VIEW_TIMEOUT_MS`: how long a view query (or a change feed) may wait between
    /// reads of its answer: an index being built is normal work, not an outage.
    pub view_timeout: Duration,
    /// The document and listing caches (`KZ_GROUPS_DOC_CACHE_*`, `KZ_GROUPS_LISTING_CACHE_*`,
    /// `KZ_GROUPS_CACHE_FEEDS`, `KZ_GROUPS_CACHE_TTL_MS`; see `store::cached`).
    pub caches: CacheLimits,
    /// `KZ_GROUPS_BODY_TIMEOUT_MS`: the time a request body has to arrive in full.
    pub body_timeout: Duration,
    /// `KZ_GROUPS_SHUTDOWN_GRACE_SECS`: how long a stop lets requests in flight finish (idle
    /// keep-alive connections are closed at once) before it closes their connections.
    pub shutdown_grace: Duration,
    /// `KZ_GROUPS_REQUEST_MEMORY_MB`: what request bodies and their parsed JSON may hold at once.
    pub request_memory_bytes: usize,
    /// `KZ_GROUPS_MAX_CONNECTIONS`: simultaneous client connections (default: what the open-file
    /// limit leaves room for, see `startup::connection_limit`).
    pub max_connections: Option<usize>,
    /// The AMQP bus; `None` (no `KZ_GROUPS_AMQP_URL`): nothing is published.
    pub amqp: Option<AmqpConfig>,
    /// Not from the environment: the monotonic clock the rate limiter refills by (the system's;
    /// tests put a manual one here).
    pub clock: Clock,
}

/// Where and how document-change notices are published (amqp-notices.md).
/// How long group history entries are kept, and how many of each group (issue 18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryBounds {
    /// `KZ_GROUPS_HISTORY_DAYS`.
    pub days: u64,
    /// `KZ_GROUPS_HISTORY_MAX_PER_GROUP`.
    pub max_per_group: usize,
}

impl Default for HistoryBounds {
    fn default() -> Self {
        Self {
            days: 90,
            max_per_group: 1000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpConfig {
    /// `KZ_GROUPS_AMQP_URL` (or the file `KZ_GROUPS_AMQP_URL_FILE` names), credentials
    /// included; never logged.
    pub url: String,
    /// `KZ_GROUPS_AMQP_QUEUE`: notices held while the broker has not confirmed them.
    pub queue_capacity: usize,
    /// `KZ_GROUPS_AMQP_FLUSH_SECS`: how long a stopping process keeps trying to deliver them.
    pub flush_timeout: Duration,
}

/// The default of `KZ_GROUPS_AMQP_QUEUE`: about 1 KB a notice, so at most ~10 MB held.
pub const DEFAULT_AMQP_QUEUE: u64 = 10_000;
/// The default of `KZ_GROUPS_AMQP_FLUSH_SECS`: under the 10 s a container gets after SIGTERM.
pub const DEFAULT_AMQP_FLUSH_SECS: u64 = 5;

impl Config {
    pub fn from_env() -> Result<Self, String> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let backend = match secret(&lookup, "COUCHDB_URL")? {
            Some(url) => Backend::CouchDb {
                url: check_couchdb_url(url.trim())?,
            },
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
            couch_ca: match lookup("KZ_GROUPS_COUCHDB_CA").filter(|s| !s.trim().is_empty()) {
                None => None,
                Some(path) => Some(CouchCa::load(std::path::Path::new(path.trim()))?),
            },
            listen: check_listen(
                lookup("KZ_GROUPS_LISTEN").unwrap_or_else(|| "127.0.0.1:8000".into()),
            )?,
            log_format: LogFormat::from_lookup(&lookup)?,
            couch_timeout: Duration::from_millis(number("KZ_GROUPS_COUCH_TIMEOUT_MS", 5000)?),
            page_size: number("KZ_GROUPS_PAGE_SIZE", 50)? as usize,
            crossbar: CrossbarLine::parse(&lookup("KZ_GROUPS_CROSSBAR").unwrap_or_default())?,
            history: HistoryBounds {
                days: number("KZ_GROUPS_HISTORY_DAYS", 90)?,
                max_per_group: number("KZ_GROUPS_HISTORY_MAX_PER_GROUP", 1000)? as usize,
            },
            max_upload_bytes: number(
                "KZ_GROUPS_MAX_UPLOAD_BYTES",
                DEFAULT_MAX_UPLOAD_BYTES as u64,
            )? as usize,
            node_name: check_node_name(lookup("KZ_GROUPS_NODE").unwrap_or_else(default_node_name))?,
            version: lookup("KZ_GROUPS_VERSION").unwrap_or_else(|| "4.3.0".into()),
            key_cache: Duration::from_secs(integer("KZ_GROUPS_KEY_CACHE_SECS", 0, 0)?),
            token_cache_entries: integer("KZ_GROUPS_TOKEN_CACHE_ENTRIES", 10_000, 0)? as usize,
            view_timeout: Duration::from_millis(number("KZ_GROUPS_VIEW_TIMEOUT_MS", 300_000)?),
            caches: CacheLimits {
                doc_entries: integer("KZ_GROUPS_DOC_CACHE_ENTRIES", 20_000, 0)? as usize,
                doc_bytes: megabytes(integer("KZ_GROUPS_DOC_CACHE_MB", 32, 0)?),
                auth_entries: integer("KZ_GROUPS_AUTH_CACHE_ENTRIES", 10_000, 0)? as usize,
                auth_bytes: megabytes(integer("KZ_GROUPS_AUTH_CACHE_MB", 16, 0)?),
                listing_entries: integer("KZ_GROUPS_LISTING_CACHE_ENTRIES", 1_000, 0)? as usize,
                listing_bytes: megabytes(integer("KZ_GROUPS_LISTING_CACHE_MB", 32, 0)?),
                feeds: integer("KZ_GROUPS_CACHE_FEEDS", 200, 0)? as usize,
                ttl: Duration::from_millis(integer("KZ_GROUPS_CACHE_TTL_MS", 1_000, 0)?),
            },
            body_timeout: Duration::from_millis(number("KZ_GROUPS_BODY_TIMEOUT_MS", 15_000)?),
            shutdown_grace: Duration::from_secs(integer("KZ_GROUPS_SHUTDOWN_GRACE_SECS", 30, 0)?),
            request_memory_bytes: number("KZ_GROUPS_REQUEST_MEMORY_MB", 256)?
                .saturating_mul(1 << 20) as usize,
            max_connections: match lookup("KZ_GROUPS_MAX_CONNECTIONS") {
                None => None,
                Some(_) => Some(number("KZ_GROUPS_MAX_CONNECTIONS", 0)? as usize),
            },
            amqp: match secret(&lookup, "KZ_GROUPS_AMQP_URL")? {
                None => None,
                Some(url) => Some(AmqpConfig {
                    url: check_amqp_url(url.trim())?,
                    queue_capacity: number("KZ_GROUPS_AMQP_QUEUE", DEFAULT_AMQP_QUEUE)? as usize,
                    flush_timeout: Duration::from_secs(integer(
                        "KZ_GROUPS_AMQP_FLUSH_SECS",
                        DEFAULT_AMQP_FLUSH_SECS,
                        0,
                    )?),
                }),
            },
            clock: Clock::System,
        })
    }
}

/// A secret's value: `NAME`, or the content of the file `NAME_FILE` names, as the official
/// container images read theirs (`file_env` in their `docker-entrypoint.sh`), so Docker secrets
/// and systemd credentials can hold it instead of the environment. The file's trailing line ends
/// are dropped, as the images' `$(< file)` drops them (`\r\n` too). Both forms set is an error,
/// so neither silently wins; so is a file that cannot be read, or an empty one: an empty
/// `COUCHDB_URL` would mean the embedded store. An empty variable counts as unset, as there.
pub fn secret(
    lookup: impl Fn(&str) -> Option<String>,
    name: &str,
) -> Result<Option<String>, String> {
    let file_var = format!("{name}_FILE");
    let set = |var: &str| lookup(var).filter(|v| !v.trim().is_empty());
    match (set(name), set(&file_var)) {
        (Some(_), Some(_)) => Err(format!("set {name} or {file_var}, not both")),
        (value, None) => Ok(value),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("{file_var}={path:?}: cannot read the file: {e}"))?;
            let mut value = text.as_str();
            while let Some(line) = value.strip_suffix('\n') {
                value = line.strip_suffix('\r').unwrap_or(line);
            }
            if value.trim().is_empty() {
                return Err(format!("{file_var}={path:?}: the file is empty"));
            }
            Ok(Some(value.to_owned()))
        }
    }
}

/// A Kazoo node skips the cache flush of a notice whose `Node` is its own name (amqp-notices
/// §5.1), so ours must never be one. Every Kazoo node is an Erlang node, named `<name>@<host>`
/// with a plain Erlang atom as `<name>` (`kazoo_apps`, `ecallmgr`, `whistle_apps`, or whatever
/// `-name` an operator chose, always such an atom). A name of that shape is refused; a `-` in
/// the part before `@` (which a plain atom cannot hold) or no `@` at all makes it safe.
pub fn check_node_name(name: String) -> Result<String, String> {
    let name = name.trim().to_owned();
    let erlang_shaped = match name.split_once('@') {
        Some((local, host)) => {
            !host.is_empty()
                && local.starts_with(|c: char| c.is_ascii_lowercase())
                && local.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    };
    if name.is_empty() {
        return Err("KZ_GROUPS_NODE must not be empty".into());
    }
    if erlang_shaped {
        return Err(format!(
            "KZ_GROUPS_NODE={name:?} is shaped like a Kazoo (Erlang) node name, so the Kazoo node of \
             that name would ignore kz-groups' change notices; use a name with a '-' before the '@', \
             e.g. \"kz-groups@{}\"",
            name.split_once('@').map_or("<host>", |(_, h)| h)
        ));
    }
    Ok(name)
}

/// `host:port` (an IP address or a host name, and a port number), so a typo fails here, before
/// anything is created, rather than at the bind.
fn check_listen(listen: String) -> Result<String, String> {
    let listen = listen.trim().to_owned();
    if listen.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(listen);
    }
    let shaped = listen.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains(['/', ' ', '@']) && port.parse::<u16>().is_ok()
    });
    if !shaped {
        return Err(format!(
            "KZ_GROUPS_LISTEN={listen:?} is not an address and port, e.g. 127.0.0.1:8000 or 0.0.0.0:8000"
        ));
    }
    Ok(listen)
}

/// An `http://` or `https://` URL, credentials included; never echoed back with them.
fn check_couchdb_url(url: &str) -> Result<String, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        format!("COUCHDB_URL is not a URL ({e}), e.g. http://admin:secret@127.0.0.1:5984")
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "COUCHDB_URL must be an http:// or https:// URL, not {}://",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("COUCHDB_URL has no host".into());
    }
    Ok(url.to_owned())
}

/// Only plain `amqp://` is built in (no TLS): Kazoo's zone brokers are reached in the clear.
fn check_amqp_url(url: &str) -> Result<String, String> {
    let parsed: lapin::uri::AMQPUri = url
        .parse()
        .map_err(|e| format!("KZ_GROUPS_AMQP_URL is not an AMQP URI: {e}"))?;
    if parsed.scheme != lapin::uri::AMQPScheme::AMQP {
        return Err("KZ_GROUPS_AMQP_URL must be an amqp:// URI (amqps:// is not supported)".into());
    }
    Ok(url.to_owned())
}

fn megabytes(n: u64) -> usize {
    n.saturating_mul(1 << 20) as usize
}

fn default_node_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("kz-groups@{host}")
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
    fn library_noise_is_off_unless_rust_log_names_it() {
        assert_eq!(log_filter(None), "info,tracing::span=off,lapin=off");
        assert_eq!(log_filter(Some(" ")), "info,tracing::span=off,lapin=off");
        assert_eq!(
            log_filter(Some("debug")),
            "debug,tracing::span=off,lapin=off"
        );
        assert_eq!(
            log_filter(Some("info,lapin=debug")),
            "info,lapin=debug,tracing::span=off"
        );
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
    fn the_crossbar_line_is_4_3_or_master() {
        let c = config(&[
            ("COUCHDB_URL", "http://x"),
            ("KZ_GROUPS_CROSSBAR", "master"),
        ])
        .unwrap();
        assert_eq!(c.crossbar, CrossbarLine::Master);
        let e = config(&[("COUCHDB_URL", "http://x"), ("KZ_GROUPS_CROSSBAR", "4.4")]).unwrap_err();
        assert!(e.contains("KZ_GROUPS_CROSSBAR"), "{e}");
    }

    #[test]
    fn defaults_apply() {
        let c = config(&[("COUCHDB_URL", "http://127.0.0.1:5984")]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8000");
        assert_eq!(c.page_size, 50);
        assert_eq!(c.crossbar, CrossbarLine::V4_3);
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
        let e = config(&[
            ("COUCHDB_URL", "https://x"),
            ("KZ_GROUPS_COUCHDB_CA", "/nonexistent/ca.pem"),
        ])
        .unwrap_err();
        assert!(e.contains("KZ_GROUPS_COUCHDB_CA"), "{e}");
    }

    #[test]
    fn listen_addresses_and_couchdb_urls_are_checked_before_use() {
        for good in [
            "127.0.0.1:8000",
            "0.0.0.0:0",
            "[::1]:8000",
            "localhost:8000",
        ] {
            assert_eq!(config(&[("KZ_GROUPS_LISTEN", good)]).unwrap().listen, good);
        }
        for bad in [
            "garbage",
            "127.0.0.1",
            ":8000",
            "127.0.0.1:99999",
            "http://h:1",
        ] {
            let e = config(&[("KZ_GROUPS_LISTEN", bad)]).unwrap_err();
            assert!(e.contains("KZ_GROUPS_LISTEN"), "{bad}: {e}");
        }
        for bad in ["garbage", "ftp://h:5984", "http://"] {
            let e = config(&[("COUCHDB_URL", bad)]).unwrap_err();
            assert!(e.contains("COUCHDB_URL"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_log_format_is_text_or_json() {
        assert_eq!(config(&[]).unwrap().log_format, LogFormat::Text);
        let json = config(&[("KZ_GROUPS_LOG_FORMAT", "json")]).unwrap();
        assert_eq!(json.log_format, LogFormat::Json);
        let e = config(&[("KZ_GROUPS_LOG_FORMAT", "xml")]).unwrap_err();
        assert!(e.contains("KZ_GROUPS_LOG_FORMAT"), "{e}");
    }

    #[test]
    fn kazoo_shaped_node_names_are_refused_naming_the_variable() {
        for name in [
            "kazoo_apps@kz1.example.com",
            "ecallmgr@kz1",
            "whistle_apps@h",
            "kz_groups@host",
            "custom1@10.0.0.1",
            "",
        ] {
            let e = config(&[("KZ_GROUPS_NODE", name)]).unwrap_err();
            assert!(e.contains("KZ_GROUPS_NODE"), "{name}: {e}");
        }
        for name in [
            "kz-groups@host",
            "kazoo-groups-rs@kz1",
            "kzgroups",
            "Kz@host",
        ] {
            assert_eq!(config(&[("KZ_GROUPS_NODE", name)]).unwrap().node_name, name);
        }
    }

    #[test]
    fn the_default_node_name_passes_its_own_rule() {
        let node = config(&[]).unwrap().node_name;
        assert!(node.starts_with("kz-groups@"), "{node}");
        assert!(check_node_name(node).is_ok());
    }

    #[test]
    fn the_bus_is_off_without_a_url_and_has_documented_defaults() {
        assert_eq!(config(&[]).unwrap().amqp, None);
        let c = config(&[(
            "KZ_GROUPS_AMQP_URL",
            "amqp://guest:guest@127.0.0.1:5672/%2f",
        )])
        .unwrap();
        assert_eq!(
            c.amqp,
            Some(AmqpConfig {
                url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
                queue_capacity: 10_000,
                flush_timeout: Duration::from_secs(5),
            })
        );
        for (var, value) in [
            ("KZ_GROUPS_AMQP_URL", "http://x"),
            ("KZ_GROUPS_AMQP_URL", "amqps://h/%2f"),
            ("KZ_GROUPS_AMQP_QUEUE", "0"),
        ] {
            let mut vars = vec![("KZ_GROUPS_AMQP_URL", "amqp://h/%2f")];
            vars.retain(|(k, _)| *k != var);
            vars.push((var, value));
            let e = config(&vars).unwrap_err();
            assert!(e.contains(var), "{var}={value}: {e}");
        }
    }

    /// A secret file of this test's own, holding `content`.
    fn secret_file(dir: &tempfile::TempDir, name: &str, content: &str) -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.to_str().unwrap().to_owned()
    }

    #[test]
    fn a_secret_comes_from_its_variable_or_from_the_file_its_file_form_names() {
        let dir = tempfile::tempdir().unwrap();
        let couch = secret_file(&dir, "couchdb_url", "http://admin:s3cret@couch:5984\n");
        let amqp = secret_file(&dir, "amqp_url", "amqp://kazoo:pw@rabbit:5672/%2f\r\n");
        let c = config(&[
            ("COUCHDB_URL_FILE", &couch),
            ("KZ_GROUPS_AMQP_URL_FILE", &amqp),
        ])
        .unwrap();
        assert_eq!(
            c.backend,
            Backend::CouchDb {
                url: "http://admin:s3cret@couch:5984".into()
            }
        );
        assert_eq!(c.amqp.unwrap().url, "amqp://kazoo:pw@rabbit:5672/%2f");
        let c = config(&[("COUCHDB_URL", "http://x:5984"), ("COUCHDB_URL_FILE", "")]).unwrap();
        assert_eq!(
            c.backend,
            Backend::CouchDb {
                url: "http://x:5984".into()
            },
            "an empty variable counts as unset, as in the images' file_env"
        );
    }

    #[test]
    fn a_secret_files_trailing_line_ends_are_dropped_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        for (content, value) in [
            ("Secret1", "Secret1"),
            ("Secret1\n", "Secret1"),
            ("Secret1\r\n", "Secret1"),
            ("Secret1\n\n", "Secret1"),
            (" Secret1 \n", " Secret1 "),
            ("two\nlines\n", "two\nlines"),
        ] {
            let path = secret_file(&dir, "password", content);
            let lookup =
                |name: &str| (name == "KZ_GROUPS_USER_PASSWORD_FILE").then(|| path.clone());
            assert_eq!(
                secret(lookup, "KZ_GROUPS_USER_PASSWORD")
                    .unwrap()
                    .as_deref(),
                Some(value),
                "{content:?}"
            );
        }
        assert_eq!(secret(|_| None, "KZ_GROUPS_USER_PASSWORD").unwrap(), None);
    }

    #[test]
    fn setting_a_secret_in_both_forms_is_an_error_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let file = secret_file(&dir, "secret", "amqp://h/%2f");
        for name in [
            "COUCHDB_URL",
            "KZ_GROUPS_AMQP_URL",
            "KZ_GROUPS_USER_PASSWORD",
        ] {
            let file_var = format!("{name}_FILE");
            let lookup = |var: &str| {
                if var == name {
                    Some("amqp://h/%2f".to_owned())
                } else {
                    (var == file_var).then(|| file.clone())
                }
            };
            assert_eq!(
                secret(lookup, name).unwrap_err(),
                format!("set {name} or {name}_FILE, not both")
            );
        }
        let e = config(&[
            ("COUCHDB_URL", "http://x:5984"),
            ("COUCHDB_URL_FILE", &file),
        ])
        .unwrap_err();
        assert_eq!(e, "set COUCHDB_URL or COUCHDB_URL_FILE, not both");
    }

    #[test]
    fn a_missing_or_empty_secret_file_is_an_error_naming_the_variable_and_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nowhere").to_str().unwrap().to_owned();
        let empty = secret_file(&dir, "empty", "\n");
        for (var, path) in [
            ("COUCHDB_URL_FILE", &missing),
            ("KZ_GROUPS_AMQP_URL_FILE", &missing),
            ("COUCHDB_URL_FILE", &empty),
        ] {
            let e = config(&[(var, path)]).unwrap_err();
            assert!(e.starts_with(&format!("{var}={path:?}: ")), "{e}");
        }
        let e = config(&[("COUCHDB_URL_FILE", &empty)]).unwrap_err();
        assert!(e.ends_with("the file is empty"), "{e}");
    }
}
