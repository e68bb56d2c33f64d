//! `room`: the article's collaborative chat room over WebSockets. Members
//! join with a name; each message is numbered, stored durably (the last
//! [`HISTORY_MAX`] are kept), and broadcast to every other member with its
//! sender and sequence number; joins and leaves are announced; a joiner gets
//! the stored history. The JSON protocol is in `docs/HTTP-API.md`
//! ("WebSocket: the `room` class").
//!
//! A member that connects with `?durable=0` sends ephemeral messages (the
//! article's cursor positions, say): broadcast at once with no sequence
//! number, not stored, not acknowledged. Such sockets carry the tag
//! [`EPHEMERAL_TAG`].
//!
//! State: key `seq` (8 bytes big-endian, the last sequence number) and
//! `h/{seq:020}` (one message's JSON), written in one atomic batch per
//! message, so the broadcast (held by the output gate) never announces a
//! message that a restart could lose. Member names live in their sockets'
//! attachments, so a hibernated room wakes knowing who is there.

use std::collections::VecDeque;
use std::fmt::Write as _;

use super::accept_refused;
use crate::context::Context;
use crate::object::{ErrorCode, LocalFuture, Object, Request, Response, json_escape};
use crate::store::{ListOptions, StorageError};
use crate::ws::{Message, SocketId};

/// Messages kept in storage and replayed to a joiner.
pub const HISTORY_MAX: u64 = 100;

/// Longest member name, in bytes.
pub const NAME_BYTES_MAX: usize = 64;

/// The heartbeat a client may send; answered with [`PONG`] by the engine
/// without waking the room.
pub const PING: &str = r#"{"type":"ping"}"#;

/// The answer to [`PING`].
pub const PONG: &str = r#"{"type":"pong"}"#;

/// The tag of sockets whose messages are ephemeral (`?durable=0`).
pub const EPHEMERAL_TAG: &str = "ephemeral";

/// Longest message text, in bytes.
pub const TEXT_BYTES_MAX: usize = 16 << 10;

/// The `room` class.
#[derive(Default)]
pub struct Room {
    /// The last sequence number and the stored history; `None` until loaded.
    loaded: Option<(u64, VecDeque<String>)>,
}

fn history_key(seq: u64) -> Vec<u8> {
    format!("h/{seq:020}").into_bytes()
}

fn error_json(message: &str) -> String {
    format!(r#"{{"type":"error","message":"{}"}}"#, json_escape(message))
}

impl Room {
    async fn load(&mut self, ctx: &Context) -> Result<&mut (u64, VecDeque<String>), StorageError> {
        if self.loaded.is_none() {
            let seq = ctx
                .storage()
                .get(b"seq")
                .await?
                .and_then(|b| <[u8; 8]>::try_from(&b[..]).ok())
                .map_or(0, u64::from_be_bytes);
            let opts = ListOptions {
                prefix: Some(b"h/".to_vec()),
                ..ListOptions::default()
            };
            let history = ctx
                .storage()
                .list(&opts)
                .await?
                .into_iter()
                .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
                .collect();
            self.loaded = Some((seq, history));
        }
        Ok(self.loaded.as_mut().expect("loaded above"))
    }

    /// Names of joined members, except `except`.
    fn members(ctx: &Context, except: Option<SocketId>) -> Vec<String> {
        let ws = ctx.websockets();
        ws.list(None)
            .into_iter()
            .filter(|s| Some(*s) != except)
            .filter_map(|s| ws.attachment(s))
            .map(|a| String::from_utf8_lossy(&a).into_owned())
            .collect()
    }

    async fn join(&mut self, ctx: &Context, socket: SocketId, name: &str) {
        let ws = ctx.websockets();
        if ws.attachment(socket).is_some() {
            let _ = ws.send_text(socket, &error_json("already joined"));
            return;
        }
        if name.is_empty() || name.len() > NAME_BYTES_MAX {
            let _ = ws.send_text(socket, &error_json("name must be 1 to 64 bytes"));
            return;
        }
        let (seq, history) = match self.load(ctx).await {
            Ok((seq, h)) => (*seq, h.iter().cloned().collect::<Vec<_>>()),
            Err(e) => {
                let _ = ws.send_text(socket, &error_json(&e.to_string()));
                return;
            }
        };
        let members = Room::members(ctx, Some(socket));
        if ws.set_attachment(socket, name.as_bytes()).is_err() {
            return;
        }
        let mut welcome = format!(
            r#"{{"type":"welcome","name":"{}","seq":{seq},"members":["#,
            json_escape(name)
        );
        for (i, m) in members.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(welcome, r#"{sep}"{}""#, json_escape(m));
        }
        welcome.push_str(r#"],"history":["#);
        welcome.push_str(&history.join(","));
        welcome.push_str("]}");
        let _ = ws.send_text(socket, &welcome);
        let joined = format!(r#"{{"type":"join","name":"{}"}}"#, json_escape(name));
        ws.broadcast_text(&joined, None, Some(socket));
    }

    async fn message(&mut self, ctx: &Context, socket: SocketId, text: &str) {
        let ws = ctx.websockets();
        let Some(name) = ws.attachment(socket) else {
            let _ = ws.send_text(socket, &error_json("join first"));
            return;
        };
        if text.len() > TEXT_BYTES_MAX {
            let _ = ws.send_text(socket, &error_json("text over 16384 bytes"));
            return;
        }
        if ws
            .tags(socket)
            .is_ok_and(|t| t.iter().any(|t| t == EPHEMERAL_TAG))
        {
            let entry = format!(
                r#"{{"type":"message","from":"{}","text":"{}","ephemeral":true}}"#,
                json_escape(&String::from_utf8_lossy(&name)),
                json_escape(text)
            );
            ws.broadcast_text(&entry, None, Some(socket));
            return;
        }
        let (seq, history) = match self.load(ctx).await {
            Ok((seq, h)) => (seq, h),
            Err(e) => {
                let _ = ws.send_text(socket, &error_json(&e.to_string()));
                return;
            }
        };
        let next = *seq + 1;
        let entry = format!(
            r#"{{"type":"message","seq":{next},"from":"{}","text":"{}"}}"#,
            json_escape(&String::from_utf8_lossy(&name)),
            json_escape(text)
        );
        // One batch without an await between: the sequence number and the
        // message become durable together.
        let key = history_key(next);
        let stored = ctx
            .storage()
            .put_many(&[(b"seq", &next.to_be_bytes()), (&key, entry.as_bytes())])
            .and_then(|()| {
                if next > HISTORY_MAX {
                    ctx.storage().delete(&history_key(next - HISTORY_MAX))?;
                }
                Ok(())
            });
        if let Err(e) = stored {
            let _ = ws.send_text(socket, &error_json(&e.to_string()));
            return;
        }
        *seq = next;
        history.push_back(entry.clone());
        while history.len() as u64 > HISTORY_MAX {
            history.pop_front();
        }
        ws.broadcast_text(&entry, None, Some(socket));
        let _ = ws.send_text(socket, &format!(r#"{{"type":"ack","seq":{next}}}"#));
    }
}

impl Object for Room {
    fn fetch<'a>(&'a mut self, ctx: &'a Context, req: Request) -> LocalFuture<'a, Response> {
        Box::pin(async move {
            if req.is_websocket_upgrade() {
                let ephemeral = req.query_param("durable").as_deref() == Some(b"0");
                let tags: &[&str] = if ephemeral { &[EPHEMERAL_TAG] } else { &[] };
                let socket = match ctx.websockets().accept(tags) {
                    Ok(s) => s,
                    Err(e) => return accept_refused(&e),
                };
                // Heartbeats are answered by the engine, even while the room hibernates.
                ctx.websockets().set_auto_response(PING, PONG);
                if let Some(name) = req.query_param("name") {
                    self.join(ctx, socket, &String::from_utf8_lossy(&name))
                        .await;
                }
                return Response::switching_protocols();
            }
            match (req.method.as_str(), req.path.as_str()) {
                ("GET", "" | "/") => {
                    let (seq, history) = match self.load(ctx).await {
                        Ok((seq, h)) => (*seq, h.iter().cloned().collect::<Vec<_>>()),
                        Err(e) => return Response::error(ErrorCode::StorageFailed, &e.to_string()),
                    };
                    let members: Vec<String> = Room::members(ctx, None)
                        .iter()
                        .map(|m| format!(r#""{}""#, json_escape(m)))
                        .collect();
                    Response::json(
                        200,
                        format!(
                            r#"{{"seq":{seq},"members":[{}],"history":[{}]}}"#,
                            members.join(","),
                            history.join(",")
                        ),
                    )
                }
                ("GET", _) => {
                    Response::error(ErrorCode::NotFound, "room routes: GET /, WebSocket upgrade")
                }
                _ => Response::error(
                    ErrorCode::MethodNotAllowed,
                    "room takes GET and WebSocket upgrades",
                ),
            }
        })
    }

    fn websocket_message<'a>(
        &'a mut self,
        ctx: &'a Context,
        socket: SocketId,
        msg: Message,
    ) -> LocalFuture<'a, ()> {
        Box::pin(async move {
            let Message::Text(text) = msg else {
                let _ = ctx
                    .websockets()
                    .send_text(socket, &error_json("room messages are JSON text"));
                return;
            };
            let Some(fields) = parse_flat_json(&text) else {
                let _ = ctx
                    .websockets()
                    .send_text(socket, &error_json("not a flat JSON object"));
                return;
            };
            let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
            match get("type") {
                Some("join") => self.join(ctx, socket, get("name").unwrap_or("")).await,
                Some("message") => self.message(ctx, socket, get("text").unwrap_or("")).await,
                _ => {
                    let _ = ctx.websockets().send_text(
                        socket,
                        &error_json(r#"unknown type; expected "join" or "message""#),
                    );
                }
            }
        })
    }

    fn websocket_close<'a>(
        &'a mut self,
        ctx: &'a Context,
        socket: SocketId,
        _code: u16,
        _reason: String,
    ) -> LocalFuture<'a, ()> {
        let ws = ctx.websockets();
        if let Some(name) = ws.attachment(socket) {
            let left = format!(
                r#"{{"type":"leave","name":"{}"}}"#,
                json_escape(&String::from_utf8_lossy(&name))
            );
            ws.broadcast_text(&left, None, Some(socket));
        }
        Box::pin(std::future::ready(()))
    }

    fn memory_bytes(&self) -> usize {
        self.loaded
            .as_ref()
            .map_or(0, |(_, h)| h.iter().map(String::len).sum())
    }
}

/// Parses a flat JSON object: string values are unescaped; numbers, booleans
/// and null are kept as their text. `None` for anything else (nesting included).
pub fn parse_flat_json(s: &str) -> Option<Vec<(String, String)>> {
    let mut p = Parser {
        b: s.as_bytes(),
        i: 0,
    };
    p.ws();
    p.eat(b'{')?;
    let mut out = Vec::new();
    p.ws();
    if p.peek() == Some(b'}') {
        p.i += 1;
    } else {
        loop {
            p.ws();
            let k = p.string()?;
            p.ws();
            p.eat(b':')?;
            p.ws();
            let v = if p.peek() == Some(b'"') {
                p.string()?
            } else {
                p.scalar()?
            };
            out.push((k, v));
            p.ws();
            match p.peek()? {
                b',' => p.i += 1,
                b'}' => {
                    p.i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    p.ws();
    (p.i == p.b.len()).then_some(out)
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    fn scalar(&mut self) -> Option<String> {
        let start = self.i;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || b"+-.".contains(&c)) {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.b[start..self.i]).into_owned())
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = std::str::from_utf8(self.b.get(self.i..self.i + 4)?).ok()?;
        self.i += 4;
        u32::from_str_radix(h, 16).ok()
    }

    fn string(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let mut out = Vec::new();
        loop {
            let c = self.peek()?;
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let e = self.peek()?;
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = if (0xD800..0xDC00).contains(&hi) {
                                self.eat(b'\\')?;
                                self.eat(b'u')?;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return None;
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            char::from_u32(cp)?
                        }
                        _ => return None,
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                c if c < 0x20 => return None,
                c => out.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_json_objects_parse_with_escapes_and_nesting_is_refused() {
        let f =
            parse_flat_json(r#" {"type":"message", "text":"a\"b\\n\u00e9\ud83d\ude00", "n": 12} "#);
        assert_eq!(
            f,
            Some(vec![
                ("type".into(), "message".into()),
                ("text".into(), "a\"b\\n\u{e9}\u{1F600}".into()),
                ("n".into(), "12".into()),
            ])
        );
        assert_eq!(parse_flat_json("{}"), Some(vec![]));
        assert_eq!(parse_flat_json(r#"{"a":{"b":1}}"#), None);
        assert_eq!(parse_flat_json(r#"{"a":"b"} x"#), None);
        assert_eq!(parse_flat_json(r#"{"a":"#), None);
        assert_eq!(parse_flat_json("[1]"), None);
    }

    #[test]
    fn escaping_round_trips_through_the_parser() {
        let text = "line\n\"quoted\" \\ tab\t \u{1}";
        let json = format!(r#"{{"text":"{}"}}"#, json_escape(text));
        assert_eq!(
            parse_flat_json(&json),
            Some(vec![("text".into(), text.into())])
        );
    }
}
