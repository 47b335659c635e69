//! The table of models and their versions, swapped atomically: readers take a snapshot without a
//! lock, writers publish a new table. A version is in the table as `Ready` only after warm-up.
//! The registry holds data and answers lookups; which version serves a request is decided in
//! `routing::route`, so the choice lives in one place above the data it reads.

pub mod add;
mod engine;
pub mod loader;
pub mod manager;
pub mod onnx_file;
mod onnx_ml;
pub mod open;
pub mod profile;
pub mod reconcile;
pub mod repository;
pub mod source;
pub mod upload;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::batching::Batcher;
use crate::config::ModelConfig;
use crate::metrics::{VersionSeries, VersionStats};
use crate::policy::admission::Admission;
use crate::policy::traffic::TrafficPolicy;
use crate::policy::window::WindowStats;
use crate::tensor::DataType;

/// A tensor of the served signature; `dims` excludes the batch dimension when the model batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DataType,
    pub dims: Vec<i64>,
}

impl TensorSpec {
    /// The tensors as the drift monitor lays out its features.
    pub fn drift_slots(specs: &[TensorSpec]) -> Vec<crate::drift::Slot> {
        specs
            .iter()
            .map(|t| crate::drift::Slot {
                name: t.name.clone(),
                dtype: t.dtype,
                dims: t.dims.clone(),
            })
            .collect()
    }
}

/// What clients must send and will get back, in the graph's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub max_batch_size: usize,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// Class labels of outputs that were classifier ZipMaps (`registry::onnx_file`), by name.
    pub output_labels: BTreeMap<String, Vec<String>>,
}

impl Signature {
    /// The shape clients see in metadata: a leading -1 when the model batches.
    pub fn public_shape(&self, spec: &TensorSpec) -> Vec<i64> {
        let mut shape = Vec::with_capacity(spec.dims.len() + 1);
        if self.max_batch_size > 0 {
            shape.push(-1);
        }
        shape.extend_from_slice(&spec.dims);
        shape
    }
}

/// One loaded, warmed-up version: routable.
pub struct ModelVersion {
    pub name: String,
    pub version: u64,
    pub version_label: String,
    /// The config it serves under: the engine `auto` chose, batching derived from the graph.
    pub config: ModelConfig,
    /// The config as the repository gave it: what a reload compares against.
    pub source: ModelConfig,
    /// Why its engine, what was derived, warm-up warnings (index and config endpoint).
    pub note: String,
    pub signature: Signature,
    pub batcher: Batcher,
    pub stats: Arc<VersionStats>,
    /// Requests in flight on this version, bounded by `max_concurrent_requests`.
    pub admission: Admission,
    /// Counters a rollout reads over a step's window.
    pub window: Arc<WindowStats>,
    /// Drift monitoring of `[drift]`, when on.
    pub drift: Option<Arc<crate::drift::Monitor>>,
    pub load_time: Duration,
    /// Size and modification time of the model file when loaded: a change means reload.
    pub file_fingerprint: Option<(u64, std::time::SystemTime)>,
    /// Its metric series, removed when the last instance of this version number goes. Last, so
    /// it drops after the batcher.
    pub series: VersionSeries,
}

#[derive(Clone)]
pub enum VersionState {
    Loading,
    Ready(Arc<ModelVersion>),
    Unavailable(String),
}

impl VersionState {
    pub fn as_str(&self) -> &'static str {
        match self {
            VersionState::Loading => "LOADING",
            VersionState::Ready(_) => "READY",
            VersionState::Unavailable(_) => "UNAVAILABLE",
        }
    }
}

/// A model of the repository: its versions, or why it has none.
#[derive(Clone)]
pub struct ModelEntry {
    pub name: String,
    pub versions: BTreeMap<u64, VersionState>,
    /// A model-level failure (unreadable config, no versions) while nothing serves.
    pub error: Option<String>,
    /// Why the last load or reload failed while other versions kept serving.
    pub last_failure: Option<String>,
    /// How requests that name no version are split; `None`: the highest ready version serves.
    pub traffic: Option<Arc<TrafficPolicy>>,
    /// The `[traffic]` of `config.toml` last applied: a reload applies the file's policy again
    /// only when it changed, so a policy set through the admin API survives reloads.
    pub file_traffic: Option<TrafficPolicy>,
    /// The `[rollout]` of `config.toml` last read, and when its source declared it.
    pub file_rollout: Option<DeclaredRollout>,
}

/// A rollout a model's config declares, with the wall-clock time its schedule starts from.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredRollout {
    pub section: crate::config::RolloutSection,
    pub declared_at: std::time::SystemTime,
}

impl ModelEntry {
    /// The version served when a request names none: the highest ready one.
    pub fn default_version(&self) -> Option<&Arc<ModelVersion>> {
        self.versions.values().rev().find_map(|s| match s {
            VersionState::Ready(v) => Some(v),
            _ => None,
        })
    }

    /// A ready version by number.
    pub fn ready(&self, version: u64) -> Option<&Arc<ModelVersion>> {
        match self.versions.get(&version) {
            Some(VersionState::Ready(mv)) => Some(mv),
            _ => None,
        }
    }

    /// Ready version numbers, ascending.
    pub fn ready_versions(&self) -> Vec<u64> {
        self.versions
            .iter()
            .filter(|(_, s)| matches!(s, VersionState::Ready(_)))
            .map(|(v, _)| *v)
            .collect()
    }

    /// It serves: some version is ready. A version loading or failing beside a ready one does
    /// not make the model unready (a reload never takes readiness away).
    pub fn is_ready(&self) -> bool {
        self.error.is_none() && self.default_version().is_some()
    }

    /// Why the model is not ready, for logs and the API.
    pub fn reason(&self) -> Option<String> {
        if let Some(e) = &self.error {
            return Some(e.clone());
        }
        self.versions.iter().find_map(|(v, s)| match s {
            VersionState::Loading => Some(format!("version {v} is loading")),
            VersionState::Unavailable(r) => Some(format!("version {v}: {r}")),
            VersionState::Ready(_) => None,
        })
    }
}

#[derive(Clone, Default)]
pub struct ModelTable {
    pub models: BTreeMap<String, ModelEntry>,
}

pub struct Registry {
    table: ArcSwap<ModelTable>,
    /// The start-up load has published every model it was asked for. Until then the table may
    /// be empty, and an empty table must not read as "all ready".
    initialized: std::sync::atomic::AtomicBool,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            table: ArcSwap::from_pointee(ModelTable::default()),
            initialized: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Registry {
    pub fn snapshot(&self) -> Arc<ModelTable> {
        self.table.load_full()
    }

    /// Applies `change` to the current table and swaps the result in atomically (retrying if
    /// another writer published in between).
    pub fn publish(&self, change: impl Fn(&mut ModelTable)) {
        self.table.rcu(|current| {
            let mut next = ModelTable::clone(current);
            change(&mut next);
            next
        });
    }

    /// Marks the start-up load done: from now on readiness follows the table.
    pub fn mark_initialized(&self) {
        self.initialized
            .store(true, std::sync::atomic::Ordering::Release);
    }

    fn initialized(&self) -> bool {
        self.initialized.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Start-up is done and every model is ready (Triton's strict readiness).
    pub fn all_ready(&self) -> bool {
        self.initialized() && self.snapshot().models.values().all(ModelEntry::is_ready)
    }

    /// Start-up is done and no model is still loading (non-strict readiness).
    pub fn settled(&self) -> bool {
        self.initialized()
            && self.snapshot().models.values().all(|m| {
                !m.versions
                    .values()
                    .any(|s| matches!(s, VersionState::Loading))
            })
    }
}
