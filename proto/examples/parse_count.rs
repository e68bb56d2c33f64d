//! Request parsing cost against raw httparse, two ways that survive a noisy
//! shared machine (see `docs/BENCHMARKS.md`; build with
//! `cargo build --release -p cairn-proto --example parse_count`):
//!
//! - `parse_count <parser> <input> <n>`: a fixed loop over one parser, for
//!   counting instructions with `valgrind --tool=callgrind` (exact, whatever
//!   the load). Parser `none` (loop overhead), `httparse`, `head` or
//!   `decode`; input `browser` or `curl` (the bytes of `bench/benches/http.rs`).
//!   Subtract the `none` count and divide by `n` for instructions per request.
//! - `parse_count ratio <input> <rounds>`: wall time, interleaved. Each round
//!   times a short burst of each parser in turn, so load that comes and goes
//!   hits them alike; prints the median over rounds of each one's time
//!   divided by httparse's in the same round.

use std::hint::black_box;
use std::time::Instant;

use bytes::BytesMut;
use cairn_proto::http::{Limits, RequestDecoder, Status, parse_request_head};

/// A Firefox navigation request, as captured on the wire.
const BROWSER: &[u8] = b"GET /wp-content/uploads/2010/03/hello-kitty-darth-vader-pink.jpg HTTP/1.1\r\n\
Host: www.kittyhell.com\r\n\
User-Agent: Mozilla/5.0 (Macintosh; U; Intel Mac OS X 10.6; ja-JP-mac; rv:1.9.2.3) Gecko/20100401 Firefox/3.6.3 \
Pathtraq/0.9\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: ja,en-us;q=0.7,en;q=0.3\r\n\
Accept-Encoding: gzip,deflate\r\n\
Accept-Charset: Shift_JIS,utf-8;q=0.7,*;q=0.7\r\n\
Keep-Alive: 115\r\n\
Connection: keep-alive\r\n\
Cookie: wp_ozh_wsa_visits=2; wp_ozh_wsa_visit_lasttime=xxxxxxxxxx; \
__utma=xxxxxxxxx.xxxxxxxxxx.xxxxxxxxxx.xxxxxxxxxx.xxxxxxxxxx.x; \
__utmz=xxxxxxxxx.xxxxxxxxxx.x.x.utmccn=(referral)|utmcsr=reader.livedoor.com|utmcct=/reader/|utmcmd=referral\r\n\r\n";

/// What `curl http://127.0.0.1:8080/` sends.
const CURL: &[u8] =
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("ratio") {
        let input = if args.get(2).map(String::as_str) == Some("curl") {
            CURL
        } else {
            BROWSER
        };
        let rounds = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(2000);
        ratio(input, rounds);
        return;
    }
    let usage = "usage: parse_count <none|httparse|head|decode> <browser|curl> <iterations>";
    let (Some(parser), Some(input), Some(n)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let input = match input.as_str() {
        "browser" => BROWSER,
        "curl" => CURL,
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    let n: usize = n.parse().unwrap_or(0);
    let limits = Limits::default();
    // Every parser loop refills the same buffer so the only difference
    // between them is the parse itself.
    let mut buf = BytesMut::with_capacity(4 * input.len());
    let mut decoder = RequestDecoder::new(limits);
    for _ in 0..n {
        buf.extend_from_slice(input);
        match parser.as_str() {
            "none" => {
                black_box(&buf);
                buf.clear();
            }
            "httparse" => {
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut request = httparse::Request::new(&mut headers);
                let status = request.parse(black_box(&buf)).expect("valid request");
                black_box((status, request.method, request.path));
                buf.clear();
            }
            "head" => {
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let head = parse_request_head(black_box(&buf), &limits, &mut headers);
                assert!(matches!(head, Ok(Status::Complete(_))));
                black_box(head.ok());
                buf.clear();
            }
            "decode" => {
                let request = decoder.decode(black_box(&mut buf)).expect("valid request");
                black_box(request.expect("whole request"));
                decoder.response_sent(true).expect("response due");
            }
            _ => {
                eprintln!("{usage}");
                std::process::exit(2);
            }
        }
    }
}

/// Requests per timed burst: short enough that a burst rarely straddles a
/// change in load, long enough that the clock reads are noise.
const BURST: usize = 32;

/// Nanoseconds per request of `BURST` raw httparse parses.
fn burst_httparse(input: &[u8]) -> f64 {
    let start = Instant::now();
    for _ in 0..BURST {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        let status = request.parse(black_box(input)).expect("valid request");
        black_box((status, request.method, request.path));
    }
    start.elapsed().as_nanos() as f64 / BURST as f64
}

/// Nanoseconds per request of `BURST` borrowed head parses.
fn burst_head(input: &[u8], limits: &Limits) -> f64 {
    let start = Instant::now();
    for _ in 0..BURST {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let head = parse_request_head(black_box(input), limits, &mut headers);
        black_box(head.ok());
    }
    start.elapsed().as_nanos() as f64 / BURST as f64
}

/// Nanoseconds per request of `BURST` owning decodes from a buffer of
/// back-to-back requests (filled before the clock starts), each request
/// answered and dropped: a keep-alive connection's steady state.
fn burst_decode(input: &[u8], decoder: &mut RequestDecoder, buf: &mut BytesMut) -> f64 {
    for _ in 0..BURST {
        buf.extend_from_slice(input);
    }
    let start = Instant::now();
    for _ in 0..BURST {
        let request = decoder.decode(black_box(&mut *buf)).expect("valid request");
        decoder.response_sent(true).expect("response due");
        black_box(request);
    }
    start.elapsed().as_nanos() as f64 / BURST as f64
}

/// Prints the median per-round ratio of each parser to httparse.
fn ratio(input: &[u8], rounds: usize) {
    let limits = Limits::default();
    let mut decoder = RequestDecoder::new(limits);
    let mut buf = BytesMut::with_capacity(BURST * input.len());
    let (mut head, mut decode, mut base) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // Rotate the order so no parser always runs right after another.
        let mut t = [0.0; 3];
        for k in 0..3 {
            match (round + k) % 3 {
                0 => t[0] = burst_httparse(input),
                1 => t[1] = burst_head(input, &limits),
                _ => t[2] = burst_decode(input, &mut decoder, &mut buf),
            }
        }
        base.push(t[0]);
        head.push(t[1] / t[0]);
        decode.push(t[2] / t[0]);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "httparse {:.0} ns/request (median); parse_request_head {:.2}x; RequestDecoder::decode {:.2}x \
         (median of {rounds} interleaved rounds)",
        median(&mut base),
        median(&mut head),
        median(&mut decode)
    );
}
