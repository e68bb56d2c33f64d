//! A tiny blocking HTTP/1.1 server over `std::net`, one thread per
//! connection, that exists to prove the parser against
//! `shared/conformance/http_probe.py`. The real server is `cairn-engine`.
//!
//! Run: `cargo run -p cairn-proto --example http_server -- 8080`.
//! It answers `GET`/`HEAD` with 200 and a short body, `POST`/`PUT` with 200
//! echoing the body length, other known methods with 405 and unknown ones with 501.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use cairn_proto::http::{
    DateCache, Limits, Request, RequestDecoder, ResponseWriter, write_continue,
};

/// Deadline for a whole head, and for a whole body, counted from its first
/// byte (so dribbling one byte at a time does not extend it). The probe's slow
/// cases wait 15 s.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn respond(out: &mut Vec<u8>, date: &DateCache, status: u16, head: bool, close: bool, body: &[u8]) {
    let mut w = ResponseWriter::new(out, status, date, head);
    if close {
        w.close();
    }
    let _ = w.header("Content-Type", b"text/plain");
    w.body(body);
}

fn answer(request: &Request) -> (u16, Vec<u8>) {
    match request.method() {
        "GET" | "HEAD" => (200, b"hello from cairn-proto\n".to_vec()),
        "POST" | "PUT" => (
            200,
            format!("got {} bytes\n", request.body.len()).into_bytes(),
        ),
        "DELETE" | "OPTIONS" | "PATCH" | "TRACE" | "CONNECT" => {
            (405, b"method not allowed\n".to_vec())
        }
        _ => (501, b"not implemented\n".to_vec()),
    }
}

fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut decoder = RequestDecoder::new(Limits::default());
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut out = Vec::with_capacity(4096);
    let mut date = DateCache::new(now_secs());
    let mut chunk = [0u8; 16 * 1024];
    let mut deadline: Option<Instant> = None;
    loop {
        date.update(now_secs());
        out.clear();
        let step = decoder.decode(&mut buf);
        match step {
            Ok(Some(request)) => {
                let (status, body) = answer(&request);
                let close = decoder.must_close();
                respond(&mut out, &date, status, request.is_head(), close, &body);
                stream.write_all(&out)?;
                if decoder.response_sent(true).is_err() {
                    return Ok(());
                }
                deadline = None;
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                respond(
                    &mut out,
                    &date,
                    e.status(),
                    false,
                    true,
                    format!("{e}\n").as_bytes(),
                );
                stream.write_all(&out)?;
                return Ok(());
            }
        }
        if decoder.state() == cairn_proto::http::ConnState::Closed {
            return Ok(());
        }
        if decoder.take_continue() {
            write_continue(&mut out);
            stream.write_all(&out)?;
            out.clear();
        }
        let idle = decoder.state() == cairn_proto::http::ConnState::Idle && buf.is_empty();
        let until = if idle {
            Instant::now() + READ_TIMEOUT
        } else {
            *deadline.get_or_insert_with(|| Instant::now() + READ_TIMEOUT)
        };
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            respond(&mut out, &date, 408, false, true, b"timeout\n");
            let _ = stream.write_all(&out);
            return Ok(());
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                respond(&mut out, &date, 408, false, true, b"timeout\n");
                let _ = stream.write_all(&out);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            if let Err(e) = decoder.peer_closed() {
                respond(
                    &mut out,
                    &date,
                    e.status(),
                    false,
                    true,
                    format!("{e}\n").as_bytes(),
                );
                let _ = stream.write_all(&out);
            }
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn main() -> std::io::Result<()> {
    let port = std::env::args().nth(1).unwrap_or_else(|| "8080".into());
    let listener = TcpListener::bind(format!("127.0.0.1:{port}"))?;
    eprintln!("listening on 127.0.0.1:{port}");
    for stream in listener.incoming() {
        let stream = stream?;
        std::thread::spawn(move || {
            let _ = serve(stream);
        });
    }
    Ok(())
}
