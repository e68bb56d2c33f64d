//! Shared harness for Cairn's end-to-end tests.
//!
//! The tests in `tests/tests/` start a real `cairn` process and talk to it
//! over loopback sockets with clients that share no code with the server's
//! request path, so they catch what unit tests of one layer cannot. The
//! `tidy` test lives here too: it reads the repository itself and enforces
//! the conventions in `docs/ARCHITECTURE.md`.
//!
//! [`Server`] builds (once) and starts the `cairn` binary on a free loopback
//! port with a fresh data directory; [`Server::send`] speaks raw HTTP/1.1
//! over `std::net`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a test waits for the server to come up or to answer.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Where a started server's stderr goes: a pipe (read back when it fails to
/// start), or, with `CAIRN_TEST_SERVER_LOG=<file>`, appended to that file, so
/// long soaks keep every server's start-up lines and warnings.
fn server_stderr() -> Stdio {
    let Some(path) = std::env::var_os("CAIRN_TEST_SERVER_LOG") else {
        return Stdio::piped();
    };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map(Stdio::from)
        .unwrap_or_else(|e| panic!("CAIRN_TEST_SERVER_LOG={}: {e}", path.display()))
}

/// The path of the `cairn` binary, built once per test process (a release
/// build if `CAIRN_TEST_RELEASE=1`, for measurements such as
/// `scripts/memory-1m.sh --release`).
pub fn cairn_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let release = std::env::var("CAIRN_TEST_RELEASE").is_ok_and(|v| v == "1");
        let status = Command::new(env!("CARGO"))
            // `test-hooks`: the commit delay and the `testhooks` class the
            // acceptance tests drive (engine/src/test_hooks.rs).
            .args(["build", "--quiet", "-p", "cairn-engine", "--bin", "cairn"])
            .args(["--features", "cairn-engine/test-hooks"])
            .args(release.then_some("--release"))
            .current_dir(repo_root())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building cairn failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| repo_root().join("target"), PathBuf::from);
        target
            .join(if release { "release" } else { "debug" })
            .join("cairn")
    })
}

/// A free loopback port (bound and released; a race with another process is
/// possible but unlikely).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind port 0")
}

/// A fresh, empty directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("cairn-e2e-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create temp dir");
    d
}

/// A running `cairn` process. Killed on drop if still running.
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its data directory.
    pub data_dir: PathBuf,
}

/// A parsed HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header lines as (lowercase name, value).
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first header called `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Server {
    /// Starts `cairn` with `shards` shards on a free port and a fresh data dir.
    pub fn start(shards: u32) -> Server {
        let dir = temp_dir("server");
        Server::start_in(&dir, shards).expect("cairn starts")
    }

    /// Starts `cairn` with `shards` shards and extra command-line `args`
    /// (e.g. `["--connections-max", "2"]`) on a free port and a fresh data dir.
    pub fn start_with(shards: u32, args: &[&str]) -> Server {
        let dir = temp_dir("server");
        Server::start_in_with(&dir, shards, args).expect("cairn starts")
    }

    /// Starts `cairn` on data directory `dir`; `Err` carries stderr if it exits
    /// instead of coming up (unless `CAIRN_TEST_SERVER_LOG` sends it to a file).
    pub fn start_in(dir: &Path, shards: u32) -> Result<Server, String> {
        Server::start_in_with(dir, shards, &[])
    }

    /// [`Server::start_in`] with extra command-line `args`.
    pub fn start_in_with(dir: &Path, shards: u32, args: &[&str]) -> Result<Server, String> {
        Server::start_in_with_env(dir, shards, args, &[])
    }

    /// [`Server::start_in_with`] with extra environment variables (e.g. the
    /// test hook `CAIRN_TEST_COMMIT_DELAY_MS`).
    pub fn start_in_with_env(
        dir: &Path,
        shards: u32,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Server, String> {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        let mut child = Command::new(cairn_binary())
            // Small segments: each shard pre-allocates one, and tests start many servers.
            .args(["--segment-bytes", "1048576"])
            .args([
                "--listen",
                &addr.to_string(),
                "--shards",
                &shards.to_string(),
                "--data-dir",
            ])
            .arg(dir.join("data"))
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(server_stderr())
            .spawn()
            .expect("spawn cairn");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(_status) = child.try_wait().expect("poll child") {
                let mut err = String::new();
                child.stderr.take().map(|mut e| e.read_to_string(&mut err));
                return Err(err);
            }
            if TcpStream::connect(addr).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "cairn did not come up on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Server {
            child,
            addr,
            data_dir: dir.to_path_buf(),
        })
    }

    /// Sends one request on a fresh connection and reads its response.
    pub fn send(&self, method: &str, path: &str, body: &[u8]) -> HttpResponse {
        let mut raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: cairn\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(body);
        let mut got = self.exchange(&raw, 1);
        got.remove(0)
    }

    /// Sends one request with extra header lines (`"Name: value"`).
    pub fn send_with(
        &self,
        method: &str,
        path: &str,
        headers: &[&str],
        body: &[u8],
    ) -> HttpResponse {
        let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: cairn\r\n");
        for h in headers {
            raw.push_str(h);
            raw.push_str("\r\n");
        }
        raw.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut raw = raw.into_bytes();
        raw.extend_from_slice(body);
        self.exchange(&raw, 1).remove(0)
    }

    /// Opens a keep-alive connection for a series of requests.
    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Writes `raw` on one connection and reads `n` responses from it.
    pub fn exchange(&self, raw: &[u8], n: usize) -> Vec<HttpResponse> {
        let mut s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(STARTUP_TIMEOUT)).expect("timeout");
        s.write_all(raw).expect("write request");
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while out.len() < n {
            if let Some((resp, used)) = parse_response(&buf) {
                buf.drain(..used);
                out.push(resp);
                continue;
            }
            let mut chunk = [0u8; 8192];
            let k = s.read(&mut chunk).expect("read response");
            assert!(
                k > 0,
                "connection closed after {} of {n} responses; buffered {:?}",
                out.len(),
                buf
            );
            buf.extend_from_slice(&chunk[..k]);
        }
        out
    }

    /// Writes `raw` and reads until the server closes the connection.
    pub fn raw_until_close(&self, raw: &[u8]) -> Vec<u8> {
        let mut s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(STARTUP_TIMEOUT)).expect("timeout");
        s.write_all(raw).expect("write");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).expect("read to close");
        buf
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(self) -> ExitStatus {
        self.signal("-TERM")
    }

    /// Sends SIGKILL (a crash) and waits for the process to exit.
    pub fn kill(self) -> ExitStatus {
        self.signal("-KILL")
    }

    fn signal(mut self, sig: &str) -> ExitStatus {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
        self.child.wait().expect("wait for cairn")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One keep-alive HTTP/1.1 connection to a server: a [`Conn`] that panics
/// if it cannot connect, with [`STARTUP_TIMEOUT`] for its I/O.
pub struct Client(Conn);

impl Client {
    /// Connects to `addr`; reads time out after [`STARTUP_TIMEOUT`].
    pub fn connect(addr: SocketAddr) -> Client {
        Client(Conn::connect(addr, STARTUP_TIMEOUT).expect("connect"))
    }

    /// Sends one request and reads its response. `Err` if the connection
    /// fails or closes first (e.g. the server was killed).
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<HttpResponse> {
        self.0.request(method, path, body)
    }
}

/// Parses one response with a `Content-Length` body from the front of `buf`.
pub fn parse_response(buf: &[u8]) -> Option<(HttpResponse, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).expect("response head is ASCII");
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap_or(0));
    let total = end + 4 + len;
    if buf.len() < total {
        return None;
    }
    Some((
        HttpResponse {
            status,
            headers,
            body: buf[end + 4..total].to_vec(),
        },
        total,
    ))
}

/// A keep-alive HTTP/1.1 client connection for load loops (one request at a
/// time; the harness's [`Server::send`] opens a connection per request).
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Requests sent on this connection so far.
    sent: u64,
}

impl Conn {
    /// Connects to `addr` with `timeout` for connecting, reads and writes.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
            sent: 0,
        })
    }

    /// How many requests were sent on this connection (a failure message
    /// can say whether the connection had worked before).
    pub fn requests(&self) -> u64 {
        self.sent
    }

    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.stream
            .peer_addr()
            .expect("a connected socket has a peer")
    }

    /// Sends one request and reads its response; any I/O error, or the peer
    /// closing before a whole response arrived, is an `Err`.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<HttpResponse> {
        let mut raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: cairn\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(body);
        self.sent += 1;
        self.stream.write_all(&raw)?;
        loop {
            if let Some((resp, used)) = parse_response(&self.buf) {
                self.buf.drain(..used);
                return Ok(resp);
            }
            let mut chunk = [0u8; 16384];
            let k = self.stream.read(&mut chunk)?;
            if k == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..k]);
        }
    }
}

/// Resident set size of process `pid` in bytes (Linux `/proc/{pid}/status`
/// `VmRSS`), or `None` if it cannot be read.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The conformance directory (`../shared/conformance` next to the repository),
/// if it exists. `CAIRN_CONFORMANCE_DIR` overrides the location.
pub fn conformance_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("CAIRN_CONFORMANCE_DIR") {
        return Some(PathBuf::from(d)).filter(|d| d.is_dir());
    }
    // The main checkout sits next to `shared/`; a worktree one level deeper.
    ["../shared/conformance", "../../shared/conformance"]
        .iter()
        .map(|rel| repo_root().join(rel))
        .find(|d| d.is_dir())
}
