//! Turns a version directory into a routable `ModelVersion`: build the backend on a blocking
//! thread, reconcile the graph with the config, warm every instance up at its batch sizes, start
//! the batcher. Any failure is returned and nothing is published.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::engine::{build, Built};
use super::onnx_file::{self, OnnxFileError};
use super::open::{read_inside, ReadError};
use super::reconcile::SignatureError;
use super::ModelVersion;
use crate::backend::BackendError;
use crate::batching::{BatchPolicy, Batcher, BatcherConfig};
use crate::config::ModelConfig;
use crate::drift::{Monitor, Profile};
use crate::metrics::{Metrics, VersionStats};
use crate::policy::admission::Admission;

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
    #[error("declared warm-up {index} (batch size {rows}) failed: {reason}")]
    DeclaredWarmup {
        index: usize,
        rows: usize,
        reason: String,
    },
    #[error("no engine can run this model: tract: {tract}; onnxruntime: {onnxruntime}")]
    NoEngine { tract: String, onnxruntime: String },
    #[error("cannot start instance threads: {0}")]
    Threads(#[source] std::io::Error),
    #[error("drift monitoring: {0}")]
    Drift(String),
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
    let source = config;
    let (built, file_fingerprint, profile) = {
        let (root, file, config) = (root.to_path_buf(), file.to_path_buf(), config.clone());
        tokio::task::spawn_blocking(move || {
            // What the backend builds from is the bytes of the file checked at open time.
            let model = read_inside(&root, &file)?;
            let model_file = onnx_file::prepare(&root, &file, model.bytes)?;
            let mut built = build(model_file.bytes, &file, &config)?;
            built.signature.output_labels = model_file.labels;
            // A label file of the config wins over labels the graph carries.
            let model_dir = file.parent().and_then(Path::parent).unwrap_or(&root);
            for (output, name) in &config.label_files {
                let text = read_inside(&root, &model_dir.join(name))?.bytes;
                let labels = String::from_utf8_lossy(&text)
                    .lines()
                    .map(str::to_owned)
                    .collect();
                built.signature.output_labels.insert(output.clone(), labels);
            }
            // `[drift]`'s reference: profile.json beside the model file, when there is one.
            let profile = match &config.drift {
                Some(_) => read_profile(&root, &file.with_file_name(PROFILE_FILE))?,
                None => None,
            };
            Ok::<_, LoadError>((built, model.fingerprint, profile))
        })
        .await??
    };
    let Built {
        config,
        signature,
        instances,
        note,
    } = built;
    if !note.is_empty() {
        tracing::info!(model = %name, version, backend = config.backend.as_str(), "{note}");
    }
    let config = &config;
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
    let drift = match &config.drift {
        Some(d) => {
            let slots = super::TensorSpec::drift_slots;
            let (inputs, outputs) = (slots(&signature.inputs), slots(&signature.outputs));
            let monitor = Monitor::new(
                name,
                &version_label,
                d,
                profile,
                &inputs,
                &outputs,
                metrics.clone(),
            )
            .map_err(LoadError::Drift)?;
            let monitor = Arc::new(monitor);
            monitor.start();
            batcher.monitor_drift(monitor.clone());
            Some(monitor)
        }
        None => None,
    };
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
        source: source.clone(),
        note,
        signature,
        batcher,
        stats,
        admission,
        window: Default::default(),
        drift,
        load_time: start.elapsed(),
        file_fingerprint,
        series,
    }))
}

/// The reference profile's file name in a version directory.
pub const PROFILE_FILE: &str = "profile.json";

/// `profile.json` read inside the repository and validated; `None` when there is none.
fn read_profile(root: &Path, path: &Path) -> Result<Option<Profile>, LoadError> {
    match read_inside(root, path) {
        Ok(f) => Profile::parse(&f.bytes)
            .map(Some)
            .map_err(|e| LoadError::Drift(format!("{}: {e}", path.display()))),
        Err(ReadError::Missing(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
