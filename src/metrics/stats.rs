//! The per-version counters behind Triton's statistics extension: success and failure
//! durations, queue and compute phases per request, and executions by batch size.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A count and a total duration, as Triton's `StatisticDuration`.
#[derive(Debug, Default)]
pub struct Duration64 {
    count: AtomicU64,
    ns: AtomicU64,
}

impl Duration64 {
    pub fn record(&self, d: Duration) {
        self.record_n(1, d);
    }

    pub fn record_n(&self, n: u64, d: Duration) {
        self.count.fetch_add(n, Ordering::Relaxed);
        self.ns.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// (count, total nanoseconds)
    pub fn get(&self) -> (u64, u64) {
        (
            self.count.load(Ordering::Relaxed),
            self.ns.load(Ordering::Relaxed),
        )
    }
}

/// Durations of the three compute phases of one batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PhaseTimes {
    /// Assembling the batch's inputs (concatenation along the batch dimension).
    pub input: Duration,
    /// The backend call.
    pub infer: Duration,
    /// Splitting the outputs back per request.
    pub output: Duration,
}

impl PhaseTimes {
    pub fn total(&self) -> Duration {
        self.input + self.infer + self.output
    }
}

/// Executions of one batch size (Triton's `InferBatchStatistics`): how many, and the total
/// nanoseconds of each phase.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchTimes {
    pub count: u64,
    pub input_ns: u64,
    pub infer_ns: u64,
    pub output_ns: u64,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Cumulative counters of one model version for the statistics extension.
#[derive(Debug, Default)]
pub struct VersionStats {
    pub success: Duration64,
    pub fail: Duration64,
    pub queue: Duration64,
    /// Per request, as Triton counts them: each request of a batch adds the batch's whole phase.
    pub compute_input: Duration64,
    pub compute_infer: Duration64,
    pub compute_output: Duration64,
    /// Rows inferred (Triton's inference_count) and backend calls (execution_count).
    pub inference_count: AtomicU64,
    pub execution_count: AtomicU64,
    /// Milliseconds since the epoch of the last answered request.
    pub last_inference_ms: AtomicU64,
    /// By batch size in rows; locked once per batch, by the instance that ran it.
    batches: Mutex<BTreeMap<usize, BatchTimes>>,
}

impl VersionStats {
    pub fn touch(&self) {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.last_inference_ms.store(ms, Ordering::Relaxed);
    }

    /// Records one executed batch of `requests` requests and `rows` rows.
    pub fn record_batch(&self, requests: usize, rows: usize, t: PhaseTimes) {
        let n = u32::try_from(requests).unwrap_or(u32::MAX);
        self.compute_input
            .record_n(u64::from(n), t.input.saturating_mul(n));
        self.compute_infer
            .record_n(u64::from(n), t.infer.saturating_mul(n));
        self.compute_output
            .record_n(u64::from(n), t.output.saturating_mul(n));
        self.execution_count.fetch_add(1, Ordering::Relaxed);
        self.inference_count
            .fetch_add(rows as u64, Ordering::Relaxed);
        // Plain counters: a panic cannot leave them half-updated in a harmful way.
        let mut batches = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
        let b = batches.entry(rows).or_default();
        b.count += 1;
        b.input_ns = b.input_ns.saturating_add(ns(t.input));
        b.infer_ns = b.infer_ns.saturating_add(ns(t.infer));
        b.output_ns = b.output_ns.saturating_add(ns(t.output));
    }

    /// (batch size, its executions), by ascending batch size.
    pub fn batch_stats(&self) -> Vec<(usize, BatchTimes)> {
        let batches = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
        batches.iter().map(|(&k, &v)| (k, v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_statistics_count_each_request_and_each_size() {
        let s = VersionStats::default();
        let t = PhaseTimes {
            input: Duration::from_nanos(10),
            infer: Duration::from_nanos(100),
            output: Duration::from_nanos(5),
        };
        s.record_batch(2, 3, t);
        s.record_batch(1, 3, t);
        s.record_batch(1, 1, t);
        assert_eq!(s.compute_infer.get(), (4, 400));
        assert_eq!(s.compute_input.get(), (4, 40));
        assert_eq!(s.execution_count.load(Ordering::Relaxed), 3);
        assert_eq!(s.inference_count.load(Ordering::Relaxed), 7);
        let b = s.batch_stats();
        assert_eq!(b.len(), 2);
        assert_eq!(
            b[1],
            (
                3,
                BatchTimes {
                    count: 2,
                    input_ns: 20,
                    infer_ns: 200,
                    output_ns: 10
                }
            )
        );
    }
}
