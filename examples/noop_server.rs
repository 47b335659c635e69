//! The transport floor: an Open Inference Protocol server that does everything but inference.
//!
//! It pretends to serve `mlp` (input `input` FP32 [-1,64], output `output` FP32 [-1,10]) over
//! HTTP (axum) and gRPC (tonic) on the same stacks and socket options as ferroserve, parses
//! each request for real (JSON into a `serde_json::Value`, the binary extension's header plus
//! byte slicing, gRPC decoding by tonic) and answers a pre-encoded response of the right shape.
//! Measured with `ferroserve bench`, it is the cost of HTTP/gRPC + parsing alone; the distance
//! between it and `ferroserve serve` is what our serving path adds. Nothing of ferroserve is
//! used except the generated protobuf types.
//!
//! ```text
//! cargo run --release --example noop_server -- --http-port 0 --grpc-port 0
//! ```
//! prints `http_addr=... grpc_addr=...` on stderr once listening.

use std::future::IntoFuture;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use clap::Parser;
use ferroserve::proto::inference as pb;
use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Status};

const MODEL: &str = "mlp";
const IN_COLS: usize = 64;
const OUT_COLS: usize = 10;
/// Largest batch answered (mlp's max_batch_size); responses are pre-encoded up to it.
const MAX_ROWS: usize = 64;
const HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// 0 picks a free port.
    #[arg(long, default_value_t = 8000)]
    http_port: u16,
    /// 0 picks a free port.
    #[arg(long, default_value_t = 8001)]
    grpc_port: u16,
}

/// Pre-encoded answers, index = rows - 1.
struct Answers {
    json: Vec<Bytes>,
    /// Body and JSON header length.
    binary: Vec<(Bytes, usize)>,
    grpc: Vec<pb::ModelInferResponse>,
}

impl Answers {
    fn build() -> Answers {
        let mut a = Answers {
            json: Vec::new(),
            binary: Vec::new(),
            grpc: Vec::new(),
        };
        for rows in 1..=MAX_ROWS {
            let values: Vec<f32> = (0..rows * OUT_COLS).map(|i| i as f32 * 0.125).collect();
            let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let shape = [rows as i64, OUT_COLS as i64];
            let base = json!({"model_name": MODEL, "model_version": "1"});
            let mut j = base.clone();
            j["outputs"] =
                json!([{"name": "output", "datatype": "FP32", "shape": shape, "data": values}]);
            a.json
                .push(serde_json::to_vec(&j).unwrap_or_default().into());
            let mut b = base;
            b["outputs"] = json!([{"name": "output", "datatype": "FP32", "shape": shape,
                                    "parameters": {"binary_data_size": raw.len()}}]);
            let mut body = serde_json::to_vec(&b).unwrap_or_default();
            let header_len = body.len();
            body.extend_from_slice(&raw);
            a.binary.push((body.into(), header_len));
            a.grpc.push(pb::ModelInferResponse {
                model_name: MODEL.into(),
                model_version: "1".into(),
                outputs: vec![pb::model_infer_response::InferOutputTensor {
                    name: "output".into(),
                    datatype: "FP32".into(),
                    shape: shape.to_vec(),
                    ..Default::default()
                }],
                raw_output_contents: vec![raw.into()],
                ..Default::default()
            });
        }
        a
    }
}

fn metadata_json() -> Value {
    json!({
        "name": MODEL, "versions": ["1"], "platform": "onnxruntime_onnx",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, IN_COLS]}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, OUT_COLS]}],
    })
}

// ------------------------------------------------------------------------------------- HTTP

type HttpError = (StatusCode, String);

fn bad(msg: impl Into<String>) -> HttpError {
    (StatusCode::BAD_REQUEST, msg.into())
}

/// Rows of the one input, checked against `mlp`'s signature.
fn rows_of(input: &Value) -> Result<usize, HttpError> {
    if input["name"] != "input" || input["datatype"] != "FP32" {
        return Err(bad("expected one FP32 input named \"input\""));
    }
    match input["shape"].as_array().map(|s| s.as_slice()) {
        Some([b, c]) if c.as_u64() == Some(IN_COLS as u64) => b
            .as_u64()
            .map(|b| b as usize)
            .filter(|b| (1..=MAX_ROWS).contains(b))
            .ok_or_else(|| bad(format!("batch must be 1..={MAX_ROWS}"))),
        _ => Err(bad(format!("input shape must be [B, {IN_COLS}]"))),
    }
}

/// Number of numbers in a (possibly nested) JSON `data` array; None if anything else is in it.
fn count_numbers(v: &Value) -> Option<usize> {
    match v {
        Value::Number(_) => Some(1),
        Value::Array(a) => a.iter().map(count_numbers).sum(),
        _ => None,
    }
}

fn wants_binary(req: &Value) -> bool {
    req["parameters"]["binary_data_output"] == true
        || req["outputs"]
            .as_array()
            .is_some_and(|o| o.iter().any(|o| o["parameters"]["binary_data"] == true))
}

/// Parses a request as the protocol says; returns the batch size and the output encoding.
fn parse(headers: &HeaderMap, body: &Bytes) -> Result<(usize, bool), HttpError> {
    let header_len = match headers.get(HEADER_CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
                .filter(|&n| n <= body.len())
                .ok_or_else(|| bad("bad Inference-Header-Content-Length"))?,
        ),
    };
    let json_part = body.slice(..header_len.unwrap_or(body.len()));
    let req: Value = serde_json::from_slice(&json_part).map_err(|e| bad(e.to_string()))?;
    let input = match req["inputs"].as_array().map(|a| a.as_slice()) {
        Some([input]) => input,
        _ => return Err(bad("expected exactly one input")),
    };
    let rows = rows_of(input)?;
    let want = rows * IN_COLS;
    match (header_len, input["parameters"]["binary_data_size"].as_u64()) {
        (Some(n), Some(size)) => {
            let size = size as usize;
            if size != want * 4 || body.len() - n != size {
                return Err(bad(
                    "binary_data_size does not match the shape and the body",
                ));
            }
            // The tensor bytes, as a server would hand them on (zero-copy).
            let data = body.slice(n..n + size);
            std::hint::black_box(data);
        }
        (None, None) if count_numbers(&input["data"]) == Some(want) => {}
        _ => return Err(bad("input data does not match its shape")),
    }
    Ok((rows, wants_binary(&req)))
}

async fn infer(
    State(answers): State<Arc<Answers>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if model != MODEL {
        return (StatusCode::NOT_FOUND, format!("unknown model {model:?}")).into_response();
    }
    let (rows, binary) = match parse(&headers, &body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if binary {
        let (body, n) = &answers.binary[rows - 1];
        let mut resp = body.clone().into_response();
        let h = resp.headers_mut();
        let ct = HeaderValue::from_static("application/octet-stream");
        h.insert(header::CONTENT_TYPE, ct);
        h.insert(HEADER_CONTENT_LENGTH, HeaderValue::from(*n));
        resp
    } else {
        let mut resp = answers.json[rows - 1].clone().into_response();
        let ct = HeaderValue::from_static("application/json");
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
        resp
    }
}

async fn infer_version(
    state: State<Arc<Answers>>,
    Path((model, _version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    infer(state, Path(model), headers, body).await
}

async fn metadata(Path(model): Path<String>) -> Response {
    if model != MODEL {
        return (StatusCode::NOT_FOUND, format!("unknown model {model:?}")).into_response();
    }
    axum::Json(metadata_json()).into_response()
}

fn http_app(answers: Arc<Answers>) -> Router {
    Router::new()
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        .route("/v2/health/ready", get(|| async { StatusCode::OK }))
        .route("/v2/models/{model}", get(metadata))
        .route("/v2/models/{model}/infer", post(infer))
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(infer_version),
        )
        .with_state(answers)
}

// ------------------------------------------------------------------------------------- gRPC

struct Noop {
    answers: Arc<Answers>,
}

type GrpcResult<T> = Result<tonic::Response<T>, Status>;

fn unimplemented<T>() -> GrpcResult<T> {
    Err(Status::unimplemented("not implemented by the no-op server"))
}

#[tonic::async_trait]
impl GrpcInferenceService for Noop {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> GrpcResult<pb::ServerLiveResponse> {
        Ok(tonic::Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> GrpcResult<pb::ServerReadyResponse> {
        Ok(tonic::Response::new(pb::ServerReadyResponse {
            ready: true,
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<pb::ModelMetadataRequest>,
    ) -> GrpcResult<pb::ModelMetadataResponse> {
        if req.get_ref().name != MODEL {
            return Err(Status::not_found(format!(
                "unknown model {:?}",
                req.get_ref().name
            )));
        }
        let t = |name: &str, cols: usize| pb::model_metadata_response::TensorMetadata {
            name: name.into(),
            datatype: "FP32".into(),
            shape: vec![-1, cols as i64],
        };
        Ok(tonic::Response::new(pb::ModelMetadataResponse {
            name: MODEL.into(),
            versions: vec!["1".into()],
            platform: "onnxruntime_onnx".into(),
            inputs: vec![t("input", IN_COLS)],
            outputs: vec![t("output", OUT_COLS)],
        }))
    }

    async fn model_infer(
        &self,
        req: Request<pb::ModelInferRequest>,
    ) -> GrpcResult<pb::ModelInferResponse> {
        let r = req.get_ref();
        if r.model_name != MODEL {
            return Err(Status::not_found(format!(
                "unknown model {:?}",
                r.model_name
            )));
        }
        let rows = match r.inputs.as_slice() {
            [i] if i.name == "input" && i.datatype == "FP32" => match i.shape.as_slice() {
                &[b, c] if c == IN_COLS as i64 && (1..=MAX_ROWS as i64).contains(&b) => b as usize,
                _ => return Err(Status::invalid_argument("input shape must be [1..=64, 64]")),
            },
            _ => {
                return Err(Status::invalid_argument(
                    "expected one FP32 input named \"input\"",
                ))
            }
        };
        let want = rows * IN_COLS;
        let ok = match (r.raw_input_contents.first(), &r.inputs[0].contents) {
            (Some(raw), _) => raw.len() == want * 4,
            (None, Some(c)) => c.fp32_contents.len() == want,
            (None, None) => false,
        };
        if !ok {
            return Err(Status::invalid_argument(
                "input data does not match its shape",
            ));
        }
        Ok(tonic::Response::new(self.answers.grpc[rows - 1].clone()))
    }

    type ModelStreamInferStream =
        Pin<Box<dyn Stream<Item = Result<pb::ModelStreamInferResponse, Status>> + Send>>;

    async fn model_stream_infer(
        &self,
        _: Request<tonic::Streaming<pb::ModelInferRequest>>,
    ) -> GrpcResult<Self::ModelStreamInferStream> {
        unimplemented()
    }
    async fn model_ready(
        &self,
        _: Request<pb::ModelReadyRequest>,
    ) -> GrpcResult<pb::ModelReadyResponse> {
        unimplemented()
    }
    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> GrpcResult<pb::ServerMetadataResponse> {
        unimplemented()
    }
    async fn model_config(
        &self,
        _: Request<pb::ModelConfigRequest>,
    ) -> GrpcResult<pb::ModelConfigResponse> {
        unimplemented()
    }
    async fn model_statistics(
        &self,
        _: Request<pb::ModelStatisticsRequest>,
    ) -> GrpcResult<pb::ModelStatisticsResponse> {
        unimplemented()
    }
    async fn repository_index(
        &self,
        _: Request<pb::RepositoryIndexRequest>,
    ) -> GrpcResult<pb::RepositoryIndexResponse> {
        unimplemented()
    }
    async fn repository_model_load(
        &self,
        _: Request<pb::RepositoryModelLoadRequest>,
    ) -> GrpcResult<pb::RepositoryModelLoadResponse> {
        unimplemented()
    }
    async fn repository_model_unload(
        &self,
        _: Request<pb::RepositoryModelUnloadRequest>,
    ) -> GrpcResult<pb::RepositoryModelUnloadResponse> {
        unimplemented()
    }
    async fn system_shared_memory_status(
        &self,
        _: Request<pb::SystemSharedMemoryStatusRequest>,
    ) -> GrpcResult<pb::SystemSharedMemoryStatusResponse> {
        unimplemented()
    }
    async fn system_shared_memory_register(
        &self,
        _: Request<pb::SystemSharedMemoryRegisterRequest>,
    ) -> GrpcResult<pb::SystemSharedMemoryRegisterResponse> {
        unimplemented()
    }
    async fn system_shared_memory_unregister(
        &self,
        _: Request<pb::SystemSharedMemoryUnregisterRequest>,
    ) -> GrpcResult<pb::SystemSharedMemoryUnregisterResponse> {
        unimplemented()
    }
    async fn cuda_shared_memory_status(
        &self,
        _: Request<pb::CudaSharedMemoryStatusRequest>,
    ) -> GrpcResult<pb::CudaSharedMemoryStatusResponse> {
        unimplemented()
    }
    async fn cuda_shared_memory_register(
        &self,
        _: Request<pb::CudaSharedMemoryRegisterRequest>,
    ) -> GrpcResult<pb::CudaSharedMemoryRegisterResponse> {
        unimplemented()
    }
    async fn cuda_shared_memory_unregister(
        &self,
        _: Request<pb::CudaSharedMemoryUnregisterRequest>,
    ) -> GrpcResult<pb::CudaSharedMemoryUnregisterResponse> {
        unimplemented()
    }
    async fn trace_setting(
        &self,
        _: Request<pb::TraceSettingRequest>,
    ) -> GrpcResult<pb::TraceSettingResponse> {
        unimplemented()
    }
    async fn log_settings(
        &self,
        _: Request<pb::LogSettingsRequest>,
    ) -> GrpcResult<pb::LogSettingsResponse> {
        unimplemented()
    }
}

// ------------------------------------------------------------------------------------- main

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let answers = Arc::new(Answers::build());
    let http = TcpListener::bind((args.host.as_str(), args.http_port)).await?;
    let grpc = TcpListener::bind((args.host.as_str(), args.grpc_port)).await?;
    eprintln!(
        "http_addr={} grpc_addr={}",
        http.local_addr()?,
        grpc.local_addr()?
    );

    // Same socket options and stacks as ferroserve's server: TCP_NODELAY, axum, tonic.
    let http = axum::serve::ListenerExt::tap_io(http, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let http_server = axum::serve(http, http_app(answers.clone())).into_future();
    let incoming = TcpListenerStream::new(grpc).map(|s| {
        if let Ok(tcp) = &s {
            let _ = tcp.set_nodelay(true);
        }
        s
    });
    let grpc_server = tonic::transport::Server::builder()
        .add_service(
            GrpcInferenceServiceServer::new(Noop { answers }).max_decoding_message_size(usize::MAX),
        )
        .serve_with_incoming(incoming);
    tokio::select! {
        r = http_server => r?,
        r = grpc_server => r?,
    }
    Ok(())
}
