//! gRPC client: the generated `GRPCInferenceService` client over tonic `Channel`s (HTTP/2,
//! `TCP_NODELAY`), each wrapped in [`OneFrame`]. The request is built once; each call clones it
//! (its tensor bytes are `Bytes`, so the clone copies a few short strings and no tensor data).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Full};
use tonic::transport::{Channel, Endpoint};

use super::config::Plan;
use super::inputs::{self, ModelMeta};
use super::stats::ErrorCode;
use crate::proto::inference as pb;
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;

type Client = GrpcInferenceServiceClient<OneFrame>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A `Channel` that sends each request body as one DATA frame carrying END_STREAM.
///
/// tonic streams even a unary request body: HEADERS, then DATA, then an empty DATA with
/// END_STREAM, each flushed in a write of its own, which the server then reads and wakes up for
/// one by one. Collecting the (already encoded, in-memory) body first saves one write per
/// request on both sides, like the gRPC C++ and Go clients; HEADERS still go out on their own.
#[derive(Clone)]
pub struct OneFrame(Channel);

impl tower::Service<http::Request<tonic::body::Body>> for OneFrame {
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), BoxError>> {
        tower::Service::poll_ready(&mut self.0, cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        // The clone that was polled ready sends the request (tower's contract).
        let fresh = self.0.clone();
        let mut ready = std::mem::replace(&mut self.0, fresh);
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await?.to_bytes();
            let req = http::Request::from_parts(parts, tonic::body::Body::new(Full::new(bytes)));
            Ok(tower::Service::call(&mut ready, req).await?)
        })
    }
}

/// Opens one HTTP/2 connection.
pub async fn channel(addr: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(format!("http://{addr}"))
        .with_context(|| format!("{addr:?} is not a valid address"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr} (gRPC)"))
}

fn client(channel: Channel) -> Client {
    // Answers to large batches may exceed tonic's 4 MiB default.
    GrpcInferenceServiceClient::new(OneFrame(channel)).max_decoding_message_size(usize::MAX)
}

fn code(s: &tonic::Status) -> String {
    ErrorCode::Grpc(s.code()).name()
}

/// Reads the metadata, builds the request and sends it once to check the answer.
pub async fn setup(plan: &Plan) -> anyhow::Result<Arc<pb::ModelInferRequest>> {
    let mut c = client(channel(&plan.addr).await?);
    let version = plan.version.clone().unwrap_or_default();
    let meta = c
        .model_metadata(pb::ModelMetadataRequest {
            name: plan.model.clone(),
            version,
        })
        .await
        .map_err(|s| {
            anyhow::anyhow!(
                "ModelMetadata({}): {}: {}",
                plan.model,
                code(&s),
                s.message()
            )
        })?
        .into_inner();
    let meta = ModelMeta::from_grpc(&meta);
    let synth = inputs::synthesize(&meta, plan.batch_size, plan.seq_len)?;
    let request = inputs::grpc_request(&plan.model, plan.version.as_deref(), &synth);
    let resp = c
        .model_infer(request.clone())
        .await
        .map_err(|s| {
            anyhow::anyhow!(
                "first request (ModelInfer, grpc): {}: {}",
                code(&s),
                s.message()
            )
        })?
        .into_inner();
    validate(&resp, &meta).context("first request (ModelInfer, grpc): unexpected response")?;
    Ok(Arc::new(request))
}

/// Every declared output present, each with raw bytes or typed contents.
fn validate(resp: &pb::ModelInferResponse, meta: &ModelMeta) -> anyhow::Result<()> {
    if resp.outputs.is_empty() {
        bail!("no outputs");
    }
    if resp.outputs.len() != meta.outputs.len() {
        bail!(
            "{} outputs, the model declares {}",
            resp.outputs.len(),
            meta.outputs.len()
        );
    }
    let raw = !resp.raw_output_contents.is_empty();
    if raw && resp.raw_output_contents.len() != resp.outputs.len() {
        bail!(
            "{} raw_output_contents for {} outputs",
            resp.raw_output_contents.len(),
            resp.outputs.len()
        );
    }
    if !raw && resp.outputs.iter().any(|o| o.contents.is_none()) {
        bail!("an output has neither raw_output_contents nor contents");
    }
    Ok(())
}

/// One worker's client; clones of a `Channel` share its HTTP/2 connection.
pub struct GrpcConn {
    client: Client,
    request: Arc<pb::ModelInferRequest>,
}

impl GrpcConn {
    pub fn new(channel: Channel, request: Arc<pb::ModelInferRequest>) -> GrpcConn {
        GrpcConn {
            client: client(channel),
            request,
        }
    }

    pub async fn open_channels(plan: &Plan) -> anyhow::Result<Vec<Channel>> {
        let mut channels = Vec::with_capacity(plan.connections);
        for i in 0..plan.connections {
            let c = channel(&plan.addr)
                .await
                .with_context(|| format!("channel {} of {}", i + 1, plan.connections))?;
            channels.push(c);
        }
        Ok(channels)
    }

    pub async fn call(&mut self) -> Result<(), ErrorCode> {
        let req = tonic::Request::new(pb::ModelInferRequest::clone(&self.request));
        match self.client.model_infer(req).await {
            Ok(_) => Ok(()),
            Err(status) => {
                let code = classify(&status);
                if code == ErrorCode::Connect {
                    // Do not spin against a server that is down (the channel reconnects).
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(code)
            }
        }
    }
}

/// A status the server sent keeps its code; one tonic made up for a failed connection (it then
/// carries the transport error as its source) counts as `connect` (refused) or `io`.
fn classify(status: &tonic::Status) -> ErrorCode {
    let mut source = std::error::Error::source(status);
    if source.is_none() {
        return ErrorCode::Grpc(status.code());
    }
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => ErrorCode::Connect,
                _ => ErrorCode::Io,
            };
        }
        source = e.source();
    }
    ErrorCode::Io
}
