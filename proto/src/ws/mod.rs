//! WebSocket (RFC 6455): handshake, frame codec, message assembly and the close handshake.
//!
//! Entry points: [`handshake`] (both roles: validate the upgrade, compute the
//! accept key, write the request or response head) and
//! [`connection::Connection`] (after the handshake: feed bytes, get events,
//! send messages). [`frame`] is the bare frame codec beneath them.
//!
//! Nothing here negotiates extensions or subprotocols, so every RSV bit is a
//! protocol error. What is accepted and rejected, rule by rule, is in
//! `docs/PROTOCOL.md`, section "WebSocket".

pub mod base64;
pub mod close;
pub mod config;
pub mod connection;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod sha1;
pub mod utf8;

pub use close::CloseState;
pub use config::Config;
pub use connection::{CloseFrame, Connection, Event, Poll};
pub use error::{CapacityError, Error, Misuse, ProtocolError};
pub use frame::{Opcode, Role};
pub use handshake::{ClientHandshake, HandshakeError, ServerAccept};
