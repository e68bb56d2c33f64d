//! End-to-end tests of the HTTP server's connection limits: header, body and
//! keep-alive timeouts, and the per-shard connection limit. What a slow or
//! idle client may hold is bounded, and over the limit it gets a clear answer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cairn_tests::{Server, parse_response};

/// Reads until the server closes the connection (bounded by a generous timeout).
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return buf,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return buf,
            Err(e) => panic!("read failed after {:?}: {e}", String::from_utf8_lossy(&buf)),
        }
    }
}

#[test]
fn a_head_that_trickles_in_past_the_header_timeout_gets_408_and_close() {
    let s = Server::start_with(1, &["--header-timeout-ms", "300"]);
    let mut c = TcpStream::connect(s.addr).expect("connect");
    let start = Instant::now();
    c.write_all(b"GET /counter/a HTTP/1.1\r\n").expect("write");
    // A byte at a time keeps the socket busy but must not extend the deadline.
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(50));
        if c.write_all(b"X").is_err() {
            break;
        }
    }
    let got = read_to_close(&mut c);
    let (resp, _) = parse_response(&got).expect("a whole response");
    assert_eq!(resp.status, 408, "{}", resp.text());
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(
        resp.text().contains(r#""code":"request_timeout""#),
        "{}",
        resp.text()
    );
    assert!(start.elapsed() < Duration::from_secs(15));
    // The server is still serving.
    assert_eq!(s.send("GET", "/counter/a", b"").status, 200);
}

#[test]
fn a_body_that_stalls_past_the_body_timeout_gets_408() {
    let s = Server::start_with(1, &["--body-timeout-ms", "300"]);
    let mut c = TcpStream::connect(s.addr).expect("connect");
    c.write_all(b"PUT /kv/m/keys/k HTTP/1.1\r\nHost: c\r\nContent-Length: 10\r\n\r\nabc")
        .expect("write");
    let got = read_to_close(&mut c);
    let (resp, _) = parse_response(&got).expect("a whole response");
    assert_eq!(resp.status, 408, "{}", resp.text());
    assert_eq!(
        s.send("GET", "/kv/m/keys/k", b"").status,
        404,
        "nothing was stored"
    );
}

#[test]
fn an_idle_keep_alive_connection_is_closed_without_a_response() {
    let s = Server::start_with(1, &["--keepalive-timeout-ms", "300"]);
    let mut c = TcpStream::connect(s.addr).expect("connect");
    c.write_all(b"GET /counter/a HTTP/1.1\r\nHost: c\r\n\r\n")
        .expect("write");
    let got = read_to_close(&mut c);
    let (resp, used) = parse_response(&got).expect("the first response");
    assert_eq!(resp.status, 200);
    assert_eq!(used, got.len(), "nothing after the response: {got:?}");
}

#[test]
fn connections_past_the_limit_get_503_with_retry_after_and_the_limit_frees_up() {
    let s = Server::start_with(1, &["--connections-max", "2"]);
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut c = TcpStream::connect(s.addr).expect("connect");
            // A full exchange makes sure the server has accepted the connection.
            c.write_all(b"GET /counter/a HTTP/1.1\r\nHost: c\r\n\r\n")
                .expect("write");
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while parse_response(&buf).is_none() {
                let n = c.read(&mut chunk).expect("read");
                assert!(n > 0);
                buf.extend_from_slice(&chunk[..n]);
            }
            c
        })
        .collect();
    let r = s.send("GET", "/counter/a", b"");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.text().contains(r#""code":"overloaded""#), "{}", r.text());
    held.clear();
    // Closing the held connections frees their places (allow the server a moment).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = s.send("GET", "/counter/a", b"");
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the limit never freed up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_keep_alive_connection_in_use_outlives_the_keepalive_timeout() {
    // The idle deadline runs from the end of the last response: neither a
    // request slower than the timeout nor steady use past it closes the connection.
    let s = Server::start_with(2, &["--keepalive-timeout-ms", "300"]);
    let mut c = cairn_tests::Conn::connect(s.addr, Duration::from_secs(20)).expect("connect");
    let r = c
        .request("GET", "/testhooks/slow/sleep?ms=700", b"")
        .expect("a slow request on a keep-alive connection");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c
        .request("GET", "/counter/a", b"")
        .expect("the connection is still open right after a slow response");
    assert_eq!(r.status, 200, "{}", r.text());
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_millis(1200) {
        n += 1;
        let r = c
            .request("GET", &format!("/counter/k{}", n % 7), b"")
            .unwrap_or_else(|e| panic!("request {n} after {:?}: {e}", started.elapsed()));
        assert_eq!(r.status, 200, "{}", r.text());
        std::thread::sleep(Duration::from_millis(50));
    }
}
