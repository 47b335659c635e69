//! Turns a version directory into a routable `ModelVersion`: build the backend on a blocking
//! thread, reconcile the graph with the config, warm every instance up at its batch sizes, start
//! the batcher. Any failure is returned and nothing is published.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::onnx_file::{self, OnnxFileError};
use super::open::{read_inside, ReadError};
use super::reconcile::{check_outputs, reconcile, OutputMismatch, SignatureError};
use super::{ModelVersion, Signature};
use crate::backend::{self, Backend, BackendError, LoadOptions};
use crate::batching::{BatchPolicy, Batcher, BatcherConfig};
use crate::config::ModelConfig;
use crate::metrics::{Metrics, VersionStats};
use crate::policy::admission::Admission;
use crate::tensor::Tensor;

/// Why a version could not be loaded; the manager reports it (index, log, control answer).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    File(#[from] ReadError),
    #[error(transparent)]
    OnnxFile(#[from] OnnxFileError),
    #[error("loader thread failed: {0}")]
    Thread(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("warm-up at batch size {rows} failed: {source}")]
    Warmup { rows: usize, source: BackendError },
    #[error("warm-up at batch size {rows}: {source}")]
    WarmupOutputs { rows: usize, source: OutputMismatch },
    #[error("cannot start instance threads: {0}")]
    Threads(#[source] std::io::Error),
}

/// Loads `file` as version `version` of model `name`; `file` must resolve inside `root` (the
/// canonical repository root). Blocking work runs off the async runtime.
pub async fn load_version(
    name: &str,
    version: u64,
    root: &Path,
    file: &Path,
    config: &ModelConfig,
    metrics: Arc<Metrics>,
) -> Result<Arc<ModelVersion>, LoadError> {
    let start = Instant::now();
    let version_label = version.to_string();
    // Held before any series of this version is created, dropped with the version.
    let series = metrics.hold_version(name, &version_label);
    let (signature, instances, file_fingerprint) = {
        let (root, file, config) = (root.to_path_buf(), file.to_path_buf(), config.clone());
        tokio::task::spawn_blocking(move || {
            // What the backend builds from is the bytes of the file checked at open time.
            let model = read_inside(&root, &file)?;
            let model_file = onnx_file::prepare(&root, &file, model.bytes)?;
            let (mut signature, instances) = build(model_file.bytes, &file, &config)?;
            signature.output_labels = model_file.labels;
            Ok::<_, LoadError>((signature, instances, model.fingerprint))
        })
        .await??
    };
    let stats = Arc::new(VersionStats::default());
    let batcher = Batcher::start(
        BatcherConfig {
            model: name.to_owned(),
            version: version_label.clone(),
            policy: BatchPolicy {
                max_rows: config.max_batch_size,
                combine: config.dynamic_batching.is_some(),
                preferred: config
                    .dynamic_batching
                    .as_ref()
                    .map(|b| b.preferred_batch_sizes.clone())
                    .unwrap_or_default(),
                max_delay: config
                    .dynamic_batching
                    .as_ref()
                    .map(|b| b.max_queue_delay)
                    .unwrap_or_default(),
            },
            max_queue_size: config.queue.max_queue_size,
        },
        instances,
        stats.clone(),
        &metrics,
    )
    .map_err(LoadError::Threads)?;
    let admission = Admission::new(
        config.queue.max_concurrent_requests,
        Some(
            metrics
                .in_flight
                .with_label_values(&[name, version_label.as_str()]),
        ),
    );
    Ok(Arc::new(ModelVersion {
        name: name.to_owned(),
        version,
        version_label,
        config: config.clone(),
        signature,
        batcher,
        stats,
        admission,
        window: Default::default(),
        load_time: start.elapsed(),
        file_fingerprint,
        series,
    }))
}

fn build(
    model: Bytes,
    file: &Path,
    config: &ModelConfig,
) -> Result<(Signature, Vec<Box<dyn Backend>>), LoadError> {
    let warmup = warmup_sizes(config);
    let options = LoadOptions {
        max_batch_size: config.max_batch_size,
        instance_count: config.instance_count,
        row_invariant: config
            .dynamic_batching
            .as_ref()
            .is_some_and(|b| b.row_invariant),
        device: config.device,
        onnxruntime: config.onnxruntime,
    };
    let mut loaded = backend::load_bytes(config.backend, model, file, &options)?;
    let batched = config.max_batch_size > 0;
    let signature = Signature {
        max_batch_size: config.max_batch_size,
        inputs: reconcile("input", &loaded.signature.inputs, &config.inputs, batched)?,
        outputs: reconcile(
            "output",
            &loaded.signature.outputs,
            &config.outputs,
            batched,
        )?,
        output_labels: Default::default(),
    };
    for instance in &mut loaded.instances {
        for &rows in &warmup {
            let Some(inputs) = zero_inputs(&signature, rows) else {
                break;
            };
            let outputs = instance
                .infer(&inputs)
                .map_err(|source| LoadError::Warmup { rows, source })?;
            check_outputs(&signature, &outputs, rows)
                .map_err(|source| LoadError::WarmupOutputs { rows, source })?;
        }
    }
    Ok((signature, loaded.instances))
}

/// Batch sizes prepared before a version serves: 1, the preferred sizes and the maximum.
fn warmup_sizes(config: &ModelConfig) -> Vec<usize> {
    let mut sizes = vec![1];
    if let Some(b) = &config.dynamic_batching {
        sizes.extend(&b.preferred_batch_sizes);
    }
    sizes.push(config.max_batch_size.max(1));
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// Zero-filled inputs of `rows` rows (variable dims as 1); `None` when an input is BYTES.
fn zero_inputs(signature: &Signature, rows: usize) -> Option<Vec<Tensor>> {
    signature
        .inputs
        .iter()
        .map(|spec| {
            let size = spec.dtype.size()?;
            let mut shape: Vec<usize> = Vec::with_capacity(spec.dims.len() + 1);
            if signature.max_batch_size > 0 {
                shape.push(rows);
            }
            shape.extend(
                spec.dims
                    .iter()
                    .map(|&d| if d < 0 { 1 } else { d as usize }),
            );
            let count: usize = shape.iter().product();
            Tensor::new(spec.dtype, shape, Bytes::from(vec![0u8; count * size])).ok()
        })
        .collect()
}
