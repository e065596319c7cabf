//! A private pouchdb-server (the binary in `$KZ_TEST_COUCH_SERVER_BIN`, exported by
//! `scripts/test`) for tests that must stop and restart the CouchDB-compatible server.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub const BIN_ENV: &str = "KZ_TEST_COUCH_SERVER_BIN";
const ADMIN: &str = "admin";
const PASSWORD: &str = "secret";
/// Base64 of `admin:secret`, for the readiness probe.
const BASIC_AUTH: &str = "YWRtaW46c2VjcmV0";
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running pouchdb-server; stopped (killed) on drop.
pub struct TestCouchServer {
    bin: PathBuf,
    data_dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl TestCouchServer {
    /// Starts the server on `port` (a free one if `None`) storing its databases, config and log
    /// in `data_dir`, and waits until the admin credentials of [`url`](Self::url) work.
    /// Starting again on the same `data_dir` sees the data written before.
    pub fn start(port: Option<u16>, data_dir: &Path) -> io::Result<Self> {
        let bin = std::env::var_os(BIN_ENV)
            .map(PathBuf::from)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{BIN_ENV} is not set (scripts/test sets it)"),
                )
            })?;
        let port = match port {
            Some(port) => port,
            None => TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
                .local_addr()?
                .port(),
        };
        let mut server = TestCouchServer {
            bin,
            data_dir: data_dir.to_path_buf(),
            port,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("http://{ADMIN}:{PASSWORD}@127.0.0.1:{}", self.port)
    }

    /// Kills the server and waits for it to exit; what was written is kept in `data_dir`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // pouchdb-server answers 201 to PUT /{db} before it has recorded the database in its
            // internal list; a kill just after would lose the database. GET /_all_dbs queues
            // behind those writes, so once it returns they are on disk.
            if let Ok(None) = child.try_wait() {
                let _ = self.get("/_all_dbs");
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.spawn()
    }

    fn spawn(&mut self) -> io::Result<()> {
        // Otherwise the readiness probe could be answered by whoever holds the port.
        TcpListener::bind((Ipv4Addr::LOCALHOST, self.port)).map_err(|e| {
            io::Error::new(e.kind(), format!("port {} is not free: {e}", self.port))
        })?;
        fs::create_dir_all(&self.data_dir)?;
        // The admin is in the config before the port opens (pouchdb-server hashes it on start),
        // so there is no admin-party window; the same way as scripts/test.
        let config = self.data_dir.join("config.json");
        fs::write(
            &config,
            format!(r#"{{"admins":{{"{ADMIN}":"{PASSWORD}"}},"log":{{"file":"log.txt"}}}}"#),
        )?;
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.join("stderr.txt"))?;
        let child = Command::new(&self.bin)
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(&self.data_dir)
            .arg("--config")
            .arg(&config)
            // -n: log to <data_dir>/log.txt only (its long form --no-stdout-logs is misparsed as a
            // negation); it also makes the server exit, not hang, when the port is taken.
            .args(["-n", "--no-color"])
            .current_dir(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.bin.display())))?;
        self.child = Some(child);
        self.wait_until_ready()
    }

    fn wait_until_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(io::Error::other(format!(
                    "pouchdb-server exited with {status} before answering; see {}",
                    self.data_dir.join("stderr.txt").display()
                )));
            }
            if self.answers_as_admin() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "pouchdb-server did not answer on port {} within {START_TIMEOUT:?}",
                        self.port
                    ),
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET /_session as the admin: 200 and the `_admin` role.
    fn answers_as_admin(&self) -> bool {
        matches!(self.get("/_session"), Ok(r) if r.starts_with("HTTP/1.1 200") && r.contains("\"_admin\""))
    }

    /// A GET as the admin over a raw socket (the tests' HTTP client may not be blocking);
    /// returns the whole response, head included.
    fn get(&self, path: &str) -> io::Result<String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Basic {BASIC_AUTH}\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    }
}

impl Drop for TestCouchServer {
    fn drop(&mut self) {
        self.stop();
    }
}
