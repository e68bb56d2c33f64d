//! One socket's I/O task on its object's shard: reads and decodes frames,
//! hands messages to the object's input queue (or answers the auto-response
//! itself), writes the socket's queue as the output gate releases it, sends
//! server pings, enforces the idle timeout, and runs the close handshake.
//!
//! One task does both directions, racing the read against its wake-up
//! channel: glommio reads are readiness-based, so dropping a pending read
//! loses no bytes. While the object's queue is full the task stops reading,
//! which pushes back on the peer through TCP.
//!
//! **Close ordering:** when the peer's close arrives (or the peer breaks the
//! protocol), reading stops at once, but our close frame is held until the
//! object has handled every message before it and the close handler has run,
//! so replies to those messages still go out before the close frame
//! (Autobahn 3.*, 4.*, 7.1.*). Every socket gets exactly one close event.

use std::collections::VecDeque;
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
use crate::store::CommitError;

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 16 << 10;

/// How long a socket waits before retrying an object queue that was full.
const QUEUE_RETRY_MS: u64 = 1;

/// Retries before a close event that cannot be queued is given up and the
/// socket is dropped from the table without its handler running.
const CLOSE_EVENT_TRIES_MAX: u32 = 10_000;

enum Wake {
    Read(std::io::Result<usize>),
    Woken,
    Gate(Result<(), CommitError>),
    Timer,
}

/// Runs the socket until its connection is over and its close event is queued.
pub(crate) async fn run(
    host: Rc<HostInner>,
    e: Rc<SocketEntry>,
    mut stream: TcpStream,
    leftover: Bytes,
) {
    let limits = host.sockets.limits;
    let grace = Duration::from_millis(limits.close_grace_ms);
    let mut conn = Connection::server(CodecConfig {
        message_bytes_max: limits.message_bytes_max,
        frame_bytes_max: limits.message_bytes_max,
    });
    conn.feed(&leftover);
    let Some(wake) = e.wake_rx.borrow_mut().take() else {
        return;
    };
    let mut rbuf = vec![0u8; READ_CHUNK_BYTES];
    let mut wbuf: Vec<u8> = Vec::new();
    let mut held: VecDeque<HostEvent> = VecDeque::new();
    let mut last_in = Instant::now();
    let mut pinged = false;
    let mut reading = true;
    let mut close_sent = false;
    let mut echo: Option<Vec<u8>> = None;
    let mut close_deadline: Option<Instant> = None;
    let mut close_event_queued = false;
    // Set when the connection is over: the code and reason the close handler sees.
    let mut end: Option<(u16, String)> = None;
    while end.is_none() {
        deliver(&host, &e, &mut held);
        while held.is_empty() && reading && end.is_none() {
            match conn.next_event() {
                Ok(Poll::NeedData) => break,
                Ok(Poll::Event(Event::Text(t))) => on_message(&host, &e, &mut held, t, true),
                Ok(Poll::Event(Event::Binary(b))) => on_message(&host, &e, &mut held, b, false),
                Ok(Poll::Event(Event::Ping(_))) => wbuf.extend(conn.take_output()),
                Ok(Poll::Event(Event::Pong(_))) => {}
                Ok(Poll::Event(Event::Close(f))) => {
                    reading = false;
                    let (code, reason) = f.map_or((1005, String::new()), |f| {
                        (f.code, String::from_utf8_lossy(&f.reason).into_owned())
                    });
                    let out = conn.take_output();
                    if close_sent {
                        // Our close was answered: the handshake is complete.
                        wbuf.extend(out);
                        end = Some((code, reason));
                    } else {
                        echo = Some(out);
                        close_event_queued = true;
                        held.push_back(HostEvent::WsClose {
                            socket: e.clone(),
                            code,
                            reason,
                            echo: true,
                        });
                    }
                }
                Err(CodecError::Closed) => end = Some((1006, "connection closed".into())),
                Err(err) => {
                    // A peer fault: the codec queued our close with its code.
                    // Stop reading at once, but send that close only after the
                    // object has answered the messages before the fault, as
                    // for a peer's close.
                    reading = false;
                    let code = err.close_code().unwrap_or(1006);
                    held.push_back(HostEvent::WsError {
                        socket: e.clone(),
                        error: err.to_string(),
                    });
                    if close_sent {
                        wbuf.extend(conn.take_output());
                        end = Some((code, err.to_string()));
                    } else {
                        echo = Some(conn.take_output());
                        close_event_queued = true;
                        held.push_back(HostEvent::WsClose {
                            socket: e.clone(),
                            code,
                            reason: err.to_string(),
                            echo: true,
                        });
                    }
                }
            }
        }
        if end.is_some() {
            break;
        }
        // Take every queued item the output gate releases.
        let mut gate_wait = None;
        loop {
            let mut q = e.queue.borrow_mut();
            let Some(front) = q.front() else { break };
            if let Out::Frame { gate: Some(t), .. } | Out::Close { gate: Some(t), .. } = front
                && !t.is_durable()
            {
                gate_wait = Some(t.clone());
                break;
            }
            match q.pop_front().expect("front exists") {
                Out::Frame { bytes, .. } => {
                    e.queued_bytes.set(e.queued_bytes.get() - bytes.len());
                    if !close_sent {
                        wbuf.extend_from_slice(&bytes);
                        host.sockets.metrics.borrow_mut().messages_out += 1;
                    }
                }
                Out::Close { code, reason, .. } => {
                    if !close_sent && echo.is_none() && conn.close(Some(code), &reason).is_ok() {
                        wbuf.extend(conn.take_output());
                        close_sent = true;
                        close_deadline = Some(Instant::now() + grace);
                    }
                }
                Out::EchoClose => {
                    wbuf.extend(echo.take().unwrap_or_default());
                    end = Some((1000, String::new()));
                    break;
                }
            }
        }
        if !wbuf.is_empty() {
            let ok = write_bounded(&mut stream, &wbuf, &e, &wake, grace).await;
            host.sockets.metrics.borrow_mut().bytes_out += wbuf.len() as u64;
            wbuf.clear();
            if !ok {
                end.get_or_insert((1006, "write failed or timed out".into()));
            }
        }
        if end.is_some() {
            break;
        }
        let now = Instant::now();
        let mut timer_at = close_deadline;
        let mut at = |t: Instant| timer_at = Some(timer_at.map_or(t, |x| x.min(t)));
        if limits.ping_interval_ms > 0 && !pinged && reading {
            at(last_in + Duration::from_millis(limits.ping_interval_ms));
        }
        if limits.idle_timeout_ms > 0 && reading && !close_sent {
            at(last_in + Duration::from_millis(limits.idle_timeout_ms));
        }
        if !held.is_empty() {
            at(now + Duration::from_millis(QUEUE_RETRY_MS));
        }
        let read_now = reading && held.is_empty();
        let woke = or(
            or(
                async {
                    if read_now {
                        Wake::Read(stream.read(&mut rbuf).await)
                    } else {
                        pending().await
                    }
                },
                async {
                    wake.recv().await;
                    Wake::Woken
                },
            ),
            or(
                async {
                    match &gate_wait {
                        Some(t) => Wake::Gate(t.durable().await),
                        None => pending().await,
                    }
                },
                async {
                    match timer_at {
                        Some(t) => {
                            glommio::timer::sleep(t.saturating_duration_since(now)).await;
                            Wake::Timer
                        }
                        None => pending().await,
                    }
                },
            ),
        )
        .await;
        match woke {
            Wake::Read(Ok(0)) | Wake::Read(Err(_)) => end = Some((1006, "connection lost".into())),
            Wake::Read(Ok(n)) => {
                host.sockets.metrics.borrow_mut().bytes_in += n as u64;
                conn.feed(&rbuf[..n]);
                last_in = Instant::now();
                pinged = false;
            }
            Wake::Woken => {}
            Wake::Gate(Ok(())) => {}
            Wake::Gate(Err(err)) => {
                // The write the frame depends on failed: it must never leave.
                eprintln!("cairn: socket {}: held frame's write failed: {err}", e.id);
                let _ = conn.close(Some(1011), "storage failure");
                wbuf.extend(conn.take_output());
                end = Some((1011, "storage failure".into()));
            }
            Wake::Timer => {
                let now = Instant::now();
                if close_deadline.is_some_and(|d| now >= d) {
                    end = Some((1006, "close handshake timed out".into()));
                } else if limits.idle_timeout_ms > 0
                    && !close_sent
                    && now >= last_in + Duration::from_millis(limits.idle_timeout_ms)
                {
                    if conn.close(Some(1001), "idle timeout").is_ok() {
                        wbuf.extend(conn.take_output());
                        close_sent = true;
                    }
                    close_deadline = Some(now + grace);
                } else if limits.ping_interval_ms > 0
                    && !pinged
                    && now >= last_in + Duration::from_millis(limits.ping_interval_ms)
                {
                    if conn.ping(b"").is_ok() {
                        wbuf.extend(conn.take_output());
                    }
                    pinged = true;
                }
            }
        }
    }
    // The connection is over: flush what is left (bounded), close TCP first
    // (RFC 6455 §7.1.1), then make sure the object hears of it.
    if !wbuf.is_empty() {
        let _ = write_bounded(&mut stream, &wbuf, &e, &wake, grace).await;
    }
    let _ = stream.shutdown(std::net::Shutdown::Write).await;
    drop(stream);
    e.state.set(SockState::Ended);
    e.queue.borrow_mut().clear();
    e.queued_bytes.set(0);
    if !close_event_queued {
        let (code, reason) = end.unwrap_or((1006, String::new()));
        held.push_back(HostEvent::WsClose {
            socket: e.clone(),
            code,
            reason,
            echo: false,
        });
    }
    let mut tries = 0;
    loop {
        deliver(&host, &e, &mut held);
        if held.is_empty() {
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

/// Writes `buf`; false if the write fails, or if the socket is closed as a
/// slow consumer and the write does not finish within `grace`.
async fn write_bounded(
    stream: &mut TcpStream,
    buf: &[u8],
    e: &SocketEntry,
    wake: &glommio::channels::local_channel::LocalReceiver<()>,
    grace: Duration,
) -> bool {
    or(async { stream.write_all(buf).await.is_ok() }, async {
        while !e.killed.get() {
            if wake.recv().await.is_none() {
                break;
            }
        }
        glommio::timer::sleep(grace).await;
        false
    })
    .await
}
