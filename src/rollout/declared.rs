//! Rollouts that a model's source declares (`[rollout]` in its `config.toml`, from a directory,
//! a bucket or MLflow's `challenger` alias): started when the section appears or changes, on a
//! wall-clock schedule from the time the source declared it, so replicas reading the same
//! source need no coordination to be at the same step.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::judge::RolloutRequest;
use super::{TrafficControl, TrafficError};
use crate::config::RolloutSection;
use crate::registry::DeclaredRollout;

/// How often the model table is looked at for a new or changed `[rollout]`.
const EVERY: Duration = Duration::from_millis(200);

impl TrafficControl {
    /// Runs for the life of the server: starts each declared rollout once.
    pub async fn follow_declared(self: Arc<Self>) {
        let mut started: HashMap<String, DeclaredRollout> = HashMap::new();
        loop {
            self.start_declared(&mut started);
            tokio::time::sleep(EVERY).await;
        }
    }

    fn start_declared(self: &Arc<Self>, started: &mut HashMap<String, DeclaredRollout>) {
        let table = self.registry.snapshot();
        started.retain(|name, _| table.models.contains_key(name));
        for (name, entry) in &table.models {
            let Some(declared) = &entry.file_rollout else {
                continue;
            };
            // The same section seen again (a reload, an unrelated edit) is the same rollout.
            if started
                .get(name)
                .is_some_and(|s| s.section == declared.section)
            {
                continue;
            }
            let request = request_of(&declared.section);
            match self.start_rollout_at(name, &request, Some(declared.declared_at)) {
                Ok(_) => {
                    started.insert(name.clone(), declared.clone());
                }
                // The candidate may not be loaded yet, or an admin rollout runs: next look.
                Err(TrafficError::Invalid(why) | TrafficError::Conflict(why))
                    if request.validate().is_ok() =>
                {
                    tracing::debug!(model = %name, "declared rollout not started yet: {why}");
                }
                Err(e) => {
                    tracing::error!(model = %name, "config.toml [rollout] refused: {e}");
                    started.insert(name.clone(), declared.clone());
                }
            }
        }
    }
}

fn request_of(s: &RolloutSection) -> RolloutRequest {
    RolloutRequest {
        candidate: RolloutSection::version_text(&s.candidate),
        stable: s.stable.as_ref().map(RolloutSection::version_text),
        steps: s.steps.clone(),
        step_duration_s: s.step_duration_s,
        max_error_rate_increase: s.max_error_rate_increase,
        max_p99_ratio: s.max_p99_ratio,
        min_requests: s.min_requests,
        max_prediction_drift: s.max_prediction_drift,
    }
}
