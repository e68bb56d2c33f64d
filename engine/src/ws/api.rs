//! The handler-facing WebSocket API ([`WebSockets`], reached through
//! `Context::websockets`): accept, list by tag, send, broadcast, close,
//! attachments and the auto-response pair.
//!
//! An object only ever touches its own sockets. Sends are queued, never
//! awaited: they pass the output gate (a frame sent after a write leaves once
//! the write is durable) and the socket's bounded send buffer.

use std::fmt;

use bytes::Bytes;
use cairn_proto::ws::Opcode;
use cairn_proto::ws::close::is_valid_close_code;
use cairn_proto::ws::frame::encode_frame;

use super::table::{Out, SockState, SocketEntry, SocketId};
use crate::context::Context;
use crate::store::Ticket;

/// A WebSocket message as a handler receives or sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message (valid UTF-8).
    Text(String),
    /// A binary message.
    Binary(Bytes),
}

/// Why a WebSocket call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WsError {
    /// `accept` outside a `fetch` for an upgrade request.
    NotAnUpgrade,
    /// `accept` called twice in one `fetch`.
    AlreadyAccepted,
    /// The socket is not one of this object's, or it has closed.
    NoSuchSocket(SocketId),
    /// The attachment is over `ws_attachment_bytes_max`.
    AttachmentTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A close code that may not be sent (RFC 6455 §7.4).
    BadCloseCode(u16),
    /// A close reason over 123 bytes.
    ReasonTooLong,
    /// The socket's send buffer overflowed; it is being closed with 1008.
    SlowConsumer(SocketId),
    /// The object already has `ws_sockets_per_object_max` sockets.
    TooManySockets {
        /// The limit.
        max: usize,
    },
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::NotAnUpgrade => f.write_str("not a WebSocket upgrade request"),
            WsError::AlreadyAccepted => f.write_str("the upgrade was already accepted"),
            WsError::NoSuchSocket(id) => write!(f, "no open socket {id} on this object"),
            WsError::AttachmentTooLarge { len, max } => {
                write!(f, "attachment of {len} bytes is over the limit of {max}")
            }
            WsError::BadCloseCode(c) => write!(f, "close code {c} may not be sent"),
            WsError::ReasonTooLong => f.write_str("close reason over 123 bytes"),
            WsError::SlowConsumer(id) => write!(f, "socket {id} fell behind and is closing"),
            WsError::TooManySockets { max } => {
                write!(f, "the object already has its maximum of {max} sockets")
            }
        }
    }
}

impl std::error::Error for WsError {}

/// The object's sockets during one event; see the module docs.
pub struct WebSockets<'a> {
    pub(crate) ctx: &'a Context,
}

/// Encodes one unfragmented server frame.
fn frame(opcode: Opcode, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 10);
    encode_frame(&mut out, true, opcode, None, payload);
    Bytes::from(out)
}

impl WebSockets<'_> {
    /// Accepts the upgrade this `fetch` is handling, with `tags` for
    /// [`WebSockets::list`] and broadcasts. Return `Response::switching_protocols()`
    /// from `fetch` to complete it; any other response refuses it.
    pub fn accept(&self, tags: &[&str]) -> Result<SocketId, WsError> {
        let ctx = self.ctx;
        let Some(id) = ctx.upgrade.get() else {
            return Err(WsError::NotAnUpgrade);
        };
        let table = &ctx.host.sockets;
        if table.get(id).is_some() {
            return Err(WsError::AlreadyAccepted);
        }
        let max = table.limits.sockets_per_object_max;
        if table.count_of(&ctx.id()) >= max {
            return Err(WsError::TooManySockets { max });
        }
        let tags = tags.iter().map(|t| t.to_string()).collect();
        table.insert(id, ctx.obj.target.clone(), tags);
        table.metrics.borrow_mut().accepted += 1;
        Ok(id)
    }

    /// This object's sockets that may be sent to, in accept order; only those
    /// tagged `tag` if given.
    pub fn list(&self, tag: Option<&str>) -> Vec<SocketId> {
        let mut out = Vec::new();
        self.ctx.host.sockets.for_each_of(&self.ctx.id(), |e| {
            if e.sendable() && tag.is_none_or(|t| e.tags.iter().any(|x| x == t)) {
                out.push(e.id);
            }
        });
        out
    }

    /// The tags `id` was accepted with.
    pub fn tags(&self, id: SocketId) -> Result<Vec<String>, WsError> {
        Ok(self.entry(id)?.tags.clone())
    }

    /// Sends a text message to `id`.
    pub fn send_text(&self, id: SocketId, text: &str) -> Result<(), WsError> {
        self.send_frame(id, frame(Opcode::Text, text.as_bytes()))
    }

    /// Sends a binary message to `id`.
    pub fn send_binary(&self, id: SocketId, data: &[u8]) -> Result<(), WsError> {
        self.send_frame(id, frame(Opcode::Binary, data))
    }

    /// Sends `msg` to `id`.
    pub fn send(&self, id: SocketId, msg: &Message) -> Result<(), WsError> {
        match msg {
            Message::Text(t) => self.send_text(id, t),
            Message::Binary(b) => self.send_binary(id, b),
        }
    }

    /// Sends a text message to every open socket (only those tagged `tag`, if
    /// given) except `except`. The frame is encoded once and shared. Returns
    /// how many sockets it was queued on; slow consumers are closed, not counted.
    pub fn broadcast_text(&self, text: &str, tag: Option<&str>, except: Option<SocketId>) -> usize {
        self.broadcast_frame(frame(Opcode::Text, text.as_bytes()), tag, except)
    }

    /// [`WebSockets::broadcast_text`] for a binary message.
    pub fn broadcast_binary(
        &self,
        data: &[u8],
        tag: Option<&str>,
        except: Option<SocketId>,
    ) -> usize {
        self.broadcast_frame(frame(Opcode::Binary, data), tag, except)
    }

    fn broadcast_frame(&self, bytes: Bytes, tag: Option<&str>, except: Option<SocketId>) -> usize {
        let gate = self.gate();
        let table = &self.ctx.host.sockets;
        let mut n = 0;
        // In place: a broadcast is the fan-out's hot loop, so the socket list
        // is not cloned. `push` never changes the table's object index.
        table.for_each_of(&self.ctx.id(), |e| {
            if Some(e.id) == except
                || !e.sendable()
                || tag.is_some_and(|t| !e.tags.iter().any(|x| x == t))
            {
                return;
            }
            let out = Out::Frame {
                gate: gate.clone(),
                bytes: bytes.clone(),
            };
            if table.push(e, out) {
                n += 1;
            }
        });
        n
    }

    /// Starts closing `id` with `code` and `reason` (at most 123 bytes). The
    /// close handler runs once the connection is over.
    pub fn close(&self, id: SocketId, code: u16, reason: &str) -> Result<(), WsError> {
        if !is_valid_close_code(code) {
            return Err(WsError::BadCloseCode(code));
        }
        if reason.len() > 123 {
            return Err(WsError::ReasonTooLong);
        }
        let e = self.entry(id)?;
        let out = Out::Close {
            gate: self.gate(),
            code,
            reason: reason.to_string(),
        };
        self.ctx.host.sockets.push(&e, out);
        e.state.set(SockState::Closing);
        Ok(())
    }

    /// Stores a small value with the socket; it survives the object's
    /// hibernation (not a restart: sockets do not survive one either).
    pub fn set_attachment(&self, id: SocketId, value: &[u8]) -> Result<(), WsError> {
        let max = self.ctx.host.sockets.limits.attachment_bytes_max;
        if value.len() > max {
            return Err(WsError::AttachmentTooLarge {
                len: value.len(),
                max,
            });
        }
        *self.entry(id)?.attachment.borrow_mut() = Some(Bytes::copy_from_slice(value));
        Ok(())
    }

    /// The socket's attachment, if one was set. Works in the close handler too.
    pub fn attachment(&self, id: SocketId) -> Option<Bytes> {
        let e = self.ctx.host.sockets.get(id)?;
        (e.target.id == self.ctx.id())
            .then(|| e.attachment.borrow().clone())
            .flatten()
    }

    /// Answers the text message `request` with `response` on any of this
    /// object's sockets without waking the object (heartbeats). Lasts while
    /// the object has sockets.
    pub fn set_auto_response(&self, request: &str, response: &str) {
        let pair = (
            Bytes::copy_from_slice(request.as_bytes()),
            frame(Opcode::Text, response.as_bytes()),
        );
        self.ctx.host.sockets.set_auto(self.ctx.id(), Some(pair));
    }

    /// Removes the auto-response pair.
    pub fn clear_auto_response(&self) {
        self.ctx.host.sockets.set_auto(self.ctx.id(), None);
    }

    fn send_frame(&self, id: SocketId, bytes: Bytes) -> Result<(), WsError> {
        let e = self.entry(id)?;
        let out = Out::Frame {
            gate: self.gate(),
            bytes,
        };
        if self.ctx.host.sockets.push(&e, out) {
            Ok(())
        } else {
            Err(WsError::SlowConsumer(id))
        }
    }

    /// One of this object's sockets that may be sent to.
    fn entry(&self, id: SocketId) -> Result<std::rc::Rc<SocketEntry>, WsError> {
        match self.ctx.host.sockets.get(id) {
            Some(e) if e.target.id == self.ctx.id() && e.sendable() => Ok(e),
            _ => Err(WsError::NoSuchSocket(id)),
        }
    }

    /// The output gate for a frame sent now: the latest write's ticket, unless
    /// it is durable already or the handler opted out.
    fn gate(&self) -> Option<Ticket> {
        if self.ctx.unconfirmed.get() {
            return None;
        }
        self.ctx
            .obj
            .last_ticket
            .borrow()
            .clone()
            .filter(|t| !t.is_durable())
    }
}
