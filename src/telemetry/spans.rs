//! The spans of one request and of one batch. A request's span tree: the transport's `server`
//! span (joined to the caller's W3C `traceparent`) > the router's `request` span (model,
//! version, routing reason, outcome) > `queue_wait`; `encode_output` under the server span. A
//! batch's `batch_compute` span (on the instance thread) is a child of its first sampled
//! request and linked both ways with the request span of every request computed in it.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::field::Empty;
use tracing::{Level, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{enabled, TARGET};
use crate::metrics::Protocol;

struct W3c<'a> {
    traceparent: Option<&'a str>,
    tracestate: Option<&'a str>,
}

impl Extractor for W3c<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent,
            "tracestate" => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// The transport's span for one inference call, child of the caller's span when it sent a
/// valid `traceparent` (a malformed one is ignored, as the W3C specification says).
pub fn server_span(
    protocol: Protocol,
    name: &str,
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::span!(
        target: TARGET,
        Level::TRACE,
        "server",
        otel.name = name,
        otel.kind = "server",
        rpc.system = protocol.as_str(),
        http.response.status_code = Empty,
        rpc.grpc.status_code = Empty,
    );
    if traceparent.is_some() {
        let cx = TraceContextPropagator::new().extract(&W3c {
            traceparent,
            tracestate,
        });
        let _ = span.set_parent(cx);
    }
    span
}

pub fn record_http_status(span: &Span, status: u16) {
    span.record("http.response.status_code", status);
}

pub fn record_grpc_code(span: &Span, code: i32) {
    span.record("rpc.grpc.status_code", code);
}

/// The routing decision, on the router's `request` span (the current one).
pub fn record_route(model: &str, version: &str, reason: &str, protocol: Protocol) {
    if !enabled() || !current_sampled() {
        return;
    }
    let span = Span::current();
    span.set_attribute("ferroserve.model", model.to_owned());
    span.set_attribute("ferroserve.version", version.to_owned());
    span.set_attribute("ferroserve.routing_reason", reason.to_owned());
    span.set_attribute("ferroserve.protocol", protocol.as_str());
}

/// The outcome (`requests_total`'s code label), on the current span.
pub fn record_outcome(code: &'static str) {
    if enabled() && current_sampled() {
        Span::current().set_attribute("ferroserve.status_code", code);
    }
}

/// Whether the current span is exported: children of a span the sampler dropped are not made
/// at all (at a sample rate of 0.01, most requests cost their two outer spans only).
fn current_sampled() -> bool {
    Span::current().context().span().span_context().is_sampled()
}

/// The span around encoding the answer.
pub fn encode_span() -> Span {
    if !enabled() || !current_sampled() {
        return Span::none();
    }
    tracing::span!(target: TARGET, Level::TRACE, "encode_output")
}

/// What a queued request carries for tracing: its request span and the open `queue_wait` span
/// (ended when an instance takes it). Empty with export off.
#[derive(Default)]
pub struct Queued(Option<(Span, Span)>);

impl Queued {
    /// Called in the request's task, inside its `request` span.
    pub fn start() -> Queued {
        if !enabled() || !current_sampled() {
            return Queued(None);
        }
        let wait = tracing::span!(target: TARGET, Level::TRACE, "queue_wait");
        Queued(Some((Span::current(), wait)))
    }
}

/// Ends every request's `queue_wait` span and opens the batch's compute span, linked with each
/// request span (both ways). The request spans are handed back to be dropped after the answer.
pub fn batch_span<'a>(
    model: &str,
    version: &str,
    (size, rows): (usize, usize),
    requests: impl Iterator<Item = &'a mut Queued>,
) -> (Span, Vec<Span>) {
    if !enabled() {
        return (Span::none(), Vec::new());
    }
    let spans: Vec<Span> = requests
        .filter_map(|q| q.0.take())
        .map(|(request, wait)| {
            drop(wait);
            request
        })
        .collect();
    // No request in it is sampled: no batch span either. Otherwise the first sampled request
    // is its parent, so a parent-based sampler keeps it whenever it keeps a request of it.
    let Some(first) = spans.first() else {
        return (Span::none(), Vec::new());
    };
    let batch = tracing::span!(
        target: TARGET,
        parent: first,
        Level::TRACE,
        "batch_compute",
        ferroserve.model = model,
        ferroserve.version = version,
        ferroserve.batch.size = size,
        ferroserve.batch.rows = rows,
    );
    for request in &spans {
        batch.add_link(request.context().span().span_context().clone());
    }
    let own = batch.context().span().span_context().clone();
    for request in &spans {
        request.add_link(own.clone());
    }
    (batch, spans)
}
