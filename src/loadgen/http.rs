//! HTTP/1.1 client: hyper's connection-level API over plain TCP with `TCP_NODELAY` and
//! keep-alive. No pool, no URL parsing, no JSON per request: each call clones a pre-built
//! method/URI/header set and the pre-encoded body (`Bytes`), sends it, and drains the answer.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::config::{Plan, Protocol};
use super::inputs::{self, ModelMeta};
use super::stats::ErrorCode;

const HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";

type Sender = SendRequest<Full<Bytes>>;

/// Everything a request needs, built once.
pub struct HttpTarget {
    addr: String,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl HttpTarget {
    fn request(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// Opens one keep-alive HTTP/1.1 connection; its driver runs as a task of its own.
pub async fn connect<B>(addr: &str) -> anyhow::Result<SendRequest<B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the server closes; errors surface on the sender.
        let _ = conn.await;
    });
    Ok(sender)
}

fn host_header(addr: &str) -> anyhow::Result<HeaderValue> {
    HeaderValue::from_str(addr).with_context(|| format!("{addr:?} is not a valid Host header"))
}

/// `GET` on a fresh connection; returns the status and the whole body (set-up only).
async fn get(addr: &str, path: &str) -> anyhow::Result<(StatusCode, Bytes)> {
    let mut sender = connect::<Empty<Bytes>>(addr).await?;
    let mut req = Request::new(Empty::new());
    *req.uri_mut() = path.parse()?;
    req.headers_mut().insert(HOST, host_header(addr)?);
    let resp = sender
        .send_request(req)
        .await
        .with_context(|| format!("GET {path}"))?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

fn model_path(plan: &Plan) -> String {
    match &plan.version {
        Some(v) => format!("/v2/models/{}/versions/{v}", plan.model),
        None => format!("/v2/models/{}", plan.model),
    }
}

/// Reads the metadata, builds and pre-encodes the request, and sends it once to check that the
/// server answers it properly, so that a misconfigured run fails before measuring anything.
pub async fn setup(plan: &Plan) -> anyhow::Result<Arc<HttpTarget>> {
    let path = model_path(plan);
    let (status, body) = get(&plan.addr, &path).await?;
    if status != StatusCode::OK {
        bail!(
            "GET {path} on {}: HTTP {status}: {}",
            plan.addr,
            String::from_utf8_lossy(&body)
        );
    }
    let meta = ModelMeta::from_json(&serde_json::from_slice(&body).context("model metadata")?)?;
    let synth = inputs::synthesize(&meta, plan.batch_size, plan.seq_len)?;
    let mut headers = HeaderMap::new();
    headers.insert(HOST, host_header(&plan.addr)?);
    let body = match plan.protocol {
        Protocol::HttpBinary => {
            let (body, header_len) = inputs::binary_body(&synth, &meta.outputs)?;
            let ct = HeaderValue::from_static("application/octet-stream");
            headers.insert(CONTENT_TYPE, ct);
            headers.insert(HEADER_CONTENT_LENGTH, HeaderValue::from(header_len));
            body
        }
        _ => {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            inputs::json_body(&synth)?
        }
    };
    let target = Arc::new(HttpTarget {
        addr: plan.addr.clone(),
        uri: format!("{path}/infer").parse()?,
        headers,
        body,
    });

    let mut sender = connect(&plan.addr).await?;
    let resp = sender.send_request(target.request()).await?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    let what = format!(
        "first request (POST {path}/infer, {})",
        plan.protocol.as_str()
    );
    if parts.status != StatusCode::OK {
        bail!(
            "{what}: HTTP {}: {}",
            parts.status,
            String::from_utf8_lossy(&body)
        );
    }
    validate(
        &parts.headers,
        &body,
        &meta,
        plan.protocol == Protocol::HttpBinary,
    )
    .with_context(|| format!("{what}: unexpected response"))?;
    Ok(target)
}

/// Checks that every output came back, in the requested encoding and with its bytes present.
fn validate(
    headers: &HeaderMap,
    body: &Bytes,
    meta: &ModelMeta,
    binary: bool,
) -> anyhow::Result<()> {
    let header_len = headers
        .get(HEADER_CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let json_part = match (binary, header_len) {
        (true, None) => bail!(
            "binary outputs were requested but the answer has no {HEADER_CONTENT_LENGTH} header"
        ),
        (true, Some(n)) if n > body.len() => bail!(
            "{HEADER_CONTENT_LENGTH} {n} exceeds the body ({} bytes)",
            body.len()
        ),
        (true, Some(n)) => &body[..n],
        (false, _) => &body[..],
    };
    let v: Value = serde_json::from_slice(json_part).context("the response JSON does not parse")?;
    let outputs = v["outputs"]
        .as_array()
        .filter(|o| !o.is_empty())
        .with_context(|| format!("no outputs in {v}"))?;
    if outputs.len() != meta.outputs.len() {
        bail!(
            "{} outputs, the model declares {}",
            outputs.len(),
            meta.outputs.len()
        );
    }
    let mut binary_bytes = 0;
    for o in outputs {
        match o["parameters"]["binary_data_size"].as_u64() {
            Some(n) if binary => binary_bytes += n as usize,
            _ if binary => bail!("output {} is not binary", o["name"]),
            _ if !o["data"].is_array() => bail!("output {} has no data", o["name"]),
            _ => {}
        }
    }
    if binary && Some(body.len() - binary_bytes) != header_len {
        bail!("binary_data_size of the outputs does not add up to the body length");
    }
    Ok(())
}

/// One worker's handle: a connection slot, shared only when `--connections` < workers.
pub struct HttpConn {
    target: Arc<HttpTarget>,
    slot: Arc<Mutex<Option<Sender>>>,
}

impl HttpConn {
    pub fn new(target: Arc<HttpTarget>, slot: Arc<Mutex<Option<Sender>>>) -> HttpConn {
        HttpConn { target, slot }
    }

    /// Opens the slots up front so that connection failures stop the run before it starts.
    pub async fn open_slots(plan: &Plan) -> anyhow::Result<Vec<Arc<Mutex<Option<Sender>>>>> {
        let mut slots = Vec::with_capacity(plan.connections);
        for i in 0..plan.connections {
            let s = connect(&plan.addr)
                .await
                .with_context(|| format!("connection {} of {}", i + 1, plan.connections))?;
            slots.push(Arc::new(Mutex::new(Some(s))));
        }
        Ok(slots)
    }

    pub async fn call(&mut self) -> Result<(), ErrorCode> {
        let mut slot = self.slot.lock().await;
        // A connection the server closed (after an error status, say) is replaced silently:
        // that is not a failed request.
        let usable = match slot.as_mut() {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            *slot = None;
            match connect(&self.target.addr).await {
                Ok(s) => *slot = Some(s),
                Err(_) => {
                    // Do not spin against a server that is down.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    return Err(ErrorCode::Connect);
                }
            }
        }
        let Some(sender) = slot.as_mut() else {
            return Err(ErrorCode::Connect);
        };
        let result = match sender.send_request(self.target.request()).await {
            Ok(resp) => {
                let status = resp.status();
                let mut body = resp.into_body();
                // Drain without concatenating: the bytes are not looked at.
                let mut drained = Ok(());
                while let Some(frame) = body.frame().await {
                    if frame.is_err() {
                        drained = Err(ErrorCode::Io);
                        break;
                    }
                }
                drained.and(if status == StatusCode::OK {
                    Ok(())
                } else {
                    Err(ErrorCode::Http(status.as_u16()))
                })
            }
            Err(_) => Err(ErrorCode::Io),
        };
        if result == Err(ErrorCode::Io) {
            *slot = None;
        }
        result
    }
}
