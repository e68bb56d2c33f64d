//! What one worker measured: a latency histogram, request and byte counts,
//! errors by kind and responses by status. Workers record into their own
//! [`Recorder`] (no sharing across threads) and the results are merged once
//! at the end.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest latency the histogram tracks, in nanoseconds (one hour); a value
/// above it is clamped, so a hung server can never make recording fail.
pub const LATENCY_NS_MAX: u64 = 3_600_000_000_000;

/// Why a request or connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// The TCP connection (or WebSocket handshake) could not be made.
    Connect,
    /// A read from the socket failed.
    Read,
    /// A write to the socket failed.
    Write,
    /// The server closed the connection with requests outstanding.
    Closed,
    /// The response did not parse (bad framing, bad head, too large).
    Protocol,
    /// The server answered with a status of 400 or more.
    Status,
}

impl ErrorKind {
    /// The name used in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Read => "read",
            ErrorKind::Write => "write",
            ErrorKind::Closed => "closed",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Status => "status",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One worker's measurements.
#[derive(Debug, Clone)]
pub struct Recorder {
    /// Latency of every measured response, in nanoseconds.
    pub latency_ns: Histogram<u64>,
    /// Responses (or WebSocket messages) received in the measured window.
    pub requests: u64,
    /// Bytes read in the measured window.
    pub bytes_read: u64,
    /// Errors by kind.
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Responses by status code.
    pub statuses: BTreeMap<u16, u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        // 3 significant digits: 0.1% resolution at every magnitude.
        let latency_ns = Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3)
            .expect("constant histogram bounds are valid");
        Recorder {
            latency_ns,
            requests: 0,
            bytes_read: 0,
            errors: BTreeMap::new(),
            statuses: BTreeMap::new(),
        }
    }

    /// Records one latency (clamped to `1..=LATENCY_NS_MAX`).
    pub fn record_latency(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos())
            .unwrap_or(u64::MAX)
            .clamp(1, LATENCY_NS_MAX);
        self.latency_ns.saturating_record(ns);
        self.requests += 1;
    }

    /// Records one response's status (and an error when it is 400 or more).
    pub fn record_status(&mut self, status: u16) {
        *self.statuses.entry(status).or_default() += 1;
        if status >= 400 {
            self.record_error(ErrorKind::Status);
        }
    }

    /// Records one error.
    pub fn record_error(&mut self, kind: ErrorKind) {
        *self.errors.entry(kind).or_default() += 1;
    }

    /// Total errors of every kind.
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Adds `other`'s measurements to this one.
    pub fn merge(&mut self, other: &Recorder) {
        self.latency_ns
            .add(&other.latency_ns)
            .expect("recorders share the same bounds");
        self.requests += other.requests;
        self.bytes_read += other.bytes_read;
        for (kind, n) in &other.errors {
            *self.errors.entry(*kind).or_default() += n;
        }
        for (status, n) in &other.statuses {
            *self.statuses.entry(*status).or_default() += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder(latencies_us: &[u64], statuses: &[u16]) -> Recorder {
        let mut r = Recorder::new();
        for us in latencies_us {
            r.record_latency(Duration::from_micros(*us));
        }
        for s in statuses {
            r.record_status(*s);
        }
        r
    }

    #[test]
    fn merging_gives_the_histogram_of_all_samples() {
        let mut a = recorder(&[100, 200, 300], &[200, 200]);
        let b = recorder(&[1000, 2000], &[200, 503]);
        a.merge(&b);
        let whole = recorder(&[100, 200, 300, 1000, 2000], &[]);
        assert_eq!(a.requests, 5);
        assert_eq!(a.latency_ns.len(), 5);
        for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(
                a.latency_ns.value_at_quantile(q),
                whole.latency_ns.value_at_quantile(q),
                "q={q}"
            );
        }
        assert_eq!(a.latency_ns.max(), whole.latency_ns.max());
        assert_eq!(a.statuses, BTreeMap::from([(200, 3), (503, 1)]));
        assert_eq!(a.errors, BTreeMap::from([(ErrorKind::Status, 1)]));
    }

    #[test]
    fn merging_an_empty_recorder_changes_nothing() {
        let mut a = recorder(&[5, 6, 7], &[204]);
        let before = a.latency_ns.clone();
        a.merge(&Recorder::new());
        assert_eq!(a.latency_ns, before);
        assert_eq!(a.requests, 3);
    }

    #[test]
    fn errors_of_several_kinds_add_up() {
        let mut a = recorder(&[], &[404, 500, 200]);
        a.record_error(ErrorKind::Connect);
        let mut b = Recorder::new();
        b.record_error(ErrorKind::Connect);
        b.record_error(ErrorKind::Closed);
        a.merge(&b);
        assert_eq!(a.errors[&ErrorKind::Connect], 2);
        assert_eq!(a.errors[&ErrorKind::Status], 2);
        assert_eq!(a.error_total(), 5);
    }

    #[test]
    fn a_latency_at_the_maximum_is_kept_and_one_past_it_is_clamped_to_it() {
        let (mut at, mut past) = (Recorder::new(), Recorder::new());
        at.record_latency(Duration::from_nanos(LATENCY_NS_MAX));
        past.record_latency(Duration::from_nanos(LATENCY_NS_MAX + 1));
        assert_eq!((at.requests, past.requests), (1, 1));
        assert_eq!(at.latency_ns.max(), past.latency_ns.max());
        assert!(
            at.latency_ns
                .equivalent(at.latency_ns.max(), LATENCY_NS_MAX)
        );
    }

    #[test]
    fn a_latency_past_the_maximum_is_clamped_not_lost() {
        let mut a = Recorder::new();
        a.record_latency(Duration::from_secs(10_000));
        a.record_latency(Duration::ZERO);
        assert_eq!(a.latency_ns.len(), 2);
        assert!(a.latency_ns.max() >= LATENCY_NS_MAX);
    }
}
