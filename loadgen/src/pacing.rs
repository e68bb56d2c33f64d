//! Open-loop pacing: when each request was *meant* to be sent.
//!
//! Latency in open-loop mode is measured from the intended send time, not
//! the actual one. If the server stalls, requests that should have gone out
//! during the stall are late, and their lateness is counted: this is what
//! makes a stall visible in the tail instead of hiding it (the "coordinated
//! omission" that closed-loop generators such as wrk suffer from; wrk2 fixed
//! it the same way).

use std::time::{Duration, Instant};

/// The schedule of one connection: request `i` is due at
/// `start + i * interval`.
///
/// **Invariant:** due times are computed from the index, never accumulated,
/// so the schedule does not drift however long the run.
#[derive(Debug, Clone)]
pub struct Pacer {
    start: Instant,
    interval_ns: f64,
    next: u64,
}

impl Pacer {
    /// A schedule sending `rate_per_sec` requests per second from `start`.
    /// `rate_per_sec` must be positive and finite.
    pub fn new(start: Instant, rate_per_sec: f64) -> Self {
        assert!(
            rate_per_sec > 0.0 && rate_per_sec.is_finite(),
            "rate {rate_per_sec}"
        );
        Pacer {
            start,
            interval_ns: 1e9 / rate_per_sec,
            next: 0,
        }
    }

    /// When request `i` is due.
    pub fn due(&self, i: u64) -> Instant {
        self.start + Duration::from_nanos((i as f64 * self.interval_ns) as u64)
    }

    /// When the next request is due (without taking it).
    pub fn peek(&self) -> Instant {
        self.due(self.next)
    }

    /// Takes the next request's due time.
    pub fn take(&mut self) -> Instant {
        let due = self.due(self.next);
        self.next += 1;
        due
    }
}

/// Part `index` of `total` split into `parts` nearly equal integer shares
/// (the first `total % parts` shares get one more), so connections spread
/// over workers add up exactly.
pub fn share(total: u64, parts: u64, index: u64) -> u64 {
    assert!(parts > 0 && index < parts, "share index {index} of {parts}");
    total / parts + u64::from(index < total % parts)
}

/// The start of connection `index` of `count` sharing one rate: connections
/// are staggered over one interval of the aggregate rate, so that they do
/// not all fire at the same instant.
pub fn stagger(start: Instant, rate_per_sec: f64, count: u64, index: u64) -> Instant {
    let per_connection_ns = 1e9 / rate_per_sec * count as f64;
    start + Duration::from_nanos((per_connection_ns * index as f64 / count as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_are_evenly_spaced_at_the_requested_rate() {
        let start = Instant::now();
        let mut pacer = Pacer::new(start, 1000.0);
        assert_eq!(pacer.take(), start);
        assert_eq!(pacer.take(), start + Duration::from_millis(1));
        assert_eq!(pacer.peek(), start + Duration::from_millis(2));
        assert_eq!(pacer.due(1000), start + Duration::from_secs(1));
    }

    #[test]
    fn the_schedule_does_not_drift_over_a_million_requests() {
        let start = Instant::now();
        let pacer = Pacer::new(start, 3.0);
        // 3 per second: request 3 million is due at exactly one million seconds.
        let due = pacer.due(3_000_000) - start;
        assert!(
            due.abs_diff(Duration::from_secs(1_000_000)) < Duration::from_micros(1),
            "{due:?}"
        );
    }

    #[test]
    fn connections_staggered_over_one_interval_add_up_to_the_total_rate() {
        let start = Instant::now();
        let (rate, count) = (1000.0, 4);
        let mut sends: Vec<Instant> = Vec::new();
        for c in 0..count {
            let pacer = Pacer::new(stagger(start, rate, count, c), rate / count as f64);
            sends.extend((0..250).map(|i| pacer.due(i)));
        }
        sends.sort();
        let gaps: Vec<Duration> = sends.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.iter()
                .all(|g| g.abs_diff(Duration::from_millis(1)) < Duration::from_micros(2))
        );
    }

    fn check_share(total: u64, parts: u64, expected: &[u64]) {
        let got: Vec<u64> = (0..parts).map(|i| share(total, parts, i)).collect();
        assert_eq!(got, expected, "share({total}, {parts})");
    }

    #[test]
    fn shares_are_nearly_equal_and_add_up() {
        check_share(10, 3, &[4, 3, 3]);
        check_share(9, 3, &[3, 3, 3]);
        check_share(1, 2, &[1, 0]);
        check_share(0, 2, &[0, 0]);
        check_share(64, 1, &[64]);
    }
}
