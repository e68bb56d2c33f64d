//! Request smuggling attempts against a real `cairn`: each hides a second
//! request (a `PUT` of a marker key) behind ambiguous framing. Every attempt
//! must be refused with a 4xx/5xx and `Connection: close`, answered once, and
//! the hidden request must never run.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use cairn_tests::{Server, parse_response};

/// The hidden request: if it ever runs, key `k{i}` of object `smuggled` exists.
fn hidden(i: usize) -> String {
    format!("PUT /kv/smuggled/keys/k{i} HTTP/1.1\r\nHost: c\r\nContent-Length: 1\r\n\r\nX")
}

/// (name, raw bytes, expected status) for every attack.
fn attacks() -> Vec<(&'static str, Vec<u8>, u16)> {
    let mut v: Vec<(&'static str, String, u16)> = Vec::new();
    let h = |i| hidden(i);
    // CL.TE: a front end honouring Content-Length would forward the hidden request as body.
    let body = format!("0\r\n\r\n{}", h(0));
    v.push((
        "content-length and chunked",
        format!(
            "POST /kv/m/batch HTTP/1.1\r\nHost: c\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
            body.len()
        ),
        400,
    ));
    // TE.CL: chunked first, then a Content-Length that covers only the chunk size line.
    v.push((
        "chunked then content-length",
        format!(
            "POST /kv/m/batch HTTP/1.1\r\nHost: c\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n\
             5c\r\n{}\r\n0\r\n\r\n",
            h(1)
        ),
        400,
    ));
    let body = h(2);
    v.push((
        "duplicate content-length, different values",
        format!(
            "POST /kv/m/batch HTTP/1.1\r\nHost: c\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        400,
    ));
    v.push((
        "content-length list",
        format!(
            "POST /kv/m/batch HTTP/1.1\r\nHost: c\r\nContent-Length: 0, {}\r\n\r\n{body}",
            body.len()
        ),
        400,
    ));
    // TE obfuscation: variants a lenient parser would treat as chunked (or not).
    for (name, te, status) in [
        ("te: xchunked", "Transfer-Encoding: xchunked", 501),
        (
            "te: chunked, identity",
            "Transfer-Encoding: chunked, identity",
            400,
        ),
        ("te: identity", "Transfer-Encoding: identity", 501),
        ("te: space before colon", "Transfer-Encoding : chunked", 400),
        (
            "te: two chunked fields",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            400,
        ),
        ("te: obs-fold", "Transfer-Encoding:\r\n chunked", 400),
        ("te: vertical tab", "Transfer-Encoding:\x0bchunked", 400),
    ] {
        v.push((
            name,
            format!(
                "POST /kv/m/batch HTTP/1.1\r\nHost: c\r\n{te}\r\nContent-Length: 3\r\n\r\n0\r\n\r\n{}",
                h(3)
            ),
            status,
        ));
    }
    v.push((
        "bare LF in chunk size line",
        format!(
            "POST /kv/m/batch HTTP/1.1\r\nHost: c\r\nTransfer-Encoding: chunked\r\n\r\n0\n\r\n{}",
            h(4)
        ),
        400,
    ));
    v.push((
        "chunk size overflow",
        format!(
            "POST /kv/m/batch HTTP/1.1\r\nHost: c\r\nTransfer-Encoding: chunked\r\n\r\n\
             10000000000000000\r\n{}\r\n0\r\n\r\n",
            h(5)
        ),
        400,
    ));
    v.into_iter()
        .map(|(n, r, s)| (n, r.into_bytes(), s))
        .collect()
}

#[test]
fn smuggling_attempts_are_refused_and_the_hidden_request_never_runs() {
    let s = Server::start(2);
    for (name, raw, want) in attacks() {
        let mut c = TcpStream::connect(s.addr).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        c.write_all(&raw).expect("write");
        let mut got = Vec::new();
        // Read to close: a refused request must close the connection.
        let _ = c.read_to_end(&mut got);
        let (resp, used) = parse_response(&got).unwrap_or_else(|| {
            panic!(
                "{name}: no whole response in {:?}",
                String::from_utf8_lossy(&got)
            )
        });
        assert_eq!(resp.status, want, "{name}: {}", resp.text());
        assert_eq!(resp.header("connection"), Some("close"), "{name}");
        assert!(
            resp.text().starts_with(r#"{"error":{"code":"#),
            "{name}: {}",
            resp.text()
        );
        assert_eq!(
            used,
            got.len(),
            "{name}: bytes after the refusal: a second response"
        );
    }
    // None of the hidden requests ran.
    for i in 0..=5 {
        let r = s.send("GET", &format!("/kv/smuggled/keys/k{i}"), b"");
        assert_eq!(r.status, 404, "hidden request {i} ran");
    }
    // And the server serves normal requests on.
    assert_eq!(s.send("PUT", "/kv/smuggled/keys/ok", b"1").status, 200);
    assert_eq!(s.send("GET", "/kv/smuggled/keys/ok", b"").text(), "1");
}
