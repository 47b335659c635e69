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
            registry,
        };
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
