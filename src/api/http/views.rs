//! HTTP views of what the core reports, as JSON: model metadata, Triton's model configuration
//! (the JSON form of its protobuf) and the statistics extension.

use std::sync::Arc;

use axum::Json;
use serde_json::{json, Value};

use crate::api::error::ApiError;
use crate::registry::{ModelVersion, TensorSpec};
use crate::routing::{Router, VersionStatistics};

/// Model metadata: tensors with their protocol datatype names and public shapes.
pub fn metadata_json(
    router: &Router,
    model: &str,
    version: Option<&str>,
) -> Result<Json<Value>, ApiError> {
    let m = router.metadata(model, version)?;
    let tensors = |list: &[(String, crate::tensor::DataType, Vec<i64>)]| -> Vec<Value> {
        list.iter()
            .map(|(n, d, s)| json!({"name": n, "datatype": d.as_str(), "shape": s}))
            .collect()
    };
    Ok(Json(json!({
        "name": m.name,
        "versions": m.versions,
        "platform": m.platform,
        "inputs": tensors(&m.inputs),
        "outputs": tensors(&m.outputs),
    })))
}

/// Triton's model configuration, as the JSON form of its protobuf (what perf_analyzer reads).
pub fn config_json(mv: &Arc<ModelVersion>) -> Value {
    let tensor = |t: &TensorSpec| json!({"name": t.name, "data_type": t.dtype.config_name(), "dims": t.dims});
    let cfg = &mv.config;
    let mut v = json!({
        "name": mv.name,
        "platform": cfg.backend.platform(),
        "backend": cfg.backend.as_str(),
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": mv.signature.max_batch_size,
        "input": mv.signature.inputs.iter().map(tensor).collect::<Vec<_>>(),
        "output": mv.signature.outputs.iter().map(|t| {
            let mut o = tensor(t);
            // Not in Triton's schema (it names a label file): a classifier's labels, inline.
            if let Some(labels) = mv.signature.output_labels.get(&t.name) {
                o["labels"] = json!(labels);
            }
            o
        }).collect::<Vec<_>>(),
        "instance_group": [{"name": mv.name, "kind": cfg.device.instance_kind(), "count": cfg.instance_count,
                            "gpus": cfg.device.gpu().into_iter().collect::<Vec<_>>()}],
        "model_transaction_policy": {"decoupled": false},
        "parameters": {"execution_provider": {"string_value": cfg.execution_provider()}},
    });
    if !mv.note.is_empty() {
        v["parameters"]["load_notes"] = json!({"string_value": mv.note});
    }
    if let Some(b) = &cfg.dynamic_batching {
        v["dynamic_batching"] = json!({
            "preferred_batch_size": b.preferred_batch_sizes,
            "max_queue_delay_microseconds": b.max_queue_delay.as_micros() as u64,
            "default_queue_policy": {"max_queue_size": cfg.queue.max_queue_size,
                "default_timeout_microseconds": cfg.queue.default_timeout.map_or(0, |t| t.as_micros() as u64)},
        });
    }
    v
}

/// Triton's statistics extension JSON (`ModelStatisticsResponse` in its JSON form).
pub fn stats_json(stats: Vec<VersionStatistics>) -> Json<Value> {
    let d = |(count, ns): (u64, u64)| json!({"count": count, "ns": ns});
    let list: Vec<Value> = stats
        .into_iter()
        .map(|s| {
            let batch_stats: Vec<Value> = s
                .batch_stats
                .iter()
                .map(|(size, b)| {
                    json!({
                        "batch_size": size,
                        "compute_input": d((b.count, b.input_ns)),
                        "compute_infer": d((b.count, b.infer_ns)),
                        "compute_output": d((b.count, b.output_ns)),
                    })
                })
                .collect();
            json!({
                "name": s.name,
                "version": s.version,
                "last_inference": s.last_inference_ms,
                "inference_count": s.inference_count,
                "execution_count": s.execution_count,
                "inference_stats": {
                    "success": d(s.success),
                    "fail": d(s.fail),
                    "queue": d(s.queue),
                    "compute_input": d(s.compute_input),
                    "compute_infer": d(s.compute_infer),
                    "compute_output": d(s.compute_output),
                    "cache_hit": d((0, 0)),
                    "cache_miss": d((0, 0)),
                },
                "response_stats": {},
                "batch_stats": batch_stats,
                "memory_usage": [],
            })
        })
        .collect();
    Json(json!({ "model_stats": list }))
}
