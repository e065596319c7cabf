//! The request being answered, as logs and headers see it: its id, carried by every log line
//! written while it is served, and its header values.
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::HttpRequest;
use futures::Stream;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served by the current task, if any (for log lines).
pub fn request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// env_logger's line, ending with `request_id=…` when written while a request is served.
pub fn log_line(
    buf: &mut env_logger::fmt::Formatter,
    record: &log::Record<'_>,
) -> std::io::Result<()> {
    use std::io::Write;
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
