//! gRPC front end (tonic): `inference.GRPCInferenceService`, wire-compatible with Triton's, so
//! tritonclient and perf_analyzer work unchanged. Handlers translate and call `Router`: the
//! inference messages in [`codec`], metadata, configuration and statistics in [`views`].

mod answers;
pub mod budget;
pub(super) mod codec;
pub mod health;
pub(super) mod prescan;
pub mod reflection;
mod views;

pub use answers::AnswersLayer;

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::admin::Admin;
use super::admin_grpc::authorized;
use super::error::ApiError;
use super::load_params::{self, Param};
use super::server_extensions;
use super::shm::{RegionStatus, SharedMemory};
use crate::metrics::Protocol;
use crate::routing::{InferError, Router};
use crate::telemetry;
use tracing::Instrument;

use crate::proto::inference as pb;
use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};

pub struct InferenceService {
    router: Arc<Router>,
    admin: Arc<Admin>,
    server_name: String,
    shm: Arc<SharedMemory>,
    max_request_bytes: usize,
}

/// The tonic service, with message limits set to the configured request size (tonic applies
/// the decoding limit to a compressed message's decoded bytes), gzip and deflate messages
/// accepted (`grpc-encoding`) and sent when the client's `grpc-accept-encoding` asks.
pub fn service(
    router: Arc<Router>,
    admin: Arc<Admin>,
    shm: Arc<SharedMemory>,
    max_request_bytes: usize,
    server_name: &str,
) -> GrpcInferenceServiceServer<InferenceService> {
    use tonic::codec::CompressionEncoding::{Deflate, Gzip};
    let server_name = server_name.to_owned();
    GrpcInferenceServiceServer::new(InferenceService {
        router,
        admin,
        server_name,
        shm,
        max_request_bytes,
    })
    .max_decoding_message_size(max_request_bytes)
    .max_encoding_message_size(usize::MAX)
    .accept_compressed(Gzip)
    .accept_compressed(Deflate)
    .send_compressed(Gzip)
    .send_compressed(Deflate)
}

type GrpcResult<T> = Result<Response<T>, Status>;

fn unimplemented<T>(what: &str) -> GrpcResult<T> {
    Err(ApiError::Unimplemented(format!("{what} is not supported by this server")).into())
}

impl InferenceService {
    /// ModelInfer itself (the trait method adds the trace span).
    async fn infer_untraced(
        &self,
        req: Request<pb::ModelInferRequest>,
    ) -> GrpcResult<pb::ModelInferResponse> {
        let model = req.get_ref().model_name.clone();
        let mut decoded = codec::decode(req)
            .inspect_err(|_| self.router.count_undecodable(&model, Protocol::Grpc))?;
        let pending = std::mem::take(&mut decoded.shm.inputs);
        let _held = (!pending.is_empty())
            .then(|| {
                self.router
                    .take_inflight_bytes(super::shm::input_bytes(&pending))
            })
            .transpose()
            .map_err(ApiError::from)?;
        self.shm
            .resolve(&mut decoded.request, pending, self.max_request_bytes)
            .await?;
        let mut resp = self
            .router
            .infer(decoded.request)
            .await
            .map_err(ApiError::from)?;
        self.router
            .classify(&mut resp, &decoded.classification)
            .map_err(ApiError::from)?;
        self.shm.deliver(&resp, &decoded.shm.outputs).await?;
        let encoded =
            telemetry::encode_span().in_scope(|| codec::encode(resp, &decoded.shm.outputs));
        Ok(Response::new(encoded))
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> GrpcResult<pb::ServerLiveResponse> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> GrpcResult<pb::ServerReadyResponse> {
        Ok(Response::new(pb::ServerReadyResponse {
            ready: self.router.server_ready(),
        }))
    }

    async fn model_ready(
        &self,
        req: Request<pb::ModelReadyRequest>,
    ) -> GrpcResult<pb::ModelReadyResponse> {
        let r = req.into_inner();
        // As Triton: a model or version it does not serve is not ready (OK, false), which
        // tritonclient's `is_model_ready` reads; a malformed version is still an error.
        let ready = match self.router.model_ready(&r.name, Some(&r.version)) {
            Err(InferError::ModelNotFound(_) | InferError::VersionNotFound { .. }) => false,
            other => other.map_err(ApiError::from)?,
        };
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> GrpcResult<pb::ServerMetadataResponse> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: self.server_name.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: server_extensions().into_iter().map(String::from).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<pb::ModelMetadataRequest>,
    ) -> GrpcResult<pb::ModelMetadataResponse> {
        let r = req.into_inner();
        let m = self
            .router
            .metadata(&r.name, Some(&r.version))
            .map_err(ApiError::from)?;
        Ok(Response::new(views::metadata_proto(m)))
    }

    async fn model_infer(
        &self,
        req: Request<pb::ModelInferRequest>,
    ) -> GrpcResult<pb::ModelInferResponse> {
        let meta = |name: &str| req.metadata().get(name).and_then(|v| v.to_str().ok());
        let span = telemetry::server_span(
            Protocol::Grpc,
            "inference.GRPCInferenceService/ModelInfer",
            meta("traceparent"),
            meta("tracestate"),
        );
        if span.is_disabled() {
            return self.infer_untraced(req).await;
        }
        let answer = self.infer_untraced(req).instrument(span.clone()).await;
        let code = answer
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        telemetry::record_grpc_code(&span, code as i32);
        answer
    }

    type ModelStreamInferStream =
        Pin<Box<dyn Stream<Item = Result<pb::ModelStreamInferResponse, Status>> + Send>>;

    async fn model_stream_infer(
        &self,
        _: Request<tonic::Streaming<pb::ModelInferRequest>>,
    ) -> GrpcResult<Self::ModelStreamInferStream> {
        unimplemented("streaming inference (ModelStreamInfer)")
    }

    async fn model_config(
        &self,
        req: Request<pb::ModelConfigRequest>,
    ) -> GrpcResult<pb::ModelConfigResponse> {
        let r = req.into_inner();
        let mv = self
            .router
            .version(&r.name, Some(&r.version))
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ModelConfigResponse {
            config: Some(views::config_proto(&mv)),
        }))
    }

    async fn model_statistics(
        &self,
        req: Request<pb::ModelStatisticsRequest>,
    ) -> GrpcResult<pb::ModelStatisticsResponse> {
        let r = req.into_inner();
        let model = Some(r.name.as_str()).filter(|n| !n.is_empty());
        let stats = self
            .router
            .statistics(model, Some(&r.version))
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ModelStatisticsResponse {
            model_stats: stats.into_iter().map(views::stats_proto).collect(),
        }))
    }

    async fn repository_index(
        &self,
        req: Request<pb::RepositoryIndexRequest>,
    ) -> GrpcResult<pb::RepositoryIndexResponse> {
        let r = req.into_inner();
        if !r.repository_name.is_empty() {
            return Err(ApiError::BadRequest(
                "this server has one model repository: leave repository_name empty".into(),
            )
            .into());
        }
        let models = self
            .admin
            .index(r.ready)?
            .into_iter()
            .map(|row| pb::repository_index_response::ModelIndex {
                name: row.name,
                version: row.version,
                state: row.state,
                reason: row.reason,
            })
            .collect();
        Ok(Response::new(pb::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        req: Request<pb::RepositoryModelLoadRequest>,
    ) -> GrpcResult<pb::RepositoryModelLoadResponse> {
        let (auth, r) = authorized(&self.admin, req)?;
        use pb::model_repository_parameter::ParameterChoice;
        let params = r.parameters.into_iter().map(|(k, p)| {
            let value = match p.parameter_choice {
                Some(ParameterChoice::StringParam(s)) => Param::Str(s),
                Some(ParameterChoice::BytesParam(b)) => Param::Bytes(b.to_vec()),
                Some(ParameterChoice::BoolParam(_)) => Param::Other("bool"),
                Some(ParameterChoice::Int64Param(_)) => Param::Other("int"),
                None => Param::Other("none"),
            };
            (k, value)
        });
        let upload = load_params::upload(&r.model_name, params)?;
        self.admin.load(auth, &r.model_name, upload).await?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        req: Request<pb::RepositoryModelUnloadRequest>,
    ) -> GrpcResult<pb::RepositoryModelUnloadResponse> {
        let (auth, r) = authorized(&self.admin, req)?;
        use pb::model_repository_parameter::ParameterChoice;
        if let Some(p) = r.parameters.get("unload_dependents") {
            // Accepted (no model here has dependents), but typed as Triton types it.
            if !matches!(p.parameter_choice, Some(ParameterChoice::BoolParam(_))) {
                return Err(ApiError::BadRequest(
                    "invalid value type for 'unload_dependents' parameter, expected bool_param."
                        .into(),
                )
                .into());
            }
        }
        self.admin.unload(auth, &r.model_name).await?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }

    async fn system_shared_memory_status(
        &self,
        req: Request<pb::SystemSharedMemoryStatusRequest>,
    ) -> GrpcResult<pb::SystemSharedMemoryStatusResponse> {
        let r = req.into_inner();
        let name = Some(r.name.as_str()).filter(|n| !n.is_empty());
        let regions = self
            .shm
            .status(name)?
            .into_iter()
            .map(|s| {
                let status = pb::system_shared_memory_status_response::RegionStatus {
                    name: s.name.clone(),
                    key: s.key,
                    offset: s.offset,
                    byte_size: s.byte_size,
                };
                (s.name, status)
            })
            .collect();
        Ok(Response::new(pb::SystemSharedMemoryStatusResponse {
            regions,
        }))
    }

    async fn system_shared_memory_register(
        &self,
        req: Request<pb::SystemSharedMemoryRegisterRequest>,
    ) -> GrpcResult<pb::SystemSharedMemoryRegisterResponse> {
        let (auth, r) = authorized(&self.admin, req)?;
        self.shm.register(
            auth,
            RegionStatus {
                name: r.name,
                key: r.key,
                offset: r.offset,
                byte_size: r.byte_size,
            },
        )?;
        Ok(Response::new(pb::SystemSharedMemoryRegisterResponse {}))
    }

    async fn system_shared_memory_unregister(
        &self,
        req: Request<pb::SystemSharedMemoryUnregisterRequest>,
    ) -> GrpcResult<pb::SystemSharedMemoryUnregisterResponse> {
        let (auth, r) = authorized(&self.admin, req)?;
        let name = Some(r.name.as_str()).filter(|n| !n.is_empty());
        self.shm.unregister(auth, name)?;
        Ok(Response::new(pb::SystemSharedMemoryUnregisterResponse {}))
    }

    /// No CUDA region is ever registered (Triton's CPU-only build answers the same).
    async fn cuda_shared_memory_status(
        &self,
        req: Request<pb::CudaSharedMemoryStatusRequest>,
    ) -> GrpcResult<pb::CudaSharedMemoryStatusResponse> {
        let name = req.into_inner().name;
        if !name.is_empty() {
            return Err(super::shm::cuda_not_found(&name).into());
        }
        Ok(Response::new(pb::CudaSharedMemoryStatusResponse::default()))
    }

    async fn cuda_shared_memory_register(
        &self,
        _: Request<pb::CudaSharedMemoryRegisterRequest>,
    ) -> GrpcResult<pb::CudaSharedMemoryRegisterResponse> {
        unimplemented("CUDA shared memory (system shared memory is, when enabled)")
    }

    /// Nothing to unregister: succeeds, as in Triton (tritonclient's shm examples call it).
    async fn cuda_shared_memory_unregister(
        &self,
        _: Request<pb::CudaSharedMemoryUnregisterRequest>,
    ) -> GrpcResult<pb::CudaSharedMemoryUnregisterResponse> {
        Ok(Response::new(pb::CudaSharedMemoryUnregisterResponse {}))
    }

    async fn trace_setting(
        &self,
        _: Request<pb::TraceSettingRequest>,
    ) -> GrpcResult<pb::TraceSettingResponse> {
        unimplemented("trace settings")
    }

    async fn log_settings(
        &self,
        _: Request<pb::LogSettingsRequest>,
    ) -> GrpcResult<pb::LogSettingsResponse> {
        unimplemented("log settings")
    }
}
