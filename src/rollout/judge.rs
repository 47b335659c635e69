//! What a progressive rollout is asked to do, and the verdict on one step: pure functions over
//! the candidate's and the stable version's windowed counts, unit-tested without a server.

use std::time::{Duration, SystemTime};

use crate::error::clip;
use crate::policy::window::WindowSnapshot;

/// A rollout as requested, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutSpec {
    pub candidate: u64,
    /// The version compared against; chosen at start when not given.
    pub stable: Option<u64>,
    /// The candidate's share at each step, percent, strictly increasing, 1..=100.
    pub steps: Vec<u32>,
    pub step_duration: Duration,
    /// The candidate's error rate may exceed the stable's by this much (0.01: one point).
    pub max_error_rate_increase: f64,
    /// The candidate's p99 latency may be at most this multiple of the stable's.
    pub max_p99_ratio: Option<f64>,
    /// A step passes only once the candidate answered this many requests in its window; until
    /// then the window is extended (a step without traffic proves nothing).
    pub min_requests: u64,
    /// PSI limit on the candidate's predictions against the stable's in the same step (both
    /// versions monitored by `[drift]` with the same output bins); `None`: not judged.
    pub max_prediction_drift: Option<f64>,
    /// A rollout the source declared runs on a wall-clock schedule from this time: step k
    /// from `start + k * step_duration`, the same on every replica; a step then ends on time
    /// (too few requests do not extend it; a breach still rolls back).
    pub start: Option<SystemTime>,
}

pub const DEFAULT_MAX_ERROR_RATE_INCREASE: f64 = 0.01;
pub const DEFAULT_MAX_P99_RATIO: f64 = 1.5;
pub const DEFAULT_MIN_REQUESTS: u64 = 100;

/// A rollout request's fields as given (numbers unchecked).
#[derive(Debug, Clone, Default)]
pub struct RolloutRequest {
    pub candidate: String,
    pub stable: Option<String>,
    pub steps: Vec<i64>,
    pub step_duration_s: f64,
    pub max_error_rate_increase: Option<f64>,
    pub max_p99_ratio: Option<f64>,
    pub min_requests: Option<i64>,
    pub max_prediction_drift: Option<f64>,
}

impl RolloutRequest {
    pub fn validate(&self) -> Result<RolloutSpec, String> {
        let version = |what: &str, v: &str| {
            v.trim()
                .parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{what}: {} is not a positive version number", clip(v)))
        };
        let candidate = version("candidate", &self.candidate)?;
        let stable = self
            .stable
            .as_deref()
            .map(|s| version("stable", s))
            .transpose()?;
        if stable == Some(candidate) {
            return Err("stable and candidate are the same version".into());
        }
        if self.steps.is_empty() || self.steps.len() > 100 {
            return Err("steps: give 1 to 100 percentages, e.g. [5, 25, 50, 100]".into());
        }
        let mut steps = Vec::with_capacity(self.steps.len());
        for &s in &self.steps {
            if !(1..=100).contains(&s) {
                return Err(format!("steps: {s} is outside 1..=100"));
            }
            if steps.last().is_some_and(|&last| i64::from(last) >= s) {
                return Err(format!("steps must increase strictly: {:?}", self.steps));
            }
            steps.push(s as u32);
        }
        if !(self.step_duration_s.is_finite() && (0.1..=86_400.0).contains(&self.step_duration_s)) {
            return Err(format!(
                "step_duration_s must be 0.1..=86400 seconds, got {}",
                self.step_duration_s
            ));
        }
        let max_error_rate_increase = self
            .max_error_rate_increase
            .unwrap_or(DEFAULT_MAX_ERROR_RATE_INCREASE);
        if !(0.0..=1.0).contains(&max_error_rate_increase) {
            return Err(format!(
                "max_error_rate_increase must be 0..=1, got {max_error_rate_increase}"
            ));
        }
        let max_p99_ratio = self.max_p99_ratio.unwrap_or(DEFAULT_MAX_P99_RATIO);
        if !(max_p99_ratio.is_finite() && max_p99_ratio >= 1.0) {
            return Err(format!(
                "max_p99_ratio must be at least 1, got {max_p99_ratio}"
            ));
        }
        let min_requests = self.min_requests.unwrap_or(DEFAULT_MIN_REQUESTS as i64);
        if !(1..=1_000_000_000).contains(&min_requests) {
            return Err(format!("min_requests must be positive, got {min_requests}"));
        }
        if let Some(d) = self.max_prediction_drift {
            if !(d.is_finite() && d > 0.0) {
                return Err(format!(
                    "max_prediction_drift must be a positive PSI, got {d}"
                ));
            }
        }
        Ok(RolloutSpec {
            candidate,
            stable,
            steps,
            step_duration: Duration::from_secs_f64(self.step_duration_s),
            max_error_rate_increase,
            max_p99_ratio: Some(max_p99_ratio),
            min_requests: min_requests as u64,
            max_prediction_drift: self.max_prediction_drift,
            start: None,
        })
    }
}

/// On a wall-clock schedule from `start`: the 0-based step due at `now` (step 0 while `now` is
/// before `start`: replicas' clocks differ a little), `None` once all `steps` are over.
pub fn step_at(start: SystemTime, now: SystemTime, step: Duration, steps: usize) -> Option<usize> {
    let elapsed = now.duration_since(start).unwrap_or(Duration::ZERO);
    // step_duration is at least 0.1 s (validated); the cast saturates.
    let i = (elapsed.as_secs_f64() / step.as_secs_f64().max(1e-3)) as usize;
    (i < steps).then_some(i)
}

/// The judgement on a step's window so far.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Enough candidate requests and no breach.
    Pass,
    /// Not enough candidate requests yet (the reason says how many).
    Wait(String),
    /// The candidate is worse than allowed (the reason says how).
    Breach(String),
}

/// Judges the candidate's window against the stable's (`baseline`: the stable's window of this
/// step, or of the latest step in which it served `min_requests`, since at 100 % it serves
/// none). A p99 comparison needs successes on both sides; without them only error rates count.
pub fn judge(spec: &RolloutSpec, candidate: &WindowSnapshot, baseline: &WindowSnapshot) -> Verdict {
    let n = candidate.requests();
    if n < spec.min_requests {
        return Verdict::Wait(format!(
            "{n} of {} candidate requests in this step's window",
            spec.min_requests
        ));
    }
    let (c, s) = (candidate.error_rate(), baseline.error_rate());
    if c - s > spec.max_error_rate_increase {
        return Verdict::Breach(format!(
            "candidate error rate {:.2}% ({} of {n}) exceeds stable's {:.2}% by more than {:.2} points",
            c * 100.0,
            candidate.errors,
            s * 100.0,
            spec.max_error_rate_increase * 100.0
        ));
    }
    if let (Some(limit), Some(cp), Some(sp)) = (
        spec.max_p99_ratio,
        candidate.quantile(0.99),
        baseline.quantile(0.99),
    ) {
        if cp.as_secs_f64() > sp.as_secs_f64() * limit {
            return Verdict::Breach(format!(
                "candidate p99 latency {:.3} ms is above {limit} x stable's {:.3} ms",
                cp.as_secs_f64() * 1e3,
                sp.as_secs_f64() * 1e3
            ));
        }
    }
    Verdict::Pass
}

/// The prediction-drift limit on a step whose requests passed: `psi` is the candidate's
/// predictions against the stable's over the same span (`None`: nothing comparable yet).
pub fn judge_drift(spec: &RolloutSpec, psi: Option<f64>) -> Verdict {
    match (spec.max_prediction_drift, psi) {
        (Some(limit), Some(v)) if v > limit => Verdict::Breach(format!(
            "candidate predictions drift from stable's: PSI {v:.3} above the limit {limit}"
        )),
        _ => Verdict::Pass,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::window::WindowStats;

    fn spec() -> RolloutSpec {
        RolloutRequest {
            candidate: "2".into(),
            steps: vec![5, 25, 50, 100],
            step_duration_s: 1.0,
            min_requests: Some(10),
            ..Default::default()
        }
        .validate()
        .unwrap()
    }

    fn window(ok: u64, errors: u64, latency: Duration) -> WindowSnapshot {
        let w = WindowStats::default();
        for _ in 0..ok {
            w.record(true, latency);
        }
        for _ in 0..errors {
            w.record(false, latency);
        }
        w.snapshot()
    }

    #[test]
    fn a_declared_schedule_is_a_function_of_the_wall_clock() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let at = |s: f64| {
            step_at(
                t0,
                t0 + Duration::from_secs_f64(s),
                Duration::from_secs(2),
                3,
            )
        };
        assert_eq!(at(0.0), Some(0));
        assert_eq!(at(1.9), Some(0));
        assert_eq!(at(2.0), Some(1));
        assert_eq!(at(5.9), Some(2));
        assert_eq!(at(6.0), None);
        // A replica whose clock is a little behind the source's is at the first step.
        assert_eq!(
            step_at(t0, t0 - Duration::from_secs(1), Duration::from_secs(2), 3),
            Some(0)
        );
    }

    #[test]
    fn a_healthy_candidate_passes_and_a_quiet_one_waits() {
        let ms = Duration::from_millis(1);
        assert_eq!(
            judge(&spec(), &window(50, 0, ms), &window(900, 0, ms)),
            Verdict::Pass
        );
        let Verdict::Wait(why) = judge(&spec(), &window(5, 0, ms), &window(900, 0, ms)) else {
            panic!("too few requests must not pass");
        };
        assert!(why.contains("5 of 10"), "{why}");
        // The stable's own errors raise the bar.
        assert_eq!(
            judge(&spec(), &window(95, 5, ms), &window(950, 50, ms)),
            Verdict::Pass
        );
    }

    #[test]
    fn errors_or_slowness_breach() {
        let ms = Duration::from_millis(1);
        let Verdict::Breach(why) = judge(&spec(), &window(90, 10, ms), &window(900, 0, ms)) else {
            panic!("10% errors against 0% must breach");
        };
        assert!(why.contains("error rate 10.00%"), "{why}");
        let Verdict::Breach(why) = judge(&spec(), &window(50, 0, ms * 10), &window(900, 0, ms))
        else {
            panic!("10x slower must breach a 1.5x limit");
        };
        assert!(why.contains("p99"), "{why}");
        // No stable successes: latency cannot be compared, errors still are.
        assert_eq!(
            judge(&spec(), &window(50, 0, ms * 10), &window(0, 0, ms)),
            Verdict::Pass
        );
    }

    #[test]
    fn requests_are_validated_with_reasons() {
        let base = RolloutRequest {
            candidate: "2".into(),
            steps: vec![5, 100],
            step_duration_s: 30.0,
            ..Default::default()
        };
        let s = base.validate().unwrap();
        assert_eq!(
            (s.max_error_rate_increase, s.max_p99_ratio, s.min_requests),
            (0.01, Some(1.5), 100)
        );
        for (req, want) in [
            (
                RolloutRequest {
                    steps: vec![50, 25],
                    ..base.clone()
                },
                "increase strictly",
            ),
            (
                RolloutRequest {
                    steps: vec![0, 25],
                    ..base.clone()
                },
                "outside 1..=100",
            ),
            (
                RolloutRequest {
                    steps: vec![],
                    ..base.clone()
                },
                "1 to 100",
            ),
            (
                RolloutRequest {
                    candidate: "x".into(),
                    ..base.clone()
                },
                "candidate",
            ),
            (
                RolloutRequest {
                    stable: Some("2".into()),
                    ..base.clone()
                },
                "same version",
            ),
            (
                RolloutRequest {
                    step_duration_s: 0.0,
                    ..base.clone()
                },
                "step_duration_s",
            ),
            (
                RolloutRequest {
                    max_p99_ratio: Some(0.5),
                    ..base.clone()
                },
                "max_p99_ratio",
            ),
            (
                RolloutRequest {
                    max_error_rate_increase: Some(2.0),
                    ..base.clone()
                },
                "max_error_rate",
            ),
            (
                RolloutRequest {
                    min_requests: Some(0),
                    ..base.clone()
                },
                "min_requests",
            ),
        ] {
            let err = req.validate().unwrap_err();
            assert!(err.contains(want), "{req:?}: {err}");
        }
    }
}
