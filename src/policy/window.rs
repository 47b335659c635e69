//! Per-version request counters and a latency histogram that a rollout reads over a window:
//! take a snapshot at the start of a step, another at its end, subtract. Recording is two
//! relaxed atomic adds (no lock, no allocation), so every request can afford it.
//!
//! Latencies fall in log-linear buckets: 8 per power of two from 1 µs, so a percentile is
//! known to within 12.5 % (we report a bucket's upper bound: never optimistic).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const SUB_BUCKETS: usize = 8;
/// Powers of two above 1 µs covered: 2^27 µs is over two minutes; slower lands in the last.
const OCTAVES: usize = 28;
const BUCKETS: usize = SUB_BUCKETS * OCTAVES;

/// Cumulative counts of one version since it loaded.
pub struct WindowStats {
    ok: AtomicU64,
    errors: AtomicU64,
    latency: Box<[AtomicU64]>,
}

impl Default for WindowStats {
    fn default() -> Self {
        WindowStats {
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// The counts at one moment, or (after `since`) over a window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowSnapshot {
    pub ok: u64,
    pub errors: u64,
    latency: Vec<u64>,
}

impl WindowStats {
    /// Records one answered request. Only the latency of successes is recorded: failures are
    /// often fast and would flatter a failing version's percentiles.
    pub fn record(&self, ok: bool, elapsed: Duration) {
        if ok {
            self.ok.fetch_add(1, Ordering::Relaxed);
            self.latency[bucket(elapsed)].fetch_add(1, Ordering::Relaxed);
        } else {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> WindowSnapshot {
        WindowSnapshot {
            ok: self.ok.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            latency: self
                .latency
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

impl WindowSnapshot {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &WindowSnapshot) -> WindowSnapshot {
        WindowSnapshot {
            ok: self.ok.saturating_sub(earlier.ok),
            errors: self.errors.saturating_sub(earlier.errors),
            latency: self
                .latency
                .iter()
                .enumerate()
                .map(|(i, &n)| n.saturating_sub(earlier.latency.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }

    pub fn requests(&self) -> u64 {
        self.ok + self.errors
    }

    /// Errors over requests; 0 with no request.
    pub fn error_rate(&self) -> f64 {
        match self.requests() {
            0 => 0.0,
            n => self.errors as f64 / n as f64,
        }
    }

    /// The `q` quantile (0..=1) of successful requests' latency (a bucket's upper bound);
    /// `None` with no success.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(upper_bound(i));
            }
        }
        Some(upper_bound(BUCKETS - 1))
    }
}

/// Bucket of a latency: octave = floor(log2(µs)), then 8 linear steps inside it.
fn bucket(d: Duration) -> usize {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    let octave = (63 - us.leading_zeros()) as usize;
    if octave >= OCTAVES {
        return BUCKETS - 1;
    }
    let base = 1u64 << octave;
    let sub = ((us - base) * SUB_BUCKETS as u64 / base) as usize;
    octave * SUB_BUCKETS + sub.min(SUB_BUCKETS - 1)
}

fn upper_bound(bucket: usize) -> Duration {
    let (octave, sub) = (bucket / SUB_BUCKETS, bucket % SUB_BUCKETS);
    let base = 1u64 << octave;
    Duration::from_micros(base + base * (sub as u64 + 1) / SUB_BUCKETS as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_counts_only_what_happened_in_it() {
        let w = WindowStats::default();
        for _ in 0..50 {
            w.record(true, Duration::from_millis(100));
        }
        let start = w.snapshot();
        for _ in 0..99 {
            w.record(true, Duration::from_micros(200));
        }
        w.record(true, Duration::from_millis(20));
        w.record(false, Duration::from_micros(5));
        let window = w.snapshot().since(&start);
        assert_eq!((window.ok, window.errors), (100, 1));
        assert!((window.error_rate() - 1.0 / 101.0).abs() < 1e-12);
        let p50 = window.quantile(0.5).unwrap();
        assert!(
            p50 >= Duration::from_micros(200) && p50 <= Duration::from_micros(225),
            "{p50:?}"
        );
        let p99 = window.quantile(0.99).unwrap();
        assert!(
            p99 >= Duration::from_micros(200) && p99 < Duration::from_millis(1),
            "{p99:?}"
        );
        let max = window.quantile(1.0).unwrap();
        assert!(
            max >= Duration::from_millis(20) && max <= Duration::from_micros(22_600),
            "{max:?}"
        );
        assert_eq!(WindowSnapshot::default().quantile(0.99), None);
    }

    #[test]
    fn buckets_cover_microseconds_to_minutes_within_an_eighth() {
        for us in [1u64, 2, 3, 7, 9, 100, 1_000, 12_345, 1_000_000, 60_000_000] {
            let b = bucket(Duration::from_micros(us));
            let hi = upper_bound(b).as_micros() as u64;
            assert!(
                hi >= us && (hi as f64) <= us as f64 * 1.125 + 1.0,
                "{us} µs -> {hi}"
            );
        }
        assert_eq!(bucket(Duration::from_secs(100_000)), BUCKETS - 1);
        assert_eq!(bucket(Duration::ZERO), 0);
    }
}
