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

use crate::host::ObjectHost;

/// The WebSocket rows of `/_cairn/metrics` for one shard, Prometheus text.
pub fn metrics_text(shard: u32, host: &ObjectHost) -> String {
    let m = host.ws_metrics();
    let mut out = String::new();
    let rows: [(&str, &str, u64); 8] = [
        ("cairn_ws_messages_in_total", "counter", m.messages_in),
        ("cairn_ws_messages_out_total", "counter", m.messages_out),
        ("cairn_ws_bytes_in_total", "counter", m.bytes_in),
        ("cairn_ws_bytes_out_total", "counter", m.bytes_out),
        (
            "cairn_ws_slow_consumer_closes_total",
            "counter",
            m.slow_consumer_closes,
        ),
        ("cairn_ws_accepted_total", "counter", m.accepted),
        ("cairn_ws_hibernations_total", "counter", m.hibernations),
        (
            "cairn_ws_hibernated_objects",
            "gauge",
            host.hibernated_objects() as u64,
        ),
    ];
    for (name, kind, v) in rows {
        out.push_str(&format!(
            "# TYPE {name} {kind}\n{name}{{shard=\"{shard}\"}} {v}\n"
        ));
    }
    out.push_str("# TYPE cairn_ws_open_sockets gauge\n");
    for (class, n) in host.open_sockets_by_class() {
        out.push_str(&format!(
            "cairn_ws_open_sockets{{shard=\"{shard}\",class=\"{class}\"}} {n}\n"
        ));
    }
    out
}

#[cfg(test)]
mod gate_tests;
