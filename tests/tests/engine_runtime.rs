//! End-to-end tests of the runtime gaps closed after the first version:
//! metrics gathered from every shard, stub call cycles answered instead of
//! hanging, pipelined requests dispatched concurrently, and requests in
//! flight across shards answered at shutdown.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cairn_tests::{HttpResponse, Server, parse_response};

/// Sum of the samples of `name` whose labels contain `labels`.
fn sample_sum(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn metrics_cover_every_shard_and_count_requests_by_class_and_status() {
    let s = Server::start(4);
    const N: usize = 40;
    for i in 0..N {
        // Fresh connections land on any shard (SO_REUSEPORT).
        assert_eq!(
            s.send("POST", &format!("/counter/m{i}/increment"), b"")
                .status,
            200
        );
    }
    assert_eq!(s.send("GET", "/nope/x", b"").status, 404);
    let text = s.send("GET", "/_cairn/metrics", b"").text();
    for shard in 0..4 {
        let line = format!("cairn_requests_total{{shard=\"{shard}\"}} ");
        assert!(text.contains(&line), "no {line:?} in\n{text}");
    }
    // Every increment was handled by some shard's object, whichever accepted it.
    assert_eq!(
        sample_sum(&text, "cairn_requests_total", ""),
        N as f64,
        "{text}"
    );
    let by_class = r#"class="counter",status="200""#;
    assert_eq!(
        sample_sum(&text, "cairn_http_requests_total", by_class),
        N as f64
    );
    assert_eq!(
        sample_sum(&text, "cairn_http_request_duration_seconds_count", by_class),
        N as f64
    );
    let inf = format!(r#"{by_class},le="+Inf""#);
    assert_eq!(
        sample_sum(&text, "cairn_http_request_duration_seconds_bucket", &inf),
        N as f64
    );
    assert_eq!(
        sample_sum(
            &text,
            "cairn_http_requests_total",
            r#"class="_none",status="404""#
        ),
        1.0
    );
    assert!(
        sample_sum(&text, "cairn_commit_group_records_count", "") >= 1.0,
        "{text}"
    );
    assert!(
        sample_sum(&text, "cairn_fdatasync_seconds_count", "") >= 1.0,
        "{text}"
    );
}

fn json(r: &HttpResponse) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("not JSON: {}", r.text()))
}

#[test]
fn a_stub_call_cycle_is_answered_with_call_cycle_instead_of_hanging() {
    let s = Server::start(4);
    let r = s.send("POST", "/testhooks/self/cycle", b"");
    assert_eq!(r.status, 508, "{}", r.text());
    assert_eq!(json(&r)["error"]["code"], "call_cycle");
    // Through another object (likely on another shard) and back.
    let r = s.send("POST", "/testhooks/ping/cycle?to=pong", b"");
    assert_eq!(r.status, 508, "{}", r.text());
    assert_eq!(json(&r)["error"]["code"], "call_cycle");
    // The objects are free again afterwards.
    assert_eq!(s.send("POST", "/testhooks/ping/rmw", b"").status, 200);
    assert_eq!(s.send("POST", "/testhooks/pong/rmw", b"").status, 200);
}

#[test]
fn pipelined_requests_to_different_objects_run_concurrently_and_answer_in_order() {
    let s = Server::start(4);
    let mut c = TcpStream::connect(s.addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    // A slow request, then a write to another object, pipelined.
    c.write_all(
        b"GET /testhooks/slow/sleep?ms=3000 HTTP/1.1\r\nHost: c\r\n\r\n\
          POST /testhooks/quick/rmw HTTP/1.1\r\nHost: c\r\nContent-Length: 0\r\n\r\n",
    )
    .expect("write");
    // The write lands while the slow request is still outstanding: it was
    // dispatched without waiting for the response before it.
    let start = Instant::now();
    loop {
        let v = json(&s.send("GET", "/testhooks/quick/rmw", b""));
        if v["value"] == 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the second pipelined request waited for the first"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut buf = Vec::new();
    let mut got = Vec::new();
    while got.len() < 2 {
        if let Some((r, used)) = parse_response(&buf) {
            buf.drain(..used);
            got.push(r);
            continue;
        }
        let mut chunk = [0u8; 4096];
        let n = c.read(&mut chunk).expect("read");
        assert!(n > 0, "closed early");
        buf.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(got[0].text(), "{}", "the slow response comes first");
    assert_eq!(json(&got[1])["value"], 1);
}

#[test]
fn sigterm_answers_every_request_in_flight_including_forwarded_ones() {
    let s = Server::start(4);
    // Requests for objects on every shard, from connections on any shard: most
    // are forwarded. Each is in its handler when the signal arrives.
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let mut c = s.client();
            std::thread::spawn(move || {
                c.request("GET", &format!("/testhooks/s{i}/sleep?ms=1500"), b"")
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
    for t in threads {
        let r = t
            .join()
            .expect("client")
            .expect("an answer, not a dropped connection");
        assert!(
            r.status == 200 || r.status == 503,
            "{} {}",
            r.status,
            r.text()
        );
    }
}
