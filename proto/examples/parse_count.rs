//! A fixed loop over one request parser, for counting instructions with
//! `valgrind --tool=callgrind` (exact and load-independent, unlike wall time).
//!
//! `cargo build --release -p cairn-proto --example parse_count`, then
//! `valgrind --tool=callgrind target/release/examples/parse_count <parser> <input> <n>`
//! with parser `none` (loop overhead), `httparse`, `head` or `decode`, and
//! input `browser` or `curl` (the bytes of `bench/benches/http.rs`).
//! Subtract the `none` count and divide by `n` for instructions per request.

use std::hint::black_box;

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
