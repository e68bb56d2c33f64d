//! `cairn-bench`: criterion benchmarks of every Cairn layer.
//!
//! The benchmarks live in `benches/`, one file per layer, each running its
//! baseline (raw `httparse`, `tungstenite`, a bare write+fdatasync) in the
//! same invocation so that results are quoted as ratios, which survive this
//! noisy shared machine better than absolute figures. This library holds only
//! shared inputs (sample requests, payloads) so that every bench measures the
//! same bytes. See `docs/BENCHMARKS.md` for how to run them.
