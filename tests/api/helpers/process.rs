//! The real binary as a child process, against a test's backend: for what only a separate
//! process shows (its memory, its sockets and file limits, how it treats raw connections).
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kz_groups::config::Backend;

pub struct ServerProcess {
    child: Child,
    pub port: u16,
    /// Everything the process logged so far (the last [`LOG_KEPT`] bytes).
    log: Arc<Mutex<String>>,
}

/// How much of a server's log a test can read back.
const LOG_KEPT: usize = 1 << 20;

impl ServerProcess {
    /// Starts `kz-groups serve` on a port of its own choosing (`127.0.0.1:0`), read back from its
    /// startup log line, with `env` on top of the backend's variables.
    pub fn start(backend: &Backend, env: &[(&str, &str)]) -> Self {
        Self::start_with(backend, env, |_| {})
    }

    /// Like [`start`](Self::start), letting the caller adjust the command (e.g. its limits).
    pub fn start_with(
        backend: &Backend,
        env: &[(&str, &str)],
        adjust: impl FnOnce(&mut Command),
    ) -> Self {
        Self::start_program(env!("CARGO_BIN_EXE_kz-groups"), backend, env, adjust)
    }

    /// Like [`start_with`](Self::start_with), with another build of the binary (a release
    /// build, for figures).
    pub fn start_program(
        program: &str,
        backend: &Backend,
        env: &[(&str, &str)],
        adjust: impl FnOnce(&mut Command),
    ) -> Self {
        let mut cmd = Command::new(program);
        cmd.arg("serve")
            .env_remove("COUCHDB_URL")
            .env_remove("KZ_GROUPS_COUCHDB_CA")
            .env("KZ_GROUPS_LISTEN", "127.0.0.1:0")
            .env("KZ_GROUPS_NODE", "kz-groups@test")
            .env("KZ_GROUPS_CROSSBAR", "master")
            .env("RUST_LOG", "warn,kz_groups::startup=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        match backend {
            Backend::CouchDb { url } => cmd.env("COUCHDB_URL", url),
            Backend::Embedded { dir } => cmd.env("KZ_GROUPS_DATA", dir),
        };
        cmd.envs(env.iter().copied());
        adjust(&mut cmd);
        let mut child = cmd.spawn().expect("kz-groups starts");
        let mut log = BufReader::new(child.stderr.take().unwrap());
        let mut port = None;
        let mut seen = String::new();
        let mut line = String::new();
        while port.is_none() && log.read_line(&mut line).unwrap_or(0) > 0 {
            port = line
                .split("listening on 127.0.0.1:")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|p| p.parse().ok());
            seen.push_str(&line);
            line.clear();
        }
        let Some(port) = port else {
            let _ = child.kill();
            panic!("kz-groups did not start:\n{seen}");
        };
        // The log keeps flowing; nobody must block the child on a full pipe.
        let kept = Arc::new(Mutex::new(seen));
        let sink = kept.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while log.read_line(&mut line).unwrap_or(0) > 0 {
                let mut kept = sink.lock().unwrap();
                kept.push_str(&line);
                if kept.len() > LOG_KEPT {
                    let cut = kept.len() - LOG_KEPT / 2;
                    let cut = (cut..kept.len())
                        .find(|i| kept.is_char_boundary(*i))
                        .unwrap_or(kept.len());
                    kept.drain(..cut);
                }
                line.clear();
            }
        });
        Self {
            child,
            port,
            log: kept,
        }
    }

    /// What the process has logged so far (its standard error), waiting `settle` first for
    /// lines still on their way.
    pub fn log(&self, settle: Duration) -> String {
        std::thread::sleep(settle);
        self.log.lock().unwrap().clone()
    }

    /// SIGKILL, as a crash or an impatient operator would; waits until the process is gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as systemd, Docker or an operator's `kill` sends it; waits for the process to
    /// exit, `limit` at most, and gives its status and how long it took (`None`: still running
    /// at `limit`).
    pub fn terminate(&mut self, limit: Duration) -> Option<(std::process::ExitStatus, Duration)> {
        let started = Instant::now();
        // SAFETY: kill(2) on the pid of a child this helper owns and has not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some((status, started.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
            .and_then(|kb| kb.parse().ok())
            .unwrap_or_else(|| panic!("{field} not in /proc/PID/status"))
    }

    /// Resident memory now, in bytes.
    pub fn rss(&self) -> u64 {
        self.status_kb("VmRSS") * 1024
    }

    /// The resident peak since the last [`reset_peak`](Self::reset_peak), in bytes.
    pub fn peak(&self) -> u64 {
        self.status_kb("VmHWM") * 1024
    }

    pub fn reset_peak(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5")
            .expect("resetting the peak through /proc/PID/clear_refs");
    }

    /// The client connections the process holds open: its TCP sockets on its own listening
    /// port, not the listener itself. Its connections to CouchDB and the broker (change feeds,
    /// pooled connections, which a real CouchDB with `_db_updates` holds more of than
    /// pouchdb-server) are not counted.
    pub fn open_client_connections(&self) -> usize {
        const LISTEN: &str = "0A";
        let port = format!("{:04X}", self.port);
        let clients: std::collections::HashSet<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .flat_map(|table| {
                std::fs::read_to_string(table)
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let local_port = fields.get(1)?.rsplit(':').next()?;
                (local_port == port && *fields.get(3)? != LISTEN)
                    .then(|| fields.get(9).map(|inode| inode.to_string()))
                    .flatten()
            })
            .collect();
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .filter_map(|target| {
                let target = target.to_string_lossy().into_owned();
                let inode = target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned();
                Some(inode)
            })
            .filter(|inode| clients.contains(inode))
            .count()
    }

    /// The process's own `Max open files` (soft, hard).
    pub fn file_limits(&self) -> (String, String) {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid())).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        let mut parts = line["Max open files".len()..].split_whitespace();
        (
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().to_owned(),
        )
    }

    /// Waits until the resident memory is at most `bytes` (the allocator gives memory back a
    /// moment after a request), or `limit` passes; returns the last reading.
    pub fn rss_settles_below(&self, bytes: u64, limit: Duration) -> u64 {
        let deadline = Instant::now() + limit;
        loop {
            let rss = self.rss();
            if rss <= bytes || Instant::now() > deadline {
                return rss;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends raw bytes on a new connection and reads the answer until the server closes the
    /// connection or `limit` passes. Returns what was read and whether the server closed it.
    pub fn raw(&self, request: &[u8], limit: Duration) -> (String, bool) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.write_all(request).unwrap();
        read_until_closed(&mut stream, limit)
    }

    pub fn connect(&self) -> TcpStream {
        TcpStream::connect(("127.0.0.1", self.port)).unwrap()
    }
}

/// Reads until EOF or `limit`; returns the text and whether EOF (or a reset) was seen.
pub fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (String::from_utf8_lossy(&got).into_owned(), false);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&got).into_owned(), true)
            }
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
