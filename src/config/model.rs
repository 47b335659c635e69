//! A model's `config.toml`: the engine, declared tensors, batching and queue settings, read and
//! validated into a `ModelConfig`. The version policy, `[traffic]` and ONNX Runtime keys are
//! checked in their own files.
//! Long because the raw and validated forms of every key live side by side here.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::onnxruntime::onnxruntime_keys;
use super::traffic::RawTraffic;
use super::version_policy::RawVersionPolicy;
use super::{ConfigError, Device, GraphOptimizationLevel, OnnxRuntimeOptions, VersionPolicy};
use crate::policy::traffic::TrafficPolicy;
use crate::tensor::DataType;

/// Which engine runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// tract when it builds and runs the model, else ONNX Runtime: decided when it loads.
    #[default]
    Auto,
    Tract,
    /// ONNX Runtime, loaded from a shared library at run time (CPU or CUDA).
    OnnxRuntime,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Tract => "tract",
            BackendKind::OnnxRuntime => "onnxruntime",
        }
    }

    /// The KServe/Triton `platform` string reported in metadata and config.
    pub fn platform(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Tract => "tract_onnx",
            BackendKind::OnnxRuntime => "onnxruntime_onnx",
        }
    }
}

/// One declared input or output, as in Triton's config: `dims` excludes the batch dimension
/// when the model batches, and -1 marks a variable dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorConfig {
    pub name: String,
    pub dtype: DataType,
    pub dims: Vec<i64>,
}

/// `[dynamic_batching]`: present means queued requests may be combined into one backend call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchingConfig {
    /// Batch sizes (rows) the batcher prefers to form, ascending; empty: up to `max_batch_size`.
    pub preferred_batch_sizes: Vec<usize>,
    /// The most a request waits for companions; zero takes whatever is queued when an instance
    /// frees up.
    pub max_queue_delay: Duration,
    /// A row's result never depends on its batch companions, bit for bit (default). The engines
    /// compute one row with another kernel than several, so a lone row then runs padded to two;
    /// `false` saves that padding (a single-row request's latency) and lets results differ
    /// within float rounding between a row computed alone and in a batch.
    pub row_invariant: bool,
}

/// What the keys of `[dynamic_batching]` left out mean (read by the TOML mapping below).
impl Default for BatchingConfig {
    fn default() -> Self {
        BatchingConfig {
            preferred_batch_sizes: Vec::new(),
            max_queue_delay: Duration::ZERO,
            row_invariant: true,
        }
    }
}

/// Every version's queue, batching or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePolicy {
    /// Requests waiting beyond this are refused at once (429 / RESOURCE_EXHAUSTED).
    pub max_queue_size: usize,
    /// Deadline for requests that bring none of their own.
    pub default_timeout: Option<Duration>,
    /// Requests in flight (queued or computing) beyond which new ones are refused at once
    /// (429 / RESOURCE_EXHAUSTED); 0: no limit besides the queue.
    pub max_concurrent_requests: usize,
}

impl Default for QueuePolicy {
    fn default() -> Self {
        QueuePolicy {
            max_queue_size: 1024,
            default_timeout: None,
            max_concurrent_requests: 0,
        }
    }
}

/// A model's `config.toml`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub backend: BackendKind,
    /// 0: the model does not batch and shapes are taken as given.
    pub max_batch_size: usize,
    /// Neither `max_batch_size` nor tensors declared: the loader derives batching from the graph.
    pub derive_batching: bool,
    /// `[[warmup]]`: declared warm-up shapes (Triton's `model_warmup`).
    pub warmup: Vec<super::warmup::WarmupConfig>,
    /// Declared tensors; empty means "read them from the graph".
    pub inputs: Vec<TensorConfig>,
    pub outputs: Vec<TensorConfig>,
    pub instance_count: usize,
    pub dynamic_batching: Option<BatchingConfig>,
    pub queue: QueuePolicy,
    pub version_policy: VersionPolicy,
    /// Where the model runs; only `onnxruntime` offers CUDA.
    pub device: Device,
    /// Session options of `backend = "onnxruntime"` (defaults otherwise).
    pub onnxruntime: OnnxRuntimeOptions,
    /// `[traffic]`: weights and shadow applied when the model loads (see `policy::traffic`).
    /// Not part of what a version is built from: changing it never reloads a version.
    pub traffic: Option<TrafficPolicy>,
    /// `[rollout]`: a rollout the source declares (see `config::traffic::RolloutSection`).
    pub rollout: Option<super::traffic::RolloutSection>,
    /// `[[output]] label_filename`: output name → a file name inside the model directory.
    pub label_files: std::collections::BTreeMap<String, String>,
    /// `[drift]`: monitoring against the version's reference (`super::drift`); off when absent.
    pub drift: Option<super::drift::DriftConfig>,
}

impl ModelConfig {
    /// Equal in everything a loaded version is built from (all but `[traffic]`).
    pub fn same_versions_as(&self, other: &ModelConfig) -> bool {
        let strip = |c: &ModelConfig| ModelConfig {
            traffic: None,
            rollout: None,
            ..c.clone()
        };
        strip(self) == strip(other)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatchingConfig {
    #[serde(default)]
    preferred_batch_sizes: Vec<usize>,
    #[serde(default)]
    max_queue_delay_us: u64,
    max_queue_size: Option<u64>,
    default_timeout_us: Option<u64>,
    #[serde(default = "default_row_invariant")]
    row_invariant: bool,
}

fn default_row_invariant() -> bool {
    BatchingConfig::default().row_invariant
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTensorConfig {
    name: String,
    #[serde(alias = "data_type")]
    datatype: String,
    #[serde(default)]
    dims: Vec<i64>,
    /// An output's class labels, one a line, in the model directory (Triton's label_filename).
    label_filename: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModelConfig {
    name: Option<String>,
    #[serde(default)]
    pub(super) backend: BackendKind,
    max_batch_size: Option<usize>,
    #[serde(default)]
    warmup: Vec<super::warmup::RawWarmup>,
    #[serde(default, alias = "inputs")]
    input: Vec<RawTensorConfig>,
    #[serde(default, alias = "outputs")]
    output: Vec<RawTensorConfig>,
    #[serde(default = "one")]
    instance_count: usize,
    dynamic_batching: Option<RawBatchingConfig>,
    max_queue_size: Option<u64>,
    default_timeout_us: Option<u64>,
    #[serde(default)]
    max_concurrent_requests: usize,
    version_policy: Option<RawVersionPolicy>,
    pub(super) device: Option<String>,
    pub(super) intra_op_threads: Option<usize>,
    pub(super) inter_op_threads: Option<usize>,
    pub(super) graph_optimization_level: Option<GraphOptimizationLevel>,
    traffic: Option<RawTraffic>,
    drift: Option<super::drift::RawDrift>,
    rollout: Option<super::traffic::RolloutSection>,
    /// Free-form annotations, ignored by the server.
    #[serde(default)]
    #[allow(dead_code)]
    parameters: HashMap<String, String>,
}

fn one() -> usize {
    1
}

/// Largest batch we accept in a model config; bigger is almost surely a typo.
const MAX_BATCH_LIMIT: usize = 1 << 16;

impl ModelConfig {
    /// Reads and validates `<model dir>/config.toml`; `name` is the directory's name.
    pub fn from_file(path: &Path, name: &str) -> Result<ModelConfig, ConfigError> {
        let err = |message: String| ConfigError::Model {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        ModelConfig::parse(&text, name).map_err(err)
    }

    pub fn parse(text: &str, name: &str) -> Result<ModelConfig, String> {
        let raw: RawModelConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        if let Some(n) = &raw.name {
            if n != name {
                return Err(format!(
                    "name {n:?} does not match the model directory {name:?}"
                ));
            }
        }
        let derive_batching =
            raw.max_batch_size.is_none() && raw.input.is_empty() && raw.output.is_empty();
        let max_batch_size = raw.max_batch_size.unwrap_or(0);
        if max_batch_size > MAX_BATCH_LIMIT {
            return Err(format!(
                "max_batch_size {max_batch_size} is above the limit {MAX_BATCH_LIMIT}"
            ));
        }
        if raw.instance_count == 0 || raw.instance_count > 64 {
            return Err(format!(
                "instance_count must be 1..=64, got {}",
                raw.instance_count
            ));
        }
        // Triton keeps the queue knobs under dynamic batching; every model of ours has a queue,
        // so the top level takes them too, but not both places at once.
        let batching = raw.dynamic_batching.as_ref();
        let once = |top: Option<u64>, nested: Option<u64>, key: &str| match (top, nested) {
            (Some(_), Some(_)) => Err(format!(
                "{key} is set both at the top level and in [dynamic_batching]"
            )),
            (a, b) => Ok(a.or(b)),
        };
        let max_queue_size = once(
            raw.max_queue_size,
            batching.and_then(|b| b.max_queue_size),
            "max_queue_size",
        )?
        .map_or(QueuePolicy::default().max_queue_size, |v| {
            usize::try_from(v).unwrap_or(usize::MAX)
        });
        if max_queue_size == 0 {
            return Err("max_queue_size must be positive".into());
        }
        let default_timeout = once(
            raw.default_timeout_us,
            batching.and_then(|b| b.default_timeout_us),
            "default_timeout_us",
        )?
        .filter(|&us| us > 0)
        .map(Duration::from_micros);
        if let Some(b) = batching {
            if max_batch_size == 0 {
                return Err("dynamic_batching needs max_batch_size > 0".into());
            }
            if let Some(p) = b
                .preferred_batch_sizes
                .iter()
                .find(|&&p| p == 0 || p > max_batch_size)
            {
                return Err(format!(
                    "preferred batch size {p} is outside 1..={max_batch_size}"
                ));
            }
        }
        let tensors =
            |list: Vec<RawTensorConfig>, what: &str| -> Result<Vec<TensorConfig>, String> {
                let mut out: Vec<TensorConfig> = Vec::with_capacity(list.len());
                for t in list {
                    let dtype = DataType::parse(&t.datatype).ok_or_else(|| {
                        format!("{what} {:?}: unknown datatype {:?}", t.name, t.datatype)
                    })?;
                    if let Some(d) = t.dims.iter().find(|&&d| d < -1 || d == 0) {
                        return Err(format!(
                            "{what} {:?}: dimension {d} must be positive or -1",
                            t.name
                        ));
                    }
                    if out.iter().any(|o| o.name == t.name) {
                        return Err(format!("{what} {:?} is declared twice", t.name));
                    }
                    out.push(TensorConfig {
                        name: t.name,
                        dtype,
                        dims: t.dims,
                    });
                }
                Ok(out)
            };
        let (device, onnxruntime) = onnxruntime_keys(&raw)?;
        let traffic = raw.traffic.map(RawTraffic::validate).transpose()?;
        let rollout = raw
            .rollout
            .map(super::traffic::RolloutSection::validate)
            .transpose()?;
        let mut label_files = std::collections::BTreeMap::new();
        for t in &raw.output {
            if let Some(f) = &t.label_filename {
                // One plain name or relative path that cannot climb out of the model directory.
                let p = Path::new(f);
                if f.is_empty()
                    || !p
                        .components()
                        .all(|c| matches!(c, std::path::Component::Normal(_)))
                {
                    return Err(format!("output {:?}: label_filename {f:?} must be a relative path inside the model directory", t.name));
                }
                label_files.insert(t.name.clone(), f.clone());
            }
        }
        Ok(ModelConfig {
            backend: raw.backend,
            max_batch_size,
            derive_batching,
            warmup: super::warmup::validate(raw.warmup, max_batch_size)?,
            inputs: tensors(raw.input, "input")?,
            outputs: tensors(raw.output, "output")?,
            label_files,
            instance_count: raw.instance_count,
            dynamic_batching: raw.dynamic_batching.map(|b| {
                let mut preferred = b.preferred_batch_sizes;
                preferred.sort_unstable();
                preferred.dedup();
                BatchingConfig {
                    preferred_batch_sizes: preferred,
                    max_queue_delay: Duration::from_micros(b.max_queue_delay_us),
                    row_invariant: b.row_invariant,
                }
            }),
            queue: QueuePolicy {
                max_queue_size,
                default_timeout,
                max_concurrent_requests: raw.max_concurrent_requests,
            },
            version_policy: raw
                .version_policy
                .map_or(Ok(VersionPolicy::default()), RawVersionPolicy::validate)?,
            device,
            onnxruntime,
            traffic,
            drift: raw
                .drift
                .map(super::drift::RawDrift::validate)
                .transpose()?,
            rollout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_config_parses_triton_like_fields() {
        let cfg = ModelConfig::parse(
            r#"
            backend = "tract"
            max_batch_size = 8
            [[input]]
            name = "x"
            datatype = "FP32"
            dims = [4]
            [[output]]
            name = "y"
            datatype = "TYPE_INT64"
            "#,
            "m",
        )
        .unwrap();
        assert_eq!(cfg.max_batch_size, 8);
        assert_eq!(
            cfg.inputs[0],
            TensorConfig {
                name: "x".into(),
                dtype: DataType::F32,
                dims: vec![4]
            }
        );
        assert_eq!(cfg.outputs[0].dtype, DataType::I64);
        assert_eq!(cfg.instance_count, 1);
    }

    #[test]
    fn dynamic_batching_takes_triton_knobs_once() {
        let text = "max_batch_size = 16\n[dynamic_batching]\npreferred_batch_sizes = [8, 4]\n\
                    max_queue_delay_us = 500\nmax_queue_size = 7\ndefault_timeout_us = 2000\n";
        let cfg = ModelConfig::parse(text, "m").unwrap();
        let b = cfg.dynamic_batching.unwrap();
        assert_eq!(b.preferred_batch_sizes, vec![4, 8]);
        assert_eq!(b.max_queue_delay, Duration::from_micros(500));
        assert!(b.row_invariant, "row invariance is on unless turned off");
        assert_eq!(cfg.queue.max_queue_size, 7);
        assert_eq!(cfg.queue.default_timeout, Some(Duration::from_millis(2)));
        let twice =
            "max_batch_size = 4\nmax_queue_size = 3\n[dynamic_batching]\nmax_queue_size = 3";
        assert!(ModelConfig::parse(twice, "m").unwrap_err().contains("both"));
        let big = "max_batch_size = 4\n[dynamic_batching]\npreferred_batch_sizes = [5]";
        assert!(ModelConfig::parse(big, "m")
            .unwrap_err()
            .contains("outside"));
        assert_eq!(
            ModelConfig::parse("", "m").unwrap().queue,
            QueuePolicy::default()
        );
        let limited = ModelConfig::parse("max_concurrent_requests = 3", "m").unwrap();
        assert_eq!(limited.queue.max_concurrent_requests, 3);
    }

    #[test]
    fn model_config_rejects_unknown_fields_and_bad_dims() {
        assert!(ModelConfig::parse("max_batch = 3", "m")
            .unwrap_err()
            .contains("unknown field"));
        let err =
            ModelConfig::parse("[[input]]\nname='x'\ndatatype='FP32'\ndims=[0]", "m").unwrap_err();
        assert!(err.contains("dimension 0"), "{err}");
        let err = ModelConfig::parse("[[input]]\nname='x'\ndatatype='FP99'", "m").unwrap_err();
        assert!(err.contains("unknown datatype"), "{err}");
        let err = ModelConfig::parse("name = 'other'", "m").unwrap_err();
        assert!(err.contains("does not match"), "{err}");
    }
}
