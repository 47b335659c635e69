//! Which version serves a request: the one it names (pinned), else the model's traffic policy's
//! choice (sticky with a routing key, weighted otherwise), else the highest ready version; and,
//! for requests the policy routed, the shadow version to mirror to. The registry holds the data
//! (versions, policy); the decision is made here, in one place, for both transports.

use std::sync::Arc;

use super::{InferError, Router};
use crate::policy::traffic::{self, RouteReason};
use crate::registry::{ModelEntry, ModelVersion, VersionState};

/// Where one request goes: the serving version, why, and the version to mirror it to.
pub(super) struct Route {
    pub(super) version: Arc<ModelVersion>,
    pub(super) reason: RouteReason,
    pub(super) shadow: Option<Arc<ModelVersion>>,
}

impl Router {
    /// The version a request names, or the model's default; errors say which part is missing.
    pub fn version(
        &self,
        model: &str,
        version: Option<&str>,
    ) -> Result<Arc<ModelVersion>, InferError> {
        // Looked up in the snapshot, not cloned: this runs on every request.
        let table = self.registry.snapshot();
        let entry = table
            .models
            .get(model)
            .ok_or_else(|| InferError::ModelNotFound(model.to_owned()))?;
        let not_ready = |reason: String| InferError::NotReady {
            model: model.to_owned(),
            reason,
        };
        match version.filter(|v| !v.is_empty()) {
            None => entry.default_version().cloned().ok_or_else(|| {
                not_ready(
                    entry
                        .reason()
                        .unwrap_or_else(|| "no version is loaded".into()),
                )
            }),
            Some(v) => {
                let unknown = || InferError::VersionNotFound {
                    model: model.to_owned(),
                    version: v.to_owned(),
                };
                let number: u64 = v
                    .parse()
                    .map_err(|_| InferError::BadVersion(v.to_owned()))?;
                let version_not_ready = |reason: String| InferError::VersionNotReady {
                    model: model.to_owned(),
                    version: number.to_string(),
                    reason,
                };
                match entry.versions.get(&number) {
                    Some(VersionState::Ready(mv)) => Ok(mv.clone()),
                    Some(VersionState::Loading) => Err(version_not_ready("loading".into())),
                    Some(VersionState::Unavailable(r)) => Err(version_not_ready(r.clone())),
                    None => Err(unknown()),
                }
            }
        }
    }

    /// The version a request goes to: the one it names (pinned), else the traffic policy's
    /// choice (sticky with a key, weighted otherwise), else the highest ready version; and, for
    /// requests the policy routed, the shadow version to mirror to (when sampled and ready).
    pub(super) fn route(
        &self,
        model: &str,
        version: Option<&str>,
        key: Option<&str>,
    ) -> Result<Route, InferError> {
        if version.is_some_and(|v| !v.is_empty()) {
            return Ok(Route {
                version: self.version(model, version)?,
                reason: RouteReason::Pinned,
                shadow: None,
            });
        }
        let table = self.registry.snapshot();
        let entry = table
            .models
            .get(model)
            .ok_or_else(|| InferError::ModelNotFound(model.to_owned()))?;
        let (mv, reason) =
            choose(entry, key.map(str::as_bytes)).ok_or_else(|| InferError::NotReady {
                model: model.to_owned(),
                reason: entry
                    .reason()
                    .unwrap_or_else(|| "no version is loaded".into()),
            })?;
        let shadow = entry
            .traffic
            .as_ref()
            .and_then(|p| p.shadow.as_ref())
            .filter(|s| s.version != mv.version && traffic::sample(s.percent))
            .and_then(|s| entry.ready(s.version).cloned());
        Ok(Route {
            version: mv.clone(),
            reason,
            shadow,
        })
    }
}

/// The version for a request that names none, by the traffic policy: sticky when a routing
/// key is given, weighted random otherwise. Weighted versions that are not ready are
/// skipped, so their share goes to the other weighted versions in proportion; with none of
/// them ready, the highest ready version serves. Requests never fail for a policy.
pub fn choose<'e>(
    entry: &'e ModelEntry,
    key: Option<&[u8]>,
) -> Option<(&'e Arc<ModelVersion>, RouteReason)> {
    if let Some(policy) = entry.traffic.as_deref().filter(|p| !p.weights.is_empty()) {
        let candidates = policy
            .weights
            .iter()
            .filter(|(v, w)| **w > 0 && entry.ready(**v).is_some())
            .map(|(v, w)| (*v, *w));
        if let Some(mv) = traffic::pick(candidates, key).and_then(|v| entry.ready(v)) {
            let reason = if key.is_some() {
                RouteReason::Sticky
            } else {
                RouteReason::Weighted
            };
            return Some((mv, reason));
        }
    }
    entry.default_version().map(|mv| (mv, RouteReason::Default))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::batching::{BatchPolicy, Batcher, BatcherConfig};
    use crate::config::ModelConfig;
    use crate::metrics::Metrics;
    use crate::policy::admission::Admission;
    use crate::policy::traffic::TrafficPolicy;
    use crate::registry::{Signature, VersionState};

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
            source: ModelConfig::parse("", "m").unwrap(),
            note: String::new(),
            signature: Signature {
                max_batch_size: 0,
                inputs: Vec::new(),
                outputs: Vec::new(),
                output_labels: Default::default(),
            },
            batcher,
            stats: Arc::default(),
            admission: Admission::new(0, None),
            window: Arc::default(),
            drift: None,
            load_time: Duration::ZERO,
            file_fingerprint: None,
            series: Default::default(),
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
            file_rollout: None,
        }
    }

    fn routed(e: &ModelEntry, key: Option<&[u8]>) -> (u64, RouteReason) {
        let (mv, reason) = choose(e, key).unwrap();
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
        assert!(choose(&e, None).is_none());
    }
}
