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
//! - `epoll`: one edge-triggered epoll set for all connections, drained by
//!   one task per executor pass (`epoll_wait` with a zero timeout), the
//!   executor sleeping on the epoll descriptor through
//!   `glommio::poll_readable` when nothing is ready: how nginx waits.
//!
//! Usage: `cairn-floor --listen 127.0.0.1:18600 --reads uring|epoll [--cpu N]`.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::unix::io::{AsRawFd, RawFd};
use std::rc::Rc;
use std::task::{Poll, Waker};

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
        let set = (reads == Reads::Epoll).then(EpollSet::start);
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

/// One connection's readiness: set by the set's drain, cleared by the reader.
struct Slot {
    ready: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

/// The executor's epoll descriptor and the slots its events name.
#[derive(Clone)]
struct EpollSet {
    fd: RawFd,
    slots: Rc<RefCell<Vec<Option<Rc<Slot>>>>>,
}

impl EpollSet {
    fn start() -> EpollSet {
        // SAFETY: epoll_create1 takes no pointers; a negative result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            usage(&format!(
                "epoll_create1: {}",
                std::io::Error::last_os_error()
            ));
        }
        let set = EpollSet {
            fd,
            slots: Rc::new(RefCell::new(Vec::new())),
        };
        glommio::spawn_local(set.clone().drain()).detach();
        set
    }

    /// Marks ready every connection the kernel reports, once per executor
    /// pass; sleeps on the epoll descriptor when none is ready.
    async fn drain(self) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        loop {
            // SAFETY: `events` holds 256 initialised entries and outlives the
            // call; a zero timeout never blocks the executor.
            let n = unsafe { libc::epoll_wait(self.fd, events.as_mut_ptr(), 256, 0) };
            if n <= 0 {
                if glommio::poll_readable(self.fd).await.is_err() {
                    return;
                }
                continue;
            }
            for e in &events[..n as usize] {
                let slot = self.slots.borrow().get(e.u64 as usize).cloned().flatten();
                if let Some(s) = slot {
                    s.ready.set(true);
                    if let Some(w) = s.waker.borrow_mut().take() {
                        w.wake();
                    }
                }
            }
            futures_lite::future::yield_now().await;
        }
    }

    fn add(&self, fd: RawFd) -> (usize, Rc<Slot>) {
        let slot = Rc::new(Slot {
            ready: Cell::new(true),
            waker: RefCell::new(None),
        });
        let mut slots = self.slots.borrow_mut();
        let i = match slots.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                slots.push(None);
                slots.len() - 1
            }
        };
        slots[i] = Some(slot.clone());
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET | libc::EPOLLRDHUP) as u32,
            u64: i as u64,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_ADD, fd, &mut ev) };
        (i, slot)
    }

    fn remove(&self, i: usize, fd: RawFd) {
        // SAFETY: EPOLL_CTL_DEL ignores the event pointer (null allowed since 2.6.9).
        unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
        self.slots.borrow_mut()[i] = None;
    }
}

async fn serve_epoll(mut stream: TcpStream, set: &EpollSet) {
    let fd = stream.as_raw_fd();
    let (i, slot) = set.add(fd);
    let mut buf = vec![0u8; READ_BYTES];
    let mut tail = Vec::new();
    let mut out = Vec::new();
    loop {
        std::future::poll_fn(|cx| {
            if slot.ready.get() {
                Poll::Ready(())
            } else {
                *slot.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        slot.ready.set(false);
        // SAFETY: `buf` is valid for `buf.len()` writable bytes; MSG_DONTWAIT
        // keeps the call from blocking.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        let n = match n {
            0 => break,
            n if n < 0 => {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock {
                    continue;
                }
                break;
            }
            n => n as usize,
        };
        // A full buffer may have left bytes behind, and the edge will not fire again for them.
        if n == buf.len() {
            slot.ready.set(true);
        }
        out.clear();
        for _ in 0..heads(&mut tail, &buf[..n]) {
            out.extend_from_slice(RESPONSE);
        }
        if stream.write_all(&out).await.is_err() {
            break;
        }
    }
    set.remove(i, fd);
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
