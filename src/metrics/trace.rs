//! The trace exporter's own counter. The exporter is one per process (it is the global
//! subscriber's), so the counter is too; every server's registry shows it (0 with tracing off).

use std::sync::OnceLock;

use prometheus::IntCounter;

pub const TRACE_SPANS_DROPPED: &str = "trace_spans_dropped_total";

/// Finished spans never exported: the export queue was full, or the collector refused them or
/// did not answer in time.
pub fn trace_spans_dropped() -> IntCounter {
    static COUNTER: OnceLock<IntCounter> = OnceLock::new();
    COUNTER
        .get_or_init(|| {
            IntCounter::new(
                TRACE_SPANS_DROPPED,
                "Finished trace spans dropped: the export queue was full, or the collector \
                 failed or timed out.",
            )
            // A constant, valid metric name: this cannot fail.
            .expect("trace_spans_dropped_total is a valid metric name")
        })
        .clone()
}
