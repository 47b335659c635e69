//! `ModelInfer` messages read under the server's `max_inflight_bytes` budget before tonic
//! decodes them: the length in the gRPC frame header is taken from the budget as soon as those
//! five bytes arrive (429-like RESOURCE_EXHAUSTED at once when it does not fit), the whole
//! message is walked ([`super::prescan`]) so a message of empty repeated entries is refused
//! before prost builds a struct per entry, and what decoding will build is taken too. The
//! bytes stay taken until the call is answered. A compressed message (`grpc-encoding` gzip or
//! deflate) is decoded here first, within `max_request_bytes`, so the walk and the budget see
//! its decoded bytes and a compression bomb is refused at the limit.
//!
//! Every call passes [`answer_compression`] first: grpc-core clients (grpcio, tritonclient,
//! perf_analyzer) advertise `grpc-accept-encoding: identity,deflate,gzip` on every call, which
//! tonic would take as a request to compress every answer; as Triton does, we compress an
//! answer only when the client asks: its request was compressed, or its accept list leaves out
//! identity (tonic's `accept_compressed`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tonic::body::Body;
use tonic::Status;

use super::prescan::{scan, Refusal};
use crate::api::compression::{inflate, Encoding, InflateError};
use crate::api::error::ApiError;
use crate::metrics::Protocol;
use crate::policy::admission::BytePermit;
use crate::routing::Router;

const MODEL_INFER: &str = "/inference.GRPCInferenceService/ModelInfer";
/// Compressed flag and big-endian length before each gRPC message.
const FRAME_HEADER: usize = 5;

/// The tower layer for the gRPC server.
#[derive(Clone)]
pub struct InflightBytesLayer {
    router: Arc<Router>,
    max_request_bytes: usize,
}

impl InflightBytesLayer {
    pub fn new(router: Arc<Router>, max_request_bytes: usize) -> Self {
        InflightBytesLayer {
            router,
            max_request_bytes,
        }
    }
}

impl<S> tower::Layer<S> for InflightBytesLayer {
    type Service = InflightBytes<S>;
    fn layer(&self, inner: S) -> InflightBytes<S> {
        InflightBytes {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct InflightBytes<S> {
    inner: S,
    layer: InflightBytesLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<Request<Body>> for InflightBytes<S>
where
    S: tower::Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    B: Default + Send + 'static,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<B>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        answer_compression(req.headers_mut());
        if req.uri().path() != MODEL_INFER {
            return Box::pin(self.inner.call(req));
        }
        // The clone that was polled ready serves this call (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            match read(&layer, req).await {
                Ok((req, permit)) => {
                    let resp = inner.call(req).await;
                    drop(permit);
                    resp
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

const ENCODING: &str = "grpc-encoding";
const ACCEPT_ENCODING: &str = "grpc-accept-encoding";

/// Drops an accept list that only advertises (see the module's opener), so tonic answers plain;
/// a compressed request is answered in its own encoding when the client accepts that.
pub fn answer_compression(headers: &mut http::HeaderMap) {
    let lists = |headers: &http::HeaderMap, name: &[u8]| {
        headers.get(ACCEPT_ENCODING).is_some_and(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|e| e.trim_ascii().eq_ignore_ascii_case(name))
        })
    };
    if !lists(headers, b"identity") {
        return;
    }
    match headers.get(ENCODING).cloned() {
        Some(enc) if !enc.as_bytes().eq_ignore_ascii_case(b"identity") => {
            if lists(headers, enc.as_bytes()) {
                headers.insert(ACCEPT_ENCODING, enc);
            }
        }
        _ => {
            headers.remove(ACCEPT_ENCODING);
        }
    }
}

/// A compressed first message decoded (within `max`) and framed again as uncompressed; tonic
/// then reads it as sent plain. Other encodings are left to tonic to refuse.
fn decompress(buf: BytesMut, encoding: Encoding, max: usize) -> Result<BytesMut, Status> {
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    let Some(msg) = buf.get(FRAME_HEADER..FRAME_HEADER.saturating_add(len)) else {
        return Ok(buf);
    };
    let plain = inflate(encoding, msg, max).map_err(|e| match e {
        InflateError::TooLarge => oversize(max),
        InflateError::Malformed(why) => Status::from(ApiError::BadRequest(format!(
            "message is not valid {}: {why}",
            encoding.name()
        ))),
    })?;
    let rest = &buf[FRAME_HEADER + len..];
    let mut out = BytesMut::with_capacity(FRAME_HEADER + plain.len() + rest.len());
    out.extend_from_slice(&[0]);
    // Within max_request_bytes, which a u32 length frames (prescan's messages are as large).
    out.extend_from_slice(&u32::try_from(plain.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&plain);
    out.extend_from_slice(rest);
    Ok(out)
}

fn oversize(max: usize) -> Status {
    ApiError::PayloadTooLarge(format!(
        "message length too large: it exceeds the server's max_request_bytes ({max} bytes)"
    ))
    .into()
}

async fn read(
    layer: &InflightBytesLayer,
    req: Request<Body>,
) -> Result<(Request<Body>, BytePermit), Status> {
    let (router, max) = (&layer.router, layer.max_request_bytes);
    let (parts, mut body) = req.into_parts();
    let mut buf = BytesMut::new();
    let mut permit: Option<BytePermit> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if buf.len().saturating_add(data.len()) > max.saturating_add(FRAME_HEADER) {
            return Err(oversize(max));
        }
        buf.extend_from_slice(&data);
        if permit.is_none() && buf.len() >= FRAME_HEADER {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if len > max {
                return Err(oversize(max));
            }
            let total = (FRAME_HEADER + len).max(buf.len());
            permit = Some(router.take_inflight_bytes(total).map_err(ApiError::from)?);
            buf.reserve(total - buf.len());
        }
        let grown = permit.as_mut().is_none_or(|p| p.try_grow_to(buf.len()));
        if !grown {
            return Err(ApiError::from(router.inflight_bytes_refusal(buf.len())).into());
        }
    }
    let mut permit = match permit {
        Some(p) => p,
        // Under five bytes: nothing to budget; tonic reports what is missing.
        None => router
            .take_inflight_bytes(buf.len())
            .map_err(ApiError::from)?,
    };
    let encoding = Encoding::of_request(parts.headers.get(ENCODING).map(|v| v.as_bytes()));
    if let (true, Ok(Some(encoding))) = (buf.len() > FRAME_HEADER && buf[0] == 1, encoding) {
        let held = buf.len();
        buf = decompress(buf, encoding, max)?;
        let total = held.saturating_add(buf.len());
        if !permit.try_grow_to(total) {
            return Err(ApiError::from(router.inflight_bytes_refusal(total)).into());
        }
    }
    if buf.len() > FRAME_HEADER && buf[0] == 0 {
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if let Some(msg) = buf.get(FRAME_HEADER..FRAME_HEADER + len) {
            match scan(msg) {
                Ok(s) => {
                    if s.overhead > max {
                        router.count_undecodable(&s.model, Protocol::Grpc);
                        return Err(ApiError::PayloadTooLarge(format!(
                            "decoded, this request's entries would take {} bytes beyond its \
                             {len}-byte message, over the server's max_request_bytes ({max} \
                             bytes): send tensors in raw_input_contents",
                            s.overhead
                        ))
                        .into());
                    }
                    let total = buf.len().saturating_add(s.overhead);
                    if !permit.try_grow_to(total) {
                        return Err(ApiError::from(router.inflight_bytes_refusal(total)).into());
                    }
                }
                Err(Refusal::TooMany(reason)) => {
                    let model = scan_model(msg);
                    router.count_undecodable(&model, Protocol::Grpc);
                    return Err(ApiError::BadRequest(reason).into());
                }
                Err(Refusal::Malformed) => {}
            }
        }
    }
    let body = Body::new(Full::new(buf.freeze()));
    Ok((Request::from_parts(parts, body), permit))
}

/// The model name of a message the walk refused, for the metrics (empty when not first).
fn scan_model(msg: &[u8]) -> String {
    match msg {
        [0x0a, len, rest @ ..] if usize::from(*len) <= rest.len() && *len < 0x80 => {
            String::from_utf8_lossy(&rest[..usize::from(*len)]).into_owned()
        }
        _ => String::new(),
    }
}
