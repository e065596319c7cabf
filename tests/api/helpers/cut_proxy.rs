//! A TCP path to a CouchDB that a test can make cut a view's answer in the middle of its rows:
//! what the service sees when CouchDB stops while it is reading a listing (the connection
//! closes after part of the rows arrived).
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What starts the rows of a view answer.
const ROWS: &[u8] = b"\"rows\":[";
/// No cut armed.
const OFF: usize = usize::MAX;

pub struct CutProxy {
    pub port: u16,
    /// Bytes of rows let through before a view answer is cut; [`OFF`] when disarmed.
    cut_after: Arc<AtomicUsize>,
    /// View answers cut so far.
    cuts: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// Relays 127.0.0.1:`port` to `upstream` (`host:port`), cutting nothing until armed.
    pub async fn start(upstream: String) -> CutProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut_after = Arc::new(AtomicUsize::new(OFF));
        let cuts = Arc::new(AtomicUsize::new(0));
        let (armed, counted) = (cut_after.clone(), cuts.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, armed.clone(), counted.clone()));
            }
        });
        CutProxy {
            port,
            cut_after,
            cuts,
            accept,
        }
    }

    /// From now on, every view answer is cut `bytes` bytes into its rows.
    pub fn cut_rows_after(&self, bytes: usize) {
        self.cut_after.store(bytes, Ordering::SeqCst);
    }

    pub fn disarm(&self) {
        self.cut_after.store(OFF, Ordering::SeqCst);
    }

    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Client to server as is; server to client watched for the start of a view's rows, and closed
/// (both ways) `cut_after` bytes into them when armed.
async fn relay(
    client: TcpStream,
    server: TcpStream,
    cut_after: Arc<AtomicUsize>,
    cuts: Arc<AtomicUsize>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let mut buf = vec![0u8; 16 * 1024];
    // The tail of what came before, so a marker split across reads is still found.
    let mut tail: Vec<u8> = Vec::new();
    // Bytes of rows still allowed through, once a view answer's rows started while armed.
    let mut left: Option<usize> = None;
    let mut cut = false;
    loop {
        let n = match server_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        if left.is_none() {
            let limit = cut_after.load(Ordering::SeqCst);
            if limit != OFF {
                let mut seen = std::mem::take(&mut tail);
                let before = seen.len();
                seen.extend_from_slice(chunk);
                if let Some(at) = seen.windows(ROWS.len()).position(|w| w == ROWS) {
                    // Where the rows start in this chunk, and how much of it may pass.
                    let start = (at + ROWS.len()).saturating_sub(before);
                    let pass = (start + limit).min(n);
                    let _ = client_write.write_all(&chunk[..pass]).await;
                    if pass < n {
                        cut = true;
                        break;
                    }
                    left = Some(start + limit - pass);
                    continue;
                }
                tail = seen[seen.len().saturating_sub(ROWS.len())..].to_vec();
            }
        }
        match left {
            Some(rest) if n >= rest => {
                let _ = client_write.write_all(&chunk[..rest]).await;
                cut = true;
                break;
            }
            Some(rest) => left = Some(rest - n),
            None => {}
        }
        if client_write.write_all(chunk).await.is_err() {
            break;
        }
    }
    if cut {
        cuts.fetch_add(1, Ordering::SeqCst);
    }
    upstream.abort();
}
