//! One socket's I/O on its object's shard: a reader that decodes frames and
//! hands messages to the object's input queue (or answers the auto-response
//! itself), sends server pings and enforces the idle timeout; and a writer
//! that writes the socket's queue as the output gate releases it.
//!
//! Reader and writer run as two futures of one task over two descriptors of
//! the same socket (a `dup`), so a wake-up of the writer never cancels and
//! re-submits the pending read: a broadcast costs each socket one `send`.
//! They share the codec through a `RefCell` that is never borrowed across an
//! `.await`. While the object's queue is full the reader stops reading, which
//! pushes back on the peer through TCP. The task runs in the shard's socket
//! task queue (`table.rs`, `IO_QUEUE_PREEMPT_US`), so a fan-out pass over many
//! sockets cannot hold back the object handlers and the storage commit loop.
//!
//! **Close ordering:** when the peer's close arrives (or the peer breaks the
//! protocol), reading stops at once, but our close frame is held until the
//! object has handled every message before it and the close handler has run,
//! so replies to those messages still go out before the close frame
//! (Autobahn 3.*, 4.*, 7.1.*). Every socket gets exactly one close event.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_proto::ws::{Config as CodecConfig, Connection, Error as CodecError, Event, Poll};
use futures_lite::future::{or, pending};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::api::Message;
use super::table::{Out, SockState, SocketEntry};
use crate::host::{Event as HostEvent, HostInner};

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 16 << 10;

/// How long a socket waits before retrying an object queue that was full.
const QUEUE_RETRY_MS: u64 = 1;

/// Retries before a close event that cannot be queued is given up and the
/// socket is dropped from the table without its handler running.
const CLOSE_EVENT_TRIES_MAX: u32 = 10_000;

/// What the reader and the writer share.
struct Shared {
    conn: Connection,
    /// Our close frame went out (or is in the write buffer).
    close_sent: bool,
    /// Our close frame, held until the object's close handler has run.
    echo: Option<Vec<u8>>,
    /// Set when the connection is over: the code and reason the close handler sees.
    end: Option<(u16, String)>,
    close_event_queued: bool,
    /// Events waiting for room in the object's queue, in order.
    held: VecDeque<HostEvent>,
    /// A write was given up with bytes unsent: reset the connection.
    abort: bool,
}

impl Shared {
    fn finish(&mut self, code: u16, reason: &str) {
        self.end.get_or_insert((code, reason.to_string()));
    }
}

/// Runs the socket until its connection is over and its close event is queued.
pub(crate) async fn run(
    host: Rc<HostInner>,
    e: Rc<SocketEntry>,
    stream: TcpStream,
    leftover: Bytes,
) {
    let limits = host.sockets.limits;
    let grace = Duration::from_millis(limits.close_grace_ms);
    let mut conn = Connection::server(CodecConfig {
        message_bytes_max: limits.message_bytes_max,
        frame_bytes_max: limits.message_bytes_max,
    });
    conn.feed(&leftover);
    let sh = RefCell::new(Shared {
        conn,
        close_sent: false,
        echo: None,
        end: None,
        close_event_queued: false,
        held: VecDeque::new(),
        abort: false,
    });
    // SAFETY: `stream` owns an open descriptor; dup returns a new one or -1.
    let dup = unsafe { libc::dup(stream.as_raw_fd()) };
    let mut reader_stream = stream;
    if dup >= 0 {
        // SAFETY: `dup` is a fresh descriptor of this connected socket that
        // nothing else owns.
        let mut writer_stream = unsafe { TcpStream::from_raw_fd(dup) };
        or(
            reader(&host, &e, &mut reader_stream, &sh),
            writer(&host, &e, &mut writer_stream, &sh, grace),
        )
        .await;
    } else {
        sh.borrow_mut().finish(1011, "cannot duplicate the socket");
    }
    // The connection is over: flush a failure close if one is pending (bounded),
    // close TCP first (RFC 6455 §7.1.1), then make sure the object hears of it.
    let tail = sh.borrow_mut().conn.take_output();
    if !tail.is_empty() && !sh.borrow().abort {
        // Bounded whether or not the socket was killed: a peer that does not
        // read must not keep the task (and its buffers) alive.
        let timed_out = or(
            async {
                let _ = reader_stream.write_all(&tail).await;
                false
            },
            async {
                glommio::timer::sleep(grace).await;
                true
            },
        )
        .await;
        sh.borrow_mut().abort |= timed_out;
    }
    if sh.borrow().abort {
        // Unsent bytes are stuck behind a peer that does not read: reset the
        // connection instead of leaving the kernel to hold them for minutes.
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: the descriptor is open; `linger` is a valid `struct linger`
        // and the length passed is its size.
        unsafe {
            libc::setsockopt(
                reader_stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
    }
    let _ = reader_stream.shutdown(std::net::Shutdown::Write).await;
    drop(reader_stream);
    e.state.set(SockState::Ended);
    e.queue.borrow_mut().clear();
    e.queued_bytes.set(0);
    let mut sh = sh.into_inner();
    if !sh.close_event_queued {
        let (code, reason) = sh.end.take().unwrap_or((1006, String::new()));
        sh.held.push_back(HostEvent::WsClose {
            socket: e.clone(),
            code,
            reason,
            echo: false,
        });
    }
    let mut tries = 0;
    loop {
        deliver(&host, &e, &mut sh.held);
        if sh.held.is_empty() {
            return;
        }
        tries += 1;
        if tries > CLOSE_EVENT_TRIES_MAX {
            eprintln!(
                "cairn: socket {}: object queue stayed full; dropping its close event",
                e.id
            );
            host.sockets.remove(e.id);
            return;
        }
        glommio::timer::sleep(Duration::from_millis(QUEUE_RETRY_MS)).await;
    }
}

/// Reads and decodes until the connection ends; after the peer's close (or a
/// protocol fault) it only waits, and the writer finishes the socket.
async fn reader(
    host: &Rc<HostInner>,
    e: &Rc<SocketEntry>,
    stream: &mut TcpStream,
    sh: &RefCell<Shared>,
) {
    let limits = host.sockets.limits;
    let tick = [limits.ping_interval_ms, limits.idle_timeout_ms]
        .into_iter()
        .filter(|ms| *ms > 0)
        .min()
        .map(Duration::from_millis);
    let _ = stream.set_read_timeout(tick);
    let mut rbuf = vec![0u8; READ_CHUNK_BYTES];
    let mut last_in = Instant::now();
    let mut pinged = false;
    let mut reading = true;
    loop {
        loop {
            deliver(host, e, &mut sh.borrow_mut().held);
            if sh.borrow().held.is_empty() {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(QUEUE_RETRY_MS)).await;
        }
        if reading {
            reading = decode(host, e, &mut sh.borrow_mut());
        }
        if sh.borrow().end.is_some() {
            e.wake();
            return;
        }
        if !sh.borrow().held.is_empty() {
            continue;
        }
        if !reading {
            return pending().await;
        }
        match stream.read(&mut rbuf).await {
            Ok(0) => {
                sh.borrow_mut().finish(1006, "connection lost");
                e.wake();
                return;
            }
            Ok(n) => {
                host.sockets.metrics.borrow_mut().bytes_in += n as u64;
                sh.borrow_mut().conn.feed(&rbuf[..n]);
                last_in = Instant::now();
                pinged = false;
            }
            Err(err) if err.kind() == std::io::ErrorKind::TimedOut => {
                let idle = last_in.elapsed();
                if limits.idle_timeout_ms > 0
                    && idle >= Duration::from_millis(limits.idle_timeout_ms)
                {
                    let close = Out::Close {
                        gate: None,
                        code: 1001,
                        reason: "idle timeout".into(),
                    };
                    e.queue.borrow_mut().push_back(close);
                    e.wake();
                } else if limits.ping_interval_ms > 0
                    && !pinged
                    && idle >= Duration::from_millis(limits.ping_interval_ms)
                {
                    let mut s = sh.borrow_mut();
                    if s.conn.ping(b"").is_ok() {
                        let ping = Bytes::from(s.conn.take_output());
                        e.queue.borrow_mut().push_back(Out::Control(ping));
                        e.wake();
                    }
                    pinged = true;
                }
            }
            Err(_) => {
                sh.borrow_mut().finish(1006, "connection lost");
                e.wake();
                return;
            }
        }
    }
}

/// Handles every complete event in the fed bytes; false once reading must stop.
fn decode(host: &Rc<HostInner>, e: &Rc<SocketEntry>, s: &mut Shared) -> bool {
    loop {
        if !s.held.is_empty() {
            return true;
        }
        match s.conn.next_event() {
            Ok(Poll::NeedData) => return true,
            Ok(Poll::Event(Event::Text(t))) => on_message(host, e, &mut s.held, t, true),
            Ok(Poll::Event(Event::Binary(b))) => on_message(host, e, &mut s.held, b, false),
            Ok(Poll::Event(Event::Ping(_))) => {
                let pong = Bytes::from(s.conn.take_output());
                e.queue.borrow_mut().push_back(Out::Control(pong));
                e.wake();
            }
            Ok(Poll::Event(Event::Pong(_))) => {}
            Ok(Poll::Event(Event::Close(f))) => {
                let (code, reason) = f.map_or((1005, String::new()), |f| {
                    (f.code, String::from_utf8_lossy(&f.reason).into_owned())
                });
                let out = s.conn.take_output();
                if s.close_sent {
                    // Our close was answered: the handshake is complete.
                    s.finish(code, &reason);
                } else {
                    s.echo = Some(out);
                    s.close_event_queued = true;
                    s.held.push_back(HostEvent::WsClose {
                        socket: e.clone(),
                        code,
                        reason,
                        echo: true,
                    });
                }
                return false;
            }
            Err(CodecError::Closed) => {
                s.finish(1006, "connection closed");
                return false;
            }
            Err(err) => {
                // A peer fault: the codec queued our close with its code. Send
                // it only after the object has answered the messages before
                // the fault, as for a peer's close.
                let code = err.close_code().unwrap_or(1006);
                s.held.push_back(HostEvent::WsError {
                    socket: e.clone(),
                    error: err.to_string(),
                });
                let out = s.conn.take_output();
                if s.close_sent {
                    s.finish(code, &err.to_string());
                } else {
                    s.echo = Some(out);
                    s.close_event_queued = true;
                    s.held.push_back(HostEvent::WsClose {
                        socket: e.clone(),
                        code,
                        reason: err.to_string(),
                        echo: true,
                    });
                }
                return false;
            }
        }
    }
}

/// Writes the socket's queue as the output gate releases it, until the
/// connection ends.
async fn writer(
    host: &Rc<HostInner>,
    e: &SocketEntry,
    stream: &mut TcpStream,
    sh: &RefCell<Shared>,
    grace: Duration,
) {
    let mut wbuf: Vec<u8> = Vec::new();
    let mut deadline: Option<Instant> = None;
    loop {
        let mut gate = None;
        let mut done = false;
        {
            let mut q = e.queue.borrow_mut();
            let mut s = sh.borrow_mut();
            let mut frames = 0;
            while let Some(front) = q.front() {
                if let Out::Frame { gate: Some(t), .. } | Out::Close { gate: Some(t), .. } = front
                    && !t.is_durable()
                {
                    gate = Some(t.clone());
                    break;
                }
                match q.pop_front().expect("front exists") {
                    Out::Frame { bytes, .. } => {
                        e.queued_bytes.set(e.queued_bytes.get() - bytes.len());
                        if !s.close_sent {
                            wbuf.extend_from_slice(&bytes);
                            frames += 1;
                        }
                    }
                    Out::Control(bytes) => {
                        if !s.close_sent {
                            wbuf.extend_from_slice(&bytes);
                        }
                    }
                    Out::Close { code, reason, .. } => {
                        if !s.close_sent
                            && s.echo.is_none()
                            && s.conn.close(Some(code), &reason).is_ok()
                        {
                            wbuf.extend(s.conn.take_output());
                            s.close_sent = true;
                            deadline = Some(e.killed_at.get().unwrap_or_else(Instant::now) + grace);
                        }
                    }
                    Out::EchoClose => {
                        wbuf.extend(s.echo.take().unwrap_or_default());
                        s.close_sent = true;
                        s.finish(1000, "");
                        done = true;
                        break;
                    }
                }
            }
            host.sockets.metrics.borrow_mut().messages_out += frames;
        }
        if !wbuf.is_empty() {
            let ok = write_bounded(stream, &wbuf, e, grace).await;
            host.sockets.metrics.borrow_mut().bytes_out += wbuf.len() as u64;
            wbuf.clear();
            if ok != Written::All {
                let mut s = sh.borrow_mut();
                s.abort = ok == Written::TimedOut;
                s.finish(1006, "write failed or timed out");
                return;
            }
            if done || sh.borrow().end.is_some() {
                return;
            }
            // Look at the queue again before waiting: `write_bounded` takes
            // wake-ups while it writes, so what was queued meanwhile (the
            // slow-consumer close above all) may have no wake-up left.
            continue;
        }
        if done || sh.borrow().end.is_some() {
            return;
        }
        if let Some(t) = gate {
            if let Err(err) = t.durable().await {
                // The write the frame depends on failed: it must never leave.
                eprintln!("cairn: socket {}: held frame's write failed: {err}", e.id);
                let mut s = sh.borrow_mut();
                let _ = s.conn.close(Some(1011), "storage failure");
                s.finish(1011, "storage failure");
                return;
            }
            continue;
        }
        match deadline {
            None => {
                e.notify.notified().await;
            }
            Some(d) => {
                let timed_out = or(
                    async {
                        e.notify.notified().await;
                        false
                    },
                    async {
                        glommio::timer::sleep(d.saturating_duration_since(Instant::now())).await;
                        true
                    },
                )
                .await;
                if timed_out {
                    sh.borrow_mut().finish(1006, "close handshake timed out");
                    return;
                }
            }
        }
    }
}

/// Queues held events on the object in order, stopping at a full queue.
fn deliver(host: &Rc<HostInner>, e: &SocketEntry, held: &mut VecDeque<HostEvent>) {
    while let Some(ev) = held.pop_front() {
        if let Err(ev) = HostInner::enqueue(host, e.target.clone(), ev) {
            held.push_front(*ev);
            return;
        }
    }
}

fn on_message(
    host: &Rc<HostInner>,
    e: &Rc<SocketEntry>,
    held: &mut VecDeque<HostEvent>,
    data: Bytes,
    text: bool,
) {
    host.sockets.metrics.borrow_mut().messages_in += 1;
    if text && let Some(resp) = host.sockets.auto_response(&e.target.id, &data) {
        host.sockets.push(
            e,
            Out::Frame {
                gate: None,
                bytes: resp,
            },
        );
        return;
    }
    let msg = if text {
        Message::Text(String::from_utf8_lossy(&data).into_owned())
    } else {
        Message::Binary(data)
    };
    held.push_back(HostEvent::WsMessage {
        socket: e.clone(),
        msg,
    });
}

/// How a bounded write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    All,
    Failed,
    /// The socket was closed as a slow consumer and `close_grace_ms` passed.
    TimedOut,
}

/// Writes `buf`, giving up `grace` after the socket is closed as a slow
/// consumer. It consumes wake-ups while it waits for the kill, so the caller
/// must look at the queue again afterwards.
async fn write_bounded(
    stream: &mut TcpStream,
    buf: &[u8],
    e: &SocketEntry,
    grace: Duration,
) -> Written {
    or(
        async {
            match stream.write_all(buf).await {
                Ok(()) => Written::All,
                Err(_) => Written::Failed,
            }
        },
        async {
            while !e.killed.get() {
                e.notify.notified().await;
            }
            let end = e.killed_at.get().unwrap_or_else(Instant::now) + grace;
            glommio::timer::sleep(end.saturating_duration_since(Instant::now())).await;
            Written::TimedOut
        },
    )
    .await
}
