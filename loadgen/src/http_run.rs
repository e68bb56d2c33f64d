//! The HTTP load: one glommio executor per worker thread, each driving its
//! share of the keep-alive connections, in closed or open loop.
//!
//! **Invariants.**
//! - A worker's state (its connections, recorder, buffers) never leaves its
//!   thread; the only cross-thread traffic is the final [`Recorder`] sent
//!   back over a channel.
//! - Every socket operation carries a deadline no later than the end of the
//!   run, so workers finish on their own; the caller's hard bound
//!   ([`run_http`]) only matters when that fails.
//! - Only responses that complete inside the measured window (after the
//!   warm-up, before the end) are recorded; those in flight at the end are
//!   dropped, as wrk and wrk2 do.

use std::collections::VecDeque;
use std::io::ErrorKind as IoKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::{LocalExecutorBuilder, Placement};

use crate::error::RunError;
use crate::http_codec::{ResponseReader, write_request};
use crate::pacing::{Pacer, share, stagger};
use crate::report::{Report, RunInfo};
use crate::rng::SplitMix64;
use crate::stats::{ErrorKind, Recorder};
use crate::workload::{Url, Workload};

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Locked memory each executor asks io_uring for. glommio's default (10 MiB)
/// exceeds the 8 MiB `RLIMIT_MEMLOCK` common on desktops and containers;
/// the load generator does no file I/O, so a little is plenty.
pub const EXECUTOR_IO_MEMORY_BYTES: usize = 512 * 1024;

/// How long a connection waits before retrying a failed connect, so that a
/// down server is not hammered in a busy loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

/// Where workers run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pinning {
    /// Let the kernel place worker threads (tests, shared machines).
    Unbound,
    /// Worker `i` runs on CPU `cpus[i]`.
    Cpus(Vec<usize>),
}

/// Everything one HTTP run needs.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The URL as given, for the report.
    pub url_text: String,
    /// The parsed target.
    pub url: Url,
    /// What to send.
    pub workload: Workload,
    /// Extra request headers (`Host` is always sent).
    pub headers: Vec<(String, String)>,
    /// Connections in total, spread over the workers.
    pub connections: u64,
    /// Worker threads (one executor each).
    pub workers: u64,
    /// Where the workers run.
    pub pinning: Pinning,
    /// Requests in flight per connection at most (1: no pipelining).
    pub pipeline: u64,
    /// Open loop at this many requests per second in total; closed loop when `None`.
    pub rate_per_sec: Option<f64>,
    /// The measured window.
    pub duration: Duration,
    /// Run before measuring, not recorded.
    pub warmup: Duration,
    /// Extra time past the end before the run is declared hung.
    pub grace: Duration,
    /// Seed of every connection's key and mix choices.
    pub seed: u64,
}

/// The instants every worker shares.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// When sending starts (the open-loop schedule's origin).
    start: Instant,
    /// When recording starts.
    measure: Instant,
    /// When everything stops.
    end: Instant,
}

impl Window {
    fn records(&self, t: Instant) -> bool {
        t >= self.measure && t < self.end
    }
}

/// Runs the load described by `config` and returns the merged report.
///
/// Returns [`RunError::HardTimeout`] if the workers have not reported by
/// warm-up + duration + grace after the start; their threads are then left
/// behind, so a binary should exit soon after.
pub fn run_http(config: HttpConfig) -> Result<Report, RunError> {
    let addr = config
        .url
        .resolve()
        .map_err(|e| RunError::Executor(e.to_string()))?;
    let config = Arc::new(config);
    // A short lead so that every executor is up before the schedule starts.
    let start = Instant::now() + Duration::from_millis(50);
    let window = Window {
        start,
        measure: start + config.warmup,
        end: start + config.warmup + config.duration,
    };
    let (tx, rx) = mpsc::channel::<Recorder>();
    for w in 0..config.workers {
        let placement = match &config.pinning {
            Pinning::Unbound => Placement::Unbound,
            Pinning::Cpus(cpus) => Placement::Fixed(cpus[w as usize]),
        };
        let (config, tx) = (Arc::clone(&config), tx.clone());
        LocalExecutorBuilder::new(placement)
            .name(&format!("loadgen-{w}"))
            .io_memory(EXECUTOR_IO_MEMORY_BYTES)
            .spawn(move || async move {
                let rec = worker(config, addr, w, window).await;
                // The receiver is gone only if the run already timed out.
                let _ = tx.send(rec);
            })
            .map_err(|e| RunError::Executor(e.to_string()))?;
    }
    drop(tx);
    let bound = window.end + config.grace;
    let mut total = Recorder::new();
    for _ in 0..config.workers {
        let wait = bound.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(rec) => total.merge(&rec),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(RunError::HardTimeout {
                    bound_ms: (bound - start).as_millis(),
                });
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(RunError::WorkerPanicked),
        }
    }
    let info = RunInfo {
        mode: if config.rate_per_sec.is_some() {
            "open"
        } else {
            "closed"
        },
        url: config.url_text.clone(),
        connections: config.connections,
        workers: config.workers,
        pipeline: config.pipeline,
        rate_per_sec: config.rate_per_sec,
        duration: config.duration,
        warmup: config.warmup,
    };
    Ok(Report::new(&info, &total))
}

/// One worker: starts its connections and merges what they measured.
async fn worker(config: Arc<HttpConfig>, addr: SocketAddr, w: u64, window: Window) -> Recorder {
    let mine = share(config.connections, config.workers, w);
    // Global index of this worker's first connection, so every connection
    // in the run has its own seed and place in the open-loop stagger.
    let first: u64 = (0..w)
        .map(|i| share(config.connections, config.workers, i))
        .sum();
    let tasks: Vec<_> = (0..mine)
        .map(|c| glommio::spawn_local(connection(Arc::clone(&config), addr, first + c, window)))
        .collect();
    let mut total = Recorder::new();
    for task in tasks {
        total.merge(&task.await);
    }
    total
}

/// What ended one TCP connection's request loop.
enum Ended {
    /// The run is over.
    RunOver,
    /// The connection failed or was closed; open another.
    Reconnect,
}

/// One connection slot: connects, runs requests until the end of the run,
/// and reconnects whenever the server closes or a request fails.
async fn connection(
    config: Arc<HttpConfig>,
    addr: SocketAddr,
    index: u64,
    window: Window,
) -> Recorder {
    let mut rec = Recorder::new();
    let mut rng = SplitMix64::new(config.seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut pacer = config.rate_per_sec.map(|rate| {
        let n = config.connections;
        Pacer::new(stagger(window.start, rate, n, index), rate / n as f64)
    });
    if let Some(p) = &pacer {
        sleep_until(p.peek().min(window.end)).await;
    } else {
        sleep_until(window.start).await;
    }
    while Instant::now() < window.end {
        let stream = match connect(addr, window.end).await {
            Ok(s) => s,
            Err(_) => {
                if window.records(Instant::now()) {
                    rec.record_error(ErrorKind::Connect);
                }
                sleep_until((Instant::now() + RECONNECT_PAUSE).min(window.end)).await;
                continue;
            }
        };
        match requests(&config, stream, &mut rng, pacer.as_mut(), window, &mut rec).await {
            Ended::RunOver => break,
            Ended::Reconnect => continue,
        }
    }
    rec
}

async fn connect(addr: SocketAddr, end: Instant) -> std::io::Result<TcpStream> {
    let wait = end.saturating_duration_since(Instant::now());
    let stream = TcpStream::connect_timeout(addr, wait.max(Duration::from_millis(1)))
        .await
        .map_err(std::io::Error::from)?;
    stream.set_nodelay(true).map_err(std::io::Error::from)?;
    Ok(stream)
}

async fn sleep_until(t: Instant) {
    let wait = t.saturating_duration_since(Instant::now());
    if !wait.is_zero() {
        glommio::timer::sleep(wait).await;
    }
}

/// Runs requests on one open connection until the run ends or the
/// connection must be replaced.
async fn requests(
    config: &HttpConfig,
    mut stream: TcpStream,
    rng: &mut SplitMix64,
    mut pacer: Option<&mut Pacer>,
    window: Window,
    rec: &mut Recorder,
) -> Ended {
    let authority = config.url.authority();
    let mut headers: Vec<(&str, &[u8])> = vec![("Host", authority.as_bytes())];
    headers.extend(
        config
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes())),
    );
    let mut reader = ResponseReader::new();
    // Per request in flight: when it counts from, and whether it was HEAD.
    let mut inflight: VecDeque<(Instant, bool)> = VecDeque::with_capacity(config.pipeline as usize);
    let mut out = Vec::with_capacity(4096);
    let (mut target, mut body) = (Vec::with_capacity(256), Vec::with_capacity(256));
    let mut input = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    loop {
        // Send: fill the pipeline with what is due.
        out.clear();
        while (inflight.len() as u64) < config.pipeline {
            let now = Instant::now();
            let counts_from = match pacer.as_deref_mut() {
                None => now,
                Some(p) => {
                    let due = p.peek();
                    if due >= window.end {
                        break;
                    }
                    if due > now {
                        if !inflight.is_empty() {
                            break;
                        }
                        sleep_until(due).await;
                    }
                    p.take()
                }
            };
            if counts_from >= window.end {
                break;
            }
            let spec = config.workload.pick(rng);
            let key = config.workload.key(rng);
            target.clear();
            body.clear();
            spec.path.render(key, &mut target);
            spec.body.render(key, &mut body);
            if write_request(&mut out, &spec.method, &target, &headers, &body).is_err() {
                // Validated when the workload was built; a template that
                // renders badly for some key is still the user's input.
                rec.record_error(ErrorKind::Protocol);
                return Ended::RunOver;
            }
            inflight.push_back((counts_from, spec.method == "HEAD"));
        }
        if inflight.is_empty() {
            return Ended::RunOver;
        }
        if !out.is_empty() {
            let left = window.end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ended::RunOver;
            }
            let _ = stream.set_write_timeout(Some(left));
            if let Err(e) = stream.write_all(&out).await {
                return failed(e.kind(), ErrorKind::Write, window, rec);
            }
        }
        // Receive: at least one response, then go back to sending.
        let mut got_one = false;
        while !got_one {
            let left = window.end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ended::RunOver;
            }
            let _ = stream.set_read_timeout(Some(left));
            let n = match stream.read(&mut chunk).await {
                Ok(0) => return failed(IoKind::UnexpectedEof, ErrorKind::Closed, window, rec),
                Ok(n) => n,
                Err(e) => return failed(e.kind(), ErrorKind::Read, window, rec),
            };
            input.extend_from_slice(&chunk[..n]);
            let now = Instant::now();
            if window.records(now) {
                rec.bytes_read += n as u64;
            }
            while let Some(&(counts_from, head)) = inflight.front() {
                match reader.decode(&mut input, head) {
                    Ok(None) => break,
                    Ok(Some(reply)) => {
                        // Interim responses (100 Continue) precede the real one.
                        if (100..200).contains(&reply.status) {
                            continue;
                        }
                        inflight.pop_front();
                        got_one = true;
                        if window.records(now) {
                            rec.record_latency(now - counts_from);
                            rec.record_status(reply.status);
                        }
                        if !reply.keep_alive {
                            return Ended::Reconnect;
                        }
                    }
                    Err(_) => return failed(IoKind::InvalidData, ErrorKind::Protocol, window, rec),
                }
            }
        }
    }
}

/// Classifies a failed socket operation: a timeout at the end of the run is
/// the run ending, anything else is an error of `kind` and a reconnect.
fn failed(io: IoKind, kind: ErrorKind, window: Window, rec: &mut Recorder) -> Ended {
    let now = Instant::now();
    if now >= window.end || io == IoKind::TimedOut {
        return Ended::RunOver;
    }
    if window.records(now) {
        rec.record_error(kind);
    }
    Ended::Reconnect
}
