//! The request being answered, as logs and headers see it: its id, carried by every log line
//! written while it is served (as text or JSON lines), the request line of the access log with
//! its secrets masked, and its header values.
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use actix_web::dev::ServiceRequest;
use actix_web::HttpRequest;
use futures::Stream;

use crate::config::LogFormat;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served by the current task, if any (for log lines).
pub fn request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

static LOG_FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Chooses the shape of [`log_line`]'s lines, once, before logging starts.
pub fn set_log_format(format: LogFormat) {
    let _ = LOG_FORMAT.set(format);
}

/// env_logger's line, with the request id when written while a request is served: text
/// (`[time LEVEL target] message request_id=…`) or, with `KZ_GROUPS_LOG_FORMAT=json`, one
/// JSON object (`time`, `level`, `target`, `message`, `request_id`).
pub fn log_line(
    buf: &mut env_logger::fmt::Formatter,
    record: &log::Record<'_>,
) -> std::io::Result<()> {
    use std::io::Write;
    if LOG_FORMAT.get() == Some(&LogFormat::Json) {
        let mut line = serde_json::Map::new();
        line.insert("time".into(), buf.timestamp().to_string().into());
        line.insert("level".into(), record.level().as_str().into());
        line.insert("target".into(), record.target().into());
        line.insert("message".into(), record.args().to_string().into());
        if let Some(id) = request_id() {
            line.insert("request_id".into(), id.into());
        }
        return writeln!(buf, "{}", serde_json::Value::Object(line));
    }
    write!(
        buf,
        "[{} {} {}] {}",
        buf.timestamp(),
        record.level(),
        record.target(),
        record.args()
    )?;
    match request_id() {
        Some(id) => writeln!(buf, " request_id={id}"),
        None => writeln!(buf),
    }
}

/// Query parameters whose values are credentials: masked in the access log. Crossbar takes a
/// token as `?auth_token=`; the others cover keys and passwords sent the same way.
const SECRET_PARAMS: &[&str] = &[
    "token",
    "api_key",
    "apikey",
    "credentials",
    "password",
    "secret",
];

/// The access log's request line (`METHOD /path?query HTTP/1.1`), with the value of every
/// query parameter whose name holds one of [`SECRET_PARAMS`] replaced by `REDACTED`.
pub fn logged_request_line(req: &ServiceRequest) -> String {
    let uri = req.uri();
    let query = uri.query().map(redact_query);
    format!(
        "{} {}{}{} {:?}",
        req.method(),
        uri.path(),
        if query.is_some() { "?" } else { "" },
        query.unwrap_or_default(),
        req.version()
    )
}

/// `a=1&auth_token=eyJ…` → `a=1&auth_token=REDACTED`, pair by pair, names as sent.
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| {
            let name = pair.split('=').next().unwrap_or_default();
            let decoded = percent_encoding::percent_decode_str(name)
                .decode_utf8_lossy()
                .to_ascii_lowercase();
            if SECRET_PARAMS.iter().any(|secret| decoded.contains(secret)) {
                format!("{name}=REDACTED")
            } else {
                pair.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Runs `work` as the serving of request `id`: every log line it writes names the request.
pub async fn serving<F: std::future::Future>(id: String, work: F) -> F::Output {
    REQUEST_ID.scope(id, work).await
}

/// A response body read after its request's future has ended (a streamed listing), still
/// serving that request.
pub struct Serving<S> {
    id: String,
    body: Pin<Box<S>>,
}

impl<S> Serving<S> {
    pub fn new(id: String, body: S) -> Self {
        Self {
            id,
            body: Box::pin(body),
        }
    }
}

impl<S: Stream> Stream for Serving<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let body = this.body.as_mut();
        REQUEST_ID.sync_scope(this.id.clone(), || body.poll_next(cx))
    }
}

/// A header's value, when it is text.
pub fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_the_query_are_masked_and_the_rest_kept() {
        assert_eq!(
            redact_query("paginate=false&auth_token=eyJhbGciOi.x.y&page_size=2"),
            "paginate=false&auth_token=REDACTED&page_size=2"
        );
        assert_eq!(
            redact_query("API_KEY=abc&credentials=0123&password=p&x_auth_token&Auth%5FToken=t"),
            "API_KEY=REDACTED&credentials=REDACTED&password=REDACTED&x_auth_token=REDACTED\
             &Auth%5FToken=REDACTED"
        );
        assert_eq!(redact_query("start_key=g1"), "start_key=g1");
    }
}
