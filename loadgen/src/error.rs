//! The crate's error types: one for what the user asked for
//! ([`ConfigError`]), one for what went wrong while running ([`RunError`]).
//! Failures of single requests are not errors of the run: they are counted
//! by kind in the results.

use std::fmt;

/// The command line or a workload description is not usable.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// An option that needs a value came last.
    MissingValue(String),
    /// An option this program does not know.
    UnknownOption(String),
    /// An option's value did not parse; says which option and what was given.
    BadValue {
        /// The option.
        option: String,
        /// What was given.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// `--url` was not given.
    MissingUrl,
    /// The URL is not `http://host[:port]/path` (or `ws://` for WebSocket mode).
    BadUrl(String),
    /// The host name did not resolve to an address.
    Unresolvable(String),
    /// A `--request` line is not `WEIGHT METHOD PATH [BODY]`.
    BadRequestSpec(String),
    /// `--preset` names no preset.
    UnknownPreset(String),
    /// Two options that exclude each other, or a value out of range.
    Conflict(&'static str),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::MissingValue(o) => write!(f, "option {o} needs a value"),
            ConfigError::UnknownOption(o) => write!(f, "unknown option {o} (see --help)"),
            ConfigError::BadValue {
                option,
                value,
                expected,
            } => {
                write!(f, "bad value {value:?} for {option}: expected {expected}")
            }
            ConfigError::MissingUrl => f.write_str("--url is required"),
            ConfigError::BadUrl(u) => write!(
                f,
                "bad URL {u:?}: expected http://host[:port]/path or ws://..."
            ),
            ConfigError::Unresolvable(h) => write!(f, "cannot resolve {h:?} to an address"),
            ConfigError::BadRequestSpec(s) => {
                write!(
                    f,
                    "bad --request {s:?}: expected \"WEIGHT METHOD PATH [BODY]\", e.g. \"90 GET /kv/{{key}}\""
                )
            }
            ConfigError::UnknownPreset(p) => {
                write!(
                    f,
                    "unknown preset {p:?}: expected counter, kv, ratelimit or events"
                )
            }
            ConfigError::Conflict(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The run as a whole failed (single failed requests are counted instead).
#[derive(Debug)]
#[non_exhaustive]
pub enum RunError {
    /// A worker's executor could not be started (io_uring unavailable, a
    /// locked-memory limit too low, a CPU that does not exist).
    Executor(String),
    /// A worker thread panicked; that is a bug in the load generator.
    WorkerPanicked,
    /// The run did not end by its hard time bound (duration + warm-up +
    /// grace); the server or the network is hung.
    HardTimeout {
        /// The bound that passed, in milliseconds.
        bound_ms: u128,
    },
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Executor(e) => write!(f, "cannot start a worker executor: {e}"),
            RunError::WorkerPanicked => {
                f.write_str("a worker thread panicked (a bug in cairn-loadgen)")
            }
            RunError::HardTimeout { bound_ms } => {
                write!(
                    f,
                    "the run did not finish within its hard bound of {bound_ms} ms; the target looks hung"
                )
            }
        }
    }
}

impl std::error::Error for RunError {}
