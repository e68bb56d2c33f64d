//! Hostile WebSocket clients against a real `cairn`, on the built-in `echo`
//! class: an unmasked frame, invalid UTF-8, a frame declaring more than the
//! message limit, reserved bits, a fragmented or oversized control frame, a
//! flood of pings, and a consumer that never reads. Each is answered as
//! RFC 6455 says (close 1002, 1007, 1009, or 1008 for the slow consumer),
//! and a well-behaved socket on the same server keeps its echo working
//! throughout.
//!
//! Needs the engine's WebSocket support (the `echo` class and the `--ws-*`
//! options); a build without it makes this test say so and pass.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use cairn_tests::{Server, rss_bytes, temp_dir};

/// A raw WebSocket client: frames built by hand, so it can send what no
/// library would.
struct Ws {
    s: TcpStream,
    buf: Vec<u8>,
}

/// Builds one client frame. `mask: None` sends it unmasked (a protocol error).
fn frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![first];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(m | n as u8),
        n if n < 65536 => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

const MASK: Option<[u8; 4]> = Some([0x12, 0x34, 0x56, 0x78]);
const TEXT: u8 = 0x81;
const BINARY: u8 = 0x82;
const PING: u8 = 0x89;

/// What the server sent: a data or control frame, or the end of the stream.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Frame(u8, Vec<u8>),
    Closed,
}

impl Ws {
    /// Opens `/echo/{name}`; `None` if the server has no WebSocket echo.
    fn connect(addr: SocketAddr, name: &str) -> Option<Ws> {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        s.set_nodelay(true).expect("nodelay");
        write!(
            s,
            "GET /echo/{name} HTTP/1.1\r\nHost: c\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .expect("handshake");
        let mut buf = Vec::new();
        let end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).expect("handshake response");
            assert!(n > 0, "closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        if !head.starts_with("HTTP/1.1 101") {
            assert!(
                head.contains(" 404 "),
                "unexpected handshake answer: {head}"
            );
            return None;
        }
        buf.drain(..end);
        Some(Ws { s, buf })
    }

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.s.write_all(bytes)
    }

    /// The next frame (server frames are unmasked), or `Closed`.
    fn next(&mut self) -> Got {
        loop {
            if let Some((op, payload, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                return Got::Frame(op, payload);
            }
            let mut chunk = [0u8; 65536];
            match self.s.read(&mut chunk) {
                Ok(0) => return Got::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("the server neither answered nor closed within the read timeout")
                }
                // A reset: the server dropped the connection.
                Err(_) => return Got::Closed,
            }
        }
    }

    /// Reads until a close frame and returns its code (skipping data and pongs).
    fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.next() {
                Got::Frame(0x88, p) if p.len() >= 2 => {
                    return Some(u16::from_be_bytes([p[0], p[1]]));
                }
                Got::Frame(0x88, _) | Got::Closed => return None,
                Got::Frame(..) => {}
            }
        }
    }
}

fn parse(b: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if b.len() < 2 {
        return None;
    }
    let op = b[0] & 0x0f;
    let (len, mut at) = match b[1] & 0x7f {
        126 => (u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize, 4),
        127 => (
            u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    assert_eq!(b[1] & 0x80, 0, "server frames are never masked");
    if b.len() < at + len {
        return None;
    }
    let payload = b[at..at + len].to_vec();
    at += len;
    Some((op | (b[0] & 0x80), payload, at))
}

/// The well-behaved socket: one echo round trip, within a generous bound.
fn echo_ok(good: &mut Ws, what: &str) {
    let t = Instant::now();
    good.send(&frame(TEXT, what.as_bytes(), MASK))
        .expect("good socket writes");
    assert_eq!(
        good.next(),
        Got::Frame(TEXT, what.as_bytes().to_vec()),
        "good socket after {what}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "good socket stalled after {what}"
    );
}

#[test]
fn hostile_websocket_clients_are_closed_as_rfc_6455_says_and_others_carry_on() {
    let dir = temp_dir("ws-hostile");
    let args = [
        "--ws-message-bytes-max",
        "65536",
        "--ws-send-buffer-bytes-max",
        "1048576",
    ];
    let s = match Server::start_in_with(&dir, 2, &args) {
        Ok(s) => s,
        Err(e) if e.contains("ws-message-bytes-max") => {
            eprintln!(
                "SKIPPED: this cairn has no WebSocket options ({})",
                e.trim()
            );
            return;
        }
        Err(e) => panic!("cairn did not start: {e}"),
    };
    let Some(mut good) = Ws::connect(s.addr, "good") else {
        eprintln!("SKIPPED: this cairn has no WebSocket echo class");
        return;
    };
    echo_ok(&mut good, "start");

    // Protocol errors: each gets a close frame with its code.
    let cases: [(&str, Vec<u8>, u16); 6] = [
        ("unmasked frame", frame(TEXT, b"hello", None), 1002),
        (
            "invalid UTF-8",
            frame(TEXT, &[0x68, 0xff, 0xfe, 0x69], MASK),
            1007,
        ),
        (
            "reserved bit without extension",
            frame(TEXT | 0x40, b"x", MASK),
            1002,
        ),
        ("fragmented ping", frame(0x09, b"p", MASK), 1002),
        ("ping over 125 bytes", frame(PING, &[b'p'; 126], MASK), 1002),
        ("unknown opcode", frame(0x83, b"x", MASK), 1002),
    ];
    for (i, (what, bytes, code)) in cases.iter().enumerate() {
        let mut ws = Ws::connect(s.addr, &format!("bad{i}")).expect("echo");
        ws.send(bytes).expect("send");
        assert_eq!(ws.close_code(), Some(*code), "{what}");
        assert_eq!(
            ws.next(),
            Got::Closed,
            "{what}: the server closes after its close frame"
        );
        echo_ok(&mut good, what);
    }

    // A frame declaring 1 MiB, over the 64 KiB limit: 1009 before the payload arrives.
    let mut ws = Ws::connect(s.addr, "big").expect("echo");
    let mut head = vec![BINARY, 0x80 | 127];
    head.extend_from_slice(&(1u64 << 20).to_be_bytes());
    head.extend_from_slice(&[1, 2, 3, 4]);
    ws.send(&head).expect("send header");
    assert_eq!(ws.close_code(), Some(1009), "oversized frame");
    echo_ok(&mut good, "oversized frame");

    // A message over the limit in fragments, each small: 1009 too.
    let mut ws = Ws::connect(s.addr, "frag").expect("echo");
    let piece = vec![b'f'; 16384];
    for i in 0..8 {
        let first = if i == 0 { 0x02 } else { 0x00 };
        if ws.send(&frame(first, &piece, MASK)).is_err() {
            break;
        }
    }
    assert_eq!(ws.close_code(), Some(1009), "oversized fragmented message");
    echo_ok(&mut good, "oversized fragmented message");

    // A ping flood that never reads its pongs: others are not slowed, memory is bounded.
    let rss0 = rss_bytes(s.pid()).unwrap_or(0);
    let mut flood = Ws::connect(s.addr, "flood").expect("echo");
    flood
        .s
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let ping = frame(PING, &[b'p'; 125], MASK);
    let burst: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 1000)
        .collect();
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(5) && sent < 50_000 {
        if flood.send(&burst).is_err() {
            break;
        }
        sent += 1000;
        if sent % 10_000 == 0 {
            echo_ok(&mut good, "ping flood");
        }
    }
    echo_ok(&mut good, "ping flood");
    let rss1 = rss_bytes(s.pid()).unwrap_or(0);
    assert!(
        rss1.saturating_sub(rss0) < 64 << 20,
        "a ping flood grew the server by {} bytes",
        rss1.saturating_sub(rss0)
    );
    drop(flood);

    // A consumer that sends and never reads: closed 1008 once its queue passes the limit.
    let mut hog = Ws::connect(s.addr, "hog").expect("echo");
    hog.s
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let msg = frame(BINARY, &vec![b'h'; 60_000], MASK);
    for _ in 0..400 {
        if hog.send(&msg).is_err() {
            break;
        }
    }
    echo_ok(&mut good, "never-reading consumer");
    // Its 1008 close frame queues behind what it never read, so the server may
    // have to drop the connection without it: either ending is right.
    let code = hog.close_code();
    assert!(
        matches!(code, Some(1008) | None),
        "never-reading consumer: close {code:?}"
    );
    if code.is_some() {
        // It never answers the close: the server drops it after the grace.
        assert_eq!(
            hog.next(),
            Got::Closed,
            "never-reading consumer: dropped after its close frame"
        );
    }
    drop(hog);
    // Per shard, from as many metrics requests as it takes to hear from every
    // shard (a server may report only the shard that accepted the request).
    let mut per_shard = std::collections::HashMap::new();
    for _ in 0..50 {
        let m = s.send("GET", "/_cairn/metrics", b"").text();
        for l in m
            .lines()
            .filter(|l| l.starts_with("cairn_ws_slow_consumer_closes_total"))
        {
            let shard = l.split('"').nth(1).unwrap_or("?").to_string();
            let v: u64 = l
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            per_shard.insert(shard, v);
        }
    }
    let closes: u64 = per_shard.values().sum();
    assert!(
        closes >= 1,
        "the slow-consumer close is counted: {per_shard:?}"
    );
    eprintln!(
        "ws_hostile: ping flood of {sent} pings; server RSS {:.1} -> {:.1} MiB",
        rss0 as f64 / (1 << 20) as f64,
        rss1 as f64 / (1 << 20) as f64
    );
    echo_ok(&mut good, "end");
}
