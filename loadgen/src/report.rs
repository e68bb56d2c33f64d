//! Results as people and scripts read them: the [`Report`] (serialised as
//! one JSON object by `--json`), its human table, and the comparison of two
//! JSON reports.
//!
//! **Stable interface.** Scripts rely on these JSON fields: `requests_per_sec`
//! (number), `errors` (number, all kinds) and `latency_us` holding `p50`,
//! `p99`, `p999` and `max` (microseconds). Fields may be added; those are
//! never renamed or removed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::stats::Recorder;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest value seen.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

/// What was run, and what it measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `closed`, `open` or `ws`.
    pub mode: String,
    /// The target (the URL template as given).
    pub url: String,
    /// Connections (WebSocket: members) in total.
    pub connections: u64,
    /// Worker threads.
    pub workers: u64,
    /// Requests in flight per connection at most.
    pub pipeline: u64,
    /// Target rate for open loop (WebSocket: messages sent per second), or null.
    pub rate_per_sec: Option<f64>,
    /// Closed loop with think time (`--think-time`): milliseconds each
    /// connection waited after a response before its next request; null
    /// without.
    #[serde(default)]
    pub think_time_ms: Option<f64>,
    /// Measured window in seconds (warm-up excluded).
    pub duration_s: f64,
    /// Warm-up in seconds, not measured.
    pub warmup_s: f64,
    /// Responses (WebSocket: messages received) in the measured window.
    pub requests: u64,
    /// `requests / duration_s`.
    pub requests_per_sec: f64,
    /// Bytes read in the measured window.
    pub bytes_read: u64,
    /// Errors of every kind, including responses with status >= 400.
    pub errors: u64,
    /// Errors by kind (`connect`, `read`, `write`, `closed`, `protocol`, `status`).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Responses by status code.
    pub statuses: BTreeMap<String, u64>,
    /// Latency percentiles (open loop: from the intended send time).
    pub latency_us: Latency,
    /// Closed loop only (null otherwise): `latency_us` after the
    /// coordinated-omission correction that `wrk` applies to its own samples
    /// before printing them (`stats_correct`: every sample longer than twice
    /// the mean per-connection interval, `duration * connections / requests`,
    /// adds synthetic samples one interval apart below it). Compare `wrk`'s
    /// percentiles with these, not with `latency_us`: on a machine with
    /// scheduler stalls the correction moves the tail by orders of magnitude.
    #[serde(default)]
    pub latency_wrk_corrected_us: Option<Latency>,
}

/// What describes a run apart from its measurements.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// See [`Report::mode`].
    pub mode: &'static str,
    /// See [`Report::url`].
    pub url: String,
    /// See [`Report::connections`].
    pub connections: u64,
    /// See [`Report::workers`].
    pub workers: u64,
    /// See [`Report::pipeline`].
    pub pipeline: u64,
    /// See [`Report::rate_per_sec`].
    pub rate_per_sec: Option<f64>,
    /// The measured window.
    pub duration: Duration,
    /// The warm-up.
    pub warmup: Duration,
}

impl Report {
    /// The report of a run described by `info` that measured `rec`.
    pub fn new(info: &RunInfo, rec: &Recorder) -> Self {
        let secs = info.duration.as_secs_f64();
        // wrk's interval: runtime / (complete / connections), in integers.
        let per_connection = rec.requests / info.connections.max(1);
        let wrk_corrected = (info.mode == "closed" && per_connection > 0).then(|| {
            let interval_ns = info.duration.as_nanos() as u64 / per_connection;
            latency(&rec.latency_ns.clone_correct(interval_ns))
        });
        Report {
            mode: info.mode.to_string(),
            url: info.url.clone(),
            connections: info.connections,
            workers: info.workers,
            pipeline: info.pipeline,
            rate_per_sec: info.rate_per_sec,
            think_time_ms: None,
            duration_s: secs,
            warmup_s: info.warmup.as_secs_f64(),
            requests: rec.requests,
            requests_per_sec: if secs > 0.0 {
                rec.requests as f64 / secs
            } else {
                0.0
            },
            bytes_read: rec.bytes_read,
            errors: rec.error_total(),
            errors_by_kind: rec
                .errors
                .iter()
                .map(|(k, n)| (k.name().to_string(), *n))
                .collect(),
            statuses: rec
                .statuses
                .iter()
                .map(|(s, n)| (s.to_string(), *n))
                .collect(),
            latency_us: latency(&rec.latency_ns),
            latency_wrk_corrected_us: wrk_corrected,
        }
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serialises")
    }

    /// The report as a human-readable table.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let rate = self
            .rate_per_sec
            .map_or(String::new(), |r| format!(", target {r:.0}/s"));
        let _ = writeln!(
            s,
            "{} loop, {} connections on {} workers, pipeline {}{}, {:.1}s measured after {:.1}s warm-up",
            self.mode,
            self.connections,
            self.workers,
            self.pipeline,
            rate,
            self.duration_s,
            self.warmup_s
        );
        let _ = writeln!(s, "target: {}", self.url);
        let l = &self.latency_us;
        let _ = writeln!(
            s,
            "  latency (us)    p50 {:>10.1}   p90 {:>10.1}   p99 {:>10.1}",
            l.p50, l.p90, l.p99
        );
        let _ = writeln!(
            s,
            "                 p99.9 {:>8.1}   max {:>10.1}   mean {:>9.1}",
            l.p999, l.max, l.mean
        );
        let _ = writeln!(
            s,
            "  {} requests, {:.1} requests/s, {} bytes read",
            self.requests, self.requests_per_sec, self.bytes_read
        );
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(
            s,
            "  statuses: {}",
            if statuses.is_empty() {
                "none".into()
            } else {
                statuses.join(", ")
            }
        );
        let kinds: Vec<String> = self
            .errors_by_kind
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(
            s,
            "  errors: {}{}",
            self.errors,
            if kinds.is_empty() {
                String::new()
            } else {
                format!(" ({})", kinds.join(", "))
            }
        );
        s
    }
}

/// The percentiles of a histogram of nanoseconds, in microseconds (all zero
/// when it is empty).
fn latency(h: &Histogram<u64>) -> Latency {
    let us = |ns: u64| ns as f64 / 1000.0;
    let empty = h.is_empty();
    let at = |q: f64| {
        if empty {
            0.0
        } else {
            us(h.value_at_quantile(q))
        }
    };
    Latency {
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        p999: at(0.999),
        max: if empty { 0.0 } else { us(h.max()) },
        mean: if empty { 0.0 } else { h.mean() / 1000.0 },
    }
}

/// One metric present in both reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Dotted path of the field, such as `latency_us.p99`.
    pub metric: String,
    /// Its value in the first (baseline) report.
    pub a: f64,
    /// Its value in the second report.
    pub b: f64,
    /// `b / a`, or `None` when `a` is zero.
    pub ratio: Option<f64>,
}

fn numeric_leaves(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, f64)>) {
    match value {
        serde_json::Value::Number(n) => {
            if let Some(f) = n.as_f64() {
                out.push((prefix.to_string(), f));
            }
        }
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                numeric_leaves(&path, v, out);
            }
        }
        _ => {}
    }
}

/// Every numeric field present in both JSON reports, in `a`'s order, with
/// the ratio `b / a`. Works on any two JSON objects, so a report from an
/// older or newer loadgen still compares on the fields they share.
pub fn compare(a: &serde_json::Value, b: &serde_json::Value) -> Vec<Comparison> {
    let (mut left, mut right) = (Vec::new(), Vec::new());
    numeric_leaves("", a, &mut left);
    numeric_leaves("", b, &mut right);
    let right: BTreeMap<String, f64> = right.into_iter().collect();
    left.into_iter()
        .filter_map(|(metric, a)| {
            let b = *right.get(&metric)?;
            let ratio = (a != 0.0).then(|| b / a);
            Some(Comparison {
                metric,
                a,
                b,
                ratio,
            })
        })
        .collect()
}

/// The comparison as a table: metric, a, b, b/a.
pub fn comparison_table(rows: &[Comparison]) -> String {
    let mut s = format!("{:<28} {:>14} {:>14} {:>9}\n", "metric", "a", "b", "b/a");
    for r in rows {
        let ratio = r.ratio.map_or("-".to_string(), |x| format!("{x:.3}"));
        let _ = writeln!(
            s,
            "{:<28} {:>14.2} {:>14.2} {:>9}",
            r.metric, r.a, r.b, ratio
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::ErrorKind;
    use serde_json::json;

    fn check(
        a: serde_json::Value,
        b: serde_json::Value,
        expected: &[(&str, f64, f64, Option<f64>)],
    ) {
        let got: Vec<(String, f64, f64, Option<f64>)> = compare(&a, &b)
            .into_iter()
            .map(|c| (c.metric, c.a, c.b, c.ratio))
            .collect();
        let expected: Vec<(String, f64, f64, Option<f64>)> = expected
            .iter()
            .map(|(m, a, b, r)| (m.to_string(), *a, *b, *r))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn comparison_gives_the_ratio_per_metric() {
        check(
            json!({"requests_per_sec": 100.0}),
            json!({"requests_per_sec": 150.0}),
            &[("requests_per_sec", 100.0, 150.0, Some(1.5))],
        );
        check(
            json!({"latency_us": {"p99": 200}}),
            json!({"latency_us": {"p99": 100}}),
            &[("latency_us.p99", 200.0, 100.0, Some(0.5))],
        );
    }

    #[test]
    fn comparison_of_a_zero_baseline_has_no_ratio() {
        check(
            json!({"errors": 0}),
            json!({"errors": 3}),
            &[("errors", 0.0, 3.0, None)],
        );
    }

    #[test]
    fn comparison_skips_fields_missing_on_either_side_and_non_numbers() {
        check(
            json!({"a": 1, "mode": "open", "only_a": 2}),
            json!({"a": 2, "mode": "closed", "only_b": 5}),
            &[("a", 1.0, 2.0, Some(2.0))],
        );
        check(
            json!({"rate_per_sec": null}),
            json!({"rate_per_sec": 10}),
            &[],
        );
    }

    fn sample_report() -> Report {
        let mut rec = Recorder::new();
        for us in 1..=1000u64 {
            rec.record_latency(Duration::from_micros(us));
            rec.record_status(200);
        }
        rec.record_error(ErrorKind::Connect);
        let info = RunInfo {
            mode: "closed",
            url: "http://127.0.0.1:1/".into(),
            connections: 2,
            workers: 1,
            pipeline: 1,
            rate_per_sec: None,
            duration: Duration::from_secs(2),
            warmup: Duration::from_secs(1),
        };
        Report::new(&info, &rec)
    }

    #[test]
    fn the_json_report_holds_the_fields_scripts_rely_on() {
        let report = sample_report();
        let v: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(v["requests_per_sec"].as_f64(), Some(500.0));
        assert_eq!(v["errors"].as_u64(), Some(1));
        let p50 = v["latency_us"]["p50"].as_f64().unwrap();
        assert!((499.0..=501.0).contains(&p50), "{p50}");
        for field in ["p99", "p999", "max"] {
            assert!(v["latency_us"][field].as_f64().unwrap() > 0.0, "{field}");
        }
        assert_eq!(v["statuses"]["200"].as_u64(), Some(1000));
        assert_eq!(v["errors_by_kind"]["connect"].as_u64(), Some(1));
    }

    #[test]
    fn the_wrk_correction_back_fills_stalls_as_wrk_does() {
        // 2 connections, 1 s, 1000 responses: wrk's interval is 2 ms. 990
        // answers take 100 us; 10 stall for 50 ms, and each stands for the
        // 24 requests (48 ms, 46 ms, ... 4 ms) a steady sender would have
        // been timing meanwhile.
        let mut rec = Recorder::new();
        for i in 0..1000u64 {
            let us = if i % 100 == 0 { 50_000 } else { 100 };
            rec.record_latency(Duration::from_micros(us));
        }
        let info = RunInfo {
            mode: "closed",
            url: "http://127.0.0.1:1/".into(),
            connections: 2,
            workers: 1,
            pipeline: 1,
            rate_per_sec: None,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
        };
        let report = Report::new(&info, &rec);
        assert!(report.latency_us.p99 < 200.0, "{:?}", report.latency_us);
        let fixed = report.latency_wrk_corrected_us.expect("closed loop");
        assert_eq!(
            rec.latency_ns.clone_correct(2_000_000).len(),
            1000 + 10 * 24
        );
        // 250 of 1240 samples are 2 ms or more: the median stays, p90 moves.
        assert!(fixed.p50 < 200.0, "{fixed:?}");
        assert!((20_000.0..=30_000.0).contains(&fixed.p90), "{fixed:?}");
        let open = Report::new(
            &RunInfo {
                mode: "open",
                ..info
            },
            &rec,
        );
        assert_eq!(open.latency_wrk_corrected_us, None);
    }

    #[test]
    fn a_report_survives_a_json_round_trip_and_compares_equal_to_itself() {
        let report = sample_report();
        let back: Report = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(back, report);
        let v = serde_json::to_value(&report).unwrap();
        assert!(
            compare(&v, &v)
                .iter()
                .all(|c| c.ratio.is_none_or(|r| r == 1.0))
        );
        assert!(report.to_table().contains("requests/s"));
    }
}
