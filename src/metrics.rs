//! Metric names (one prefix), the Prometheus registry, and the per-version counters behind
//! Triton's statistics extension. One `Metrics` per server, so tests can run servers side by side.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub const PREFIX: &str = "ferroserve";
pub const REQUESTS_TOTAL: &str = "requests_total";
pub const REQUEST_DURATION: &str = "request_duration_seconds";
pub const QUEUE_DURATION: &str = "queue_duration_seconds";
pub const COMPUTE_DURATION: &str = "compute_duration_seconds";
pub const BATCH_SIZE: &str = "batch_size";
pub const MODEL_READY: &str = "model_ready";
pub const QUEUE_DEPTH: &str = "queue_depth";
pub const LOAD_FAILURES: &str = "model_load_failures_total";
pub const ROUTED_REQUESTS: &str = "routed_requests_total";
pub const ROLLOUT_STATE: &str = "rollout_state";
pub const ROLLOUT_CANDIDATE_PERCENT: &str = "rollout_candidate_percent";
pub const SHADOW_REQUESTS: &str = "shadow_requests_total";
pub const SHADOW_COMPARED: &str = "shadow_compared_total";
pub const SHADOW_MISMATCHES: &str = "shadow_mismatches_total";
pub const SHADOW_MAX_ABS_DIFF: &str = "shadow_max_abs_diff";

/// Latency buckets from 25 µs to 10 s: small models answer in microseconds, big ones in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Which front end a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Grpc,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub queue_duration: HistogramVec,
    pub compute_duration: HistogramVec,
    pub batch_size: HistogramVec,
    pub model_ready: IntGaugeVec,
    pub queue_depth: IntGaugeVec,
    pub load_failures: IntCounterVec,
    pub traffic: TrafficMetrics,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new_custom(Some(PREFIX.into()), None)?;
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )
        };
        let m = Metrics {
            requests: IntCounterVec::new(
                Opts::new(
                    REQUESTS_TOTAL,
                    "Inference requests by model, version, protocol and outcome.",
                ),
                &["model", "version", "protocol", "outcome"],
            )?,
            request_duration: histogram(
                REQUEST_DURATION,
                "Time from a decoded request to its answer, in seconds.",
                &["model", "version", "protocol"],
                LATENCY_BUCKETS,
            )?,
            queue_duration: histogram(
                QUEUE_DURATION,
                "Time requests wait before an instance takes them, in seconds.",
                &["model", "version"],
                LATENCY_BUCKETS,
            )?,
            compute_duration: histogram(
                COMPUTE_DURATION,
                "Backend time per batch, in seconds.",
                &["model", "version"],
                LATENCY_BUCKETS,
            )?,
            batch_size: histogram(
                BATCH_SIZE,
                "Rows per backend call.",
                &["model", "version"],
                BATCH_BUCKETS,
            )?,
            model_ready: IntGaugeVec::new(
                Opts::new(MODEL_READY, "1 when the model version serves, else 0."),
                &["model", "version"],
            )?,
            queue_depth: IntGaugeVec::new(
                Opts::new(QUEUE_DEPTH, "Requests waiting for an instance."),
                &["model", "version"],
            )?,
            load_failures: IntCounterVec::new(
                Opts::new(
                    LOAD_FAILURES,
                    "Model loads that failed (the version kept serving what it served).",
                ),
                &["model"],
            )?,
            traffic: TrafficMetrics::new()?,
            registry,
        };
        m.traffic.register(&m.registry)?;
        m.registry.register(Box::new(m.requests.clone()))?;
        m.registry.register(Box::new(m.request_duration.clone()))?;
        m.registry.register(Box::new(m.queue_duration.clone()))?;
        m.registry.register(Box::new(m.compute_duration.clone()))?;
        m.registry.register(Box::new(m.batch_size.clone()))?;
        m.registry.register(Box::new(m.model_ready.clone()))?;
        m.registry.register(Box::new(m.queue_depth.clone()))?;
        m.registry.register(Box::new(m.load_failures.clone()))?;
        Ok(m)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Traffic policy, rollout and shadow metrics.
pub struct TrafficMetrics {
    /// model, version, reason (`default`, `pinned`, `weighted`, `sticky`, `shadow`).
    pub routed: IntCounterVec,
    /// model, state (`running`, `promoted`, `rolled_back`, `aborted`): 1 for the current state.
    pub rollout_state: IntGaugeVec,
    /// model: the candidate's share of traffic during a rollout.
    pub rollout_percent: IntGaugeVec,
    /// model, version (the shadow), outcome (`compared`, `skipped`, `failed`).
    pub shadow_requests: IntCounterVec,
    /// model, version, output: labels (integer outputs) or rows' argmax (float outputs)
    /// compared, and how many differed from the primary's.
    pub shadow_compared: IntCounterVec,
    pub shadow_mismatches: IntCounterVec,
    /// model, version, output: per mirrored request, the largest |shadow - primary| of a float
    /// output.
    pub shadow_max_abs_diff: HistogramVec,
}

/// 1e-7 to 100 by decades and halves: from rounding noise to a different model.
const DIFF_BUCKETS: &[f64] = &[
    1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 100.0,
];

impl TrafficMetrics {
    fn new() -> Result<TrafficMetrics, prometheus::Error> {
        Ok(TrafficMetrics {
            routed: IntCounterVec::new(
                Opts::new(
                    ROUTED_REQUESTS,
                    "Requests routed to a version, by model, version and route reason.",
                ),
                &["model", "version", "reason"],
            )?,
            rollout_state: IntGaugeVec::new(
                Opts::new(
                    ROLLOUT_STATE,
                    "1 for the state of the model's latest progressive rollout, else 0.",
                ),
                &["model", "state"],
            )?,
            rollout_percent: IntGaugeVec::new(
                Opts::new(
                    ROLLOUT_CANDIDATE_PERCENT,
                    "The rollout candidate's share of traffic, in percent.",
                ),
                &["model"],
            )?,
            shadow_requests: IntCounterVec::new(
                Opts::new(
                    SHADOW_REQUESTS,
                    "Mirrored requests by model, shadow version and outcome.",
                ),
                &["model", "version", "outcome"],
            )?,
            shadow_compared: IntCounterVec::new(
                Opts::new(
                    SHADOW_COMPARED,
                    "Labels or rows' argmax compared between shadow and primary.",
                ),
                &["model", "version", "output"],
            )?,
            shadow_mismatches: IntCounterVec::new(
                Opts::new(
                    SHADOW_MISMATCHES,
                    "Labels or rows' argmax where the shadow differed from the primary.",
                ),
                &["model", "version", "output"],
            )?,
            shadow_max_abs_diff: HistogramVec::new(
                HistogramOpts::new(
                    SHADOW_MAX_ABS_DIFF,
                    "Per mirrored request, the largest absolute difference of a float output.",
                )
                .buckets(DIFF_BUCKETS.to_vec()),
                &["model", "version", "output"],
            )?,
        })
    }

    fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.routed.clone()))?;
        registry.register(Box::new(self.rollout_state.clone()))?;
        registry.register(Box::new(self.rollout_percent.clone()))?;
        registry.register(Box::new(self.shadow_requests.clone()))?;
        registry.register(Box::new(self.shadow_compared.clone()))?;
        registry.register(Box::new(self.shadow_mismatches.clone()))?;
        registry.register(Box::new(self.shadow_max_abs_diff.clone()))?;
        Ok(())
    }
}

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

/// Cumulative counters of one model version for the statistics extension.
#[derive(Debug, Default)]
pub struct VersionStats {
    pub success: Duration64,
    pub fail: Duration64,
    pub queue: Duration64,
    pub compute_infer: Duration64,
    /// Rows inferred (Triton's inference_count) and backend calls (execution_count).
    pub inference_count: AtomicU64,
    pub execution_count: AtomicU64,
    /// Milliseconds since the epoch of the last answered request.
    pub last_inference_ms: AtomicU64,
}

impl VersionStats {
    pub fn touch(&self) {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.last_inference_ms.store(ms, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_uses_the_prefix_and_labels() {
        let m = Metrics::new().unwrap();
        m.requests
            .with_label_values(&["mlp", "1", "http", "success"])
            .inc();
        let text = m.render();
        assert!(
            text.contains(r#"ferroserve_requests_total{model="mlp",outcome="success",protocol="http",version="1"} 1"#),
            "{text}"
        );
    }
}
