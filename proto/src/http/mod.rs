//! HTTP/1.1 (RFC 9112): request parsing and response writing for servers,
//! request writing and response parsing for clients.
//!
//! Two layers:
//! - **Borrowing**: [`parse_request_head`] parses one head from a byte slice
//!   into caller-provided header storage; [`ChunkedDecoder`] decodes a
//!   chunked body in place. Nothing is copied or allocated.
//! - **Owning**: [`RequestDecoder`] works on a `BytesMut` connection buffer
//!   and yields [`Request`]s (or streaming [`Event`]s) whose parts are `Bytes`
//!   split off the buffer, and drives the connection state table
//!   ([`conn`]): keep-alive, pipelining in order, closing after errors.
//!
//! Output is appended to a reusable `Vec<u8>` by [`ResponseWriter`] (server)
//! and [`write_request`] (client). What is accepted and rejected, byte by
//! byte, is specified in `docs/PROTOCOL.md`.

pub mod chunked;
pub mod client;
pub mod conn;
pub mod decoder;
pub mod error;
pub mod head;
pub mod limits;
pub mod request;
pub mod response;
mod syntax;
pub mod target;

pub use chunked::{Chunk, ChunkedDecoder};
pub use client::{Response, ResponseDecoder, peek_status, write_request, write_request_head};
pub use conn::{ConnEvent, ConnState, TransitionError};
pub use decoder::{Event, RequestDecoder};
pub use error::{Error, Status};
pub use head::{BodyKind, RequestHead, Version, parse_request_head};
pub use limits::Limits;
pub use request::{Fields, Request};
pub use response::{
    ChunkedWriter, DateCache, InvalidField, ResponseWriter, put_decimal, reason_phrase,
    write_continue,
};
pub use syntax::is_tchar;
pub use target::{BadPercentEncoding, Target, percent_decode, query_pairs};
