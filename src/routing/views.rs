//! What the metadata and statistics endpoints of both transports report, read from the same
//! registry snapshot the requests use.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{InferError, Router};
use crate::metrics::BatchTimes;
use crate::registry::{ModelEntry, ModelVersion, VersionState};
use crate::tensor::DataType;

/// What the metadata endpoints of both transports report.
#[derive(Debug, Clone)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    /// (name, datatype, shape with -1 for variable dims and the batch dimension)
    pub inputs: Vec<(String, DataType, Vec<i64>)>,
    pub outputs: Vec<(String, DataType, Vec<i64>)>,
}

/// Cumulative statistics of one version (Triton's statistics extension), transport-free.
#[derive(Debug, Clone, Default)]
pub struct VersionStatistics {
    pub name: String,
    pub version: String,
    pub last_inference_ms: u64,
    pub inference_count: u64,
    pub execution_count: u64,
    /// (count, total nanoseconds) each.
    pub success: (u64, u64),
    pub fail: (u64, u64),
    pub queue: (u64, u64),
    pub compute_input: (u64, u64),
    pub compute_infer: (u64, u64),
    pub compute_output: (u64, u64),
    /// (batch size in rows, its executions), ascending.
    pub batch_stats: Vec<(usize, BatchTimes)>,
}

impl Router {
    pub fn metadata(
        &self,
        model: &str,
        version: Option<&str>,
    ) -> Result<ModelMetadata, InferError> {
        let entry = self.entry(model)?;
        let mv = self.version(model, version)?;
        let sig = &mv.signature;
        let list = |specs: &[crate::registry::TensorSpec]| {
            specs
                .iter()
                .map(|s| (s.name.clone(), s.dtype, sig.public_shape(s)))
                .collect()
        };
        Ok(ModelMetadata {
            name: mv.name.clone(),
            versions: entry
                .versions
                .iter()
                .filter(|(_, s)| matches!(s, VersionState::Ready(_)))
                .map(|(v, _)| v.to_string())
                .collect(),
            platform: mv.config.backend.platform().to_owned(),
            inputs: list(&sig.inputs),
            outputs: list(&sig.outputs),
        })
    }

    /// Statistics of every ready version, of one model's, or of one version.
    pub fn statistics(
        &self,
        model: Option<&str>,
        version: Option<&str>,
    ) -> Result<Vec<VersionStatistics>, InferError> {
        let versions: Vec<Arc<ModelVersion>> = match (model, version.filter(|v| !v.is_empty())) {
            (Some(m), Some(v)) => vec![self.version(m, Some(v))?],
            (Some(m), None) => ready_versions(&self.entry(m)?).collect(),
            (None, _) => self
                .registry
                .snapshot()
                .models
                .values()
                .flat_map(ready_versions)
                .collect(),
        };
        Ok(versions
            .iter()
            .map(|mv| {
                let s = &mv.stats;
                VersionStatistics {
                    name: mv.name.clone(),
                    version: mv.version_label.clone(),
                    last_inference_ms: s.last_inference_ms.load(Ordering::Relaxed),
                    inference_count: s.inference_count.load(Ordering::Relaxed),
                    execution_count: s.execution_count.load(Ordering::Relaxed),
                    success: s.success.get(),
                    fail: s.fail.get(),
                    queue: s.queue.get(),
                    compute_input: s.compute_input.get(),
                    compute_infer: s.compute_infer.get(),
                    compute_output: s.compute_output.get(),
                    batch_stats: s.batch_stats(),
                }
            })
            .collect())
    }
}

impl Router {
    /// The drift report of a model's default version or of one version.
    pub fn drift(
        &self,
        model: &str,
        version: Option<&str>,
    ) -> Result<crate::drift::Report, InferError> {
        let mv = self.version(model, version)?;
        match &mv.drift {
            Some(m) => Ok(m.report()),
            None => Err(InferError::InvalidInput(format!(
                "drift monitoring is off for model '{model}' version {}: add a [drift] section to its config.toml",
                mv.version
            ))),
        }
    }
}

fn ready_versions(entry: &ModelEntry) -> impl Iterator<Item = Arc<ModelVersion>> + '_ {
    entry.versions.values().filter_map(|s| match s {
        VersionState::Ready(mv) => Some(mv.clone()),
        _ => None,
    })
}
