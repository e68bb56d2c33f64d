//! The HTTP server: the accept loop every shard runs on the shared port
//! (glommio's `TcpListener::bind` sets `SO_REUSEPORT`), the connection loop
//! over `cairn-proto`'s sans-IO decoder and writer, and the routes.
//!
//! Routes (`docs/HTTP-API.md` is the reference):
//! - `/{class}/{name}/{rest...}`: the object named `name` (percent-decoded);
//! - `/{class}/id/{hex}/{rest...}`: the object with that 64-hex-char ID;
//! - `/_cairn/health`, `/_cairn/metrics`;
//! - `/_cairn/objects/...`: the operator endpoints (`admin.rs`).
//!
//! # Connections
//!
//! **Ordering:** responses leave a connection in request order. Pipelined
//! requests already in the buffer are decoded and dispatched together (up to
//! [`PIPELINE_DEPTH_MAX`]), so requests to objects on different shards run
//! concurrently; each waits in a FIFO of `Pending` slots and responses are
//! written from its front only, several at once when they are ready.
//!
//! **Limits (what a slow or idle client may hold):** a request head must
//! arrive within `header_timeout_ms` of its first byte, its body within
//! `body_timeout_ms` of the head's end (else 408 and close); a keep-alive
//! connection with no byte of a next request is closed
//! `keepalive_timeout_ms` after its last response (the read deadlines are
//! swept, so each may fire up to a quarter of the shortest late, see
//! `readiness.rs`); each response write must progress within
//! `write_timeout_ms`. The read buffer holds at most one request head
//! (`header_bytes_max`) and body (`body_bytes_max`) plus one read (16 KiB);
//! no new bytes are read while a full pipeline is outstanding. A shard keeps
//! at most `connections_max` connections; one more is answered 503
//! `overloaded` with `Retry-After` and closed.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use cairn_proto::http::target::find_byte;
use cairn_proto::http::{
    ConnState, DateCache, Limits, RequestDecoder, ResponseWriter, write_continue,
};
use futures_lite::io::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream};

use crate::host::{LATENCY_BUCKETS_US, RequestStats, ShardStats, Target};
use crate::id::{ObjectId, id_from_name, id_from_string};
use crate::object::{ErrorCode, Headers, Request, Response, Text, json_escape, percent_decode};
use crate::readiness::{self, Readiness};
use crate::shard::Shard;

/// Most requests of one connection dispatched and not yet answered. Bounds
/// the memory one pipelining client holds (each slot holds one request).
pub const PIPELINE_DEPTH_MAX: usize = 32;

/// Size of each socket read.
const READ_BYTES: usize = 16 << 10;

/// A connection's decode buffer, to begin with (it grows for a large head or body).
const BUF_BYTES: usize = 8 << 10;

/// How often a busy connection re-reads the wall clock for its `Date`
/// header (the header has one-second resolution; RFC 9110 asks for the best
/// available approximation, which a reading at most this old is).
const DATE_REFRESH: Duration = Duration::from_millis(100);

/// Accepts connections on the configured address until the server stops.
pub async fn serve(shard: Shard) {
    let listener = match TcpListener::bind(shard.config.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "cairn: shard {}: cannot listen on {}: {e}",
                shard.id, shard.config.listen
            );
            std::process::exit(2);
        }
    };
    let open = Rc::new(Cell::new(0usize));
    let c = &shard.config;
    let sweep = readiness::sweep_period(&[
        c.header_timeout_ms,
        c.body_timeout_ms,
        c.keepalive_timeout_ms,
    ]);
    let readiness = match Readiness::start(sweep) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cairn: shard {}: cannot make an epoll set: {e}", shard.id);
            std::process::exit(2);
        }
    };
    loop {
        match listener.accept().await {
            Ok(stream) => {
                if shard.stopping.load(Ordering::Acquire) {
                    break;
                }
                let _ = stream.set_nodelay(true);
                let write_timeout = Duration::from_millis(shard.config.write_timeout_ms);
                let _ = stream.set_write_timeout(Some(write_timeout));
                if open.get() >= shard.config.connections_max {
                    glommio::spawn_local(refuse(stream)).detach();
                    continue;
                }
                let guard = Counted::new(&open);
                let shard = shard.clone();
                let readiness = readiness.clone();
                glommio::spawn_local(async move {
                    connection(stream, shard, &readiness).await;
                    drop(guard);
                })
                .detach();
            }
            Err(e) => eprintln!("cairn: shard {}: accept failed: {e}", shard.id),
        }
    }
}

/// Answers a connection past `connections_max` with 503 and closes it.
async fn refuse(mut stream: TcpStream) {
    let resp = Response::error(
        ErrorCode::Overloaded,
        "too many open connections on this shard; retry later",
    );
    let mut out = Vec::with_capacity(256);
    write_response(&mut out, &resp, &DateCache::new(unix_secs()), false, true);
    let _ = stream.write_all(&out).await;
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Counts something (a request in flight, an open connection) for as long as
/// it lives.
struct Counted(Rc<Cell<usize>>);

impl Counted {
    fn new(c: &Rc<Cell<usize>>) -> Counted {
        c.set(c.get() + 1);
        Counted(c.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// Where a dispatched request's response lands. Filled exactly once: by the
/// reply, or with 503 `shutting_down` if the reply is dropped unanswered.
#[derive(Default)]
struct Slot {
    resp: RefCell<Option<Response>>,
    waker: RefCell<Option<Waker>>,
}

impl Slot {
    fn fill(&self, resp: Response) {
        *self.resp.borrow_mut() = Some(resp);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// The sending half of a [`Slot`]; dropping it unused answers 503, so a
/// connection never waits for a reply that cannot come.
struct Responder(Option<Rc<Slot>>);

impl Responder {
    fn send(mut self, resp: Response) {
        if let Some(slot) = self.0.take() {
            slot.fill(resp);
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            slot.fill(Response::error(
                ErrorCode::ShuttingDown,
                "the request was dropped before it was answered",
            ));
        }
    }
}

/// A routed request: answered at once (built-in routes, routing errors) or
/// waiting for its object.
enum Routed {
    Ready(Response),
    Waiting(Rc<Slot>),
}

/// The class label a request is counted under in metrics: a fixed label, or
/// an object class's name shared by the connection's requests (one
/// allocation per connection and class, not one per request).
#[derive(Clone)]
enum Label {
    Fixed(&'static str),
    Class(Rc<str>),
}

impl Label {
    fn as_str(&self) -> &str {
        match self {
            Label::Fixed(s) => s,
            Label::Class(s) => s,
        }
    }

    /// The label for object class `class`, reusing `cache` when it names the
    /// same class (a connection usually addresses one class).
    fn for_class(class: &str, cache: &mut Option<Rc<str>>) -> Label {
        match cache {
            Some(c) if &**c == class => Label::Class(c.clone()),
            _ => {
                let c: Rc<str> = Rc::from(class);
                *cache = Some(c.clone());
                Label::Class(c)
            }
        }
    }
}

/// One request of a connection whose response is not yet written.
struct Pending {
    routed: Routed,
    /// The class label of the request's metrics.
    class: Label,
    started: Instant,
    is_head: bool,
    close: bool,
    _in_flight: Counted,
}

impl Pending {
    fn is_ready(&self) -> bool {
        match &self.routed {
            Routed::Ready(_) => true,
            Routed::Waiting(slot) => slot.resp.borrow().is_some(),
        }
    }

    fn take(self) -> Response {
        match self.routed {
            Routed::Ready(r) => r,
            Routed::Waiting(slot) => slot.resp.borrow_mut().take().unwrap_or_else(|| {
                Response::error(ErrorCode::ShuttingDown, "no response was produced")
            }),
        }
    }
}

/// Waits until the front pending request has its response.
async fn front_ready(queue: &VecDeque<Pending>) {
    std::future::poll_fn(|cx| match queue.front() {
        Some(p) if !p.is_ready() => {
            if let Routed::Waiting(slot) = &p.routed {
                *slot.waker.borrow_mut() = Some(cx.waker().clone());
            }
            Poll::Pending
        }
        _ => Poll::Ready(()),
    })
    .await
}

/// Which read deadline applies, by where the connection is in a request.
fn read_timeout(shard: &Shard, state: ConnState, buffered: bool) -> (Duration, bool) {
    let c = &shard.config;
    let ms = match state {
        ConnState::ReadingBody => return (Duration::from_millis(c.body_timeout_ms), true),
        ConnState::Idle if !buffered => {
            return (Duration::from_millis(c.keepalive_timeout_ms), false);
        }
        _ => c.header_timeout_ms,
    };
    (Duration::from_millis(ms), true)
}

async fn connection(mut stream: TcpStream, shard: Shard, readiness: &Readiness) {
    // Dropped before `stream` (locals go before parameters), and by hand
    // before the stream is handed to a WebSocket.
    let reg = match readiness.register(stream.as_raw_fd()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cairn: shard {}: cannot watch a connection: {e}", shard.id);
            return;
        }
    };
    let limits = Limits {
        header_bytes_max: shard.config.header_bytes_max,
        body_bytes_max: shard.config.body_bytes_max as u64,
        ..Limits::default()
    };
    let mut dec = RequestDecoder::new(limits);
    let mut buf = BytesMut::with_capacity(BUF_BYTES);
    let mut rbuf = vec![0u8; READ_BYTES];
    let mut out = Vec::with_capacity(4096);
    let mut date = DateCache::new(unix_secs());
    // The admin routes serve peers without a token only on loopback (admin.rs).
    let loopback = stream.peer_addr().is_ok_and(|a| a.ip().is_loopback());
    let mut queue: VecDeque<Pending> = VecDeque::new();
    // The phase a read deadline is measured in, and when it began: the
    // deadline is per phase, not per read, so a trickle of bytes cannot
    // extend it.
    let mut phase = (dec.state(), Instant::now());
    // Clock readings are a measurable share of a request's CPU time, so they
    // are shared: `now` is the latest reading (after each read, the drain
    // pass's that reported the bytes; before each batch of responses; after
    // a write that waited), and the Date header's wall clock is read at most
    // every `DATE_REFRESH`.
    let mut now = phase.1;
    let mut date_read_at = now;
    let mut label_cache: Option<Rc<str>> = None;
    let mut ids = IdCache::default();
    let mut upgrade: Option<cairn_proto::http::Request> = None;
    loop {
        // Dispatch every complete request already buffered, up to the limit.
        let mut failed = false;
        while upgrade.is_none() && queue.len() < PIPELINE_DEPTH_MAX {
            match dec.decode(&mut buf) {
                Ok(Some(req)) if crate::ws::upgrade::is_upgrade(&req) => {
                    // Bytes after it belong to the WebSocket: decode no more.
                    upgrade = Some(req);
                }
                Ok(Some(req)) => {
                    let close = dec.must_close() || shard.stopping.load(Ordering::Acquire);
                    // The response is committed to now (it leaves in order
                    // from the queue), so the decoder may read the next request.
                    if dec.response_sent(!close).is_err() {
                        return;
                    }
                    let is_head = req.is_head();
                    let in_flight = Counted::new(&shard.in_flight);
                    // Requests decoded from one read arrived together.
                    let started = now;
                    let (routed, class) =
                        route_start(&shard, req, loopback, &mut label_cache, &mut ids);
                    queue.push_back(Pending {
                        routed,
                        class,
                        started,
                        is_head,
                        close,
                        _in_flight: in_flight,
                    });
                    if close {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let resp = protocol_error(e);
                    queue.push_back(Pending {
                        routed: Routed::Ready(resp),
                        class: Label::Fixed(UNROUTED),
                        started: now,
                        is_head: false,
                        close: true,
                        _in_flight: Counted::new(&shard.in_flight),
                    });
                    failed = true;
                    break;
                }
            }
        }
        if !queue.is_empty() {
            front_ready(&queue).await;
            now = Instant::now();
            if now.duration_since(date_read_at) >= DATE_REFRESH {
                date.update(unix_secs());
                date_read_at = now;
            }
            out.clear();
            let mut close = false;
            while queue.front().is_some_and(Pending::is_ready) && !close {
                let Some(p) = queue.pop_front() else {
                    break;
                };
                let us =
                    u64::try_from(now.duration_since(p.started).as_micros()).unwrap_or(u64::MAX);
                let (class, is_head) = (p.class.clone(), p.is_head);
                close = p.close;
                let resp = p.take();
                shard.host.record_request(class.as_str(), resp.status, us);
                write_response(&mut out, &resp, &date, is_head, close);
            }
            let (written, waited) = write_noting_wait(&mut stream, &out).await;
            if written.is_err() || close {
                return;
            }
            if buf.is_empty() && dec.state() == ConnState::Idle {
                // Idle again: the keep-alive deadline runs from the end of
                // this response, not from the first byte of the request
                // (the state stayed Idle when it arrived in one read). A
                // write that waited for a slow reader ended later than
                // `now`, so the clock is read again; one that went out at
                // once (nearly all) ended at `now`, give or take the send.
                if waited {
                    now = Instant::now();
                }
                phase = (ConnState::Idle, now);
            }
            continue;
        }
        if let Some(req) = upgrade.take() {
            // Earlier pipelined responses are written; the socket now leaves
            // the HTTP loop for good (`ws::upgrade`), without HTTP's timeouts.
            drop(reg);
            crate::ws::upgrade::take_over(stream, buf, req, &shard).await;
            return;
        }
        if failed || dec.state() == ConnState::Closed {
            return;
        }
        if dec.take_continue() {
            out.clear();
            write_continue(&mut out);
            if stream.write_all(&out).await.is_err() {
                return;
            }
        }
        let state = dec.state();
        if state != phase.0 {
            now = Instant::now();
            phase = (state, now);
        }
        let (limit, answer) = read_timeout(&shard, state, !buf.is_empty());
        let Some(left) = limit
            .checked_sub(now.saturating_duration_since(phase.1))
            .filter(|d| !d.is_zero())
        else {
            if answer {
                request_timeout(&mut stream, &mut out, &date).await;
            }
            return;
        };
        if buf.is_empty() {
            // Back to the start of the buffer when no request still holds
            // part of it: the next bytes land in cache lines this connection
            // just used, instead of walking through the whole buffer (and
            // allocating a new one when the walk reaches its end while a
            // request holds the old one).
            let _ = buf.try_reclaim(BUF_BYTES);
        }
        let n = match reg.read(&mut rbuf, now + left).await {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                if answer {
                    request_timeout(&mut stream, &mut out, &date).await;
                }
                return;
            }
            Err(_) => return,
        };
        if n == 0 {
            if let Err(e) = dec.peer_closed() {
                let resp = protocol_error(e);
                out.clear();
                write_response(&mut out, &resp, &date, false, true);
                let _ = stream.write_all(&out).await;
            }
            return;
        }
        // When the drain saw the bytes (one clock reading per pass, shared
        // by the connections it woke): a request's latency runs from there.
        // Never earlier than the last reading: a stamp from while the
        // connection was busy would move its deadlines into the past.
        now = reg.seen_at().max(now);
        if phase.0 == ConnState::Idle && buf.is_empty() {
            // The first byte of a request: its head deadline starts now.
            phase.1 = now;
        }
        buf.extend_from_slice(&rbuf[..n]);
    }
}

/// Writes all of `out`; also says whether the write had to wait for the
/// peer (the socket's buffer was full), which is when the clock must be
/// read again after it.
async fn write_noting_wait(stream: &mut TcpStream, out: &[u8]) -> (std::io::Result<()>, bool) {
    let mut waited = false;
    let mut write = std::pin::pin!(stream.write_all(out));
    let written = std::future::poll_fn(|cx| {
        let p = write.as_mut().poll(cx);
        waited |= p.is_pending();
        p
    })
    .await;
    (written, waited)
}

/// The answer to a request `cairn-proto` refused: its status, with a stable
/// JSON code naming the kind of fault (the connection then closes).
fn protocol_error(e: cairn_proto::http::Error) -> Response {
    let status = e.status();
    let code = match status {
        413 => "too_large",
        414 => "uri_too_long",
        417 => "expectation_failed",
        431 => "header_too_large",
        501 => "not_implemented",
        505 => "version_not_supported",
        _ => "bad_request",
    };
    Response::json(
        status,
        format!(
            r#"{{"error":{{"code":"{code}","message":"{}"}}}}"#,
            json_escape(&e.to_string())
        ),
    )
}

/// Answers a request that did not arrive in time with 408 and closes.
async fn request_timeout(stream: &mut TcpStream, out: &mut Vec<u8>, date: &DateCache) {
    let resp = Response::json(
        408,
        r#"{"error":{"code":"request_timeout","message":"the request did not arrive in time"}}"#,
    );
    out.clear();
    write_response(out, &resp, date, false, true);
    let _ = stream.write_all(out).await;
}

/// Appends `resp` in HTTP/1.1 form to `out`.
pub(crate) fn write_response(
    out: &mut Vec<u8>,
    resp: &Response,
    date: &DateCache,
    is_head: bool,
    close: bool,
) {
    let mut w = ResponseWriter::new(out, resp.status, date, is_head);
    for (k, v) in &resp.headers {
        // Handlers' header values are checked by the writer; an invalid one is dropped.
        let _ = w.header(k, v.as_bytes());
    }
    if resp.status == 503 {
        let _ = w.header("Retry-After", b"1");
    }
    if close {
        w.close();
    }
    w.body(&resp.body);
}

/// Maps a request to its object (or a built-in endpoint) and waits for the
/// response. `loopback` says whether the peer is on a loopback address.
pub async fn route(shard: &Shard, req: cairn_proto::http::Request, loopback: bool) -> Response {
    match route_start(shard, req, loopback, &mut None, &mut IdCache::default()).0 {
        Routed::Ready(r) => r,
        Routed::Waiting(slot) => {
            std::future::poll_fn(|cx| match slot.resp.borrow_mut().take() {
                Some(r) => Poll::Ready(r),
                None => {
                    *slot.waker.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await
        }
    }
}

/// Maps a request to its object (or a built-in endpoint) and dispatches it
/// without waiting: routing errors and built-in routes are answered at once.
/// Also returns the class label the request is counted under in metrics.
fn route_start(
    shard: &Shard,
    req: cairn_proto::http::Request,
    loopback: bool,
    labels: &mut Option<Rc<str>>,
    ids: &mut IdCache,
) -> (Routed, Label) {
    let mut class = Label::Fixed(UNROUTED);
    let routed = match route_inner(shard, req, loopback, &mut class, labels, ids) {
        Ok(r) => Routed::Ready(r),
        Err(slot) => Routed::Waiting(slot),
    };
    (routed, class)
}

/// The ID of the object a connection addressed last by name. A connection
/// usually addresses one object, and `id_from_name` is a SHA-256 (about 1%
/// of a read's CPU) after percent-decoding the name; the cache compares the
/// name as sent, and its buffers are reused, so a hit decodes, hashes and
/// allocates nothing.
#[derive(Default)]
pub(crate) struct IdCache {
    last: Option<ObjectId>,
    class: String,
    raw_name: String,
}

impl IdCache {
    /// The ID of the object `class` / `raw_name` (the name still
    /// percent-encoded, as in the path), or `None` if the name has a bad
    /// percent escape.
    fn id_from_raw_name(&mut self, class: &str, raw_name: &str) -> Option<ObjectId> {
        if let Some(id) = self
            .last
            .filter(|_| self.class == class && self.raw_name == raw_name)
        {
            return Some(id);
        }
        let id = id_from_name(class, &percent_decode(raw_name)?);
        self.class.clear();
        self.class.push_str(class);
        self.raw_name.clear();
        self.raw_name.push_str(raw_name);
        self.last = Some(id);
        Some(id)
    }
}

/// The object a request addresses, borrowed from the request's head. The
/// owned [`Target`] (the class and decoded name copied out) is built only
/// when it is needed: to activate the object or to forward the request to
/// its shard, not for an active object on this shard.
pub(crate) struct Addressed<'a> {
    pub(crate) class: &'a str,
    pub(crate) id: ObjectId,
    /// The name as sent (percent-encoded; known to decode), if addressed by name.
    raw_name: Option<&'a str>,
}

impl Addressed<'_> {
    pub(crate) fn target(&self) -> Target {
        Target {
            class: self.class.into(),
            id: self.id,
            name: self.raw_name.and_then(percent_decode),
        }
    }
}

/// The metrics class label of requests that reached no object class.
const UNROUTED: &str = "_none";

/// The metrics class label of the server's own endpoints.
const ENDPOINTS: &str = "_cairn";

fn route_inner(
    shard: &Shard,
    req: cairn_proto::http::Request,
    loopback: bool,
    label: &mut Label,
    labels: &mut Option<Rc<str>>,
    ids: &mut IdCache,
) -> Result<Response, Rc<Slot>> {
    let target = cairn_proto::http::target::split(req.target());
    let path = target.path;
    if path.starts_with("/_cairn/") || path == "/" {
        *label = Label::Fixed(ENDPOINTS);
    }
    let method = req.method();
    let read_only_endpoint = path == "/_cairn/health" || path == "/_cairn/metrics" || path == "/";
    if read_only_endpoint && method != "GET" && method != "HEAD" {
        let mut r = Response::error(
            ErrorCode::MethodNotAllowed,
            "this endpoint accepts GET and HEAD",
        );
        r.headers.push(("allow".into(), "GET, HEAD".into()));
        return Ok(r);
    }
    match path {
        "/" => return Ok(index()),
        "/_cairn/health" => return Ok(health(shard)),
        "/_cairn/metrics" => {
            let slot = Rc::new(Slot::default());
            let responder = Responder(Some(slot.clone()));
            let host = shard.host.clone();
            glommio::spawn_local(async move {
                let all = host.gather_stats().await;
                let mut resp = metrics(&all);
                let mut body = resp.body.to_vec();
                body.extend_from_slice(crate::ws::metrics_text(&all).as_bytes());
                resp.body = body.into();
                responder.send(resp);
            })
            .detach();
            return Err(slot);
        }
        p if p == "/_cairn/objects" || p.starts_with("/_cairn/objects/") => {
            let query = target.query.unwrap_or("").to_string();
            let method = method.to_string();
            let auth = req.header("authorization").map(<[u8]>::to_vec);
            let slot = Rc::new(Slot::default());
            let responder = Responder(Some(slot.clone()));
            let (shard, path, body) = (shard.clone(), p.to_string(), req.body.clone());
            glommio::spawn_local(async move {
                let resp = crate::admin::handle(
                    &shard,
                    &method,
                    &path,
                    &query,
                    auth.as_deref(),
                    loopback,
                    body,
                )
                .await;
                responder.send(resp);
            })
            .detach();
            return Err(slot);
        }
        _ => {}
    }
    let (t, obj_req) = match resolve_target(shard, &req, target, ids) {
        Ok(r) => r,
        Err(resp) => return Ok(resp),
    };
    *label = Label::for_class(t.class, labels);
    let slot = Rc::new(Slot::default());
    let responder = Responder(Some(slot.clone()));
    shard.host.dispatch_addressed(
        t.id,
        || t.target(),
        obj_req,
        Box::new(move |resp| responder.send(resp)),
    );
    Err(slot)
}

/// The object a request addresses and the request as the object sees it, or
/// the error response for a bad address. Shared with the WebSocket upgrade
/// path (`ws::upgrade`).
pub(crate) fn resolve(
    shard: &Shard,
    req: &cairn_proto::http::Request,
    ids: &mut IdCache,
) -> Result<(Target, Request), Response> {
    resolve_target(
        shard,
        req,
        cairn_proto::http::target::split(req.target()),
        ids,
    )
    .map(|(a, r)| (a.target(), r))
}

/// [`resolve`] with `req`'s target already split.
fn resolve_target<'a>(
    shard: &Shard,
    req: &cairn_proto::http::Request,
    target: cairn_proto::http::target::Target<'a>,
    ids: &mut IdCache,
) -> Result<(Addressed<'a>, Request), Response> {
    let path = target.path;
    // `/{class}/{second}/{rest}`, split on bytes (see `find_byte`).
    let slash = |s: &'a str| match find_byte(s, b'/') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (class, after) = slash(path.strip_prefix('/').unwrap_or(path));
    let (second, rest) = match after.map(slash) {
        Some((second, rest)) => (Some(second), rest),
        None => (None, None),
    };
    if class.is_empty() || shard.host.classes().get(class).is_none() {
        return Err(Response::error(
            ErrorCode::NotFound,
            "no such class; routes are /{class}/{name}/...",
        ));
    }
    let (t, rest) = match second {
        None | Some("") => {
            return Err(Response::error(
                ErrorCode::NotFound,
                "missing object name: /{class}/{name}/...",
            ));
        }
        Some("id") => {
            let (hex, rest) = slash(rest.unwrap_or(""));
            let id = match id_from_string(hex) {
                Ok(id) => id,
                Err(e) => return Err(Response::error(ErrorCode::BadRequest, &e.to_string())),
            };
            (
                Addressed {
                    class,
                    id,
                    raw_name: None,
                },
                rest,
            )
        }
        Some(name) => {
            let Some(id) = ids.id_from_raw_name(class, name) else {
                return Err(Response::error(
                    ErrorCode::BadRequest,
                    "the object name has a bad percent escape",
                ));
            };
            (
                Addressed {
                    class,
                    id,
                    raw_name: Some(name),
                },
                rest,
            )
        }
    };
    let head = req.head_bytes();
    let obj_req = Request {
        method: method_text(head, req.method()),
        // `rest` follows a `/` in the head: the object's path is that slice.
        path: rest.map_or_else(Text::new, |r| match offset_in(head, r) {
            Some(i) if i > 0 && head[i - 1] == b'/' => text_of(head, i - 1..i + r.len()),
            _ => Text::from(format!("/{r}")),
        }),
        query: target
            .query
            .map_or_else(Text::new, |q| text_of_str(head, q)),
        headers: Headers::from_validated_section(req.fields_bytes()),
        body: req.body.clone(),
    };
    Ok((t, obj_req))
}

/// The method as [`Text`]: a static string for the common ones (no reference
/// count to take), else a slice of the head.
fn method_text(head: &bytes::Bytes, method: &str) -> Text {
    const COMMON: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"];
    match COMMON.iter().find(|m| **m == method) {
        Some(m) => Text::from_static(m),
        None => text_of_str(head, method),
    }
}

/// `s` as [`Text`]: sharing the request head `head` when it is a slice of
/// it (always, for the parser's slices), else copied.
fn text_of_str(head: &bytes::Bytes, s: &str) -> Text {
    offset_in(head, s).map_or_else(|| Text::from(s), |i| text_of(head, i..i + s.len()))
}

/// Where `s` starts in `head`, if it is a slice of it.
fn offset_in(head: &[u8], s: &str) -> Option<usize> {
    let (h, p) = (head.as_ptr() as usize, s.as_ptr() as usize);
    (p >= h && p + s.len() <= h + head.len()).then(|| p - h)
}

/// `head[range]` (in bounds, and text the parser validated) as [`Text`].
fn text_of(head: &bytes::Bytes, range: std::ops::Range<usize>) -> Text {
    Text::from_utf8(head.slice(range)).unwrap_or_default()
}

/// `ok`, or 503 `read_only` with storage's reason once a write or fdatasync
/// failed (writes on this shard fail until it is restarted; reads go on).
/// `GET /`: what answers here and where to look, so that a first `curl` (or
/// a probe pointed at the root) gets a 200 rather than a 404.
fn index() -> Response {
    Response::json(
        200,
        format!(
            concat!(
                r#"{{"server":"cairn","version":"{}","objects":"/{{class}}/{{name}}/...","#,
                r#""health":"/_cairn/health","metrics":"/_cairn/metrics"}}"#
            ),
            env!("CARGO_PKG_VERSION")
        ),
    )
}

fn health(shard: &Shard) -> Response {
    match shard.host.store().stats().read_only_reason {
        None => Response::json(200, format!(r#"{{"status":"ok","shard":{}}}"#, shard.id)),
        Some(reason) => Response::json(
            503,
            format!(
                r#"{{"status":"read_only","shard":{},"reason":"{}"}}"#,
                shard.id,
                crate::object::json_escape(&reason)
            ),
        ),
    }
}

/// Renders every shard's statistics as Prometheus text (format 0.0.4).
fn metrics(all: &[ShardStats]) -> Response {
    use std::fmt::Write;
    type Get = fn(&ShardStats) -> u64;
    let per_shard: [(&str, &str, &str, Get); 23] = [
        (
            "cairn_requests_total",
            "counter",
            "events handed to objects",
            |s| s.host.requests,
        ),
        (
            "cairn_overloaded_total",
            "counter",
            "events refused with 503",
            |s| s.host.overloaded,
        ),
        (
            "cairn_handler_panics_total",
            "counter",
            "handler panics",
            |s| s.host.panics,
        ),
        (
            "cairn_activations_total",
            "counter",
            "objects activated",
            |s| s.host.activations,
        ),
        ("cairn_evictions_total", "counter", "objects evicted", |s| {
            s.host.evictions
        }),
        (
            "cairn_alarms_fired_total",
            "counter",
            "alarm runs that succeeded",
            |s| s.host.alarms_fired,
        ),
        (
            "cairn_alarms_failed_total",
            "counter",
            "alarm runs that failed (retried)",
            |s| s.host.alarms_failed,
        ),
        (
            "cairn_alarms_abandoned_total",
            "counter",
            "alarms given up",
            |s| s.host.alarms_abandoned,
        ),
        (
            "cairn_storage_failures_total",
            "counter",
            "responses failed by a commit",
            |s| s.host.storage_failures,
        ),
        (
            "cairn_forwarded_total",
            "counter",
            "requests sent to another shard",
            |s| s.host.forwarded,
        ),
        (
            "cairn_call_cycles_total",
            "counter",
            "stub calls refused as cycles",
            |s| s.host.call_cycles,
        ),
        (
            "cairn_init_failures_total",
            "counter",
            "object inits that failed, panicked or timed out (each reset its object)",
            |s| s.host.init_failures,
        ),
        ("cairn_active_objects", "gauge", "objects in memory", |s| {
            s.active_objects
        }),
        (
            "cairn_object_memory_bytes",
            "gauge",
            "bytes charged to objects in memory",
            |s| s.object_memory_bytes,
        ),
        (
            "cairn_storage_index_bytes",
            "gauge",
            "bytes the storage index holds in memory",
            |s| s.store.index_bytes,
        ),
        (
            "cairn_storage_index_objects",
            "gauge",
            "objects in the storage index",
            |s| s.store.index_objects,
        ),
        (
            "cairn_queued_events",
            "gauge",
            "events queued or running",
            |s| s.queued_events,
        ),
        (
            "cairn_queue_depth_max",
            "gauge",
            "deepest object queue",
            |s| s.queue_depth_max,
        ),
        (
            "cairn_commits_total",
            "counter",
            "commit groups made durable",
            |s| s.store.commits,
        ),
        (
            "cairn_committed_mutations_total",
            "counter",
            "records in those groups",
            |s| s.store.mutations,
        ),
        (
            "cairn_commit_group_records_max",
            "gauge",
            "largest commit group",
            |s| s.store.group_records_max,
        ),
        (
            "cairn_fdatasync_seconds_max",
            "gauge",
            "slowest durable write of a commit group (device flush included)",
            |s| s.store.fdatasync_ns_max,
        ),
        (
            "cairn_storage_read_only",
            "gauge",
            "1 once a durable write failed: writes refused until restart",
            |s| u64::from(s.store.read_only_reason.is_some()),
        ),
    ];
    let mut out = String::with_capacity(8192);
    for (name, kind, help, get) in per_shard {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in all {
            let v = get(s);
            if name == "cairn_fdatasync_seconds_max" {
                // Stored in nanoseconds; Prometheus wants seconds.
                let _ = writeln!(out, "{name}{{shard=\"{}\"}} {:.9}", s.shard, v as f64 / 1e9);
            } else {
                let _ = writeln!(out, "{name}{{shard=\"{}\"}} {v}", s.shard);
            }
        }
    }
    // Summaries: commit group size and the group's durable-write latency
    // (named fdatasync from when it was a write and then an fdatasync).
    let name = "cairn_commit_group_records";
    let _ = writeln!(
        out,
        "# HELP {name} records per commit group\n# TYPE {name} summary"
    );
    for s in all {
        let _ = writeln!(
            out,
            "{name}_sum{{shard=\"{}\"}} {}",
            s.shard, s.store.mutations
        );
        let _ = writeln!(
            out,
            "{name}_count{{shard=\"{}\"}} {}",
            s.shard, s.store.commits
        );
    }
    let name = "cairn_fdatasync_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} durable write latency per commit group\n# TYPE {name} summary"
    );
    for s in all {
        let sum = s.store.fdatasync_ns_total as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{shard=\"{}\"}} {sum:.9}", s.shard);
        let _ = writeln!(
            out,
            "{name}_count{{shard=\"{}\"}} {}",
            s.shard, s.store.fdatasyncs
        );
    }
    // Requests by class and status, summed over the shards that accepted them.
    let mut by: std::collections::BTreeMap<(&str, u16), RequestStats> = Default::default();
    for s in all {
        for (class, status, r) in &s.requests {
            by.entry((class.as_str(), *status)).or_default().merge(r);
        }
    }
    let name = "cairn_http_request_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} HTTP request latency by class and status\n# TYPE {name} histogram"
    );
    for ((class, status), r) in &by {
        let labels = format!("class=\"{}\",status=\"{status}\"", prom_escape(class));
        let mut cumulative = 0;
        for (i, n) in r.buckets.iter().enumerate() {
            cumulative += n;
            let le = LATENCY_BUCKETS_US
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |us| format!("{}", *us as f64 / 1e6));
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum{{{labels}}} {:.6}", r.sum_us as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", r.count);
    }
    let name = "cairn_http_requests_total";
    let _ = writeln!(
        out,
        "# HELP {name} HTTP requests by class and status\n# TYPE {name} counter"
    );
    for ((class, status), r) in &by {
        let _ = writeln!(
            out,
            "{name}{{class=\"{}\",status=\"{status}\"}} {}",
            prom_escape(class),
            r.count
        );
    }
    let mut r = Response::new(200, out);
    r.headers
        .push(("content-type".into(), "text/plain; version=0.0.4".into()));
    r
}

/// Escapes a Prometheus label value.
fn prom_escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::IdCache;
    use crate::id::id_from_name;

    #[test]
    fn the_id_cache_answers_as_id_from_name_for_repeats_and_changes() {
        let mut ids = IdCache::default();
        for (class, name) in [
            ("counter", "a"),
            ("counter", "a"),
            ("counter", "b"),
            ("kv", "b"),
            ("counter", "a"),
            ("counter", ""),
        ] {
            assert_eq!(
                ids.id_from_raw_name(class, name),
                Some(id_from_name(class, name.as_bytes()))
            );
        }
        assert_eq!(
            ids.id_from_raw_name("counter", "a%2Fb"),
            Some(id_from_name("counter", b"a/b"))
        );
        assert_eq!(ids.id_from_raw_name("counter", "a%2"), None);
        assert_eq!(
            ids.id_from_raw_name("counter", "a%2Fb"),
            Some(id_from_name("counter", b"a/b"))
        );
    }
}
