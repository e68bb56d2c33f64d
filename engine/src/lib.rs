//! `cairn-engine`: the Durable Objects engine and the `cairn` server.
//!
//! **What it is.** Shards (one thread and one glommio executor each,
//! [`shard`]), the router that sends every event to the shard owning its
//! object, the object runtime ([`host`]: input and output gates, panic
//! isolation, alarms, eviction), the handler-facing API ([`context`],
//! [`object`]), the HTTP server ([`http`], over `cairn-proto`), the built-in
//! classes ([`builtins`]), connection readiness ([`readiness`], one epoll
//! set per shard), the operator endpoints ([`admin`]), the stub retry
//! policy ([`retry`]) and the `cairn` binary (`src/bin/cairn.rs`).
//!
//! **What it is not.** It parses no HTTP itself (that is `cairn-proto`) and
//! lays out no bytes on disk (that is storage, reached only through
//! [`store`]). It does not move objects between shards or reshard data.
//!
//! **Invariants** (each is written on the type that keeps it):
//! - Ownership: an object's events run only on `id::shard_of(id, shards)`;
//!   shard-local state is `!Send`, and only `Send` mail crosses shards
//!   ([`shard::Mail`]). No `Mutex` on the request path.
//! - Stable identity: [`id::id_from_name`] is SHA-256 over a documented,
//!   versioned encoding; fixed vectors guard it. The shard count is recorded
//!   in the data directory ([`datadir`]).
//! - Input gate: one event at a time per object, in arrival order ([`host`]).
//! - Output gate: a response following a write waits until it is durable;
//!   a failed commit never releases it ([`host`]).
//! - Bad input never crashes a shard: peer errors are answered with their
//!   4xx; handler panics are caught per poll and answered with 500.
//!
//! Storage is `cairn-storage`, one log per shard under
//! `<data-dir>/shard-NNN/`, reached only through the [`store`] adapter, which
//! also holds an in-memory model of the same contract for tests.

pub mod admin;
pub mod builtins;
pub mod config;
pub mod context;
pub mod datadir;
#[cfg(feature = "test-hooks")]
pub mod fault_disk;
pub mod headers;
mod held;
pub mod host;
pub mod http;
pub mod id;
mod mailbox;
pub mod object;
#[cfg(test)]
mod power_loss_tests;
pub mod readiness;
pub mod retry;
pub mod shard;
pub mod store;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;
#[cfg(test)]
mod testing;
pub mod text;
pub mod ws;
