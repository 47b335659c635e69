//! gRPC views of what the core reports: model metadata, Triton's model configuration and the
//! statistics extension, as `inference` messages.

use crate::proto::inference as pb;
use crate::registry::{ModelVersion, TensorSpec};
use crate::routing::{ModelMetadata, VersionStatistics};
use crate::tensor::DataType;

/// `ModelMetadata`: tensors with their protocol datatype names and public shapes.
pub fn metadata_proto(m: ModelMetadata) -> pb::ModelMetadataResponse {
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
    pb::ModelMetadataResponse {
        name: m.name,
        versions: m.versions,
        platform: m.platform,
        inputs: tensors(m.inputs),
        outputs: tensors(m.outputs),
    }
}

/// Triton's `ModelConfig` (what perf_analyzer and tritonclient read), the same content as the
/// HTTP route's JSON.
pub fn config_proto(mv: &ModelVersion) -> pb::ModelConfig {
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
        parameters: std::iter::once((
            "execution_provider".to_owned(),
            pb::ModelParameter {
                string_value: cfg.execution_provider().to_owned(),
            },
        ))
        // A classifier's labels, one a line (Triton's label-file format), as `labels.OUTPUT`.
        .chain(mv.signature.output_labels.iter().map(|(output, labels)| {
            (
                format!("labels.{output}"),
                pb::ModelParameter {
                    string_value: labels.join("\n"),
                },
            )
        }))
        .chain((!mv.note.is_empty()).then(|| {
            (
                "load_notes".to_owned(),
                pb::ModelParameter {
                    string_value: mv.note.clone(),
                },
            )
        }))
        .collect(),
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

/// One version's `ModelStatistics` (Triton's statistics extension).
pub fn stats_proto(s: VersionStatistics) -> pb::ModelStatistics {
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
