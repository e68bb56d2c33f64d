//! `cairn-floor`: the cheapest HTTP/1.1 responder this runtime allows, to
//! measure the floor under Cairn's request path in the same run as nginx and
//! `cairn` (`bench/engine-load.sh`, rows `floor-uring` and `floor-epoll`).
//!
//! It is not a server: it answers every request head (`\r\n\r\n`) on a
//! keep-alive connection with a fixed `200 ok`, reads no bodies and parses
//! nothing, so only what it cannot avoid remains: one glommio executor,
//! one task per connection, a `recv` and a `send` per request, and the wait
//! for the next bytes. That wait comes in two kinds (`--reads`):
//!
//! - `uring`: glommio's `TcpStream::read`, one io_uring poll per wait, as
//!   `cairn`'s connection loop does;
//! - `epoll`: `cairn_engine::readiness`, the one edge-triggered epoll set
//!   per executor that `cairn`'s connections wait on, drained once per
//!   executor pass, the executor sleeping on the epoll descriptor when
//!   nothing is ready: how nginx waits.
//!
//! Usage: `cairn-floor --listen 127.0.0.1:18600 --reads uring|epoll [--cpu N]`.

use std::net::SocketAddr;
use std::os::unix::io::AsRawFd;
use std::time::{Duration, Instant};

use cairn_engine::readiness::Readiness;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";
const READ_BYTES: usize = 16 << 10;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reads {
    Uring,
    Epoll,
}

fn usage(why: &str) -> ! {
    eprintln!("cairn-floor: {why}\nusage: cairn-floor --listen ADDR --reads uring|epoll [--cpu N]");
    std::process::exit(2);
}

fn main() {
    let mut listen: Option<SocketAddr> = None;
    let mut reads = None;
    let mut cpu = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args
            .next()
            .unwrap_or_else(|| usage(&format!("{a} needs a value")));
        match a.as_str() {
            "--listen" => listen = Some(v.parse().unwrap_or_else(|_| usage("bad --listen"))),
            "--reads" => {
                reads = Some(match v.as_str() {
                    "uring" => Reads::Uring,
                    "epoll" => Reads::Epoll,
                    _ => usage("--reads is uring or epoll"),
                })
            }
            "--cpu" => cpu = Some(v.parse::<usize>().unwrap_or_else(|_| usage("bad --cpu"))),
            _ => usage(&format!("unknown option {a}")),
        }
    }
    let (Some(listen), Some(reads)) = (listen, reads) else {
        usage("--listen and --reads are required")
    };
    let placement = cpu.map_or(Placement::Unbound, Placement::Fixed);
    let ex = LocalExecutorBuilder::new(placement)
        .make()
        .unwrap_or_else(|e| usage(&format!("cannot start an executor: {e}")));
    ex.run(async move {
        let listener = TcpListener::bind(listen).unwrap_or_else(|e| usage(&format!("{e}")));
        // No read deadlines here: the sweeper only needs to tick rarely.
        let set = (reads == Reads::Epoll).then(|| {
            Readiness::start(Duration::from_secs(1))
                .unwrap_or_else(|e| usage(&format!("epoll set: {e}")))
        });
        loop {
            let Ok(stream) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let set = set.clone();
            glommio::spawn_local(async move {
                match set {
                    None => serve_uring(stream).await,
                    Some(set) => serve_epoll(stream, &set).await,
                }
            })
            .detach();
        }
    });
}

/// Complete request heads in `bytes`, counting a head split across reads at
/// the read that ends it (`tail` carries the last three bytes over).
fn heads(tail: &mut Vec<u8>, bytes: &[u8]) -> usize {
    let end = |w: &[u8]| w == b"\r\n\r\n";
    let inside = bytes.windows(4).filter(|w| end(w)).count();
    // Every 4-byte window of (tail + first 3 bytes) spans the boundary.
    let mut joint = std::mem::take(tail);
    joint.extend_from_slice(&bytes[..bytes.len().min(3)]);
    let across = joint.windows(4).filter(|w| end(w)).count();
    if bytes.len() >= 3 {
        joint.clear();
        joint.extend_from_slice(&bytes[bytes.len() - 3..]);
    } else {
        let keep = joint.len().min(3);
        joint.drain(..joint.len() - keep);
    }
    *tail = joint;
    inside + across
}

async fn serve_uring(mut stream: TcpStream) {
    let mut buf = vec![0u8; READ_BYTES];
    let mut tail = Vec::new();
    let mut out = Vec::new();
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        out.clear();
        for _ in 0..heads(&mut tail, &buf[..n]) {
            out.extend_from_slice(RESPONSE);
        }
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

async fn serve_epoll(mut stream: TcpStream, set: &Readiness) {
    // Dropped before `stream` (locals go before parameters).
    let Ok(reg) = set.register(stream.as_raw_fd()) else {
        return;
    };
    // Far enough never to pass during a run.
    let never = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let mut buf = vec![0u8; READ_BYTES];
    let mut tail = Vec::new();
    let mut out = Vec::new();
    loop {
        let n = match reg.read(&mut buf, never).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        out.clear();
        for _ in 0..heads(&mut tail, &buf[..n]) {
            out.extend_from_slice(RESPONSE);
        }
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::heads;

    #[test]
    fn heads_split_across_reads_are_counted_once_at_their_end() {
        let mut tail = Vec::new();
        assert_eq!(
            heads(&mut tail, b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r"),
            1
        );
        assert_eq!(heads(&mut tail, b"\n"), 1);
        assert_eq!(heads(&mut tail, b"GET / HTTP/1.1\r\nHost: x\r\n"), 0);
        assert_eq!(heads(&mut tail, b"\r\n"), 1);
    }
}
