//! WebSocket frame codec: `cairn-proto` beside tungstenite in the same run,
//! decoding and encoding 16 B, 1 KiB and 64 KiB binary frames.
//!
//! Groups (each with `Throughput::Bytes` of the payload):
//! - `ws_decode_message`: a server receiving masked client frames, whole
//!   message path (header, unmask, deliver): our `Connection::feed` +
//!   `next_event` against tungstenite's `WebSocket::read`.
//! - `ws_decode_header`: header parsing and validation alone (7-, 16- and
//!   64-bit length forms), `decode_header` against `FrameHeader::parse`;
//!   throughput in headers.
//! - `ws_encode_server` / `ws_encode_client`: one frame into a reused buffer,
//!   unmasked and masked.
//!
//! Run: `cargo bench -p cairn-bench --bench ws`. Results are quoted as ratios
//! in `docs/BENCHMARKS.md`.

use std::hint::black_box;
use std::io::{self, Read, Write};

use cairn_proto::ws::frame::{self, Decoded, Opcode, Role};
use cairn_proto::ws::{Config, Connection, Event, Poll};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};
use tungstenite::protocol::{Role as TRole, WebSocket};

const SIZES: [(usize, &str); 3] = [(16, "16B"), (1024, "1KiB"), (64 * 1024, "64KiB")];
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

/// An endless stream that replays one encoded frame back to back, filling
/// every read buffer completely so that tungstenite amortises each `read`
/// call over many frames (its best case); writes are discarded.
struct Replay {
    data: Vec<u8>,
    pos: usize,
}

impl Read for Replay {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            let n = (buf.len() - filled).min(self.data.len() - self.pos);
            buf[filled..filled + n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos = (self.pos + n) % self.data.len();
            filled += n;
        }
        Ok(filled)
    }
}

impl Write for Replay {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn decode_message(c: &mut Criterion) {
    let mut g = c.benchmark_group("ws_decode_message");
    for (len, name) in SIZES {
        let mut wire = Vec::new();
        frame::encode_frame(&mut wire, true, Opcode::Binary, Some(MASK), &payload(len));
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(BenchmarkId::new("cairn", name), |b| {
            let mut conn = Connection::server(Config::default());
            b.iter(|| {
                conn.feed(black_box(&wire));
                match conn.next_event() {
                    Ok(Poll::Event(Event::Binary(m))) => black_box(m),
                    other => panic!("unexpected {other:?}"),
                }
            });
        });
        g.bench_function(BenchmarkId::new("tungstenite", name), |b| {
            let stream = Replay {
                data: wire.clone(),
                pos: 0,
            };
            let mut ws = WebSocket::from_raw_socket(stream, TRole::Server, None);
            b.iter(|| black_box(ws.read().expect("replayed frame decodes")));
        });
    }
    g.finish();
}

fn decode_header(c: &mut Criterion) {
    let mut g = c.benchmark_group("ws_decode_header");
    for (len, name) in SIZES {
        // The payload length decides the header form: 7-bit, 16-bit or 64-bit.
        let mut wire = Vec::new();
        frame::encode_frame(&mut wire, true, Opcode::Binary, Some(MASK), &payload(len));
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("cairn", name), |b| {
            b.iter(
                || match frame::decode_header(black_box(&wire), Role::Server) {
                    Ok(Decoded::Complete(h)) => black_box(h.payload_len),
                    other => panic!("unexpected {other:?}"),
                },
            );
        });
        g.bench_function(BenchmarkId::new("tungstenite", name), |b| {
            b.iter(|| {
                let mut cursor = std::io::Cursor::new(black_box(&wire[..]));
                match FrameHeader::parse(&mut cursor) {
                    Ok(Some((_, len))) => black_box(len),
                    other => panic!("unexpected {other:?}"),
                }
            });
        });
    }
    g.finish();
}

fn encode(c: &mut Criterion, group: &str, mask: Option<[u8; 4]>) {
    let mut g = c.benchmark_group(group);
    for (len, name) in SIZES {
        let data = payload(len);
        let bytes = bytes::Bytes::from(data.clone());
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(BenchmarkId::new("cairn", name), |b| {
            let mut out = Vec::with_capacity(len + 14);
            b.iter(|| {
                out.clear();
                frame::encode_frame(&mut out, true, Opcode::Binary, mask, black_box(&data));
                black_box(out.len())
            });
        });
        g.bench_function(BenchmarkId::new("tungstenite", name), |b| {
            let mut out = Vec::with_capacity(len + 14);
            b.iter(|| {
                out.clear();
                let mut f =
                    Frame::message(black_box(bytes.clone()), OpCode::Data(Data::Binary), true);
                f.header_mut().mask = mask;
                f.format(&mut out).expect("writing to a Vec cannot fail");
                black_box(out.len())
            });
        });
    }
    g.finish();
}

fn encode_server(c: &mut Criterion) {
    encode(c, "ws_encode_server", None);
}

fn encode_client(c: &mut Criterion) {
    encode(c, "ws_encode_client", Some(MASK));
}

fn config() -> Criterion {
    // Short runs: the machine is shared, and ratios within one run are what we quote.
    Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
}

/// Runs every group. Written out rather than with `criterion_group!`, whose
/// generated `pub fn` trips the workspace's `missing_docs` lint.
fn benches() {
    let mut c = config().configure_from_args();
    decode_message(&mut c);
    decode_header(&mut c);
    encode_server(&mut c);
    encode_client(&mut c);
}

criterion_main!(benches);
