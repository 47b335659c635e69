//! The task that runs one rollout, and the steps it takes on `TrafficControl` under its lock:
//! move to a step, report a window, finish. Each returns (or is) a no-op once the rollout is no
//! longer the task's own (aborted, or replaced by a newer one).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::judge::{judge, judge_drift, step_at, RolloutSpec, Verdict};
use super::{RolloutState, TrafficControl};
use crate::drift::profile::FeatureProfile;
use crate::drift::{prediction_drift, Monitor};
use crate::policy::window::{WindowSnapshot, WindowStats};

impl TrafficControl {
    /// Moves a running rollout to step `step` (0-based). False when it is no longer ours.
    fn advance(&self, model: &str, id: u64, step: usize) -> bool {
        let mut rollouts = self.lock();
        let Some(r) = rollouts
            .get_mut(model)
            .filter(|r| r.id == id && r.status.state == RolloutState::Running)
        else {
            return false;
        };
        let Some(&percent) = r.status.spec.steps.get(step) else {
            return false;
        };
        r.status.step = step + 1;
        r.status.percent = percent;
        r.status.reason = None;
        let (stable, candidate) = (r.status.stable, r.status.spec.candidate);
        self.publish_split(model, stable, candidate, percent);
        self.set_state_metrics(model, RolloutState::Running, percent);
        tracing::info!(model, candidate, step = step + 1, percent, "rollout step");
        true
    }

    /// Records a step's window so far. False when the rollout is no longer ours.
    fn report(
        &self,
        model: &str,
        id: u64,
        candidate: &WindowSnapshot,
        stable: &WindowSnapshot,
        note: Option<String>,
    ) -> bool {
        let mut rollouts = self.lock();
        let Some(r) = rollouts
            .get_mut(model)
            .filter(|r| r.id == id && r.status.state == RolloutState::Running)
        else {
            return false;
        };
        r.status.candidate_window = Some(candidate.into());
        r.status.stable_window = Some(stable.into());
        r.status.reason = note;
        true
    }

    /// Ends a running rollout: promoted sends all traffic to the candidate; rolled back and
    /// aborted send it all to the stable version (the candidate stays listed at weight 0).
    pub(super) fn finish(&self, model: &str, id: u64, state: RolloutState, reason: String) {
        let mut rollouts = self.lock();
        let Some(r) = rollouts
            .get_mut(model)
            .filter(|r| r.id == id && r.status.state == RolloutState::Running)
        else {
            return;
        };
        r.status.state = state;
        r.status.reason = Some(reason.clone());
        let (stable, candidate) = (r.status.stable, r.status.spec.candidate);
        let percent = if state == RolloutState::Promoted {
            self.publish_split(model, stable, candidate, 100);
            100
        } else {
            self.publish_split(model, stable, candidate, 0);
            0
        };
        r.status.percent = percent;
        self.set_state_metrics(model, state, percent);
        tracing::info!(model, candidate, stable, state = state.as_str(), %reason, "rollout ended");
    }

    /// The window counters of the two versions as loaded now.
    fn windows(
        &self,
        model: &str,
        candidate: u64,
        stable: u64,
    ) -> Result<(Arc<WindowStats>, Arc<WindowStats>), String> {
        let table = self.registry.snapshot();
        let entry = table
            .models
            .get(model)
            .ok_or_else(|| format!("model {model:?} was unloaded"))?;
        let get = |what: &str, v: u64| {
            entry
                .ready(v)
                .map(|mv| mv.window.clone())
                .ok_or_else(|| format!("{what} version {v} is no longer loaded"))
        };
        Ok((get("candidate", candidate)?, get("stable", stable)?))
    }

    /// The drift monitors of the two versions, when both have one.
    fn monitors(
        &self,
        model: &str,
        candidate: u64,
        stable: u64,
    ) -> Option<(Arc<Monitor>, Arc<Monitor>)> {
        let table = self.registry.snapshot();
        let entry = table.models.get(model)?;
        let get = |v: u64| entry.ready(v).and_then(|mv| mv.drift.clone());
        Some((get(candidate)?, get(stable)?))
    }
}

type OutputCounts = Vec<(String, FeatureProfile, Vec<u64>)>;

/// Counts since `start` (same monitor, same feature order).
fn since(now: OutputCounts, start: &OutputCounts) -> OutputCounts {
    now.into_iter()
        .zip(start)
        .map(|((t, f, c), (_, _, c0))| {
            let d = c
                .iter()
                .zip(c0)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect();
            (t, f, d)
        })
        .collect()
}

/// The step's prediction counts of both versions since the step began.
struct DriftStep {
    monitors: (Arc<Monitor>, Arc<Monitor>),
    start: (OutputCounts, OutputCounts),
}

impl DriftStep {
    fn begin(monitors: (Arc<Monitor>, Arc<Monitor>)) -> DriftStep {
        let start = (monitors.0.output_counts(), monitors.1.output_counts());
        DriftStep { monitors, start }
    }

    /// (candidate, stable) counts in the step so far.
    fn counts(&self) -> (OutputCounts, OutputCounts) {
        (
            since(self.monitors.0.output_counts(), &self.start.0),
            since(self.monitors.1.output_counts(), &self.start.1),
        )
    }
}

/// One rollout, start to end. Each step: publish the split, then look at the step's window
/// every tick; a breach ends it at once (once the candidate has `min_requests` in the window),
/// a pass at the end of the step moves on, too few requests extend the step.
pub(super) async fn run(
    control: Arc<TrafficControl>,
    model: String,
    id: u64,
    spec: RolloutSpec,
    stable: u64,
) {
    let tick =
        (spec.step_duration / 10).clamp(Duration::from_millis(10), Duration::from_millis(500));
    let candidate = spec.candidate;
    // The stable's latest window with enough requests: at 100 % it serves none of its own.
    let mut baseline: Option<WindowSnapshot> = None;
    // The stable's predictions of its latest step that had any (the drift limit's reference).
    let mut drift_baseline: Option<OutputCounts> = None;
    let mut step = 0;
    // On a declared schedule, the step the wall clock says (a replica that starts late joins
    // the others at theirs; one that starts after the end promotes at once).
    let due_step = |now: SystemTime| {
        spec.start
            .map(|s| step_at(s, now, spec.step_duration, spec.steps.len()))
    };
    'steps: while step < spec.steps.len() {
        match due_step(SystemTime::now()) {
            Some(None) => break,
            Some(Some(i)) => step = step.max(i),
            None => {}
        }
        if !control.advance(&model, id, step) {
            return;
        }
        let Some(&percent) = spec.steps.get(step) else {
            break;
        };
        let (cw, sw) = match control.windows(&model, candidate, stable) {
            Ok(w) => w,
            Err(why) => return control.finish(&model, id, RolloutState::Aborted, why),
        };
        let (c0, s0) = (cw.snapshot(), sw.snapshot());
        let drift = match spec.max_prediction_drift {
            None => None,
            Some(_) => match control.monitors(&model, candidate, stable) {
                Some(m) => Some(DriftStep::begin(m)),
                None => {
                    let why =
                        "max_prediction_drift needs [drift] monitoring on both versions".to_owned();
                    return control.finish(&model, id, RolloutState::Aborted, why);
                }
            },
        };
        let started = Instant::now();
        loop {
            tokio::time::sleep(tick).await;
            match control.windows(&model, candidate, stable) {
                Err(why) => return control.finish(&model, id, RolloutState::Aborted, why),
                // A version reloaded under the same number: its counters started over, and so
                // does the step.
                Ok((c, s)) if !Arc::ptr_eq(&c, &cw) || !Arc::ptr_eq(&s, &sw) => continue 'steps,
                Ok(_) => {}
            }
            let (cwin, swin) = (cw.snapshot().since(&c0), sw.snapshot().since(&s0));
            let base = if swin.requests() >= spec.min_requests {
                &swin
            } else {
                baseline.as_ref().unwrap_or(&swin)
            };
            let mut verdict = judge(&spec, &cwin, base);
            if let (Verdict::Pass, Some(d)) = (&verdict, &drift) {
                let (c, s) = d.counts();
                let stable_rows = s.iter().any(|(_, _, n)| n.iter().sum::<u64>() > 0);
                if stable_rows {
                    drift_baseline = Some(s);
                }
                let reference = drift_baseline.as_deref().unwrap_or(&[]);
                verdict = judge_drift(&spec, prediction_drift(reference, &c));
            }
            let due = match due_step(SystemTime::now()) {
                Some(now) => now != Some(step),
                None => started.elapsed() >= spec.step_duration,
            };
            let note = match &verdict {
                Verdict::Wait(why) if due && spec.start.is_some() => Some(format!(
                    "step {} ended on schedule unjudged: {why}",
                    step + 1
                )),
                Verdict::Wait(why) if due => Some(format!("step {} extended: {why}", step + 1)),
                _ => None,
            };
            if !control.report(&model, id, &cwin, &swin, note) {
                return;
            }
            match verdict {
                Verdict::Breach(why) => {
                    let reason = format!("step {} ({percent}%): {why}", step + 1);
                    return control.finish(&model, id, RolloutState::RolledBack, reason);
                }
                Verdict::Wait(_) if due && spec.start.is_some() => {
                    step += 1;
                    continue 'steps;
                }
                Verdict::Pass if due => {
                    if swin.requests() >= spec.min_requests {
                        baseline = Some(swin);
                    }
                    step += 1;
                    continue 'steps;
                }
                _ => {}
            }
        }
    }
    let reason = format!(
        "all {} steps passed; version {candidate} serves 100%",
        spec.steps.len()
    );
    control.finish(&model, id, RolloutState::Promoted, reason);
}
