//! Metric names (one prefix) and the Prometheus registry. One `Metrics` per server, so tests can
//! run servers side by side; the statistics extension's counters live in `stats`.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub mod drift;
mod process;
mod series;
mod source;
mod stats;
mod trace;

pub use series::VersionSeries;
pub use source::SourceMetrics;
pub use stats::{BatchTimes, Duration64, PhaseTimes, VersionStats};
pub use trace::{trace_spans_dropped, TRACE_SPANS_DROPPED};

pub const PREFIX: &str = "ferroserve";
pub const REQUESTS_TOTAL: &str = "requests_total";
pub const REQUEST_DURATION: &str = "request_duration_seconds";
pub const QUEUE_DURATION: &str = "queue_duration_seconds";
pub const COMPUTE_DURATION: &str = "compute_duration_seconds";
pub const BATCH_SIZE: &str = "batch_size";
pub const MODEL_READY: &str = "model_ready";
pub const MODEL_STATE: &str = "model_state";
pub const MODEL_LOAD_DURATION: &str = "model_load_duration_seconds";
pub const QUEUE_DEPTH: &str = "queue_depth";
pub const IN_FLIGHT: &str = "inflight_requests";
pub const REJECTED_TOTAL: &str = "rejected_total";
pub const LOAD_FAILURES: &str = "model_load_failures_total";
pub const TLS_RELOADS: &str = "tls_reloads_total";
pub const BUILD_INFO: &str = "build_info";
pub const ROUTED_REQUESTS: &str = "routed_requests_total";
pub const ROLLOUT_STATE: &str = "rollout_state";
pub const ROLLOUT_CANDIDATE_PERCENT: &str = "rollout_candidate_percent";
pub const SHADOW_REQUESTS: &str = "shadow_requests_total";
pub const SHADOW_COMPARED: &str = "shadow_compared_total";
pub const SHADOW_MISMATCHES: &str = "shadow_mismatches_total";
pub const SHADOW_MAX_ABS_DIFF: &str = "shadow_max_abs_diff";

/// `code` label values of `requests_total`: one vocabulary for both protocols (gRPC's names).
/// The error labels are [`crate::error::ErrorCode::label`]'s, named here for the callers that count an outcome
/// without an error value at hand.
pub mod code {
    use crate::error::ErrorCode;

    pub const OK: &str = "ok";
    pub const INVALID_ARGUMENT: &str = ErrorCode::InvalidArgument.label();
    pub const NOT_FOUND: &str = ErrorCode::NotFound.label();
    pub const UNAVAILABLE: &str = ErrorCode::Unavailable.label();
    pub const RESOURCE_EXHAUSTED: &str = ErrorCode::ResourceExhausted.label();
    pub const DEADLINE_EXCEEDED: &str = ErrorCode::DeadlineExceeded.label();
    pub const CANCELLED: &str = ErrorCode::Cancelled.label();
    pub const INTERNAL: &str = ErrorCode::Internal.label();
}

/// `reason` label values of `rejected_total`: why a request was never computed.
pub mod reason {
    /// The version's queue held `max_queue_size` requests.
    pub const QUEUE_FULL: &str = "queue_full";
    /// Its deadline passed before an instance took it.
    pub const DEADLINE: &str = "deadline";
    /// Its client went away before an instance took it.
    pub const CANCELLED: &str = "cancelled";
    /// `max_concurrent_requests` (the version's or the server's) were in flight.
    pub const OVERLOADED: &str = "overloaded";
}

/// The states `model_state` reports (Triton's repository index names).
pub const MODEL_STATES: [&str; 3] = ["LOADING", "READY", "UNAVAILABLE"];

/// Latency buckets from 5 µs to 10 s: small models answer in microseconds, big ones in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
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
    pub model_state: IntGaugeVec,
    pub model_load_duration: GaugeVec,
    pub queue_depth: IntGaugeVec,
    pub in_flight: IntGaugeVec,
    pub rejected: IntCounterVec,
    pub load_failures: IntCounterVec,
    pub tls_reloads: IntCounterVec,
    pub traffic: TrafficMetrics,
    pub source: SourceMetrics,
    pub drift: drift::DriftMetrics,
    live: series::Live,
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
        let mv = ["model", "version"];
        let m = Metrics {
            requests: IntCounterVec::new(
                Opts::new(
                    REQUESTS_TOTAL,
                    "Inference requests by model, version, protocol and status code.",
                ),
                &["model", "version", "protocol", "code"],
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
                &mv,
                LATENCY_BUCKETS,
            )?,
            compute_duration: histogram(
                COMPUTE_DURATION,
                "Time per batch to assemble inputs, run the backend and split outputs, in seconds.",
                &mv,
                LATENCY_BUCKETS,
            )?,
            batch_size: histogram(BATCH_SIZE, "Rows per backend call.", &mv, BATCH_BUCKETS)?,
            model_ready: IntGaugeVec::new(
                Opts::new(MODEL_READY, "1 when the model version serves, else 0."),
                &mv,
            )?,
            model_state: IntGaugeVec::new(
                Opts::new(
                    MODEL_STATE,
                    "1 for the state the model version is in (LOADING, READY, UNAVAILABLE), 0 for the others.",
                ),
                &["model", "version", "state"],
            )?,
            model_load_duration: GaugeVec::new(
                Opts::new(
                    MODEL_LOAD_DURATION,
                    "Seconds the last successful load of the version took (build, warm-up, start).",
                ),
                &mv,
            )?,
            queue_depth: IntGaugeVec::new(
                Opts::new(QUEUE_DEPTH, "Requests waiting for an instance."),
                &mv,
            )?,
            in_flight: IntGaugeVec::new(
                Opts::new(IN_FLIGHT, "Requests admitted and not yet answered."),
                &mv,
            )?,
            rejected: IntCounterVec::new(
                Opts::new(
                    REJECTED_TOTAL,
                    "Requests never computed: refused at admission (queue_full, overloaded) or dropped before compute (deadline, cancelled).",
                ),
                &["model", "version", "reason"],
            )?,
            load_failures: IntCounterVec::new(
                Opts::new(
                    LOAD_FAILURES,
                    "Model loads that failed (the version kept serving what it served).",
                ),
                &["model"],
            )?,
            tls_reloads: IntCounterVec::new(
                Opts::new(TLS_RELOADS, "Certificate reloads: ok, or error (kept the old one)."),
                &["result"],
            )?,
            traffic: TrafficMetrics::new()?,
            source: SourceMetrics::new()?,
            drift: drift::DriftMetrics::new(&registry)?,
            live: Default::default(),
            registry,
        };
        m.traffic.register(&m.registry)?;
        m.source.register(&m.registry)?;
        m.registry.register(Box::new(m.requests.clone()))?;
        m.registry.register(Box::new(m.request_duration.clone()))?;
        m.registry.register(Box::new(m.queue_duration.clone()))?;
        m.registry.register(Box::new(m.compute_duration.clone()))?;
        m.registry.register(Box::new(m.batch_size.clone()))?;
        m.registry.register(Box::new(m.model_ready.clone()))?;
        m.registry.register(Box::new(m.model_state.clone()))?;
        m.registry
            .register(Box::new(m.model_load_duration.clone()))?;
        m.registry.register(Box::new(m.queue_depth.clone()))?;
        m.registry.register(Box::new(m.in_flight.clone()))?;
        m.registry.register(Box::new(m.rejected.clone()))?;
        m.registry.register(Box::new(m.load_failures.clone()))?;
        m.registry.register(Box::new(m.tls_reloads.clone()))?;
        m.registry.register(Box::new(trace_spans_dropped()))?;
        let build = IntGaugeVec::new(
            Opts::new(
                BUILD_INFO,
                "Always 1; the labels say the server version and the backends compiled in.",
            ),
            &["version", "backends"],
        )?;
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), &backends_compiled_in()])
            .set(1);
        m.registry.register(Box::new(build))?;
        m.registry
            .register(Box::new(process::ProcessCollector::new()?))?;
        Ok(m)
    }

    pub fn count_tls_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.tls_reloads.with_label_values(&[result]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Marks `state` (one of [`MODEL_STATES`]) as the version's current state.
    pub fn set_model_state(&self, model: &str, version: &str, state: &str) {
        for s in MODEL_STATES {
            self.model_state
                .with_label_values(&[model, version, s])
                .set(i64::from(s == state));
        }
    }

    /// Forgets the state series of a version that left the repository.
    pub fn clear_model_state(&self, model: &str, version: &str) {
        for s in MODEL_STATES {
            let _ = self.model_state.remove_label_values(&[model, version, s]);
        }
    }
}

/// `tract` or `tract,onnxruntime`.
pub fn backends_compiled_in() -> String {
    let mut b = vec!["tract"];
    if cfg!(feature = "onnxruntime") {
        b.push("onnxruntime");
    }
    b.join(",")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_uses_the_prefix_and_labels() {
        let m = Metrics::new().unwrap();
        m.requests
            .with_label_values(&["mlp", "1", "http", code::OK])
            .inc();
        let text = m.render();
        assert!(
            text.contains(
                r#"ferroserve_requests_total{code="ok",model="mlp",protocol="http",version="1"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("ferroserve_build_info{backends=\""), "{text}");
        #[cfg(target_os = "linux")]
        for name in [
            "ferroserve_process_resident_memory_bytes",
            "ferroserve_process_cpu_seconds_total",
            "ferroserve_process_open_fds",
            "ferroserve_process_start_time_seconds",
        ] {
            assert!(
                text.contains(&format!("\n{name} ")),
                "{name} missing: {text}"
            );
        }
    }

    #[test]
    fn model_state_marks_exactly_one_state() {
        let m = Metrics::new().unwrap();
        m.set_model_state("m", "1", "LOADING");
        m.set_model_state("m", "1", "READY");
        let text = m.render();
        assert!(
            text.contains(r#"ferroserve_model_state{model="m",state="READY",version="1"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ferroserve_model_state{model="m",state="LOADING",version="1"} 0"#),
            "{text}"
        );
        m.clear_model_state("m", "1");
        assert!(!m.render().contains("ferroserve_model_state{"));
    }
}
