//! The HTTP load: one thread per worker, each running an epoll event loop
//! over its share of the keep-alive connections (nonblocking sockets), in
//! closed or open loop.
//!
//! **Why epoll and not glommio/io_uring here.** A load generator has to turn
//! a response into the next request as fast as wrk does. Measured on the same
//! pinned core against the same nginx, the glommio version reached 0.41-0.88
//! of `wrk -t1`'s req/s and a bare io_uring loop (one `Send` and one `Recv`
//! SQE per request) 0.67-0.94: io_uring's poll-and-complete wake-up costs
//! more per small request on loopback than a readiness loop. This loop does
//! per response batch: one `read`, one `write` of the next request(s), and
//! one `epoll_pwait2` shared by every connection with data (see
//! `docs/BENCHMARKS.md`). WebSocket mode (`ws_run`) is an epoll loop too.
//!
//! **Invariants.**
//! - A worker's state (its connections, recorder, buffers) never leaves its
//!   thread; the only cross-thread traffic is the final [`Recorder`] sent
//!   back over a channel.
//! - The event loop never waits past the end of the run (every wait is
//!   bounded by the next timer or the end), so workers finish on their own;
//!   the caller's hard bound ([`run_http`]) only matters when that fails.
//!   Nothing blocks, `connect` included: its outcome arrives as an event,
//!   so hundreds of connections to a distant server open in one round trip.
//! - Latency is timed with the monotonic clock (vDSO `clock_gettime`): one
//!   reading per `read` that returns data, which is the arrival time of
//!   every response in those bytes, and the request's send time in closed
//!   loop or its due time in open loop.
//! - Only responses that complete inside the measured window (after the
//!   warm-up, before the end) are recorded; those in flight at the end are
//!   dropped, as wrk and wrk2 do.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{ErrorKind as IoKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rustix::event::{Timespec, epoll};
use rustix::io::Errno;

use crate::error::RunError;
use crate::http_codec::{ResponseReader, write_request};
use crate::outbox::Outbox;
use crate::pacing::{Pacer, share, stagger};
use crate::report::{Report, RunInfo};
use crate::rng::SplitMix64;
use crate::stats::{ErrorKind, Recorder};
use crate::workload::{Url, Workload};

/// Bytes read from the socket at a time (one buffer per worker).
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Initial capacity of a connection's buffers (requests not yet written,
/// bytes received and not yet decoded); they grow for larger messages.
/// Small, because a run may hold thousands of connections.
const CONN_BUFFER_BYTES_INITIAL: usize = 4 * 1024;

/// How long a connection waits before retrying a failed connect, so that a
/// down server is not hammered in a busy loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

/// Readiness events taken from the kernel per wait at most.
const EVENTS_PER_WAIT: usize = 1024;

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
    /// Worker threads (one event loop each).
    pub workers: u64,
    /// Where the workers run.
    pub pinning: Pinning,
    /// Requests in flight per connection at most (1: no pipelining).
    pub pipeline: u64,
    /// Open loop at this many requests per second in total; closed loop when `None`.
    pub rate_per_sec: Option<f64>,
    /// Closed loop with think time: after each response a connection waits
    /// this long before sending its next request (wrk's `delay()`), which
    /// holds the load at a moderate rate. `None`: send at once.
    pub think_time: Option<Duration>,
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
    // A short lead so that every worker is up before the schedule starts.
    let start = Instant::now() + Duration::from_millis(50);
    let window = Window {
        start,
        measure: start + config.warmup,
        end: start + config.warmup + config.duration,
    };
    let (tx, rx) = mpsc::channel::<Result<Recorder, RunError>>();
    for w in 0..config.workers {
        let cpu = match &config.pinning {
            Pinning::Unbound => None,
            Pinning::Cpus(cpus) => Some(cpus[w as usize]),
        };
        let (config, tx) = (Arc::clone(&config), tx.clone());
        std::thread::Builder::new()
            .name(format!("loadgen-{w}"))
            .spawn(move || {
                let rec = pin(cpu).and_then(|()| worker(&config, addr, w, window));
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
            Ok(rec) => total.merge(&rec?),
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
    let mut report = Report::new(&info, &total);
    report.think_time_ms = config.think_time.map(|t| t.as_secs_f64() * 1e3);
    Ok(report)
}

/// Pins the calling thread to `cpu`, if one is given.
fn pin(cpu: Option<usize>) -> Result<(), RunError> {
    let Some(cpu) = cpu else { return Ok(()) };
    let mut set = rustix::thread::CpuSet::new();
    if cpu >= rustix::thread::CpuSet::MAX_CPU {
        return Err(RunError::Executor(format!("CPU {cpu} does not exist")));
    }
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set)
        .map_err(|e| RunError::Executor(format!("cannot pin a worker to CPU {cpu}: {e}")))
}

/// What every connection of one worker shares: the target, the event loop,
/// scratch buffers and the worker's measurements.
struct Shared<'a> {
    config: &'a HttpConfig,
    addr: SocketAddr,
    window: Window,
    epoll: OwnedFd,
    /// `Host` and the user's extra headers, sent with every request.
    headers: Vec<(&'a str, &'a [u8])>,
    /// Scratch for rendering a request's target and body.
    target: Vec<u8>,
    body: Vec<u8>,
    /// What one `read` lands in before it is appended to a connection's input.
    chunk: Vec<u8>,
    /// When a connection wants to act without an I/O event (open, reconnect,
    /// an open-loop request falling due), by slot. Entries that no longer
    /// match the connection's `timer` are stale and skipped.
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    rec: Recorder,
}

/// One connection slot of a worker.
struct Conn {
    /// Index in the worker's connections; also its epoll token.
    slot: usize,
    /// `None` between connections (waiting to reconnect) or after giving up.
    stream: Option<TcpStream>,
    /// The socket's nonblocking connect has not completed yet.
    connecting: bool,
    rng: SplitMix64,
    pacer: Option<Pacer>,
    /// Closed loop with think time: the next request waits until then.
    ready_at: Option<Instant>,
    reader: ResponseReader,
    /// Per request in flight: when it counts from, and whether it was HEAD.
    inflight: VecDeque<(Instant, bool)>,
    /// Requests rendered and not yet fully written.
    out: Outbox,
    input: BytesMut,
    /// The timer armed for this connection, if any.
    timer: Option<Instant>,
    /// The request templates cannot be rendered: this slot stops.
    given_up: bool,
}

/// One worker: an epoll loop over its share of the connections. Returns what
/// they measured.
fn worker(
    config: &HttpConfig,
    addr: SocketAddr,
    w: u64,
    window: Window,
) -> Result<Recorder, RunError> {
    let mine = share(config.connections, config.workers, w);
    // Global index of this worker's first connection, so every connection
    // in the run has its own seed and place in the open-loop stagger.
    let first: u64 = (0..w)
        .map(|i| share(config.connections, config.workers, i))
        .sum();
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)
        .map_err(|e| RunError::Executor(format!("epoll_create1: {e}")))?;
    let authority = config.url.authority();
    let mut headers: Vec<(&str, &[u8])> = vec![("Host", authority.as_bytes())];
    headers.extend(
        config
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes())),
    );
    let mut sh = Shared {
        config,
        addr,
        window,
        epoll,
        headers,
        target: Vec::with_capacity(256),
        body: Vec::with_capacity(256),
        chunk: vec![0u8; READ_CHUNK_BYTES],
        timers: BinaryHeap::with_capacity(mine as usize * 2),
        rec: Recorder::new(),
    };
    let mut conns: Vec<Conn> = (0..mine)
        .map(|c| {
            let index = first + c;
            let pacer = config.rate_per_sec.map(|rate| {
                let n = config.connections;
                Pacer::new(stagger(window.start, rate, n, index), rate / n as f64)
            });
            Conn {
                slot: c as usize,
                stream: None,
                connecting: false,
                rng: SplitMix64::stream(config.seed, index),
                pacer,
                ready_at: None,
                reader: ResponseReader::new(),
                inflight: VecDeque::with_capacity(config.pipeline as usize),
                out: Outbox::with_capacity(CONN_BUFFER_BYTES_INITIAL),
                input: BytesMut::with_capacity(CONN_BUFFER_BYTES_INITIAL),
                timer: None,
                given_up: false,
            }
        })
        .collect();
    // Everything connects at the start; open-loop requests then wait for
    // their due times.
    for conn in &mut conns {
        conn.arm(&mut sh, window.start);
    }
    let idle = epoll::Event {
        flags: epoll::EventFlags::empty(),
        data: epoll::EventData::new_u64(0),
    };
    let mut events = vec![idle; EVENTS_PER_WAIT];
    let mut due = Vec::new();
    loop {
        let now = Instant::now();
        if now >= window.end {
            break;
        }
        // Timers first. Collected before acting, so that a connection that
        // re-arms for `now` (a reconnect) waits for the next turn.
        while let Some(&Reverse((at, slot))) = sh.timers.peek() {
            if at > now {
                break;
            }
            sh.timers.pop();
            if conns[slot].timer == Some(at) {
                conns[slot].timer = None;
                due.push(slot);
            }
        }
        for slot in due.drain(..) {
            conns[slot].on_timer(&mut sh, now);
        }
        let until = sh
            .timers
            .peek()
            .map_or(window.end, |&Reverse((at, _))| at.min(window.end));
        let wait = until.saturating_duration_since(Instant::now());
        let timeout = Timespec {
            tv_sec: wait.as_secs() as i64,
            tv_nsec: i64::from(wait.subsec_nanos()),
        };
        let n = match epoll::wait(&sh.epoll, &mut events[..], Some(&timeout)) {
            Ok(n) => n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(RunError::Executor(format!("epoll_pwait2: {e}"))),
        };
        for ev in &events[..n] {
            let (flags, data) = (ev.flags, ev.data);
            let conn = &mut conns[data.u64() as usize];
            if conn.stream.is_none() {
                // Closed by an earlier event of this batch.
                continue;
            }
            if conn.connecting {
                conn.on_connected(&mut sh);
                continue;
            }
            if flags.contains(epoll::EventFlags::OUT) {
                conn.flush(&mut sh, Instant::now());
            }
            if flags
                .intersects(epoll::EventFlags::IN | epoll::EventFlags::ERR | epoll::EventFlags::HUP)
            {
                conn.on_readable(&mut sh);
            }
        }
    }
    Ok(sh.rec)
}

impl Conn {
    /// Asks the loop to call [`Conn::on_timer`] at `at` (or earlier, if an
    /// earlier timer is already armed).
    fn arm(&mut self, sh: &mut Shared<'_>, at: Instant) {
        if self.timer.is_some_and(|t| t <= at) {
            return;
        }
        self.timer = Some(at);
        sh.timers.push(Reverse((at, self.slot)));
    }

    fn on_timer(&mut self, sh: &mut Shared<'_>, now: Instant) {
        if self.given_up || self.connecting {
            // A connect in progress sends what fell due once it completes.
            return;
        }
        if self.stream.is_none() {
            self.open(sh, now);
        } else {
            self.send_due(sh, now);
        }
    }

    /// Starts connecting (the outcome arrives as an event, handled by
    /// [`Conn::on_connected`]), or counts the failure and retries after
    /// [`RECONNECT_PAUSE`].
    fn open(&mut self, sh: &mut Shared<'_>, now: Instant) {
        match start_connect(sh.addr, &sh.epoll, self.slot) {
            Ok(stream) => {
                self.stream = Some(stream);
                self.connecting = true;
            }
            Err(_) => self.connect_failed(sh, now),
        }
    }

    /// The connect finished: sends what is due, or counts the failure and
    /// retries after [`RECONNECT_PAUSE`].
    fn on_connected(&mut self, sh: &mut Shared<'_>) {
        let now = Instant::now();
        let Some(stream) = self.stream.as_ref() else {
            return;
        };
        if !matches!(rustix::net::sockopt::socket_error(stream), Ok(Ok(()))) {
            return self.connect_failed(sh, now);
        }
        self.connecting = false;
        // Writability reported the connect; from now on only reads matter
        // until a write comes up short.
        let data = epoll::EventData::new_u64(self.slot as u64);
        if epoll::modify(&sh.epoll, stream, data, epoll::EventFlags::IN).is_err() {
            return self.connect_failed(sh, now);
        }
        self.send_due(sh, now);
    }

    fn connect_failed(&mut self, sh: &mut Shared<'_>, now: Instant) {
        if sh.window.records(now) {
            sh.rec.record_error(ErrorKind::Connect);
        }
        self.close(sh);
        self.arm(sh, now + RECONNECT_PAUSE);
    }

    /// Drops the connection and everything in flight on it.
    fn close(&mut self, sh: &mut Shared<'_>) {
        if let Some(stream) = self.stream.take() {
            // Closing the socket would deregister it too; deleting first
            // keeps that true even if the fd were ever shared.
            let _ = epoll::delete(&sh.epoll, &stream);
        }
        self.connecting = false;
        self.reader = ResponseReader::new();
        self.inflight.clear();
        self.out.clear();
        self.input.clear();
    }

    /// Counts a failed socket operation (if inside the measured window) and
    /// replaces the connection on the loop's next turn.
    fn fail(&mut self, sh: &mut Shared<'_>, kind: ErrorKind, now: Instant) {
        if sh.window.records(now) {
            sh.rec.record_error(kind);
        }
        self.close(sh);
        self.arm(sh, now);
    }

    /// Fills the pipeline with what is due (closed loop: everything there is
    /// room for) and writes it.
    fn send_due(&mut self, sh: &mut Shared<'_>, now: Instant) {
        let end = sh.window.end;
        while (self.inflight.len() as u64) < sh.config.pipeline {
            let counts_from = match self.pacer.as_mut() {
                None => {
                    if let Some(at) = self.ready_at.filter(|&at| at > now) {
                        self.arm(sh, at);
                        break;
                    }
                    now
                }
                Some(p) => {
                    let due = p.peek();
                    if due >= end {
                        break;
                    }
                    if due > now {
                        self.arm(sh, due);
                        break;
                    }
                    p.take()
                }
            };
            if counts_from >= end {
                break;
            }
            let spec = sh.config.workload.pick(&mut self.rng);
            let key = sh.config.workload.key(&mut self.rng);
            sh.target.clear();
            sh.body.clear();
            spec.path.render(key, &mut sh.target);
            spec.body.render(key, &mut sh.body);
            let written = write_request(
                &mut self.out.buf,
                &spec.method,
                &sh.target,
                &sh.headers,
                &sh.body,
            );
            if written.is_err() {
                // Validated when the workload was built; a template that
                // renders badly for some key is still the user's input.
                sh.rec.record_error(ErrorKind::Protocol);
                self.close(sh);
                self.given_up = true;
                return;
            }
            self.inflight
                .push_back((counts_from, spec.method == "HEAD"));
        }
        self.flush(sh, now);
    }

    /// Writes what is pending; a failure replaces the connection.
    fn flush(&mut self, sh: &mut Shared<'_>, now: Instant) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        if self.out.flush(stream, &sh.epoll, self.slot).is_err() {
            self.fail(sh, ErrorKind::Write, now);
        }
    }

    /// Reads what arrived, records every whole response in it, and sends
    /// what is due next.
    fn on_readable(&mut self, sh: &mut Shared<'_>) {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return;
            };
            let n = match stream.read(&mut sh.chunk) {
                Ok(0) => return self.fail(sh, ErrorKind::Closed, Instant::now()),
                Ok(n) => n,
                Err(e) if e.kind() == IoKind::WouldBlock => return,
                Err(e) if e.kind() == IoKind::Interrupted => continue,
                Err(_) => return self.fail(sh, ErrorKind::Read, Instant::now()),
            };
            // The arrival time of every response completed by these bytes.
            let now = Instant::now();
            self.input.extend_from_slice(&sh.chunk[..n]);
            let records = sh.window.records(now);
            if records {
                sh.rec.bytes_read += n as u64;
            }
            while let Some(&(counts_from, head)) = self.inflight.front() {
                match self.reader.decode(&mut self.input, head) {
                    Ok(None) => break,
                    Ok(Some(reply)) => {
                        // Interim responses (100 Continue) precede the real one.
                        if (100..200).contains(&reply.status) {
                            continue;
                        }
                        self.inflight.pop_front();
                        if let Some(think) = sh.config.think_time {
                            self.ready_at = Some(now + think);
                        }
                        if records {
                            sh.rec.record_latency(now - counts_from);
                            sh.rec.record_status(reply.status);
                        }
                        if !reply.keep_alive {
                            // Not an error: reconnect on the next turn.
                            self.close(sh);
                            self.arm(sh, now);
                            return;
                        }
                    }
                    Err(_) => return self.fail(sh, ErrorKind::Protocol, now),
                }
            }
            self.send_due(sh, now);
            if n < sh.chunk.len() {
                // Drained; level-triggered epoll reports anything later.
                return;
            }
        }
    }
}

/// Starts a nonblocking connect to `addr` and registers the socket under
/// `slot` for both directions: writability (or an error) reports that the
/// connect finished.
fn start_connect(addr: SocketAddr, ep: &OwnedFd, slot: usize) -> rustix::io::Result<TcpStream> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
    let fd = rustix::net::socket_with(family, SocketType::STREAM, flags, None)?;
    match rustix::net::connect(&fd, &addr) {
        Ok(()) | Err(Errno::INPROGRESS) => {}
        Err(e) => return Err(e),
    }
    rustix::net::sockopt::set_tcp_nodelay(&fd, true)?;
    let data = epoll::EventData::new_u64(slot as u64);
    epoll::add(
        ep,
        &fd,
        data,
        epoll::EventFlags::IN | epoll::EventFlags::OUT,
    )?;
    Ok(TcpStream::from(fd))
}
