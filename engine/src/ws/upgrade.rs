//! The upgrade path: validates the handshake on the shard that accepted the
//! TCP connection, moves the connection to the object's owning shard if that
//! is another one ([`Handoff`]), delivers the upgrade request to the object's
//! `fetch`, and then either writes `101 Switching Protocols` and starts the
//! socket's task, or writes the object's refusal and closes.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use cairn_proto::http::DateCache;
use cairn_proto::http::head::Version;
use cairn_proto::ws::handshake::{self, ServerAccept};
use futures_lite::io::AsyncWriteExt;
use glommio::channels::local_channel;
use glommio::net::TcpStream;

use super::table::SockState;
use crate::host::{HostInner, ObjectHost, Target};
use crate::id::shard_of;
use crate::object::{ErrorCode, Request, Response};
use crate::shard::Shard;

/// A connection on its way to its object's shard: `Send`, so it travels in
/// shard mail. Holds a plain file descriptor and the bytes already read after
/// the request head.
#[derive(Debug)]
pub struct Handoff {
    /// The connection, detached from the accepting shard's executor.
    pub stream: std::net::TcpStream,
    /// Bytes the client sent after the upgrade request (early frames).
    pub leftover: Bytes,
    /// The object.
    pub target: Target,
    /// The upgrade request as the object sees it.
    pub req: Request,
    /// The handshake's accept key, computed on the accepting shard.
    pub accept: ServerAccept,
}

/// True if `req` asks for a WebSocket (`Upgrade: websocket`).
pub fn is_upgrade(req: &cairn_proto::http::Request) -> bool {
    req.header("upgrade").is_some_and(|v| {
        v.split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"websocket"))
    })
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Writes `resp` with `Connection: close`.
async fn refuse(stream: &mut TcpStream, resp: &Response) {
    let mut out = Vec::new();
    let date = DateCache::new(unix_secs());
    crate::http::write_response(&mut out, resp, &date, false, true);
    let _ = stream.write_all(&out).await;
}

/// Takes over a connection whose request `req` asked for a WebSocket. Called
/// by the HTTP connection loop, which stops using the connection.
pub async fn take_over(
    mut stream: TcpStream,
    leftover: BytesMut,
    req: cairn_proto::http::Request,
    shard: &Shard,
) {
    let headers: Vec<(&str, &[u8])> = req.headers().collect();
    let minor = match req.version {
        Version::Http10 => 0,
        _ => 1,
    };
    let accept = match handshake::validate_request(req.method(), minor, &headers) {
        Ok(a) => a,
        Err(e) => {
            let mut out = Vec::new();
            handshake::write_rejection(e, &mut out);
            let _ = stream.write_all(&out).await;
            return;
        }
    };
    let (target, obj_req) =
        match crate::http::resolve(shard, &req, &mut crate::http::IdCache::default()) {
            Ok(t) => t,
            Err(resp) => return refuse(&mut stream, &resp).await,
        };
    let owner = shard_of(&target.id, shard.config.shards);
    if owner == shard.id {
        adopt_local(
            &shard.host,
            stream,
            leftover.freeze(),
            target,
            obj_req,
            accept,
        )
        .await;
        return;
    }
    // Detach the descriptor from this executor: duplicate it, and let the
    // glommio handle close the original (no operation is in flight on it).
    let fd = stream.as_raw_fd();
    // SAFETY: `fd` is an open socket owned by `stream`; dup returns a new
    // descriptor (or -1) and touches nothing else.
    let dup = unsafe { libc::dup(fd) };
    if dup < 0 {
        let resp = Response::error(ErrorCode::Overloaded, "cannot hand the socket over");
        return refuse(&mut stream, &resp).await;
    }
    drop(stream);
    // SAFETY: `dup` is a fresh descriptor of a connected TCP socket that
    // nothing else owns.
    let std_stream = unsafe { std::net::TcpStream::from_raw_fd(dup) };
    let handoff = Box::new(Handoff {
        stream: std_stream,
        leftover: leftover.freeze(),
        target,
        req: obj_req,
        accept,
    });
    if let Err(h) = shard.host.forward_socket(owner, handoff) {
        // The owner's mailbox is full: refuse without blocking this shard.
        let resp = Response::error(
            ErrorCode::Overloaded,
            "the owning shard is busy; retry later",
        );
        let mut out = Vec::new();
        crate::http::write_response(&mut out, &resp, &DateCache::new(unix_secs()), false, true);
        let mut s = h.stream;
        let _ = s.set_nonblocking(true);
        let _ = s.write(&out);
    }
}

/// Receives a handed-over connection on its owning shard.
pub fn adopt(host: &ObjectHost, h: Handoff) {
    let _ = h.stream.set_nonblocking(true);
    let fd = h.stream.into_raw_fd();
    // SAFETY: `fd` came from `into_raw_fd`, so this is its only owner.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let _ = stream.set_nodelay(true);
    let host = host.inner().clone();
    glommio::spawn_local(async move {
        adopt_inner(&host, stream, h.leftover, h.target, h.req, h.accept).await;
    })
    .detach();
}

pub(crate) async fn adopt_local(
    host: &ObjectHost,
    stream: TcpStream,
    leftover: Bytes,
    target: Target,
    req: Request,
    accept: ServerAccept,
) {
    adopt_inner(host.inner(), stream, leftover, target, req, accept).await;
}

/// Runs the upgrade `fetch` on this (the owning) shard and finishes the handshake.
async fn adopt_inner(
    host: &Rc<HostInner>,
    mut stream: TcpStream,
    leftover: Bytes,
    target: Target,
    req: Request,
    accept: ServerAccept,
) {
    let id = host.sockets.next_id();
    let (tx, rx) = local_channel::new_bounded(1);
    HostInner::dispatch_upgrade(
        host,
        target,
        req,
        id,
        Box::new(move |resp| {
            let _ = tx.try_send(resp);
        }),
    );
    let resp = rx
        .recv()
        .await
        .unwrap_or_else(|| Response::error(ErrorCode::ShuttingDown, "the object went away"));
    let entry = host.sockets.get(id);
    match entry {
        Some(e) if resp.status == 101 => {
            let mut out = Vec::new();
            accept.write_response(&mut out);
            if stream.write_all(&out).await.is_err() {
                host.sockets.remove(id);
                return;
            }
            if e.state.get() == SockState::Pending {
                e.state.set(SockState::Open);
            }
            // The socket's I/O runs in the shard's socket queue (see
            // `table::IO_QUEUE_PREEMPT_US`); this task only waits for it.
            let queue = host.sockets.io_queue();
            let run = super::socket::run(host.clone(), e.clone(), stream, leftover);
            match glommio::spawn_local_into(run, queue) {
                Ok(task) => task.await,
                Err(err) => {
                    eprintln!("cairn: socket {}: cannot start its task: {err}", e.id);
                    host.sockets.remove(id);
                }
            }
        }
        Some(_) => {
            host.sockets.remove(id);
            refuse(&mut stream, &resp).await;
        }
        None if resp.status == 101 => {
            let resp = Response::error(
                ErrorCode::WebSocketNotAccepted,
                "the object answered 101 without accepting the socket",
            );
            refuse(&mut stream, &resp).await;
        }
        None => refuse(&mut stream, &resp).await,
    }
}
