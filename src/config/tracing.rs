//! The `[tracing]` table: OpenTelemetry trace export, off by default. The standard `OTEL_*`
//! variables win over these keys (`telemetry::Settings::resolve` layers them).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct TracingConfig {
    /// Export traces. Setting `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) turns
    /// export on too; `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turns it off.
    pub enabled: bool,
    /// The collector: `http://host:4317` for gRPC, `http://host:4318` for HTTP/protobuf (the
    /// base URL: `/v1/traces` is appended).
    pub endpoint: Option<String>,
    /// `grpc` (default) or `http/protobuf`.
    pub protocol: Option<String>,
    pub service_name: Option<String>,
    /// Share of new traces sampled (0..=1, parent-based: a caller's sampled flag wins).
    pub sample_ratio: Option<f64>,
    /// Extra request headers (gRPC metadata) sent to the collector, e.g. an API key.
    pub headers: BTreeMap<String, String>,
    /// Finished spans waiting for export beyond which new ones are dropped and counted
    /// (`ferroserve_trace_spans_dropped_total`); a slow collector never slows a request.
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    /// Milliseconds between exports of a partly filled batch.
    pub schedule_delay_ms: u64,
    /// Milliseconds one export may take before it is abandoned (its spans counted dropped).
    pub export_timeout_ms: u64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            enabled: false,
            endpoint: None,
            protocol: None,
            service_name: None,
            sample_ratio: None,
            headers: BTreeMap::new(),
            max_queue_size: 2048,
            max_export_batch_size: 512,
            schedule_delay_ms: 1000,
            export_timeout_ms: 10_000,
        }
    }
}

impl TracingConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if let Some(r) = self.sample_ratio {
            if !(0.0..=1.0).contains(&r) {
                return invalid(format!("tracing.sample_ratio must be 0..=1, got {r}"));
            }
        }
        if !(1..=1_000_000).contains(&self.max_queue_size) {
            return invalid(format!(
                "tracing.max_queue_size must be 1..=1000000, got {}",
                self.max_queue_size
            ));
        }
        if !(1..=self.max_queue_size).contains(&self.max_export_batch_size) {
            return invalid(format!(
                "tracing.max_export_batch_size must be 1..=max_queue_size, got {}",
                self.max_export_batch_size
            ));
        }
        for (key, ms) in [
            ("schedule_delay_ms", self.schedule_delay_ms),
            ("export_timeout_ms", self.export_timeout_ms),
        ] {
            if !(1..=600_000).contains(&ms) {
                return invalid(format!("tracing.{key} must be 1..=600000, got {ms}"));
            }
        }
        if let Some(p) = &self.protocol {
            if !matches!(p.as_str(), "grpc" | "http/protobuf") {
                return invalid(format!(
                    "tracing.protocol must be \"grpc\" or \"http/protobuf\", got {p:?}"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracing_settings_out_of_range_are_refused_by_name() {
        let bad = [
            TracingConfig {
                sample_ratio: Some(1.5),
                ..Default::default()
            },
            TracingConfig {
                max_queue_size: 0,
                ..Default::default()
            },
            TracingConfig {
                protocol: Some("http/json".into()),
                ..Default::default()
            },
        ];
        let words = ["sample_ratio", "max_queue_size", "tracing.protocol"];
        for (c, word) in bad.iter().zip(words) {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(word), "{e}");
        }
        assert!(TracingConfig::default().validate().is_ok());
    }
}
