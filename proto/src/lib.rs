//! `cairn-proto`: Cairn's sans-IO HTTP/1.1 and WebSocket codec.
//!
//! **What it is.** Pure state machines: the caller feeds bytes it read from
//! somewhere, and gets back parsed events (a request head, body chunks, a
//! WebSocket frame) or a typed error; the caller asks for bytes to write, and
//! gets them appended to a buffer it owns. Time, where a rule needs it, is an
//! argument. The server (`cairn-engine`), the load generator and the tests all
//! drive the same code.
//!
//! **What it is not.** It has no sockets, no async, no clock, no threads, and
//! no glommio: it never sees a file descriptor. It does not route requests or
//! know what an object is.
//!
//! **Invariants.**
//! - An incremental parse either completes (and says how many bytes it
//!   consumed) or reports `Partial` and consumes nothing, so any split of the
//!   input yields the same events.
//! - Every error caused by the peer is a typed variant that carries the HTTP
//!   status (or WebSocket close code) to answer with and whether the
//!   connection must close. Any other failure is a bug in Cairn.
//! - Every limit is a named field of a config struct with a documented
//!   default; exceeding one is an error, never a panic or unbounded growth.
#![forbid(unsafe_code)]

pub mod http;
pub mod ws;
