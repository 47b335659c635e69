//! OpenTelemetry traces, off by default: the process's `tracing` subscriber (log output, plus
//! the OTLP span layer when export is on), W3C trace context taken from requests, and the spans
//! of the data path (`spans`). Export is `export`'s bounded queue; where it is configured from
//! is `settings`.
//!
//! Spans of our own are `TRACE`-level with target [`TARGET`]: with export off no layer wants
//! them, so they cost one disabled-callsite check; log filters (`RUST_LOG`) never show them.

mod export;
mod settings;
mod spans;

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::config::{LogFormat, TracingConfig};

pub use settings::{OtlpProtocol, Settings};
pub use spans::{
    batch_span, encode_span, record_grpc_code, record_http_status, record_outcome, record_route,
    server_span, Queued,
};

/// The target of every span this module makes.
pub const TARGET: &str = "ferroserve::otel";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (set once, at start-up).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("tracing configuration: {0}")]
    Config(String),
    #[error("tracing: {0}")]
    Start(String),
}

/// Flushes and stops the exporter when dropped (at the end of `serve`).
pub struct Guard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Installs the process's subscriber: logs as `format` under `RUST_LOG` (default `info`), and
/// span export when `file` or the `OTEL_*` variables turn it on.
pub fn init(format: LogFormat, file: &TracingConfig) -> Result<Guard, TelemetryError> {
    let mut layers: Vec<BoxedLayer> = vec![log_layer(format, "info")];
    let settings = Settings::resolve(file, &|k| std::env::var(k).ok())?;
    let mut provider = None;
    if let Some(s) = &settings {
        let p = tracer_provider(s)?;
        let tracer = p.tracer("ferroserve");
        // Decided once per callsite (cached), not per event: the layer raises the global max
        // level to TRACE, and hyper's, h2's and tonic's trace events must stay one atomic load.
        let spans_only = OwnSpans;
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(spans_only)
                .boxed(),
        );
        provider = Some(p);
        ENABLED.store(true, Ordering::Relaxed);
    }
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| TelemetryError::Start(format!("subscriber: {e}")))?;
    if let Some(s) = &settings {
        tracing::info!(
            endpoint = %s.endpoint,
            protocol = ?s.protocol,
            "exporting traces over OTLP"
        );
    }
    Ok(Guard { provider })
}

/// Logs only, as `format` under `RUST_LOG` (default `default`), for the commands that export no
/// spans (`ferroserve predict` logs at `warn`, its progress being the output people read).
pub fn init_logs(format: LogFormat, default: &str) {
    let _ = tracing_subscriber::registry()
        .with(log_layer(format, default))
        .try_init();
}

/// Log lines on stderr, colored on a terminal, filtered by `RUST_LOG` (default `default`).
fn log_layer(format: LogFormat, default: &str) -> BoxedLayer {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.with_filter(filter).boxed(),
        LogFormat::Json => fmt.json().with_filter(filter).boxed(),
    }
}

/// What the OTLP layer sees: our spans (the transports', the router's, the batcher's), no
/// events and nothing of other crates.
struct OwnSpans;

fn own_span(m: &tracing::Metadata<'_>) -> bool {
    m.is_span() && m.target().starts_with("ferroserve")
}

impl<S> tracing_subscriber::layer::Filter<S> for OwnSpans {
    fn enabled(
        &self,
        m: &tracing::Metadata<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        own_span(m)
    }

    fn callsite_enabled(
        &self,
        m: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if own_span(m) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<tracing_subscriber::filter::LevelFilter> {
        Some(tracing_subscriber::filter::LevelFilter::TRACE)
    }
}

fn tracer_provider(s: &Settings) -> Result<SdkTracerProvider, TelemetryError> {
    let processor = export::BoundedProcessor::start(s, crate::metrics::trace_spans_dropped())?;
    let named_by_env = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    let mut resource = Resource::builder();
    if !named_by_env {
        resource = resource.with_service_name(s.service_name.clone());
    }
    let mut builder = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource.build());
    // `OTEL_TRACES_SAMPLER[_ARG]` is read by the SDK; the file's ratio only stands in for it.
    if let (Some(r), None) = (s.sample_ratio, std::env::var_os("OTEL_TRACES_SAMPLER")) {
        builder = builder.with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            r,
        ))));
    }
    Ok(builder.build())
}
