//! Getting finished spans to the collector without ever holding up a request: a bounded queue
//! (full: the span is dropped and counted) drained by one exporter thread that batches, exports
//! over OTLP/gRPC (tonic) or OTLP/HTTP protobuf (a small hyper client) and counts what failed.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry::Context;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{
    Protocol, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter as _, SpanProcessor};
use opentelemetry_sdk::Resource;
use prometheus::IntCounter;

use super::{OtlpProtocol, Settings, TelemetryError};

// Nearly every message is a span: boxing it would allocate once per span.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Span(SpanData),
    Resource(Resource),
    /// Export what is queued, then answer.
    Flush(SyncSender<()>),
}

/// The span processor: `on_end` never waits.
#[derive(Debug)]
pub struct BoundedProcessor {
    tx: SyncSender<Msg>,
    dropped: IntCounter,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl BoundedProcessor {
    /// Builds the exporter (inside the exporter thread's own runtime, so tonic's connection task
    /// lives there) and starts the thread.
    pub fn start(s: &Settings, dropped: IntCounter) -> Result<BoundedProcessor, TelemetryError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TelemetryError::Start(format!("exporter runtime: {e}")))?;
        let exporter = {
            let _in = rt.enter();
            build_exporter(s)?
        };
        let (tx, rx) = mpsc::sync_channel(s.max_queue_size);
        let job = Job {
            rx,
            exporter,
            rt,
            batch_size: s.max_export_batch_size,
            delay: s.schedule_delay,
            timeout: s.export_timeout,
            dropped: dropped.clone(),
        };
        let worker = std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || job.run())
            .map_err(|e| TelemetryError::Start(format!("exporter thread: {e}")))?;
        Ok(BoundedProcessor {
            tx,
            dropped,
            worker: Mutex::new(Some(worker)),
        })
    }

    fn flush(&self, timeout: Duration) -> OTelSdkResult {
        let (done_tx, done) = mpsc::sync_channel(1);
        let until = Instant::now() + timeout;
        let mut msg = Msg::Flush(done_tx);
        // The queue may be full: retry until there is room or time is up.
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < until => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return Err(OTelSdkError::Timeout(timeout)),
            }
        }
        done.recv_timeout(until.saturating_duration_since(Instant::now()))
            .map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

impl SpanProcessor for BoundedProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.tx.try_send(Msg::Span(span)).is_err() {
            self.dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.flush(Duration::from_secs(5))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let flushed = self.flush(timeout);
        // The thread ends when the provider (and with it `tx`) is dropped; not waited for here.
        let _ = self
            .worker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        flushed
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Sent before any span exists, so the queue has room.
        let _ = self.tx.try_send(Msg::Resource(resource.clone()));
    }
}

fn build_exporter(s: &Settings) -> Result<SpanExporter, TelemetryError> {
    let built = match s.protocol {
        OtlpProtocol::Grpc => {
            let mut metadata = tonic::metadata::MetadataMap::new();
            for (k, v) in &s.headers {
                let key = tonic::metadata::MetadataKey::from_bytes(k.as_bytes());
                let value = tonic::metadata::MetadataValue::try_from(v.as_str());
                match (key, value) {
                    (Ok(k), Ok(v)) => {
                        metadata.insert(k, v);
                    }
                    _ => return Err(TelemetryError::Config(format!("bad tracing header {k:?}"))),
                }
            }
            SpanExporter::builder()
                .with_tonic()
                .with_endpoint(s.endpoint.clone())
                .with_timeout(s.export_timeout)
                .with_metadata(metadata)
                .build()
        }
        OtlpProtocol::HttpProtobuf => {
            if !s.endpoint.starts_with("http://") {
                return Err(TelemetryError::Config(format!(
                    "the OTLP/HTTP endpoint must be http:// (a local collector), got {:?}",
                    s.endpoint
                )));
            }
            SpanExporter::builder()
                .with_http()
                .with_http_client(HyperClient)
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(s.endpoint.clone())
                .with_timeout(s.export_timeout)
                .with_headers(s.headers.iter().cloned().collect::<HashMap<_, _>>())
                .build()
        }
    };
    built.map_err(|e| TelemetryError::Start(format!("OTLP exporter: {e}")))
}

struct Job {
    rx: Receiver<Msg>,
    exporter: SpanExporter,
    rt: tokio::runtime::Runtime,
    batch_size: usize,
    delay: Duration,
    timeout: Duration,
    dropped: IntCounter,
}

impl Job {
    fn run(mut self) {
        let mut batch = Vec::with_capacity(self.batch_size);
        let mut next = Instant::now() + self.delay;
        loop {
            let wait = next.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(wait) {
                Ok(Msg::Span(span)) => {
                    batch.push(span);
                    if batch.len() >= self.batch_size {
                        self.export(&mut batch);
                        next = Instant::now() + self.delay;
                    }
                }
                Ok(Msg::Resource(r)) => self.exporter.set_resource(&r),
                Ok(Msg::Flush(done)) => {
                    self.export(&mut batch);
                    let _ = done.send(());
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.export(&mut batch);
                    next = Instant::now() + self.delay;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.export(&mut batch);
                    return;
                }
            }
        }
    }

    fn export(&self, batch: &mut Vec<SpanData>) {
        if batch.is_empty() {
            return;
        }
        let spans = std::mem::replace(batch, Vec::with_capacity(self.batch_size));
        let n = spans.len() as u64;
        let exported = self.rt.block_on(async {
            tokio::time::timeout(self.timeout, self.exporter.export(spans)).await
        });
        if !matches!(exported, Ok(Ok(()))) {
            self.dropped.inc_by(n);
        }
    }
}

/// OTLP/HTTP over plain HTTP/1.1, one connection per export (exports are batched and rare):
/// enough for a collector beside the server, without a second HTTP client stack in the binary.
#[derive(Debug)]
struct HyperClient;

/// Collector answers are small; a bigger one is refused rather than read.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

#[async_trait::async_trait]
impl HttpClient for HyperClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let uri = request.uri().clone();
        let host = uri
            .host()
            .ok_or("the OTLP endpoint has no host")?
            .to_owned();
        let port = uri.port_u16().unwrap_or(80);
        let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        let (mut parts, body) = request.into_parts();
        parts.uri = uri.path_and_query().map_or("/", |p| p.as_str()).parse()?;
        let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
        parts.headers.insert(http::header::HOST, authority.parse()?);
        let exchange = async {
            let resp = send
                .send_request(Request::from_parts(parts, Full::new(body)))
                .await?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await?
                .to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        };
        tokio::pin!(exchange);
        tokio::pin!(conn);
        // Drive the connection until the answer is read; it closes when dropped.
        tokio::select! {
            answer = &mut exchange => answer,
            done = &mut conn => {
                done?;
                exchange.await
            }
        }
    }
}
