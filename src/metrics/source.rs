//! Metrics of the model sources (`registry::source`): errors by kind, the time of the last sync.

use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};

pub const SOURCE_ERRORS: &str = "model_source_errors_total";
pub const SOURCE_LAST_SYNC: &str = "model_source_last_sync_timestamp_seconds";
pub const SOURCE_LIST_DURATION: &str = "model_source_list_duration_seconds";

pub struct SourceMetrics {
    /// source: `s3`; kind: unreachable, forbidden, throttled, not_found, changed, cache, other.
    pub errors: IntCounterVec,
    /// Unix time of the last listing that succeeded.
    pub last_sync: GaugeVec,
    /// How long the last listing took (what an unchanged repository costs a poll).
    pub list_duration: GaugeVec,
}

impl SourceMetrics {
    pub fn new() -> Result<SourceMetrics, prometheus::Error> {
        Ok(SourceMetrics {
            errors: IntCounterVec::new(
                Opts::new(
                    SOURCE_ERRORS,
                    "Model source failures (listing or download); the cached versions kept serving.",
                ),
                &["source", "kind"],
            )?,
            last_sync: GaugeVec::new(
                Opts::new(
                    SOURCE_LAST_SYNC,
                    "Unix time of the model source's last successful listing.",
                ),
                &["source"],
            )?,
            list_duration: GaugeVec::new(
                Opts::new(
                    SOURCE_LIST_DURATION,
                    "Seconds the model source's last listing took.",
                ),
                &["source"],
            )?,
        })
    }

    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.errors.clone()))?;
        registry.register(Box::new(self.last_sync.clone()))?;
        registry.register(Box::new(self.list_duration.clone()))
    }
}
