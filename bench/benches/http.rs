//! HTTP/1.1 request parsing: Cairn's borrowed head parser and its owning
//! `RequestDecoder`, each beside raw `httparse` on the same bytes in the same
//! run, for a typical browser request and a minimal curl request.
//! Results are quoted as ratios in `docs/BENCHMARKS.md`.

use std::hint::black_box;

use bytes::BytesMut;
use cairn_proto::http::{
    DateCache, Limits, RequestDecoder, ResponseWriter, Status, parse_request_head,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_main};

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

fn parse(c: &mut Criterion) {
    let limits = Limits::default();
    for (name, input) in [("browser", BROWSER), ("curl", CURL)] {
        let mut group = c.benchmark_group(format!("http_parse/{name}"));
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function("httparse (baseline)", |b| {
            b.iter(|| {
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut request = httparse::Request::new(&mut headers);
                let status = request.parse(black_box(input)).unwrap();
                black_box((status, request.method, request.path));
            });
        });
        group.bench_function("cairn parse_request_head", |b| {
            b.iter(|| {
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let head = parse_request_head(black_box(input), &limits, &mut headers).unwrap();
                assert!(matches!(head, Status::Complete(_)));
                black_box(head);
            });
        });
        group.bench_function("cairn RequestDecoder::decode", |b| {
            // A keep-alive connection in its steady state: one decoder and
            // one buffer holding requests back to back, as a server's read
            // buffer does. Each request is split off (a reference count),
            // answered and dropped, all inside the timing; refilling the
            // buffer (the socket read's copy) is outside it.
            const BACK_TO_BACK: usize = 32;
            let mut decoder = RequestDecoder::new(limits);
            let mut buf = BytesMut::with_capacity(BACK_TO_BACK * input.len());
            b.iter_custom(|iters| {
                let mut elapsed = std::time::Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(BACK_TO_BACK as u64);
                    for _ in 0..n {
                        buf.extend_from_slice(input);
                    }
                    let start = std::time::Instant::now();
                    for _ in 0..n {
                        let request = decoder.decode(black_box(&mut buf)).unwrap().unwrap();
                        decoder.response_sent(true).unwrap();
                        black_box(request);
                    }
                    elapsed += start.elapsed();
                    left -= n;
                }
                elapsed
            });
        });
        group.bench_function("cairn RequestDecoder::decode, cold", |b| {
            // Every iteration on a decoder and buffer made by the batch set-up
            // (thousands of them, so mostly out of cache), its first request
            // already decoded so that the split is from a shared buffer: what
            // this measures beyond `decode` is cache misses on that state.
            let setup = || {
                let mut decoder = RequestDecoder::new(limits);
                let mut buf = BytesMut::with_capacity(2 * input.len());
                buf.extend_from_slice(input);
                buf.extend_from_slice(input);
                let first = decoder.decode(&mut buf).unwrap().unwrap();
                decoder.response_sent(true).unwrap();
                (decoder, buf, first)
            };
            b.iter_batched_ref(
                setup,
                |(decoder, buf, _)| black_box(decoder.decode(buf).unwrap().unwrap()),
                BatchSize::SmallInput,
            );
        });
        group.finish();
    }
}

fn write(c: &mut Criterion) {
    let date = DateCache::new(1_700_000_000);
    let body = br#"{"value":42}"#;
    let mut group = c.benchmark_group("http_write/small_json");
    let expected = {
        let mut out = Vec::new();
        let mut w = ResponseWriter::new(&mut out, 200, &date, false);
        w.header("Content-Type", b"application/json").unwrap();
        w.body(body);
        out.len()
    };
    group.throughput(Throughput::Bytes(expected as u64));
    group.bench_function("write! into Vec (baseline)", |b| {
        use std::io::Write;
        let mut out = Vec::with_capacity(512);
        b.iter(|| {
            out.clear();
            let status = black_box(200u16);
            let reason = if status == 200 { "OK" } else { "" };
            write!(
                out,
                "HTTP/1.1 {} {}\r\nDate: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                status,
                reason,
                std::str::from_utf8(date.as_bytes()).unwrap(),
                body.len()
            )
            .unwrap();
            out.extend_from_slice(black_box(body));
            black_box(&out);
        });
    });
    group.bench_function("cairn ResponseWriter", |b| {
        let mut out = Vec::with_capacity(512);
        b.iter(|| {
            out.clear();
            let mut w = ResponseWriter::new(&mut out, black_box(200), &date, false);
            w.header("Content-Type", b"application/json").unwrap();
            w.body(black_box(body));
            black_box(&out);
        });
    });
    group.finish();
}

/// The generated group function lives in a private module because
/// `criterion_group!` emits an undocumented `pub fn`.
mod groups {
    use super::{parse, write};
    criterion::criterion_group!(benches, parse, write);
}
criterion_main!(groups::benches);
