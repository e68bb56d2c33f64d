//! WebSockets on objects: the upgrade hook the HTTP server calls, the hand-off
//! of a socket to its object's shard, the shard's socket table, the per-socket
//! I/O task, and the handler-facing API.
//!
//! # Where a socket lives
//!
//! **Invariant:** a socket's frames are read and written only on the shard that
//! owns its object (`shard_of(id)`). A request with `Upgrade: websocket` that
//! arrives on another shard is handed over before the object sees it: the
//! accepting shard duplicates the file descriptor, drops its own handle and
//! mails the descriptor with any bytes already read ([`upgrade::Handoff`]) to
//! the owner, which wraps it in its own executor's `TcpStream`. No frame is ever
//! proxied between shards.
//!
//! # Hibernation
//!
//! Sockets, their tags and attachments live in the shard's socket table (`table.rs`),
//! keyed by object ID, not in the object instance. The object runtime evicts an
//! idle object with open sockets like any other; the next message re-activates
//! it (storage reloads lazily) and its sockets and attachments are where they
//! were.
//!
//! # Output gate and flow control
//!
//! Every outgoing frame is queued on its socket with the ticket of the
//! object's latest write (unless the handler opted out); the socket task writes
//! a frame only once its ticket is durable. Tickets resolve in order, so frames
//! leave in the order they were sent. Each socket's queue is bounded by
//! `ws_send_buffer_bytes_max`: a consumer that falls further behind is closed
//! with 1008 and counted (`cairn_ws_slow_consumer_closes_total`), so a slow
//! reader can never grow the server's memory. A broadcast encodes its frame once
//! and shares the `Bytes` across every socket's queue.

pub mod api;
pub(crate) mod socket;
pub mod table;
pub mod upgrade;

pub use api::{Message, WebSockets, WsError};
pub use table::{SocketId, WsLimits, WsMetrics};

use crate::host::ShardStats;

/// A metric's name, Prometheus type, and value for one shard.
type Row = (&'static str, &'static str, fn(&ShardStats) -> u64);

/// The WebSocket rows of `/_cairn/metrics`, one sample per shard, gathered
/// with the other statistics by mail (every shard's sockets, not only the
/// answering shard's), Prometheus text.
pub fn metrics_text(all: &[ShardStats]) -> String {
    let mut out = String::new();
    let rows: [Row; 8] = [
        ("cairn_ws_messages_in_total", "counter", |s| {
            s.ws.messages_in
        }),
        ("cairn_ws_messages_out_total", "counter", |s| {
            s.ws.messages_out
        }),
        ("cairn_ws_bytes_in_total", "counter", |s| s.ws.bytes_in),
        ("cairn_ws_bytes_out_total", "counter", |s| s.ws.bytes_out),
        ("cairn_ws_slow_consumer_closes_total", "counter", |s| {
            s.ws.slow_consumer_closes
        }),
        ("cairn_ws_accepted_total", "counter", |s| s.ws.accepted),
        ("cairn_ws_hibernations_total", "counter", |s| {
            s.ws.hibernations
        }),
        ("cairn_ws_hibernated_objects", "gauge", |s| {
            s.hibernated_objects
        }),
    ];
    for (name, kind, value) in rows {
        out.push_str(&format!("# TYPE {name} {kind}\n"));
        for s in all {
            out.push_str(&format!("{name}{{shard=\"{}\"}} {}\n", s.shard, value(s)));
        }
    }
    out.push_str("# TYPE cairn_ws_open_sockets gauge\n");
    for s in all {
        for (class, n) in &s.open_sockets {
            out.push_str(&format!(
                "cairn_ws_open_sockets{{shard=\"{}\",class=\"{class}\"}} {n}\n",
                s.shard
            ));
        }
    }
    out
}

#[cfg(test)]
mod gate_tests;
