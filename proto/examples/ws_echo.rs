//! A blocking WebSocket echo server over `std::net`, one thread per
//! connection, using only `cairn-proto`'s codec. It exists to run the
//! Autobahn suite against the codec (see `docs/PROTOCOL.md`):
//!
//! ```sh
//! cargo run --release -p cairn-proto --example ws_echo -- 127.0.0.1:9001
//! /work/shared/conformance/autobahn.sh ws://127.0.0.1:9001/
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use cairn_proto::ws::handshake::{self, HandshakeError};
use cairn_proto::ws::{Config, Connection, Error, Event, Poll};

/// Largest request head we buffer before refusing the handshake.
const HEAD_BYTES_MAX: usize = 16 * 1024;

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_string());
    let listener = TcpListener::bind(&addr)?;
    eprintln!("ws_echo listening on ws://{}/", listener.local_addr()?);
    for stream in listener.incoming() {
        let stream = stream?;
        std::thread::spawn(move || {
            if let Err(e) = serve(stream) {
                eprintln!("connection ended: {e}");
            }
        });
    }
    Ok(())
}

fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    // Read the request head; bytes after it belong to the WebSocket.
    let (head_len, result) = loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&head) {
            Ok(httparse::Status::Complete(len)) => {
                let pairs: Vec<(&str, &[u8])> =
                    req.headers.iter().map(|h| (h.name, h.value)).collect();
                let method = req.method.unwrap_or("");
                let version = req.version.unwrap_or(0);
                break (len, handshake::validate_request(method, version, &pairs));
            }
            Ok(httparse::Status::Partial) if head.len() < HEAD_BYTES_MAX => continue,
            _ => break (head.len(), Err(HandshakeError::MissingUpgrade)),
        }
    };
    let mut out = Vec::new();
    let accept = match result {
        Ok(accept) => accept,
        Err(e) => {
            handshake::write_rejection(e, &mut out);
            return stream.write_all(&out);
        }
    };
    accept.write_response(&mut out);
    stream.write_all(&out)?;

    let mut conn = Connection::server(Config::default());
    conn.feed(&head[head_len..]);
    loop {
        match conn.next_event() {
            Ok(Poll::Event(Event::Text(t))) => {
                let text = std::str::from_utf8(&t).expect("Connection validated the UTF-8");
                conn.send_text(text).expect("open connection accepts sends");
            }
            Ok(Poll::Event(Event::Binary(b))) => {
                conn.send_binary(&b).expect("open connection accepts sends")
            }
            Ok(Poll::Event(Event::Ping(_) | Event::Pong(_) | Event::Close(_))) => {}
            Ok(Poll::NeedData) => {
                flush(&mut stream, &mut conn)?;
                let n = stream.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                conn.feed(&buf[..n]);
            }
            Err(e) => {
                flush(&mut stream, &mut conn)?;
                // The server closes TCP first (RFC 6455 §7.1.1), after our close frame.
                stream.shutdown(std::net::Shutdown::Write)?;
                if !matches!(e, Error::Closed) {
                    eprintln!("failing connection: {e}");
                }
                return Ok(());
            }
        }
    }
}

fn flush(stream: &mut TcpStream, conn: &mut Connection) -> std::io::Result<()> {
    let out = conn.output();
    if !out.is_empty() {
        stream.write_all(out)?;
        let n = out.len();
        conn.consume_output(n);
    }
    Ok(())
}
