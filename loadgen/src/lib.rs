//! `cairn-loadgen`: a thread-per-core HTTP/1.1 and WebSocket load generator
//! for Cairn and for any other server that answers the same routes.
//!
//! **What it is.** One worker thread per requested core, optionally pinned,
//! each driving its share of keep-alive connections with optional
//! pipelining: HTTP and WebSocket workers each run an epoll event loop over
//! nonblocking sockets ([`http_run`] and [`ws_run`], where the measurements
//! that chose epoll over io_uring are summarised). Two disciplines:
//! - *closed loop*: every connection sends its next request as soon as the
//!   previous answer arrives (as wrk does);
//! - *open loop*: requests are due on a fixed schedule (`--rate`) and latency
//!   is measured from the *intended* send time, so a stalled server shows up
//!   in the tail instead of hiding (as wrk2 does).
//!
//! Requests come from templates with a `{key}` placeholder, keys drawn
//! uniformly or Zipfian from a key space, in weighted mixes, with presets
//! for Cairn's classes. WebSocket mode times broadcast fan-out in rooms.
//! Results are HDR histograms merged across workers, printed as a table or
//! as one JSON object ([`report`]), and two JSON results compare as ratios.
//!
//! **What it is not.** Not a TLS or HTTP/2 client, not a scripting engine,
//! and not a second HTTP parser: the wire format is `cairn-proto`'s, reached
//! through the small seam in [`http_codec`].
//!
//! **Invariants.**
//! - Worker state never crosses threads: each worker records into its own
//!   [`stats::Recorder`], sent back once at the end and merged.
//! - Timestamps come from the monotonic clock ([`std::time::Instant`]).
//! - Warm-up is never recorded; only responses completed inside the
//!   measured window are.
//! - A run ends by itself: every socket operation has a deadline at the end
//!   of the run, and the caller gives up at warm-up + duration + grace
//!   ([`error::RunError::HardTimeout`]) even if a worker hangs.
//! - Randomness is seeded ([`rng::SplitMix64`]), so a run's key sequence is
//!   reproducible.
#![forbid(unsafe_code)]

pub mod cli;
pub mod error;
pub mod http_codec;
pub mod http_run;
mod outbox;
pub mod pacing;
pub mod report;
pub mod rng;
pub mod stats;
pub mod workload;
pub mod ws_run;
pub mod zipf;

pub use error::{ConfigError, RunError};
pub use http_run::{HttpConfig, Pinning, run_http};
pub use report::{Comparison, Report, compare};
pub use ws_run::{WsConfig, run_ws};
