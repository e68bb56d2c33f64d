//! What an object class implements ([`Object`]), the request and response it
//! sees, and the registry of classes a server hosts.
//!
//! Handler futures are not `Send`: an object lives on one shard for its whole
//! activation, so it may hold `Rc`s and `RefCell`s freely.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::error::Error;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::context::Context;
pub use crate::headers::{Headers, InvalidHeader};
pub use crate::store::LocalFuture;
pub use crate::text::Text;
use crate::ws::{Message, SocketId};

/// A Durable Object class. One instance exists per active object; the engine
/// calls at most one handler of it at a time (the input gate), so `&mut self`
/// is safe to hold across awaits.
///
/// WebSocket handlers are default methods, so classes without sockets need
/// not mention them. A socket's events arrive in order, one at a time, through
/// the same input gate as requests.
pub trait Object: 'static {
    /// Handles a request addressed to this object.
    fn fetch<'a>(&'a mut self, ctx: &'a Context, req: Request) -> LocalFuture<'a, Response>;

    /// Prepares a fresh instance, typically by loading state from storage,
    /// before it handles its first event (after activation, a wake from
    /// eviction, or a reset). It runs behind the input gate, as if under
    /// [`Context::block_concurrency_while`] bounded by `init_timeout_ms`: no
    /// event reaches the object until it is done. An `Err`, a panic or the
    /// timeout resets the object (a fresh instance, `init` again on the next
    /// event) and fails the event that woke it (503 `init_failed` for a
    /// request; a failed attempt, retried, for an alarm; close 1011 for a
    /// WebSocket message; a WebSocket error or close event is dropped without
    /// its handler), and the events queued behind it. The default does
    /// nothing.
    fn init<'a>(&'a mut self, ctx: &'a Context) -> LocalFuture<'a, Result<(), Box<dyn Error>>> {
        let _ = ctx;
        Box::pin(std::future::ready(Ok(())))
    }

    /// Runs when the object's alarm fires. An `Err` (or a panic) is retried with
    /// exponential backoff. The default does nothing.
    fn alarm<'a>(&'a mut self, ctx: &'a Context) -> LocalFuture<'a, Result<(), Box<dyn Error>>> {
        let _ = ctx;
        Box::pin(std::future::ready(Ok(())))
    }

    /// Handles a text or binary message from one of this object's sockets.
    /// The default ignores it.
    fn websocket_message<'a>(
        &'a mut self,
        ctx: &'a Context,
        socket: SocketId,
        msg: Message,
    ) -> LocalFuture<'a, ()> {
        let _ = (ctx, socket, msg);
        Box::pin(std::future::ready(()))
    }

    /// Runs once per socket when its connection is over: `code` and `reason`
    /// from the peer's close frame (1005 when it had no code), or 1006 when
    /// the connection was lost. The socket can no longer be sent to, but its
    /// attachment is still readable. The default does nothing.
    fn websocket_close<'a>(
        &'a mut self,
        ctx: &'a Context,
        socket: SocketId,
        code: u16,
        reason: String,
    ) -> LocalFuture<'a, ()> {
        let _ = (ctx, socket, code, reason);
        Box::pin(std::future::ready(()))
    }

    /// Runs when a socket fails with a protocol error (its close event
    /// follows). The default does nothing.
    fn websocket_error<'a>(
        &'a mut self,
        ctx: &'a Context,
        socket: SocketId,
        error: String,
    ) -> LocalFuture<'a, ()> {
        let _ = (ctx, socket, error);
        Box::pin(std::future::ready(()))
    }

    /// Approximate bytes of in-memory state, for the shard's LRU memory budget.
    fn memory_bytes(&self) -> usize {
        0
    }
}

/// A request as an object sees it, independent of transport. `Send`, so it can
/// cross to the owning shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`...
    pub method: Text,
    /// The path after the object's address, starting with `/` (or empty),
    /// still percent-encoded.
    pub path: Text,
    /// The raw query string, without `?`.
    pub query: Text,
    /// The header fields, in the order they arrived. Use
    /// [`header`](Request::header) or [`Headers::get`] (case-insensitive).
    pub headers: Headers,
    /// The body.
    pub body: Bytes,
}

impl Request {
    /// A request with no headers and no body.
    pub fn new(method: &str, path: &str) -> Request {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        Request {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            ..Request::default()
        }
    }

    /// The same request with `body`.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Request {
        self.body = body.into();
        self
    }

    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The same request with the header field `name: value` added; panics
    /// on a field [`Headers::push`] refuses (a name that is not an HTTP
    /// token, a value with CR, LF or NUL).
    pub fn with_header(mut self, name: &str, value: &str) -> Request {
        self.headers = std::mem::take(&mut self.headers).with(name, value);
        self
    }

    /// True for a WebSocket upgrade request; accept it with
    /// `ctx.websockets().accept(..)` and answer [`Response::switching_protocols`].
    pub fn is_websocket_upgrade(&self) -> bool {
        self.header("upgrade").is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
        })
    }

    /// The first query parameter called `name`, percent-decoded; `None` if it is
    /// absent or does not decode.
    pub fn query_param(&self, name: &str) -> Option<Vec<u8>> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k)? == name.as_bytes())
                .then(|| percent_decode(v))
                .flatten()
        })
    }
}

/// Decodes `%XX` escapes and `+` as space (query-string style is not applied to
/// `+`: it stays `+`, because keys may contain it). `None` on a bad escape.
pub fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let s = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(s, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// A response from an object. `Send`, so it can cross back to the shard that
/// holds the connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Header names and values. `Cow`, so that the fixed ones a handler
    /// sets on every response (`("content-type".into(),
    /// "application/json".into())`) are not allocated per response; a
    /// `String` goes in with `.into()` as well.
    pub headers: Vec<(Cow<'static, str>, Cow<'static, str>)>,
    /// The body.
    pub body: Bytes,
}

impl Response {
    /// A response with `status` and `body`.
    pub fn new(status: u16, body: impl Into<Bytes>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// `101 Switching Protocols`: completes a WebSocket upgrade the handler accepted.
    pub fn switching_protocols() -> Response {
        Response::new(101, Bytes::new())
    }

    /// A JSON response; `body` must already be JSON.
    pub fn json(status: u16, body: impl Into<String>) -> Response {
        let body: String = body.into();
        // `Bytes` from a `Vec` with spare capacity (as `format!` leaves it)
        // allocates a shared header; from a boxed slice it does not, and
        // the shrink is in place for the allocator's size class.
        let mut r = Response::new(status, body.into_bytes().into_boxed_slice());
        r.headers
            .push(("content-type".into(), "application/json".into()));
        r
    }

    /// The engine's JSON error shape: `{"error":{"code":"...","message":"..."}}`.
    pub fn error(code: ErrorCode, message: &str) -> Response {
        Response::json(
            code.status(),
            format!(
                r#"{{"error":{{"code":"{}","message":"{}"}}}}"#,
                code.as_str(),
                json_escape(message)
            ),
        )
    }

    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| &**v)
    }
}

/// Escapes `s` for use inside a JSON string literal.
pub fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// Stable error codes in JSON error bodies. Clients may match on them; they
/// never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 400: the request is malformed for this route.
    BadRequest,
    /// 404: no such class, route or key.
    NotFound,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 413: a key, value or batch over its limit.
    TooLarge,
    /// 500: the object's handler panicked; the message carries a request id.
    HandlerPanicked,
    /// 503: the write could not be made durable (a failed write or fdatasync);
    /// the shard's store is read-only until it is restarted. Reads go on.
    StorageFailed,
    /// 507: the write could not be made durable because the disk is full.
    InsufficientStorage,
    /// 503: the object's queue (or a shard mailbox) is full; retry later.
    Overloaded,
    /// 426: the route only takes WebSocket upgrades.
    UpgradeRequired,
    /// 500: the object answered 101 without accepting the WebSocket.
    WebSocketNotAccepted,
    /// 503: the server is shutting down.
    ShuttingDown,
    /// 508: a stub call would wait for an object already waiting on it (a
    /// call cycle), or stub calls nest too deep.
    CallCycle,
    /// 503: the object's `init` failed or timed out; the object was reset and
    /// the next event tries `init` again.
    InitFailed,
}

impl ErrorCode {
    /// The code as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::HandlerPanicked => "handler_panicked",
            ErrorCode::StorageFailed => "storage_failed",
            ErrorCode::InsufficientStorage => "insufficient_storage",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::UpgradeRequired => "upgrade_required",
            ErrorCode::WebSocketNotAccepted => "websocket_not_accepted",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::CallCycle => "call_cycle",
            ErrorCode::InitFailed => "init_failed",
        }
    }

    /// The HTTP status that goes with the code.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::TooLarge => 413,
            ErrorCode::UpgradeRequired => 426,
            ErrorCode::HandlerPanicked | ErrorCode::WebSocketNotAccepted => 500,
            ErrorCode::StorageFailed
            | ErrorCode::Overloaded
            | ErrorCode::ShuttingDown
            | ErrorCode::InitFailed => 503,
            ErrorCode::InsufficientStorage => 507,
            ErrorCode::CallCycle => 508,
        }
    }
}

impl ErrorCode {
    /// The code for a write that failed to become durable, given storage's
    /// reason: a full disk is 507, anything else 503. Storage reports commit
    /// failures as text (`CommitError { reason }`), so ENOSPC is recognised
    /// by the OS's message or errno as `io::Error` prints them.
    pub fn for_storage_failure(reason: &str) -> ErrorCode {
        if reason.contains("No space left on device") || reason.contains("os error 28") {
            ErrorCode::InsufficientStorage
        } else {
            ErrorCode::StorageFailed
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Makes a fresh instance of a class. Shared by every shard, hence `Send + Sync`.
pub type ObjectFactory = Arc<dyn Fn() -> Box<dyn Object> + Send + Sync>;

/// The classes a server hosts, by name. Cloned into every shard.
#[derive(Clone, Default)]
pub struct Classes {
    map: BTreeMap<String, ObjectFactory>,
}

impl Classes {
    /// An empty registry.
    pub fn new() -> Classes {
        Classes::default()
    }

    /// Registers class `name`; a later registration of the same name replaces it.
    pub fn register<F, O>(&mut self, name: &str, make: F) -> &mut Classes
    where
        F: Fn() -> O + Send + Sync + 'static,
        O: Object,
    {
        self.map.insert(
            name.to_string(),
            Arc::new(move || Box::new(make()) as Box<dyn Object>),
        );
        self
    }

    /// The factory for `name`.
    pub fn get(&self, name: &str) -> Option<&ObjectFactory> {
        self.map.get(name)
    }

    /// Registered class names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }
}

impl fmt::Debug for Classes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.map.keys()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_decode(input: &str, expected: Option<&[u8]>) {
        assert_eq!(percent_decode(input).as_deref(), expected, "{input:?}");
    }

    #[test]
    fn percent_decoding_accepts_escapes_and_refuses_broken_ones() {
        check_decode("abc", Some(b"abc"));
        check_decode("a%2Fb", Some(b"a/b"));
        check_decode("%00%ff", Some(&[0, 0xff]));
        check_decode("a+b", Some(b"a+b"));
        check_decode("%", None);
        check_decode("%4", None);
        check_decode("%zz", None);
    }

    #[test]
    fn query_params_are_found_and_decoded() {
        let r = Request::new("GET", "/keys?prefix=a%2F&limit=3&reverse");
        assert_eq!(r.path, "/keys");
        assert_eq!(r.query_param("prefix").as_deref(), Some(&b"a/"[..]));
        assert_eq!(r.query_param("limit").as_deref(), Some(&b"3"[..]));
        assert_eq!(r.query_param("reverse").as_deref(), Some(&b""[..]));
        assert_eq!(r.query_param("end"), None);
    }

    #[test]
    fn error_bodies_carry_stable_codes_and_escaped_messages() {
        let r = Response::error(ErrorCode::NotFound, "no \"x\"");
        assert_eq!(r.status, 404);
        assert_eq!(
            &r.body[..],
            br#"{"error":{"code":"not_found","message":"no \"x\""}}"#
        );
        assert_eq!(r.header("Content-Type"), Some("application/json"));
    }
}
