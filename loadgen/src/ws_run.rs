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

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use cairn_proto::ws::{ClientHandshake, Config as WsCodecConfig, Connection, Event, Poll};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::{LocalExecutorBuilder, Placement};

use crate::error::RunError;
use crate::http_run::{EXECUTOR_IO_MEMORY_BYTES, Pinning};
use crate::pacing::{Pacer, share, stagger};
use crate::report::{Report, RunInfo};
use crate::rng::SplitMix64;
use crate::stats::{ErrorKind, Recorder};
use crate::workload::Url;

/// The prefix that marks a timed message.
const TOKEN: &[u8] = b"cairn-loadgen ";

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Largest handshake response head accepted.
const HANDSHAKE_BYTES_MAX: usize = 16 * 1024;

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
    let digits = payload[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&payload[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// Runs the fan-out load and returns the merged report; latency is from the
/// intended send time of each message to its receipt by each member.
pub fn run_ws(config: WsConfig) -> Result<Report, RunError> {
    let addr = config
        .url
        .resolve()
        .map_err(|e| RunError::Executor(e.to_string()))?;
    let config = Arc::new(config);
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
            .name(&format!("loadgen-ws-{w}"))
            .io_memory(EXECUTOR_IO_MEMORY_BYTES)
            .spawn(move || async move {
                let total = config.rooms * config.members;
                let mine = share(total, config.workers, w);
                let first: u64 = (0..w).map(|i| share(total, config.workers, i)).sum();
                let tasks: Vec<_> = (0..mine)
                    .map(|m| {
                        glommio::spawn_local(member(Arc::clone(&config), addr, first + m, window))
                    })
                    .collect();
                let mut rec = Recorder::new();
                for t in tasks {
                    rec.merge(&t.await);
                }
                let _ = tx.send(rec);
            })
            .map_err(|e| RunError::Executor(e.to_string()))?;
    }
    drop(tx);
    let bound = window.end + config.grace;
    let mut total = Recorder::new();
    for _ in 0..config.workers {
        match rx.recv_timeout(bound.saturating_duration_since(Instant::now())) {
            Ok(rec) => total.merge(&rec),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(RunError::HardTimeout {
                    bound_ms: (bound - start).as_millis(),
                });
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(RunError::WorkerPanicked),
        }
    }
    let members = config.rooms * config.members;
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

/// What a member's socket read or its send timer produced.
enum Wake {
    Read(std::io::Result<usize>),
    Send,
}

/// One member: joins its room, then sends on schedule and times what it
/// receives until the end of the run. A failed member records the error
/// and stops (rooms are fixed; a rejoin would skew the fan-out).
async fn member(config: Arc<WsConfig>, addr: SocketAddr, index: u64, window: Window) -> Recorder {
    let mut rec = Recorder::new();
    let room = index % config.rooms;
    let record_error = |rec: &mut Recorder, kind| {
        if window.records(Instant::now()) || Instant::now() < window.measure {
            rec.record_error(kind);
        }
    };
    let left = window
        .end
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let Ok(mut stream) = TcpStream::connect_timeout(addr, left).await else {
        record_error(&mut rec, ErrorKind::Connect);
        return rec;
    };
    let _ = stream.set_nodelay(true);
    let mut rng = SplitMix64::new(0x5eed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let target = config.url.path.replace("{room}", &room.to_string());
    let Some((mut conn, leftover)) = handshake(
        &mut stream,
        &config.url.authority(),
        &target,
        &mut rng,
        window,
    )
    .await
    else {
        record_error(&mut rec, ErrorKind::Connect);
        return rec;
    };
    conn.feed(&leftover);
    if conn
        .send_text(&format!(r#"{{"type":"join","name":"m{index}"}}"#))
        .is_err()
    {
        return rec;
    }
    let total_rate = config.send_rate_per_sec * (config.rooms * config.members) as f64;
    let mut pacer = Pacer::new(
        stagger(
            window.start,
            total_rate,
            config.rooms * config.members,
            index,
        ),
        config.send_rate_per_sec,
    );
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    loop {
        if !drain_events(&mut conn, window, &mut rec) {
            return rec;
        }
        if !conn.output().is_empty() {
            let n = conn.output().len();
            let _ = stream
                .set_write_timeout(Some(window.end.saturating_duration_since(Instant::now())));
            if stream.write_all(conn.output()).await.is_err() {
                if Instant::now() < window.end {
                    record_error(&mut rec, ErrorKind::Write);
                }
                return rec;
            }
            conn.consume_output(n);
        }
        let now = Instant::now();
        if now >= window.end {
            return rec;
        }
        let due = pacer.peek().min(window.end);
        // glommio reads are readiness-based, so dropping a pending read when
        // the timer wins loses no bytes.
        let wake =
            futures_lite::future::or(async { Wake::Read(stream.read(&mut chunk).await) }, async {
                glommio::timer::sleep(due.saturating_duration_since(now)).await;
                Wake::Send
            })
            .await;
        match wake {
            Wake::Send => {
                if Instant::now() >= window.end {
                    return rec;
                }
                let stamp = (pacer.take() - window.start).as_nanos();
                let text =
                    format!(r#"{{"type":"message","text":"cairn-loadgen {stamp} {index}"}}"#);
                if conn.send_text(&text).is_err() {
                    return rec;
                }
            }
            Wake::Read(Ok(0)) => {
                record_error(&mut rec, ErrorKind::Closed);
                return rec;
            }
            Wake::Read(Ok(n)) => {
                if window.records(Instant::now()) {
                    rec.bytes_read += n as u64;
                }
                conn.feed(&chunk[..n]);
            }
            Wake::Read(Err(_)) => {
                record_error(&mut rec, ErrorKind::Read);
                return rec;
            }
        }
    }
}

/// Handles every complete event; false when the connection is finished.
fn drain_events(conn: &mut Connection, window: Window, rec: &mut Recorder) -> bool {
    loop {
        match conn.next_event() {
            Ok(Poll::NeedData) => return true,
            Ok(Poll::Event(Event::Text(payload) | Event::Binary(payload))) => {
                let now = Instant::now();
                if !window.records(now) {
                    continue;
                }
                match parse_stamp(&payload) {
                    Some(ns) => rec.record_latency(
                        now.saturating_duration_since(window.start + Duration::from_nanos(ns)),
                    ),
                    None => rec.requests += 1,
                }
            }
            Ok(Poll::Event(Event::Close(_))) => {
                if window.records(Instant::now()) {
                    rec.record_error(ErrorKind::Closed);
                }
                return false;
            }
            Ok(Poll::Event(_)) => {}
            Err(_) => {
                rec.record_error(ErrorKind::Protocol);
                return false;
            }
        }
    }
}

/// Sends the upgrade request and checks the answer; returns the connection
/// and any bytes that followed the response head.
async fn handshake(
    stream: &mut TcpStream,
    host: &str,
    target: &str,
    rng: &mut SplitMix64,
    window: Window,
) -> Option<(Connection, Vec<u8>)> {
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    nonce[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    let hs = ClientHandshake::new(nonce);
    let mut out = Vec::new();
    hs.write_request(host, target, &mut out);
    let left = window.end.saturating_duration_since(Instant::now());
    stream
        .set_write_timeout(Some(left.max(Duration::from_millis(1))))
        .ok()?;
    stream
        .set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .ok()?;
    stream.write_all(&out).await.ok()?;
    let mut input = BytesMut::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
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
            let _ = stream.set_read_timeout(None);
            let conn = Connection::client(WsCodecConfig::default(), rng.next_u64());
            return Some((conn, input[len..].to_vec()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(payload: &str, expected: Option<u64>) {
        assert_eq!(parse_stamp(payload.as_bytes()), expected, "{payload}");
    }

    #[test]
    fn stamps_are_found_anywhere_in_a_payload() {
        check("cairn-loadgen 12345 7", Some(12345));
        check("{\"from\":3,\"text\":\"cairn-loadgen 99 3\"}", Some(99));
        check("cairn-loadgen x", None);
        check("hello", None);
        check("", None);
    }
}
