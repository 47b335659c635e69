//! gRPC front end (tonic): `inference.GRPCInferenceService`, wire-compatible with Triton's, so
//! tritonclient and perf_analyzer work unchanged. Handlers translate and call `Router`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::admin::Admin;
use super::error::ApiError;
use super::{server_extensions, SERVER_NAME};
use crate::metrics::Protocol;
use crate::registry::{ModelVersion, TensorSpec};
use crate::routing::{InferRequest, NamedTensor, Router, VersionStatistics};
use crate::tensor::{shape_from_wire, DataType, Element, Tensor};

use crate::proto::inference as pb;
use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};

pub struct InferenceService {
    router: Arc<Router>,
    admin: Arc<Admin>,
}

/// The tonic service, with message limits set to the configured request size.
pub fn service(
    router: Arc<Router>,
    admin: Arc<Admin>,
    max_request_bytes: usize,
) -> GrpcInferenceServiceServer<InferenceService> {
    GrpcInferenceServiceServer::new(InferenceService { router, admin })
        .max_decoding_message_size(max_request_bytes)
        .max_encoding_message_size(usize::MAX)
}

/// tonic answers an over-size message with OUT_OF_RANGE; gRPC's convention (and our HTTP 413) is
/// RESOURCE_EXHAUSTED, so rewrite that one status on the way out.
pub fn map_oversize<B>(mut resp: axum::http::Response<B>) -> axum::http::Response<B> {
    let oversize = resp.headers().get("grpc-status").is_some_and(|v| v == "11")
        && resp.headers().get("grpc-message").is_some_and(|m| {
            m.to_str()
                .unwrap_or("")
                .contains("message%20length%20too%20large")
                || m.to_str()
                    .unwrap_or("")
                    .contains("message length too large")
        });
    if oversize {
        resp.headers_mut()
            .insert("grpc-status", axum::http::HeaderValue::from_static("8"));
    }
    resp
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

/// Parses the `grpc-timeout` header (e.g. `100m`, `5S`).
fn grpc_timeout(req: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let v = req.get("grpc-timeout")?.to_str().ok()?;
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn param_timeout(
    params: &std::collections::HashMap<String, pb::InferParameter>,
) -> Option<Duration> {
    use pb::infer_parameter::ParameterChoice;
    match params.get("timeout")?.parameter_choice.as_ref()? {
        ParameterChoice::Int64Param(us) if *us > 0 => Some(Duration::from_micros(*us as u64)),
        ParameterChoice::Uint64Param(us) if *us > 0 => Some(Duration::from_micros(*us)),
        _ => None,
    }
}

fn contents_tensor(
    dtype: DataType,
    shape: Vec<usize>,
    c: &pb::InferTensorContents,
) -> Result<Tensor, String> {
    fn narrow<S: Copy + std::fmt::Display, T: Element + TryFrom<S>>(
        shape: Vec<usize>,
        v: &[S],
    ) -> Result<Tensor, String> {
        let values = v
            .iter()
            .map(|&x| T::try_from(x).map_err(|_| format!("{x} does not fit {}", T::DTYPE)))
            .collect::<Result<Vec<T>, _>>()?;
        Tensor::from_values(shape, &values).map_err(|e| e.to_string())
    }
    let count = crate::tensor::element_count(&shape)
        .ok_or_else(|| format!("shape {shape:?} is too large"))?;
    let given = match dtype {
        DataType::Bool => c.bool_contents.len(),
        DataType::I8 | DataType::I16 | DataType::I32 => c.int_contents.len(),
        DataType::I64 => c.int64_contents.len(),
        DataType::U8 | DataType::U16 | DataType::U32 => c.uint_contents.len(),
        DataType::U64 => c.uint64_contents.len(),
        DataType::F32 => c.fp32_contents.len(),
        DataType::F64 => c.fp64_contents.len(),
        DataType::Bytes => c.bytes_contents.len(),
        DataType::F16 => return Err("FP16 data must be sent in raw_input_contents".into()),
    };
    if given != count {
        return Err(format!(
            "shape {shape:?} needs {count} elements, contents have {given}"
        ));
    }
    match dtype {
        DataType::Bool => Tensor::from_values(shape, &c.bool_contents).map_err(|e| e.to_string()),
        DataType::I8 => narrow::<i32, i8>(shape, &c.int_contents),
        DataType::I16 => narrow::<i32, i16>(shape, &c.int_contents),
        DataType::I32 => narrow::<i32, i32>(shape, &c.int_contents),
        DataType::I64 => narrow::<i64, i64>(shape, &c.int64_contents),
        DataType::U8 => narrow::<u32, u8>(shape, &c.uint_contents),
        DataType::U16 => narrow::<u32, u16>(shape, &c.uint_contents),
        DataType::U32 => narrow::<u32, u32>(shape, &c.uint_contents),
        DataType::U64 => narrow::<u64, u64>(shape, &c.uint64_contents),
        DataType::F32 => narrow::<f32, f32>(shape, &c.fp32_contents),
        DataType::F64 => narrow::<f64, f64>(shape, &c.fp64_contents),
        DataType::Bytes => {
            Tensor::from_byte_strings(shape, &c.bytes_contents).map_err(|e| e.to_string())
        }
        DataType::F16 => Err("FP16 data must be sent in raw_input_contents".into()),
    }
}

fn decode(req: Request<pb::ModelInferRequest>) -> Result<InferRequest, ApiError> {
    let deadline = grpc_timeout(req.metadata());
    let route_key = match req.metadata().get(super::http::ROUTE_KEY) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| bad(format!("{} must be visible ASCII", super::http::ROUTE_KEY)))?
                .to_owned(),
        ),
    };
    let r = req.into_inner();
    let raw = r.raw_input_contents;
    if !raw.is_empty() && raw.len() != r.inputs.len() {
        return Err(bad(format!(
            "raw_input_contents has {} entries for {} inputs; send all inputs raw or none",
            raw.len(),
            r.inputs.len()
        )));
    }
    let mut inputs = Vec::with_capacity(r.inputs.len());
    for (ix, input) in r.inputs.into_iter().enumerate() {
        let name = input.name;
        let dtype = DataType::parse(&input.datatype)
            .filter(|_| !input.datatype.starts_with("TYPE_"))
            .ok_or_else(|| {
                bad(format!(
                    "input {name:?}: unknown datatype {:?}",
                    input.datatype
                ))
            })?;
        let shape =
            shape_from_wire(&input.shape).map_err(|e| bad(format!("input {name:?}: {e}")))?;
        let tensor = match (raw.get(ix), &input.contents) {
            (Some(bytes), _) => {
                Tensor::new(dtype, shape, Bytes::clone(bytes)).map_err(|e| e.to_string())
            }
            (None, Some(contents)) => contents_tensor(dtype, shape, contents),
            (None, None) => Err("no data: set contents or raw_input_contents".into()),
        }
        .map_err(|e| bad(format!("input {name:?}: {e}")))?;
        inputs.push(NamedTensor { name, tensor });
    }
    Ok(InferRequest {
        model: r.model_name,
        version: Some(r.model_version).filter(|v| !v.is_empty()),
        id: r.id,
        inputs,
        outputs: r.outputs.into_iter().map(|o| o.name).collect(),
        timeout: param_timeout(&r.parameters).or(deadline),
        protocol: Protocol::Grpc,
        route_key,
    })
}

fn config_proto(mv: &ModelVersion) -> pb::ModelConfig {
    let dtype = |d: DataType| {
        pb::DataType::from_str_name(d.config_name()).unwrap_or(pb::DataType::TypeInvalid) as i32
    };
    let input = |t: &TensorSpec| pb::ModelInput {
        name: t.name.clone(),
        data_type: dtype(t.dtype),
        dims: t.dims.clone(),
        ..Default::default()
    };
    let output = |t: &TensorSpec| pb::ModelOutput {
        name: t.name.clone(),
        data_type: dtype(t.dtype),
        dims: t.dims.clone(),
        ..Default::default()
    };
    let cfg = &mv.config;
    pb::ModelConfig {
        name: mv.name.clone(),
        platform: cfg.backend.platform().into(),
        backend: cfg.backend.as_str().into(),
        max_batch_size: i32::try_from(mv.signature.max_batch_size).unwrap_or(i32::MAX),
        input: mv.signature.inputs.iter().map(input).collect(),
        output: mv.signature.outputs.iter().map(output).collect(),
        instance_group: vec![pb::ModelInstanceGroup {
            name: mv.name.clone(),
            kind: pb::model_instance_group::Kind::from_str_name(cfg.device.instance_kind())
                .unwrap_or(pb::model_instance_group::Kind::Cpu) as i32,
            count: i32::try_from(cfg.instance_count).unwrap_or(i32::MAX),
            gpus: cfg.device.gpu().map(|g| g as i32).into_iter().collect(),
            ..Default::default()
        }],
        parameters: [(
            "execution_provider".to_owned(),
            pb::ModelParameter {
                string_value: cfg.execution_provider().to_owned(),
            },
        )]
        .into(),
        version_policy: Some(pb::ModelVersionPolicy {
            policy_choice: Some(pb::model_version_policy::PolicyChoice::Latest(
                pb::model_version_policy::Latest { num_versions: 1 },
            )),
        }),
        scheduling_choice: cfg.dynamic_batching.as_ref().map(|b| {
            pb::model_config::SchedulingChoice::DynamicBatching(pb::ModelDynamicBatching {
                preferred_batch_size: b.preferred_batch_sizes.iter().map(|&p| p as i32).collect(),
                max_queue_delay_microseconds: b.max_queue_delay.as_micros() as u64,
                default_queue_policy: Some(pb::ModelQueuePolicy {
                    max_queue_size: u32::try_from(cfg.queue.max_queue_size).unwrap_or(u32::MAX),
                    default_timeout_microseconds: cfg
                        .queue
                        .default_timeout
                        .map_or(0, |t| t.as_micros() as u64),
                    ..Default::default()
                }),
                ..Default::default()
            })
        }),
        ..Default::default()
    }
}

fn stats_proto(s: VersionStatistics) -> pb::ModelStatistics {
    let d = |(count, ns): (u64, u64)| Some(pb::StatisticDuration { count, ns });
    let batch_stats = s
        .batch_stats
        .iter()
        .map(|(size, b)| pb::InferBatchStatistics {
            batch_size: *size as u64,
            compute_input: d((b.count, b.input_ns)),
            compute_infer: d((b.count, b.infer_ns)),
            compute_output: d((b.count, b.output_ns)),
        })
        .collect();
    pb::ModelStatistics {
        name: s.name,
        version: s.version,
        last_inference: s.last_inference_ms,
        inference_count: s.inference_count,
        execution_count: s.execution_count,
        inference_stats: Some(pb::InferStatistics {
            success: d(s.success),
            fail: d(s.fail),
            queue: d(s.queue),
            compute_input: d(s.compute_input),
            compute_infer: d(s.compute_infer),
            compute_output: d(s.compute_output),
            cache_hit: d((0, 0)),
            cache_miss: d((0, 0)),
        }),
        batch_stats,
        ..Default::default()
    }
}

type GrpcResult<T> = Result<Response<T>, Status>;

fn unimplemented<T>(what: &str) -> GrpcResult<T> {
    Err(ApiError::Unimplemented(format!("{what} is not supported by this server")).into())
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
        let ready = self
            .router
            .model_ready(&r.name, Some(&r.version))
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> GrpcResult<pb::ServerMetadataResponse> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: SERVER_NAME.into(),
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
        let tensors = |list: Vec<(String, DataType, Vec<i64>)>| {
            list.into_iter()
                .map(
                    |(name, d, shape)| pb::model_metadata_response::TensorMetadata {
                        name,
                        datatype: d.as_str().into(),
                        shape,
                    },
                )
                .collect()
        };
        Ok(Response::new(pb::ModelMetadataResponse {
            name: m.name,
            versions: m.versions,
            platform: m.platform,
            inputs: tensors(m.inputs),
            outputs: tensors(m.outputs),
        }))
    }

    async fn model_infer(
        &self,
        req: Request<pb::ModelInferRequest>,
    ) -> GrpcResult<pb::ModelInferResponse> {
        let model = req.get_ref().model_name.clone();
        let request =
            decode(req).inspect_err(|_| self.router.count_undecodable(&model, Protocol::Grpc))?;
        let resp = self.router.infer(request).await.map_err(ApiError::from)?;
        let mut outputs = Vec::with_capacity(resp.outputs.len());
        let mut raw = Vec::with_capacity(resp.outputs.len());
        for o in resp.outputs {
            outputs.push(pb::model_infer_response::InferOutputTensor {
                name: o.name,
                datatype: o.tensor.dtype().as_str().into(),
                shape: o.tensor.shape().iter().map(|&d| d as i64).collect(),
                ..Default::default()
            });
            raw.push(o.tensor.data().clone());
        }
        Ok(Response::new(pb::ModelInferResponse {
            model_name: resp.model,
            model_version: resp.version,
            id: resp.id,
            parameters: Default::default(),
            outputs,
            raw_output_contents: raw,
        }))
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
            config: Some(config_proto(&mv)),
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
            model_stats: stats.into_iter().map(stats_proto).collect(),
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
        let auth = req
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes().to_vec());
        let r = req.into_inner();
        self.admin.authorize(auth.as_deref())?;
        if !r.parameters.is_empty() {
            return Err(ApiError::BadRequest(
                "load parameters (config overrides, file contents) are not accepted: models load only from the repository".into(),
            )
            .into());
        }
        self.admin.load(auth.as_deref(), &r.model_name).await?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        req: Request<pb::RepositoryModelUnloadRequest>,
    ) -> GrpcResult<pb::RepositoryModelUnloadResponse> {
        let auth = req
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes().to_vec());
        let r = req.into_inner();
        self.admin.unload(auth.as_deref(), &r.model_name).await?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }

    async fn system_shared_memory_status(
        &self,
        _: Request<pb::SystemSharedMemoryStatusRequest>,
    ) -> GrpcResult<pb::SystemSharedMemoryStatusResponse> {
        unimplemented("system shared memory")
    }

    async fn system_shared_memory_register(
        &self,
        _: Request<pb::SystemSharedMemoryRegisterRequest>,
    ) -> GrpcResult<pb::SystemSharedMemoryRegisterResponse> {
        unimplemented("system shared memory")
    }

    async fn system_shared_memory_unregister(
        &self,
        _: Request<pb::SystemSharedMemoryUnregisterRequest>,
    ) -> GrpcResult<pb::SystemSharedMemoryUnregisterResponse> {
        unimplemented("system shared memory")
    }

    async fn cuda_shared_memory_status(
        &self,
        _: Request<pb::CudaSharedMemoryStatusRequest>,
    ) -> GrpcResult<pb::CudaSharedMemoryStatusResponse> {
        unimplemented("CUDA shared memory")
    }

    async fn cuda_shared_memory_register(
        &self,
        _: Request<pb::CudaSharedMemoryRegisterRequest>,
    ) -> GrpcResult<pb::CudaSharedMemoryRegisterResponse> {
        unimplemented("CUDA shared memory")
    }

    async fn cuda_shared_memory_unregister(
        &self,
        _: Request<pb::CudaSharedMemoryUnregisterRequest>,
    ) -> GrpcResult<pb::CudaSharedMemoryUnregisterResponse> {
        unimplemented("CUDA shared memory")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units_parse() {
        let mut m = tonic::metadata::MetadataMap::new();
        m.insert("grpc-timeout", "250m".parse().unwrap());
        assert_eq!(grpc_timeout(&m), Some(Duration::from_millis(250)));
        m.insert("grpc-timeout", "3S".parse().unwrap());
        assert_eq!(grpc_timeout(&m), Some(Duration::from_secs(3)));
        m.insert("grpc-timeout", "x".parse().unwrap());
        assert_eq!(grpc_timeout(&m), None);
    }

    #[test]
    fn contents_are_checked_for_count_and_range() {
        let c = pb::InferTensorContents {
            int_contents: vec![1, 300],
            ..Default::default()
        };
        assert!(contents_tensor(DataType::I8, vec![2], &c)
            .unwrap_err()
            .contains("does not fit"));
        assert!(contents_tensor(DataType::I32, vec![3], &c)
            .unwrap_err()
            .contains("needs 3 elements"));
        assert_eq!(
            contents_tensor(DataType::I16, vec![2], &c)
                .unwrap()
                .to_vec::<i16>()
                .unwrap(),
            vec![1, 300]
        );
    }
}
