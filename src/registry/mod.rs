//! The table of models and their versions, swapped atomically: readers take a snapshot without a
//! lock, writers publish a new table. A version is in the table as `Ready` only after warm-up.

pub mod loader;
pub mod manager;
pub mod reconcile;
pub mod repository;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::batching::Batcher;
use crate::config::ModelConfig;
use crate::metrics::VersionStats;
use crate::routing::admission::Admission;
use crate::routing::traffic::{self, RouteReason, TrafficPolicy};
use crate::routing::window::WindowStats;
use crate::tensor::DataType;

/// A tensor of the served signature; `dims` excludes the batch dimension when the model batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DataType,
    pub dims: Vec<i64>,
}

/// What clients must send and will get back, in the graph's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub max_batch_size: usize,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
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
    pub config: ModelConfig,
    pub signature: Signature,
    pub batcher: Batcher,
    pub stats: Arc<VersionStats>,
    /// Requests in flight on this version, bounded by `max_concurrent_requests`.
    pub admission: Admission,
    /// Counters a rollout reads over a step's window.
    pub window: Arc<WindowStats>,
    pub load_time: Duration,
    /// Size and modification time of the model file when loaded: a change means reload.
    pub file_fingerprint: Option<(u64, std::time::SystemTime)>,
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

    /// The version for a request that names none, by the traffic policy: sticky when a routing
    /// key is given, weighted random otherwise. Weighted versions that are not ready are
    /// skipped, so their share goes to the other weighted versions in proportion; with none of
    /// them ready, the highest ready version serves. Requests never fail for a policy.
    pub fn route(&self, key: Option<&[u8]>) -> Option<(&Arc<ModelVersion>, RouteReason)> {
        if let Some(policy) = self.traffic.as_deref().filter(|p| !p.weights.is_empty()) {
            let candidates = policy
                .weights
                .iter()
                .filter(|(v, w)| **w > 0 && self.ready(**v).is_some())
                .map(|(v, w)| (*v, *w));
            if let Some(mv) = traffic::pick(candidates, key).and_then(|v| self.ready(v)) {
                let reason = if key.is_some() {
                    RouteReason::Sticky
                } else {
                    RouteReason::Weighted
                };
                return Some((mv, reason));
            }
        }
        self.default_version().map(|mv| (mv, RouteReason::Default))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batching::{BatchPolicy, BatcherConfig};
    use crate::metrics::Metrics;

    /// A ready version with no instances: enough to be routed to, never computed on.
    fn ready(version: u64, metrics: &Metrics) -> VersionState {
        let batcher = Batcher::start(
            BatcherConfig {
                model: "m".into(),
                version: version.to_string(),
                policy: BatchPolicy {
                    max_rows: 0,
                    combine: false,
                    preferred: Vec::new(),
                    max_delay: Duration::ZERO,
                },
                max_queue_size: 1,
            },
            Vec::new(),
            Arc::default(),
            metrics,
        )
        .unwrap();
        VersionState::Ready(Arc::new(ModelVersion {
            name: "m".into(),
            version,
            version_label: version.to_string(),
            config: ModelConfig::parse("", "m").unwrap(),
            signature: Signature {
                max_batch_size: 0,
                inputs: Vec::new(),
                outputs: Vec::new(),
            },
            batcher,
            stats: Arc::default(),
            admission: crate::routing::admission::Admission::new(0, None),
            window: Arc::default(),
            load_time: Duration::ZERO,
            file_fingerprint: None,
        }))
    }

    fn entry(versions: Vec<(u64, VersionState)>, weights: &[(u64, u32)]) -> ModelEntry {
        ModelEntry {
            name: "m".into(),
            versions: versions.into_iter().collect(),
            error: None,
            last_failure: None,
            traffic: (!weights.is_empty()).then(|| {
                Arc::new(TrafficPolicy {
                    weights: weights.iter().copied().collect(),
                    shadow: None,
                })
            }),
            file_traffic: None,
        }
    }

    fn routed(e: &ModelEntry, key: Option<&[u8]>) -> (u64, RouteReason) {
        let (mv, reason) = e.route(key).unwrap();
        (mv.version, reason)
    }

    #[test]
    fn without_a_policy_the_highest_ready_version_serves() {
        let m = Metrics::new().unwrap();
        let e = entry(vec![(1, ready(1, &m)), (2, ready(2, &m))], &[]);
        assert_eq!(routed(&e, None), (2, RouteReason::Default));
        assert_eq!(routed(&e, Some(b"k")), (2, RouteReason::Default));
    }

    #[test]
    fn a_weighted_version_that_is_not_ready_hands_its_share_to_the_others() {
        let m = Metrics::new().unwrap();
        // Version 2 holds 90% of the weight but is loading: version 1 takes everything.
        let e = entry(
            vec![
                (1, ready(1, &m)),
                (2, VersionState::Loading),
                (3, ready(3, &m)),
            ],
            &[(1, 10), (2, 90)],
        );
        for i in 0..200 {
            assert_eq!(routed(&e, None), (1, RouteReason::Weighted));
            let key = format!("k{i}");
            assert_eq!(routed(&e, Some(key.as_bytes())), (1, RouteReason::Sticky));
        }
        // No weighted version ready: the highest ready one serves; requests never fail.
        let e = entry(
            vec![
                (1, ready(1, &m)),
                (2, VersionState::Unavailable("x".into())),
            ],
            &[(2, 100)],
        );
        assert_eq!(routed(&e, None), (1, RouteReason::Default));
        let e = entry(vec![(1, VersionState::Loading)], &[(1, 100)]);
        assert!(e.route(None).is_none());
    }
}
