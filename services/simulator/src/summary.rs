//! The run's figures: requests by endpoint, errors by class, throughput, latency percentiles, unready answers, faults and CLUE error; printable as a table or one JSON line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::truth::ClueReport;

/// Most error messages kept as samples.
const MAX_ERROR_SAMPLES: usize = 20;
/// Most dropped requests listed individually.
const MAX_LISTED_DROPS: usize = 1000;

/// What a simulation did and found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SimulationSummary {
    /// HTTP requests actually sent, re-sends included.
    pub requests_by_endpoint: BTreeMap<String, u64>,
    /// Unexpected answers and failed checks; empty means success.
    pub errors_by_class: BTreeMap<String, u64>,
    pub error_samples: Vec<String>,
    pub requests_sent: u64,
    /// Events (sequence numbers) in the writes sent, first sends only.
    pub events_sent: u64,
    pub responses_sent: u64,
    pub elapsed_secs: f64,
    pub events_per_sec: f64,
    pub requests_per_sec: f64,
    pub latency: LatencySummary,
    pub unready_answers: u64,
    pub unknown_answers: u64,
    pub faults: FaultReport,
    pub clues: ClueReport,
}

/// Latency percentiles in milliseconds (about 3 % resolution; max is exact).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The faults injected.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FaultReport {
    pub dropped: u64,
    pub resent: u64,
    pub reordered: u64,
    pub slowed: u64,
    /// The dropped requests (first 1000): course and the sequence numbers left as a gap.
    pub dropped_requests: Vec<DroppedRequest>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DroppedRequest {
    pub course_uuid: String,
    pub endpoint: String,
    pub sequence_numbers: Vec<u32>,
}

impl SimulationSummary {
    /// True when no error was recorded (the CLI exits 0).
    pub fn is_success(&self) -> bool {
        self.errors_by_class.is_empty()
    }

    pub(crate) fn add_error(&mut self, class: &str, detail: String) {
        *self.errors_by_class.entry(class.to_string()).or_default() += 1;
        if self.error_samples.len() < MAX_ERROR_SAMPLES {
            self.error_samples.push(format!("{class}: {detail}"));
        }
    }

    pub(crate) fn add_drop(&mut self, dropped: DroppedRequest) {
        self.faults.dropped += 1;
        if self.faults.dropped_requests.len() < MAX_LISTED_DROPS {
            self.faults.dropped_requests.push(dropped);
        }
    }

    pub(crate) fn finish(&mut self, elapsed: Duration, latencies: &LatencyHistogram) {
        self.elapsed_secs = elapsed.as_secs_f64();
        let secs = self.elapsed_secs.max(1e-9);
        self.events_per_sec = self.events_sent as f64 / secs;
        self.requests_per_sec = self.requests_sent as f64 / secs;
        self.latency = latencies.summary();
    }

    /// One JSON object on one line.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|error| format!("{{\"error\":\"summary not serializable: {error}\"}}"))
    }

    /// A table for people.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "simulation {}",
            if self.is_success() {
                "succeeded"
            } else {
                "FAILED"
            }
        );
        let _ = writeln!(
            out,
            "  {} requests, {} events ({} responses) in {:.2} s: {:.1} events/s, {:.1} requests/s",
            self.requests_sent,
            self.events_sent,
            self.responses_sent,
            self.elapsed_secs,
            self.events_per_sec,
            self.requests_per_sec
        );
        let _ = writeln!(
            out,
            "  latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            self.latency.p50_ms, self.latency.p90_ms, self.latency.p99_ms, self.latency.max_ms
        );
        let _ = writeln!(
            out,
            "  unready answers {}, unknown answers {}",
            self.unready_answers, self.unknown_answers
        );
        let _ = writeln!(out, "  {:<44} {:>10}", "endpoint", "requests");
        for (endpoint, count) in &self.requests_by_endpoint {
            let _ = writeln!(out, "  {endpoint:<44} {count:>10}");
        }
        let f = &self.faults;
        if f.dropped + f.resent + f.reordered + f.slowed > 0 {
            let _ = writeln!(
                out,
                "  faults: dropped {}, resent {}, reordered {}, slowed {}",
                f.dropped, f.resent, f.reordered, f.slowed
            );
        }
        let c = &self.clues;
        let error = |e: Option<f64>| e.map_or("-".to_string(), |e| format!("{e:.3}"));
        let _ = writeln!(
            out,
            "  CLUE |most_likely - truth|: first half {} (n={}), second half {} (n={})",
            error(c.mean_abs_error_first_half),
            c.ready_first_half,
            error(c.mean_abs_error_second_half),
            c.ready_second_half
        );
        if self.errors_by_class.is_empty() {
            let _ = writeln!(out, "  errors: none");
        } else {
            let _ = writeln!(out, "  {:<44} {:>10}", "error class", "count");
            for (class, count) in &self.errors_by_class {
                let _ = writeln!(out, "  {class:<44} {count:>10}");
            }
            for sample in &self.error_samples {
                let _ = writeln!(out, "  - {sample}");
            }
        }
        out
    }
}

/// Log-linear histogram of latencies in microseconds: exact below 64 µs, then 32
/// sub-buckets per power of two. Memory is fixed whatever the number of requests.
pub(crate) struct LatencyHistogram {
    buckets: Vec<u64>,
    count: u64,
    max_micros: u64,
}

const SUB_BUCKETS: u64 = 32;

impl LatencyHistogram {
    pub(crate) fn new() -> Self {
        LatencyHistogram {
            buckets: vec![0; 64 + 58 * SUB_BUCKETS as usize],
            count: 0,
            max_micros: 0,
        }
    }

    fn index(micros: u64) -> usize {
        if micros < 64 {
            return micros as usize;
        }
        let exponent = 63 - u64::from(micros.leading_zeros()); // ≥ 6
        let sub = (micros >> (exponent - 5)) - SUB_BUCKETS;
        (64 + (exponent - 6) * SUB_BUCKETS + sub) as usize
    }

    /// The upper bound of a bucket, so percentiles never understate.
    fn upper_bound(index: usize) -> u64 {
        let index = index as u64;
        if index < 64 {
            return index;
        }
        let exponent = (index - 64) / SUB_BUCKETS + 6;
        let sub = (index - 64) % SUB_BUCKETS;
        ((SUB_BUCKETS + sub + 1) << (exponent - 5)) - 1
    }

    pub(crate) fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let index = Self::index(micros).min(self.buckets.len() - 1);
        self.buckets[index] += 1;
        self.count += 1;
        self.max_micros = self.max_micros.max(micros);
    }

    fn percentile_micros(&self, quantile: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((quantile * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (index, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Self::upper_bound(index).min(self.max_micros);
            }
        }
        self.max_micros
    }

    pub(crate) fn summary(&self) -> LatencySummary {
        let ms = |micros: u64| micros as f64 / 1000.0;
        LatencySummary {
            count: self.count,
            p50_ms: ms(self.percentile_micros(0.50)),
            p90_ms: ms(self.percentile_micros(0.90)),
            p99_ms: ms(self.percentile_micros(0.99)),
            max_ms: ms(self.max_micros),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(latencies_micros: &[u64], expected: (f64, f64, f64, f64)) {
        let mut histogram = LatencyHistogram::new();
        for &micros in latencies_micros {
            histogram.record(Duration::from_micros(micros));
        }
        let summary = histogram.summary();
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.04 + 0.001;
        assert!(near(summary.p50_ms, expected.0), "p50 {summary:?}");
        assert!(near(summary.p90_ms, expected.1), "p90 {summary:?}");
        assert!(near(summary.p99_ms, expected.2), "p99 {summary:?}");
        assert!(near(summary.max_ms, expected.3), "max {summary:?}");
    }

    #[test]
    fn percentiles_within_resolution() {
        let uniform: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        check(&uniform, (500.0, 900.0, 990.0, 1000.0));
        check(&[10, 20, 30], (0.02, 0.03, 0.03, 0.03));
        check(&[], (0.0, 0.0, 0.0, 0.0));
        check(&[5_000_000; 10], (5000.0, 5000.0, 5000.0, 5000.0));
    }

    #[test]
    fn bucket_bounds_are_monotone_and_cover_values() {
        let mut last = 0;
        for micros in [
            0u64,
            1,
            63,
            64,
            65,
            100,
            1000,
            123_456,
            10_000_000,
            u64::MAX / 4,
        ] {
            let index = LatencyHistogram::index(micros);
            assert!(index >= last);
            last = index;
            assert!(LatencyHistogram::upper_bound(index) >= micros);
        }
    }
}
