//! When an HTTP connection has bytes to read: one edge-triggered epoll set
//! per shard instead of one io_uring poll per read.
//!
//! glommio waits for a socket's next bytes by arming an io_uring poll for
//! each read, which a request/response connection does once per request.
//! Here every connection of a shard is registered once in the shard's epoll
//! set (`EPOLLIN | EPOLLET`); one task ([`Readiness::start`]'s drain) asks
//! the kernel for every ready connection in one `epoll_wait` per executor
//! pass and wakes their tasks, and when nothing is ready it sleeps on the
//! epoll descriptor itself through one io_uring poll
//! (`glommio::poll_readable`), so an idle shard still sleeps in its ring.
//! That is how nginx waits. Measured (docs/BENCHMARKS.md, "The runtime's
//! floor"): about 1 us less CPU per request at a fixed rate for `cairn-floor`,
//! 0.45 us (3.5%) for `cairn`, and 11% less in a closed loop.
//!
//! Read deadlines are not timers per read either: each connection keeps its
//! deadline in its slot, and a sweeper task wakes the connections whose
//! deadline has passed every `sweep` (a quarter of the shortest HTTP
//! timeout, between 10 and 250 ms), so a deadline fires up to one sweep
//! late. Writes are not affected (glommio's own `write_all`).
//!
//! INVARIANTS: a slot's `ready` is set by the drain when the kernel reports
//! the descriptor and cleared by the reader just before it reads, so bytes
//! that arrive after a read always leave `ready` set (edge-triggered epoll
//! reports every arrival); a short read means the socket was drained, a
//! full one leaves `ready` set, and so does any read once the peer has shut
//! down (the end of stream behind the bytes gets no edge of its own). A [`Registration`] removes its descriptor
//! from the set before the descriptor can be closed or handed on (it is
//! dropped before the stream, and before a WebSocket takes the stream).
//! Everything here is shard-local (`Rc`), like the connections it serves.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Events taken from the kernel per `epoll_wait`.
const EVENTS_MAX: usize = 256;

/// One connection's state as the drain, the sweeper and the reader see it.
struct Slot {
    ready: Cell<bool>,
    /// The peer has shut down (or the socket failed): the end of the stream
    /// comes after the bytes already there, with no further edge, so every
    /// read is followed by another until `recv` says 0 or fails.
    hup: Cell<bool>,
    expired: Cell<bool>,
    deadline: Cell<Option<Instant>>,
    /// When the drain last reported the descriptor ready (its pass's clock
    /// reading), until the reader takes it.
    seen: Cell<Option<Instant>>,
    waker: RefCell<Option<Waker>>,
}

impl Slot {
    fn wake(&self) {
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

struct Inner {
    epoll: OwnedFd,
    /// Indexed by the `u64` each descriptor was registered with.
    slots: RefCell<Vec<Option<Rc<Slot>>>>,
    free: RefCell<Vec<usize>>,
}

/// A shard's epoll set for its HTTP connections. Cheap to clone.
#[derive(Clone)]
pub struct Readiness {
    inner: Rc<Inner>,
}

impl Readiness {
    /// Makes the set and starts its drain and its sweeper (every `sweep`)
    /// on the current executor. Must be called on a glommio executor thread;
    /// the set serves connections of that executor only.
    pub fn start(sweep: Duration) -> io::Result<Readiness> {
        // SAFETY: epoll_create1 takes no pointers; a negative result is an error.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let r = Readiness {
            inner: Rc::new(Inner {
                epoll,
                slots: RefCell::new(Vec::new()),
                free: RefCell::new(Vec::new()),
            }),
        };
        glommio::spawn_local(drain(Rc::downgrade(&r.inner))).detach();
        glommio::spawn_local(sweep_deadlines(Rc::downgrade(&r.inner), sweep)).detach();
        Ok(r)
    }

    /// Adds `fd` to the set; it is taken out when the registration drops.
    pub fn register(&self, fd: RawFd) -> io::Result<Registration> {
        let slot = Rc::new(Slot {
            // A new connection may have bytes already: read once to see.
            ready: Cell::new(true),
            hup: Cell::new(false),
            expired: Cell::new(false),
            deadline: Cell::new(None),
            seen: Cell::new(None),
            waker: RefCell::new(None),
        });
        let index = {
            let mut slots = self.inner.slots.borrow_mut();
            match self.inner.free.borrow_mut().pop() {
                Some(i) => {
                    slots[i] = Some(slot.clone());
                    i
                }
                None => {
                    slots.push(Some(slot.clone()));
                    slots.len() - 1
                }
            }
        };
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: index as u64,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        let rc = unsafe {
            libc::epoll_ctl(
                self.inner.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd,
                &mut ev,
            )
        };
        let reg = Registration {
            inner: self.inner.clone(),
            index,
            fd,
            slot,
            seen: Cell::new(None),
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(reg)
    }
}

/// A connection's place in the set.
pub struct Registration {
    inner: Rc<Inner>,
    index: usize,
    fd: RawFd,
    slot: Rc<Slot>,
    /// The drain's report time behind the last successful read, if any.
    seen: Cell<Option<Instant>>,
}

impl Registration {
    /// Reads into `buf` once bytes are there: `Ok(0)` at end of stream,
    /// `TimedOut` once `deadline` has passed (seen by the sweeper) with
    /// nothing read.
    pub async fn read(&self, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
        let slot = &*self.slot;
        slot.deadline.set(Some(deadline));
        slot.expired.set(false);
        loop {
            if slot.ready.replace(false) {
                let seen = slot.seen.take();
                // SAFETY: `buf` is valid for `buf.len()` writable bytes and
                // MSG_DONTWAIT keeps the call from blocking the shard.
                let n = unsafe {
                    libc::recv(
                        self.fd,
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n >= 0 {
                    let n = n as usize;
                    // A full buffer may have left bytes behind, and a peer's
                    // shutdown an end of stream behind them; the edge will not
                    // fire again for either.
                    if n == buf.len() || (n > 0 && slot.hup.get()) {
                        slot.ready.set(true);
                    }
                    slot.deadline.set(None);
                    self.seen.set(seen);
                    return Ok(n);
                }
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => {}
                    io::ErrorKind::Interrupted => {
                        slot.ready.set(true);
                        continue;
                    }
                    _ => return Err(e),
                }
            }
            if slot.expired.get() {
                slot.deadline.set(None);
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "read deadline passed",
                ));
            }
            std::future::poll_fn(|cx| {
                if slot.ready.get() || slot.expired.get() {
                    return Poll::Ready(());
                }
                let mut w = slot.waker.borrow_mut();
                if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *w = Some(cx.waker().clone());
                }
                Poll::Pending
            })
            .await;
        }
    }
}

impl Registration {
    /// When the bytes of the last read were known to be there: the clock
    /// reading of the drain pass that reported them (taken once per pass,
    /// not once per connection), or now if no pass reported them (a new
    /// connection's first read, a read after a full buffer).
    pub fn seen_at(&self) -> Instant {
        self.seen.get().unwrap_or_else(Instant::now)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // SAFETY: EPOLL_CTL_DEL ignores the event pointer (null is allowed
        // since Linux 2.6.9); the descriptor is still open (the stream is
        // dropped after its registration).
        unsafe {
            libc::epoll_ctl(
                self.inner.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                self.fd,
                std::ptr::null_mut(),
            );
        }
        self.inner.slots.borrow_mut()[self.index] = None;
        self.inner.free.borrow_mut().push(self.index);
    }
}

/// Marks ready, and wakes, every connection the kernel reports, once per
/// executor pass; sleeps on the epoll descriptor when none is ready. Ends
/// when the set is gone.
async fn drain(inner: std::rc::Weak<Inner>) {
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_MAX];
    loop {
        let Some(set) = inner.upgrade() else { return };
        let epfd = set.epoll.as_raw_fd();
        // SAFETY: `events` holds EVENTS_MAX initialised entries and outlives
        // the call; a zero timeout never blocks the shard.
        let n = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), EVENTS_MAX as i32, 0) };
        if n <= 0 {
            if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                eprintln!(
                    "cairn: epoll_wait failed: {}; connections are served by the sweeper only",
                    io::Error::last_os_error()
                );
                return;
            }
            drop(set);
            if glommio::poll_readable(epfd).await.is_err() {
                return;
            }
            continue;
        }
        let now = Instant::now();
        for e in &events[..n as usize] {
            // A slot freed and reused since the event was queued gets a
            // spurious wake-up: its reader finds nothing and waits again.
            let slot = set.slots.borrow().get(e.u64 as usize).cloned().flatten();
            if let Some(s) = slot {
                let hangup = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
                if e.events & hangup != 0 {
                    s.hup.set(true);
                }
                s.ready.set(true);
                s.seen.set(Some(now));
                s.wake();
            }
        }
        drop(set);
        // Let the woken connections run before asking the kernel again.
        futures_lite::future::yield_now().await;
    }
}

/// Every `every`, wakes the connections whose read deadline has passed.
async fn sweep_deadlines(inner: std::rc::Weak<Inner>, every: Duration) {
    loop {
        glommio::timer::sleep(every).await;
        let Some(set) = inner.upgrade() else { return };
        let now = Instant::now();
        let due: Vec<Rc<Slot>> = set
            .slots
            .borrow()
            .iter()
            .flatten()
            .filter(|s| s.deadline.get().is_some_and(|d| d <= now))
            .cloned()
            .collect();
        for s in due {
            s.expired.set(true);
            s.wake();
        }
    }
}

/// The sweep period for HTTP timeouts `timeouts_ms`: a quarter of the
/// shortest, between 10 and 250 ms.
pub(crate) fn sweep_period(timeouts_ms: &[u64]) -> Duration {
    let shortest = timeouts_ms.iter().copied().min().unwrap_or(1000);
    Duration::from_millis((shortest / 4).clamp(10, 250))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::run_local;
    use std::io::{Read, Write};

    fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    /// A fresh connection whose server end is registered with `r`: the
    /// client, the server end, and its registration (last, so that a
    /// destructuring `let` drops it before the socket it watches).
    fn registered(r: &Readiness) -> (std::net::TcpStream, std::net::TcpStream, Registration) {
        let (client, server) = pair();
        let reg = r.register(server.as_raw_fd()).unwrap();
        (client, server, reg)
    }

    #[test]
    fn reads_what_arrives_and_sees_the_end_of_the_stream() {
        run_local(async {
            let r = Readiness::start(Duration::from_millis(10)).unwrap();
            let (mut client, _server, reg) = registered(&r);
            let far = Instant::now() + Duration::from_secs(30);
            let mut buf = [0u8; 64];
            client.write_all(b"hello").unwrap();
            assert_eq!(reg.read(&mut buf, far).await.unwrap(), 5);
            assert_eq!(&buf[..5], b"hello");
            // The next bytes come later, while the reader waits.
            let writer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                client.write_all(b"again").unwrap();
                client
            });
            assert_eq!(reg.read(&mut buf, far).await.unwrap(), 5);
            assert_eq!(&buf[..5], b"again");
            drop(writer.join().unwrap());
            assert_eq!(reg.read(&mut buf, far).await.unwrap(), 0, "end of stream");
        });
    }

    #[test]
    fn a_read_is_stamped_with_the_pass_that_saw_its_bytes() {
        run_local(async {
            let r = Readiness::start(Duration::from_millis(10)).unwrap();
            let (mut client, _server, reg) = registered(&r);
            let far = Instant::now() + Duration::from_secs(30);
            let mut buf = [0u8; 64];
            // The first read follows no drain pass: it is stamped now.
            let before = Instant::now();
            client.write_all(b"a").unwrap();
            assert_eq!(reg.read(&mut buf, far).await.unwrap(), 1);
            assert!(reg.seen_at() >= before);
            // Bytes that arrive while the reader waits are reported by a pass,
            // after they were written and before the read returned.
            let writer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                let sent = Instant::now();
                client.write_all(b"b").unwrap();
                (client, sent)
            });
            assert_eq!(reg.read(&mut buf, far).await.unwrap(), 1);
            let read_at = Instant::now();
            let (_client, sent) = writer.join().unwrap();
            let seen = reg.seen_at();
            assert!(
                sent <= seen && seen <= read_at,
                "{sent:?} {seen:?} {read_at:?}"
            );
        });
    }

    #[test]
    fn a_full_buffer_leaves_the_rest_readable_without_a_new_edge() {
        run_local(async {
            let r = Readiness::start(Duration::from_millis(10)).unwrap();
            let (mut client, _server, reg) = registered(&r);
            let far = Instant::now() + Duration::from_secs(30);
            client.write_all(&[7u8; 100]).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            let mut buf = [0u8; 64];
            assert_eq!(reg.read(&mut buf, far).await.unwrap(), 64);
            assert_eq!(reg.read(&mut buf, far).await.unwrap(), 36);
            let mut echo = [0u8; 1];
            client.set_nonblocking(true).unwrap();
            assert!(client.read(&mut echo).is_err(), "nothing was written back");
        });
    }

    #[test]
    fn bytes_then_a_shutdown_in_one_edge_still_end_the_stream() {
        run_local(async {
            let r = Readiness::start(Duration::from_millis(10)).unwrap();
            let (mut client, _server, reg) = registered(&r);
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut buf = [0u8; 64];
            client.write_all(b"a").unwrap();
            assert_eq!(reg.read(&mut buf, deadline).await.unwrap(), 1);
            // Bytes and the shutdown both arrive while this task holds the
            // thread, so the drain's one edge reports them together.
            client.write_all(b"0\r\n").unwrap();
            client.shutdown(std::net::Shutdown::Write).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            while !reg.slot.ready.get() {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            let t0 = Instant::now();
            assert_eq!(reg.read(&mut buf, deadline).await.unwrap(), 3);
            assert_eq!(
                reg.read(&mut buf, deadline).await.unwrap(),
                0,
                "then the end"
            );
            assert!(
                t0.elapsed() < Duration::from_secs(2),
                "without waiting for the deadline"
            );
        });
    }

    #[test]
    fn a_passed_deadline_ends_the_wait_within_a_sweep() {
        run_local(async {
            let r = Readiness::start(Duration::from_millis(10)).unwrap();
            let (_client, _server, reg) = registered(&r);
            let t0 = Instant::now();
            let mut buf = [0u8; 8];
            let e = reg
                .read(&mut buf, t0 + Duration::from_millis(50))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::TimedOut);
            assert!(t0.elapsed() >= Duration::from_millis(50));
        });
    }

    #[test]
    fn slots_are_reused_after_a_registration_drops() {
        run_local(async {
            let r = Readiness::start(Duration::from_millis(10)).unwrap();
            let (_c1, s1) = pair();
            let (_c2, s2) = pair();
            let first = r.register(s1.as_raw_fd()).unwrap();
            let index = first.index;
            drop(first);
            let second = r.register(s2.as_raw_fd()).unwrap();
            assert_eq!(second.index, index);
            assert_eq!(r.inner.slots.borrow().len(), 1);
        });
    }

    #[test]
    fn the_sweep_is_a_quarter_of_the_shortest_timeout_within_bounds() {
        assert_eq!(sweep_period(&[300, 10_000]), Duration::from_millis(75));
        assert_eq!(sweep_period(&[10_000, 60_000]), Duration::from_millis(250));
        assert_eq!(sweep_period(&[1]), Duration::from_millis(10));
    }
}
