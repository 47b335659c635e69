//! Where trace export is configured from: the standard `OTEL_*` variables over the `[tracing]`
//! table. Pure (the environment is a function argument) so each rule is unit-tested.

use std::time::Duration;

use crate::config::TracingConfig;

use super::TelemetryError;

/// How spans reach the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

/// Trace export as resolved at start-up; `None` from [`Settings::resolve`] means off.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub protocol: OtlpProtocol,
    /// Full URL: the gRPC authority, or the HTTP URL including `/v1/traces`.
    pub endpoint: String,
    /// From the file; `OTEL_EXPORTER_OTLP_HEADERS` is added by the exporter itself.
    pub headers: Vec<(String, String)>,
    /// The file's service name, used when `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` set
    /// none (the SDK reads those itself).
    pub service_name: String,
    /// The file's sample ratio, used when `OTEL_TRACES_SAMPLER` is unset (the SDK reads it).
    pub sample_ratio: Option<f64>,
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    pub schedule_delay: Duration,
    pub export_timeout: Duration,
}

impl Settings {
    pub fn resolve(
        file: &TracingConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Settings>, TelemetryError> {
        let var = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        let traces_endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let endpoint = var("OTEL_EXPORTER_OTLP_ENDPOINT");
        let on = file.enabled || traces_endpoint.is_some() || endpoint.is_some();
        if disabled || !on {
            return Ok(None);
        }
        let protocol = match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .or_else(|| file.protocol.clone())
            .as_deref()
        {
            // The specification's default.
            None | Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
            Some("grpc") => OtlpProtocol::Grpc,
            Some(other) => {
                return Err(TelemetryError::Config(format!(
                    "OTLP protocol must be \"grpc\" or \"http/protobuf\", got {other:?}"
                )))
            }
        };
        let base = |default: &str| {
            endpoint
                .clone()
                .or_else(|| file.endpoint.clone())
                .unwrap_or_else(|| default.to_owned())
        };
        let endpoint = match (protocol, traces_endpoint) {
            (_, Some(url)) => url,
            (OtlpProtocol::Grpc, None) => base("http://localhost:4317"),
            (OtlpProtocol::HttpProtobuf, None) => {
                format!(
                    "{}/v1/traces",
                    base("http://localhost:4318").trim_end_matches('/')
                )
            }
        };
        let number = |key: &str, file_value: u64| -> Result<u64, TelemetryError> {
            match var(key) {
                None => Ok(file_value),
                Some(v) => v.trim().parse().map_err(|_| {
                    TelemetryError::Config(format!("{key} must be a whole number, got {v:?}"))
                }),
            }
        };
        let max_queue_size = number("OTEL_BSP_MAX_QUEUE_SIZE", file.max_queue_size as u64)?;
        let max_export_batch_size = number(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            file.max_export_batch_size as u64,
        )?;
        let delay = number("OTEL_BSP_SCHEDULE_DELAY", file.schedule_delay_ms)?;
        let timeout = number("OTEL_BSP_EXPORT_TIMEOUT", file.export_timeout_ms)?;
        // Saturated into the ranges the file's validation allows.
        let max_queue_size = max_queue_size.clamp(1, 1_000_000) as usize;
        Ok(Some(Settings {
            protocol,
            endpoint,
            headers: file
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            service_name: file
                .service_name
                .clone()
                .unwrap_or_else(|| "ferroserve".into()),
            sample_ratio: file.sample_ratio,
            max_queue_size,
            max_export_batch_size: (max_export_batch_size as usize).clamp(1, max_queue_size),
            schedule_delay: Duration::from_millis(delay.clamp(1, 600_000)),
            export_timeout: Duration::from_millis(timeout.clamp(1, 600_000)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(file: &TracingConfig, vars: &[(&str, &str)]) -> Option<Settings> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        Settings::resolve(file, &env).unwrap()
    }

    #[test]
    fn tracing_is_off_unless_enabled_or_an_endpoint_is_set() {
        let file = TracingConfig::default();
        assert_eq!(resolve(&file, &[]), None);
        let on = resolve(&file, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]).unwrap();
        assert_eq!(on.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(on.endpoint, "http://c:4318/v1/traces");
        let off = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ];
        assert_eq!(resolve(&file, &off), None);
    }

    #[test]
    fn otel_variables_win_over_the_file() {
        let file = TracingConfig {
            enabled: true,
            endpoint: Some("http://file:4317".into()),
            protocol: Some("grpc".into()),
            max_queue_size: 10,
            ..Default::default()
        };
        let s = resolve(&file, &[]).unwrap();
        assert_eq!(
            (s.protocol, s.endpoint.as_str(), s.max_queue_size),
            (OtlpProtocol::Grpc, "http://file:4317", 10)
        );
        let s = resolve(
            &file,
            &[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://env:9/x"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "7"),
            ],
        )
        .unwrap();
        assert_eq!(
            (s.protocol, s.endpoint.as_str(), s.max_queue_size),
            (OtlpProtocol::HttpProtobuf, "http://env:9/x", 7)
        );
    }

    #[test]
    fn a_bad_otel_variable_is_refused_by_name() {
        let file = TracingConfig {
            enabled: true,
            ..Default::default()
        };
        let env = |k: &str| (k == "OTEL_BSP_MAX_QUEUE_SIZE").then(|| "lots".to_string());
        let e = Settings::resolve(&file, &env).unwrap_err().to_string();
        assert!(e.contains("OTEL_BSP_MAX_QUEUE_SIZE"), "{e}");
        let env = |k: &str| (k == "OTEL_EXPORTER_OTLP_PROTOCOL").then(|| "http/json".to_string());
        let e = Settings::resolve(&file, &env).unwrap_err().to_string();
        assert!(e.contains("http/json"), "{e}");
    }
}
