//! The WebSocket fan-out load: R rooms of M members, each member a
//! connection that sends timestamped text messages at a fixed rate and
//! measures, for every broadcast it receives, the time from the message's
//! intended send time to its arrival.
//!
//! Protocol: Cairn's `room` class (`docs/HTTP-API.md`). After the handshake a
//! member sends `{"type":"join","name":"m<member>"}`, then each message as
//! `{"type":"message","text":"cairn-loadgen <ns> <member>"}`, where `<ns>` is
//! the intended send time in nanoseconds after the run's start. Every worker
//! thread shares that start instant, so any member can time any other's
//! message. The token is found anywhere in a received payload, so a server
//! that wraps broadcasts (as `room` does) or echoes the JSON as it is
//! measures all the same; payloads without it (welcome, join, ack) are
//! counted as received but not timed.
//!
//! **Why epoll and not glommio here.** A fan-out server writes to every
//! member for every message, so the receiving side takes hundreds of
//! thousands of small segments a second. With glommio each armed io_uring
//! poll completes by task work on the load generator's thread: on loopback
//! the *server's* `send` pays that wake-up (an inter-processor interrupt on
//! a VM), so the load generator inflated the server's cost per message and
//! its own receive path saturated first. Here one thread per worker runs a
//! level-triggered epoll loop over nonblocking sockets: one `read` per ready
//! socket per turn, every frame in those bytes decoded in place (no
//! allocation per frame), and one clock reading per `read`, which is the
//! arrival time of every message in it. With `--spin` the loop polls
//! without sleeping, so a server's `send` never has a sleeping thread to
//! wake: use it when the load generator has a core to itself.
//!
//! **Invariants.**
//! - A worker's members, buffers and recorder never leave its thread.
//! - Sends are open loop: message `i` of a member is due at its pacer's
//!   time and carries that time, so a stalled server (or a late load
//!   generator) shows up as latency, never as a lower send rate.
//! - Every wait ends by the next due send or the end of the run, and every
//!   blocking step of the set-up has a deadline at the end of the run.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{ErrorKind as IoKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cairn_proto::ws::frame::{Decoded, Opcode, decode_header, encode_frame};
use cairn_proto::ws::{ClientHandshake, Role};
use rustix::event::{Timespec, epoll};
use rustix::io::Errno;

use crate::error::RunError;
use crate::http_run::Pinning;
use crate::outbox::Outbox;
use crate::pacing::{Pacer, share, stagger};
use crate::report::{Report, RunInfo};
use crate::rng::SplitMix64;
use crate::stats::{ErrorKind, Recorder};
use crate::workload::Url;

/// The prefix that marks a timed message.
const TOKEN: &[u8] = b"cairn-loadgen ";

/// Bytes read from a socket at a time (one buffer per worker).
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Largest handshake response head accepted.
const HANDSHAKE_BYTES_MAX: usize = 16 * 1024;

/// Handshakes in flight at once while members connect (well under the
/// usual listen backlog, so no SYN is dropped and retried a second later).
const HANDSHAKE_BATCH: usize = 64;

/// Largest message a member accepts (fragments included); a larger one is a
/// protocol error, so a misbehaving server cannot grow our memory.
const MESSAGE_BYTES_MAX: usize = 1 << 20;

/// Readiness events taken from the kernel per wait at most.
const EVENTS_PER_WAIT: usize = 1024;

/// Everything one WebSocket run needs.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// The URL as given, for the report.
    pub url_text: String,
    /// The parsed target; `{room}` in its path is replaced by the room number.
    pub url: Url,
    /// Rooms.
    pub rooms: u64,
    /// Members (connections) per room.
    pub members: u64,
    /// Messages each member sends per second.
    pub send_rate_per_sec: f64,
    /// Worker threads.
    pub workers: u64,
    /// Where the workers run.
    pub pinning: Pinning,
    /// Poll without sleeping (the worker keeps its core busy; see the module docs).
    pub spin: bool,
    /// The measured window.
    pub duration: Duration,
    /// Run before measuring, not recorded.
    pub warmup: Duration,
    /// Extra time past the end before the run is declared hung.
    pub grace: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    measure: Instant,
    end: Instant,
}

impl Window {
    fn records(&self, t: Instant) -> bool {
        t >= self.measure && t < self.end
    }
}

/// The send time encoded in a payload, if it carries the token.
pub fn parse_stamp(payload: &[u8]) -> Option<u64> {
    let at = payload.windows(TOKEN.len()).position(|w| w == TOKEN)? + TOKEN.len();
    let digits = &payload[at..];
    let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 19 {
        return None;
    }
    Some(
        digits[..n]
            .iter()
            .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0')),
    )
}

/// Runs the fan-out load and returns the merged report; latency is from the
/// intended send time of each message to its receipt by each member.
pub fn run_ws(config: WsConfig) -> Result<Report, RunError> {
    let addr = config
        .url
        .resolve()
        .map_err(|e| RunError::Executor(e.to_string()))?;
    let config = Arc::new(config);
    // Members connect before the schedule starts; a short lead per member
    // keeps their first sends from being late by the set-up.
    let members = config.rooms * config.members;
    let lead = Duration::from_millis(50) + Duration::from_micros(100 * members / config.workers);
    let start = Instant::now() + lead;
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
            .name(format!("loadgen-ws-{w}"))
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
        match rx.recv_timeout(bound.saturating_duration_since(Instant::now())) {
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
        mode: "ws",
        url: config.url_text.clone(),
        connections: members,
        workers: config.workers,
        pipeline: 1,
        rate_per_sec: Some(config.send_rate_per_sec * members as f64),
        duration: config.duration,
        warmup: config.warmup,
    };
    Ok(Report::new(&info, &total))
}

/// Pins the calling thread to `cpu`, if one is given.
fn pin(cpu: Option<usize>) -> Result<(), RunError> {
    let Some(cpu) = cpu else { return Ok(()) };
    if cpu >= rustix::thread::CpuSet::MAX_CPU {
        return Err(RunError::Executor(format!("CPU {cpu} does not exist")));
    }
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set)
        .map_err(|e| RunError::Executor(format!("cannot pin a worker to CPU {cpu}: {e}")))
}

/// One member's connection.
struct Member {
    /// Global member number (its name and its place in the stagger).
    index: u64,
    /// Place in the worker's members; also its epoll token.
    slot: usize,
    /// `None` once the member failed or the server closed it.
    stream: Option<TcpStream>,
    pacer: Pacer,
    rng: SplitMix64,
    /// Bytes received and not yet decoded (a partial frame at most, between reads).
    input: Vec<u8>,
    /// A fragmented message being reassembled.
    fragments: Vec<u8>,
    /// Bytes to send not yet written.
    out: Outbox,
}

/// What one worker shares between its members.
struct Shared {
    window: Window,
    epoll: OwnedFd,
    chunk: Vec<u8>,
    /// Due sends by member slot; one entry per member at a time.
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    rec: Recorder,
    /// Scratch for a message's text.
    text: String,
}

/// One worker: connects its members, then runs an epoll loop over them
/// until the end of the run.
fn worker(
    config: &WsConfig,
    addr: SocketAddr,
    w: u64,
    window: Window,
) -> Result<Recorder, RunError> {
    let total = config.rooms * config.members;
    let mine = share(total, config.workers, w);
    let first: u64 = (0..w).map(|i| share(total, config.workers, i)).sum();
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)
        .map_err(|e| RunError::Executor(format!("epoll_create1: {e}")))?;
    let mut sh = Shared {
        window,
        epoll,
        chunk: vec![0u8; READ_CHUNK_BYTES],
        timers: BinaryHeap::with_capacity(mine as usize + 1),
        rec: Recorder::new(),
        text: String::with_capacity(128),
    };
    let total_rate = config.send_rate_per_sec * total as f64;
    let authority = config.url.authority();
    let mut members: Vec<Member> = Vec::with_capacity(mine as usize);
    // Handshakes go out in batches: every request of a batch is written
    // before any answer is read, so the server works on a batch at once
    // instead of one round trip per member.
    let mut pending: Vec<Option<(TcpStream, ClientHandshake)>> = Vec::new();
    for batch_start in (0..mine).step_by(HANDSHAKE_BATCH) {
        let batch_end = (batch_start + HANDSHAKE_BATCH as u64).min(mine);
        pending.clear();
        for m in batch_start..batch_end {
            let index = first + m;
            let mut rng = SplitMix64::stream(0x5eed, index);
            let target = config
                .url
                .path
                .replace("{room}", &(index % config.rooms).to_string());
            pending.push(start_handshake(addr, &authority, &target, &mut rng, window));
            let pacer = Pacer::new(
                stagger(window.start, total_rate, total, index),
                config.send_rate_per_sec,
            );
            members.push(Member {
                index,
                slot: members.len(),
                stream: None,
                pacer,
                rng: SplitMix64::new(rng.next_u64()),
                input: Vec::with_capacity(4096),
                fragments: Vec::new(),
                out: Outbox::with_capacity(256),
            });
        }
        for (m, started) in (batch_start..batch_end).zip(pending.drain(..)) {
            let member = &mut members[m as usize];
            let Some((stream, leftover)) = started.and_then(|(s, hs)| finish_handshake(s, &hs))
            else {
                sh.rec.record_error(ErrorKind::Connect);
                continue;
            };
            let data = epoll::EventData::new_u64(member.slot as u64);
            if epoll::add(&sh.epoll, &stream, data, epoll::EventFlags::IN).is_err() {
                sh.rec.record_error(ErrorKind::Connect);
                continue;
            }
            member.stream = Some(stream);
            member.input.extend_from_slice(&leftover);
            let join = format!(r#"{{"type":"join","name":"m{}"}}"#, member.index);
            member.queue_text(&join);
            member.flush(&mut sh, Instant::now());
            sh.timers.push(Reverse((member.pacer.peek(), member.slot)));
        }
    }
    let idle = epoll::Event {
        flags: epoll::EventFlags::empty(),
        data: epoll::EventData::new_u64(0),
    };
    let mut events = vec![idle; EVENTS_PER_WAIT];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        let now = Instant::now();
        if now >= window.end {
            break;
        }
        while let Some(&Reverse((at, slot))) = sh.timers.peek() {
            if at > now {
                break;
            }
            sh.timers.pop();
            members[slot].send_due(&mut sh, now);
        }
        let timeout = if config.spin {
            zero
        } else {
            let until = sh
                .timers
                .peek()
                .map_or(window.end, |&Reverse((at, _))| at.min(window.end));
            let wait = until.saturating_duration_since(Instant::now());
            Timespec {
                tv_sec: wait.as_secs() as i64,
                tv_nsec: i64::from(wait.subsec_nanos()),
            }
        };
        let n = match epoll::wait(&sh.epoll, &mut events[..], Some(&timeout)) {
            Ok(n) => n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(RunError::Executor(format!("epoll_pwait2: {e}"))),
        };
        for ev in &events[..n] {
            let (flags, data) = (ev.flags, ev.data);
            let member = &mut members[data.u64() as usize];
            if member.stream.is_none() {
                continue;
            }
            if flags.contains(epoll::EventFlags::OUT) {
                member.flush(&mut sh, Instant::now());
            }
            if flags
                .intersects(epoll::EventFlags::IN | epoll::EventFlags::ERR | epoll::EventFlags::HUP)
            {
                member.on_readable(&mut sh);
            }
        }
    }
    Ok(sh.rec)
}

impl Member {
    /// Appends a masked text frame to the output.
    fn queue_text(&mut self, text: &str) {
        let mask = (self.rng.next_u64() as u32).to_le_bytes();
        encode_frame(
            &mut self.out.buf,
            true,
            Opcode::Text,
            Some(mask),
            text.as_bytes(),
        );
    }

    /// Sends every message that has fallen due and re-arms the timer.
    fn send_due(&mut self, sh: &mut Shared, now: Instant) {
        if self.stream.is_none() {
            return;
        }
        while self.pacer.peek() <= now && self.pacer.peek() < sh.window.end {
            let stamp = (self.pacer.take() - sh.window.start).as_nanos();
            sh.text.clear();
            use std::fmt::Write as _;
            let _ = write!(
                sh.text,
                r#"{{"type":"message","text":"cairn-loadgen {stamp} {}"}}"#,
                self.index
            );
            let text = std::mem::take(&mut sh.text);
            self.queue_text(&text);
            sh.text = text;
        }
        self.flush(sh, now);
        if self.stream.is_some() && self.pacer.peek() < sh.window.end {
            sh.timers.push(Reverse((self.pacer.peek(), self.slot)));
        }
    }

    /// Counts a failure (inside the window) and drops the connection; the
    /// member stays out (rooms are fixed; a rejoin would skew the fan-out).
    fn fail(&mut self, sh: &mut Shared, kind: ErrorKind, now: Instant) {
        if now < sh.window.end {
            sh.rec.record_error(kind);
        }
        if let Some(stream) = self.stream.take() {
            let _ = epoll::delete(&sh.epoll, &stream);
        }
    }

    /// Writes what is pending; a failure replaces the connection.
    fn flush(&mut self, sh: &mut Shared, now: Instant) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        if self.out.flush(stream, &sh.epoll, self.slot).is_err() {
            self.fail(sh, ErrorKind::Write, now);
        }
    }

    /// Reads once (level-triggered epoll reports the rest on the next turn)
    /// and handles every whole frame received.
    fn on_readable(&mut self, sh: &mut Shared) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let n = match stream.read(&mut sh.chunk) {
            Ok(0) => return self.fail(sh, ErrorKind::Closed, Instant::now()),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), IoKind::WouldBlock | IoKind::Interrupted) => return,
            Err(_) => return self.fail(sh, ErrorKind::Read, Instant::now()),
        };
        // The arrival time of every message completed by these bytes.
        let now = Instant::now();
        let records = sh.window.records(now);
        if records {
            sh.rec.bytes_read += n as u64;
        }
        self.input.extend_from_slice(&sh.chunk[..n]);
        if let Err(kind) = self.decode(sh, now, records) {
            self.fail(sh, kind, now);
        }
    }

    /// Handles every whole frame in `input` and keeps the partial tail.
    fn decode(&mut self, sh: &mut Shared, now: Instant, records: bool) -> Result<(), ErrorKind> {
        let mut pos = 0;
        let result = loop {
            let buf = &self.input[pos..];
            let h = match decode_header(buf, Role::Client) {
                Ok(Decoded::Complete(h)) => h,
                Ok(Decoded::Partial) => break Ok(()),
                Err(_) => break Err(ErrorKind::Protocol),
            };
            if h.payload_len > MESSAGE_BYTES_MAX as u64 {
                break Err(ErrorKind::Protocol);
            }
            let len = h.header_len + h.payload_len as usize;
            if buf.len() < len {
                break Ok(());
            }
            let payload = &buf[h.header_len..len];
            pos += len;
            match h.opcode {
                Opcode::Text | Opcode::Binary | Opcode::Continuation => {
                    let whole = if h.opcode == Opcode::Continuation || !h.fin {
                        if self.fragments.len() + payload.len() > MESSAGE_BYTES_MAX {
                            break Err(ErrorKind::Protocol);
                        }
                        self.fragments.extend_from_slice(payload);
                        if !h.fin {
                            continue;
                        }
                        &self.fragments[..]
                    } else {
                        payload
                    };
                    if records {
                        match parse_stamp(whole) {
                            Some(ns) => sh.rec.record_latency(now.saturating_duration_since(
                                sh.window.start + Duration::from_nanos(ns),
                            )),
                            None => sh.rec.requests += 1,
                        }
                    }
                    if h.fin {
                        self.fragments.clear();
                    }
                }
                Opcode::Ping => {
                    let pong = payload.to_vec();
                    let mask = (self.rng.next_u64() as u32).to_le_bytes();
                    encode_frame(&mut self.out.buf, true, Opcode::Pong, Some(mask), &pong);
                }
                Opcode::Pong => {}
                Opcode::Close => break Err(ErrorKind::Closed),
            }
        };
        self.input.drain(..pos);
        if !self.out.buf.is_empty() {
            self.flush(sh, now);
        }
        result
    }
}

/// Connects and sends the upgrade request; [`finish_handshake`] reads the answer.
fn start_handshake(
    addr: SocketAddr,
    host: &str,
    target: &str,
    rng: &mut SplitMix64,
    window: Window,
) -> Option<(TcpStream, ClientHandshake)> {
    let left = window
        .end
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let mut stream = TcpStream::connect_timeout(&addr, left).ok()?;
    stream.set_nodelay(true).ok()?;
    stream.set_write_timeout(Some(left)).ok()?;
    stream.set_read_timeout(Some(left)).ok()?;
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    nonce[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    let hs = ClientHandshake::new(nonce);
    let mut out = Vec::new();
    hs.write_request(host, target, &mut out);
    stream.write_all(&out).ok()?;
    Some((stream, hs))
}

/// Reads and checks the upgrade answer; returns the nonblocking stream and
/// any bytes that followed the response head.
fn finish_handshake(mut stream: TcpStream, hs: &ClientHandshake) -> Option<(TcpStream, Vec<u8>)> {
    let mut input = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 || input.len() > HANDSHAKE_BYTES_MAX {
            return None;
        }
        input.extend_from_slice(&chunk[..n]);
        let mut storage = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut storage);
        if let httparse::Status::Complete(len) = response.parse(&input).ok()? {
            let headers: Vec<(&str, &[u8])> =
                response.headers.iter().map(|h| (h.name, h.value)).collect();
            hs.validate_response(response.code?, &headers).ok()?;
            stream.set_nonblocking(true).ok()?;
            return Some((stream, input[len..].to_vec()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(payload: &str, expected: Option<u64>) {
        assert_eq!(parse_stamp(payload.as_bytes()), expected, "{payload}");
    }

    fn member() -> Member {
        Member {
            index: 0,
            slot: 0,
            stream: None,
            pacer: Pacer::new(Instant::now(), 1.0),
            rng: SplitMix64::new(1),
            input: Vec::new(),
            fragments: Vec::new(),
            out: Outbox::default(),
        }
    }

    fn shared() -> Shared {
        let now = Instant::now();
        Shared {
            window: Window {
                start: now - Duration::from_secs(1),
                measure: now - Duration::from_secs(1),
                end: now + Duration::from_secs(60),
            },
            epoll: epoll::create(epoll::CreateFlags::CLOEXEC).unwrap(),
            chunk: Vec::new(),
            timers: BinaryHeap::new(),
            rec: Recorder::new(),
            text: String::new(),
        }
    }

    fn server_frame(out: &mut Vec<u8>, fin: bool, op: Opcode, payload: &[u8]) {
        encode_frame(out, fin, op, None, payload);
    }

    #[test]
    fn frames_split_across_reads_and_fragmented_messages_are_timed_once_each() {
        let (mut m, mut sh) = (member(), shared());
        let mut wire = Vec::new();
        server_frame(
            &mut wire,
            true,
            Opcode::Text,
            b"{\"text\":\"cairn-loadgen 5 1\"}",
        );
        server_frame(&mut wire, false, Opcode::Text, b"cairn-load");
        server_frame(&mut wire, true, Opcode::Ping, b"hb");
        server_frame(&mut wire, true, Opcode::Continuation, b"gen 7 2");
        server_frame(&mut wire, true, Opcode::Text, b"{\"type\":\"ack\"}");
        // Every split point: the bytes before it arrive in one read, the rest in another.
        for split in 0..=wire.len() {
            let (mut m2, mut sh2) = (member(), shared());
            for part in [&wire[..split], &wire[split..]] {
                m2.input.extend_from_slice(part);
                m2.decode(&mut sh2, Instant::now(), true).unwrap();
            }
            assert_eq!(sh2.rec.latency_ns.len(), 2, "split at {split}");
            // Every whole message counts as received; the ack is not timed.
            assert_eq!(sh2.rec.requests, 3, "split at {split}");
            assert!(m2.input.is_empty() && m2.fragments.is_empty());
        }
        m.input.extend_from_slice(&wire);
        m.decode(&mut sh, Instant::now(), true).unwrap();
        // The ping is answered with a masked pong carrying its payload.
        assert_eq!(m.out.buf[0], 0x80 | Opcode::Pong.as_u8());
        assert_eq!(m.out.buf[1], 0x80 | 2);
    }

    #[test]
    fn a_close_frame_ends_the_member() {
        let (mut m, mut sh) = (member(), shared());
        server_frame(&mut m.input, true, Opcode::Close, &1000u16.to_be_bytes());
        assert_eq!(
            m.decode(&mut sh, Instant::now(), true),
            Err(ErrorKind::Closed)
        );
    }

    #[test]
    fn stamps_are_found_anywhere_in_a_payload() {
        check("cairn-loadgen 12345 7", Some(12345));
        check("{\"from\":3,\"text\":\"cairn-loadgen 99 3\"}", Some(99));
        check("cairn-loadgen x", None);
        check("cairn-loadgen 99999999999999999999 1", None);
        check("hello", None);
        check("", None);
    }
}
