//! The traffic control plane: read and replace a model's traffic policy, promote a version, and
//! run progressive rollouts. A rollout is a task per model that moves the candidate through its
//! steps, judges each step's window (`judge`), and promotes the candidate or rolls it back.
//!
//! Every change to a policy is one `Registry::publish` (one atomic swap of the snapshot that
//! requests read without a lock). Changes are serialised by one mutex on the control path, held
//! for a check and a publish, never across an await: a rollout step, an abort and an admin PUT
//! cannot interleave.

mod declared;
pub mod judge;
mod task;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::error::{clip, ErrorCode};
use crate::metrics::Metrics;
use crate::policy::traffic::TrafficPolicy;
use crate::policy::window::WindowSnapshot;
use crate::registry::Registry;
use judge::{RolloutRequest, RolloutSpec};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TrafficError {
    #[error("unknown model {}", clip(.0))]
    ModelNotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("model {} has had no rollout", clip(.0))]
    NoRollout(String),
}

impl TrafficError {
    /// Its code, from which the HTTP status and gRPC code derive.
    pub fn code(&self) -> ErrorCode {
        match self {
            TrafficError::ModelNotFound(_) | TrafficError::NoRollout(_) => ErrorCode::NotFound,
            TrafficError::Invalid(_) => ErrorCode::InvalidArgument,
            TrafficError::Conflict(_) => ErrorCode::FailedPrecondition,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutState {
    Running,
    Promoted,
    RolledBack,
    Aborted,
}

impl RolloutState {
    pub const ALL: [RolloutState; 4] = [
        RolloutState::Running,
        RolloutState::Promoted,
        RolloutState::RolledBack,
        RolloutState::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Promoted => "promoted",
            RolloutState::RolledBack => "rolled_back",
            RolloutState::Aborted => "aborted",
        }
    }
}

/// One version's counts over the current step's window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSummary {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub p99: Option<Duration>,
}

impl From<&WindowSnapshot> for WindowSummary {
    fn from(w: &WindowSnapshot) -> Self {
        WindowSummary {
            requests: w.requests(),
            errors: w.errors,
            error_rate: w.error_rate(),
            p99: w.quantile(0.99),
        }
    }
}

/// What `GET .../rollout` reports.
#[derive(Debug, Clone)]
pub struct RolloutStatus {
    pub spec: RolloutSpec,
    pub stable: u64,
    pub state: RolloutState,
    /// 1-based index into `spec.steps`.
    pub step: usize,
    pub percent: u32,
    /// Why it ended (rolled back, aborted, promoted), or why a running step is extended.
    pub reason: Option<String>,
    pub candidate_window: Option<WindowSummary>,
    pub stable_window: Option<WindowSummary>,
}

struct Record {
    /// Tells a task whether the record is still its own (a new rollout replaces it).
    id: u64,
    status: RolloutStatus,
}

pub struct TrafficControl {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    rollouts: Mutex<HashMap<String, Record>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl TrafficControl {
    pub fn new(registry: Arc<Registry>, metrics: Arc<Metrics>) -> Arc<TrafficControl> {
        Arc::new(TrafficControl {
            registry,
            metrics,
            rollouts: Mutex::new(HashMap::new()),
            next_id: std::sync::atomic::AtomicU64::new(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Record>> {
        // Held only for checks and a publish; a poisoned map of statuses is still usable.
        self.rollouts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The model's policy (`None`: the highest ready version serves) and its latest rollout.
    pub fn policy(
        &self,
        model: &str,
    ) -> Result<(Option<Arc<TrafficPolicy>>, Option<RolloutStatus>), TrafficError> {
        let table = self.registry.snapshot();
        let entry = table
            .models
            .get(model)
            .ok_or_else(|| TrafficError::ModelNotFound(model.to_owned()))?;
        let rollout = self.lock().get(model).map(|r| r.status.clone());
        Ok((entry.traffic.clone(), rollout))
    }

    /// Replaces the policy atomically. Versions must be loaded; empty weights and no shadow
    /// clear the policy. Refused while a rollout runs (it owns the weights).
    pub fn set_policy(
        &self,
        model: &str,
        weights: &[(String, i64)],
        shadow: Option<(String, f64)>,
    ) -> Result<Option<Arc<TrafficPolicy>>, TrafficError> {
        let rollouts = self.lock();
        refuse_while_running(&rollouts, model)?;
        let loaded = self.loaded(model)?;
        let policy = TrafficPolicy::validate(weights, shadow, Some(&loaded))
            .map_err(TrafficError::Invalid)?;
        let policy = (!policy.weights.is_empty() || policy.shadow.is_some()).then_some(policy);
        self.publish(model, |_| policy.clone());
        drop(rollouts);
        Ok(self.policy(model)?.0)
    }

    /// All traffic to `version` in one publish (blue/green switch); the shadow is kept.
    pub fn promote(
        &self,
        model: &str,
        version: &str,
    ) -> Result<Option<Arc<TrafficPolicy>>, TrafficError> {
        let rollouts = self.lock();
        refuse_while_running(&rollouts, model)?;
        let loaded = self.loaded(model)?;
        let v = version
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|v| loaded.contains(v))
            .ok_or_else(|| {
                TrafficError::Invalid(format!(
                    "version {version:?} is not loaded (loaded: {loaded:?})"
                ))
            })?;
        self.publish(model, |p| {
            Some(p.cloned().unwrap_or(TrafficPolicy {
                weights: BTreeMap::new(),
                shadow: None,
            }))
            .map(|p| p.all_to(v))
        });
        drop(rollouts);
        Ok(self.policy(model)?.0)
    }

    /// Starts a rollout of `request.candidate` against the stable version: the given one, else
    /// the weighted version with the largest weight, else the highest ready version.
    pub fn start_rollout(
        self: &Arc<Self>,
        model: &str,
        request: &RolloutRequest,
    ) -> Result<RolloutStatus, TrafficError> {
        self.start_rollout_at(model, request, None)
    }

    /// [`Self::start_rollout`] on a wall-clock schedule from `start` when given (a rollout the
    /// source declared: every replica at the same step at the same time).
    pub fn start_rollout_at(
        self: &Arc<Self>,
        model: &str,
        request: &RolloutRequest,
        start: Option<std::time::SystemTime>,
    ) -> Result<RolloutStatus, TrafficError> {
        let mut spec = request.validate().map_err(TrafficError::Invalid)?;
        spec.start = start;
        let index = start
            .map(|s| {
                let n = spec.steps.len();
                judge::step_at(s, std::time::SystemTime::now(), spec.step_duration, n)
                    .unwrap_or(n.saturating_sub(1))
            })
            .unwrap_or(0);
        let first = *spec
            .steps
            .get(index)
            .ok_or_else(|| TrafficError::Invalid("steps: give at least one step".into()))?;
        let mut rollouts = self.lock();
        refuse_while_running(&rollouts, model)?;
        let loaded = self.loaded(model)?;
        let not_loaded = |what: &str, v: u64| {
            TrafficError::Invalid(format!(
                "{what} version {v} is not loaded (loaded: {loaded:?})"
            ))
        };
        if !loaded.contains(&spec.candidate) {
            return Err(not_loaded("candidate", spec.candidate));
        }
        let stable = match spec.stable {
            Some(s) if loaded.contains(&s) => s,
            Some(s) => return Err(not_loaded("stable", s)),
            None => self
                .pick_stable(model, spec.candidate, &loaded)
                .ok_or_else(|| {
                    TrafficError::Invalid(format!(
                        "no stable version to compare version {} with: load another version",
                        spec.candidate
                    ))
                })?,
        };
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let status = RolloutStatus {
            spec: RolloutSpec {
                stable: Some(stable),
                ..spec.clone()
            },
            stable,
            state: RolloutState::Running,
            step: index + 1,
            percent: first,
            reason: None,
            candidate_window: None,
            stable_window: None,
        };
        rollouts.insert(
            model.to_owned(),
            Record {
                id,
                status: status.clone(),
            },
        );
        self.publish_split(model, stable, spec.candidate, first);
        self.set_state_metrics(model, RolloutState::Running, first);
        drop(rollouts);
        tracing::info!(model, candidate = spec.candidate, stable, steps = ?spec.steps, "rollout started");
        tokio::spawn(task::run(
            self.clone(),
            model.to_owned(),
            id,
            status.spec.clone(),
            stable,
        ));
        Ok(status)
    }

    pub fn rollout(&self, model: &str) -> Result<RolloutStatus, TrafficError> {
        self.lock()
            .get(model)
            .map(|r| r.status.clone())
            .ok_or_else(|| TrafficError::NoRollout(model.to_owned()))
    }

    /// Stops a running rollout and sends all traffic back to the stable version.
    pub fn abort_rollout(&self, model: &str) -> Result<RolloutStatus, TrafficError> {
        let id = match self.lock().get(model) {
            None => return Err(TrafficError::NoRollout(model.to_owned())),
            Some(r) if r.status.state != RolloutState::Running => {
                return Err(TrafficError::Conflict(format!(
                    "the rollout of model {model:?} is not running (it {})",
                    r.status.state.as_str().replace('_', " ")
                )))
            }
            Some(r) => r.id,
        };
        self.finish(
            model,
            id,
            RolloutState::Aborted,
            "aborted by request".into(),
        );
        self.rollout(model)
    }

    /// Ready versions of the model, or NOT_FOUND.
    fn loaded(&self, model: &str) -> Result<Vec<u64>, TrafficError> {
        self.registry
            .snapshot()
            .models
            .get(model)
            .map(|e| e.ready_versions())
            .ok_or_else(|| TrafficError::ModelNotFound(model.to_owned()))
    }

    fn pick_stable(&self, model: &str, candidate: u64, loaded: &[u64]) -> Option<u64> {
        let table = self.registry.snapshot();
        let entry = table.models.get(model)?;
        let weighted = entry.traffic.as_ref().and_then(|p| {
            p.weights
                .iter()
                .filter(|(v, w)| **v != candidate && **w > 0 && loaded.contains(v))
                .max_by_key(|(v, w)| (**w, **v))
                .map(|(v, _)| *v)
        });
        weighted.or_else(|| loaded.iter().rev().find(|&&v| v != candidate).copied())
    }

    /// Applies `change` to the model's policy in one atomic publish.
    fn publish(
        &self,
        model: &str,
        change: impl Fn(Option<&TrafficPolicy>) -> Option<TrafficPolicy>,
    ) {
        self.registry.publish(|table| {
            if let Some(entry) = table.models.get_mut(model) {
                entry.traffic = change(entry.traffic.as_deref()).map(Arc::new);
            }
        });
    }

    /// Weights `{stable: 100 - percent, candidate: percent}`, the shadow kept.
    fn publish_split(&self, model: &str, stable: u64, candidate: u64, percent: u32) {
        self.publish(model, |p| {
            Some(TrafficPolicy {
                weights: BTreeMap::from([(stable, 100 - percent), (candidate, percent)]),
                shadow: p.and_then(|p| p.shadow.clone()),
            })
        });
    }

    fn set_state_metrics(&self, model: &str, state: RolloutState, percent: u32) {
        let t = &self.metrics.traffic;
        for s in RolloutState::ALL {
            t.rollout_state
                .with_label_values(&[model, s.as_str()])
                .set(i64::from(s == state));
        }
        t.rollout_percent
            .with_label_values(&[model])
            .set(i64::from(percent));
    }
}

fn refuse_while_running(
    rollouts: &HashMap<String, Record>,
    model: &str,
) -> Result<(), TrafficError> {
    match rollouts.get(model) {
        Some(r) if r.status.state == RolloutState::Running => Err(TrafficError::Conflict(format!(
            "a rollout of version {} of model {model:?} is running: abort it first",
            r.status.spec.candidate
        ))),
        _ => Ok(()),
    }
}
