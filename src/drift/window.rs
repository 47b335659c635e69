//! The counting side of a monitored profile: per feature, one atomic counter per bin for the
//! open window (the request path adds to them), and the state of the tumbling window the
//! background tick drains them into, closes and scores.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::extract;
use super::profile::{numeric_bin, FeatureProfile, Kind, Profile, Role, MAX_BINS};
use super::stats;
use crate::tensor::{DataType, Tensor};

/// One monitored feature: its reference and the open window's counters.
pub struct Feature {
    pub tensor: String,
    pub role: Role,
    pub profile: FeatureProfile,
    /// Categories of a numeric tensor, parsed once.
    values: Vec<f64>,
    counts: Box<[AtomicU64]>,
}

/// A tensor's features and where the tensor sits in the inputs or outputs.
pub struct Monitored {
    pub position: usize,
    pub role: Role,
    pub features: Vec<Feature>,
}

/// What the request path counts into.
pub struct Counters {
    pub tensors: Vec<Monitored>,
    pub rows: AtomicU64,
}

impl Counters {
    /// Features of `profile` found among `inputs` / `outputs` (names in model order).
    pub fn new(
        profile: &Profile,
        inputs: &[String],
        outputs: &[String],
    ) -> Result<Counters, String> {
        let mut tensors = Vec::new();
        for t in &profile.tensors {
            let names = if t.role == Role::Input {
                inputs
            } else {
                outputs
            };
            let position = names.iter().position(|n| n == &t.tensor).ok_or_else(|| {
                format!(
                    "profile tensor {:?} is not an {:?} of the model",
                    t.tensor, t.role
                )
            })?;
            let features = t
                .features
                .iter()
                .map(|f| Feature {
                    tensor: t.tensor.clone(),
                    role: t.role,
                    values: f
                        .categories
                        .iter()
                        .map(|c| c.parse().unwrap_or(f64::NAN))
                        .collect(),
                    counts: (0..f.bins()).map(|_| AtomicU64::new(0)).collect(),
                    profile: f.clone(),
                })
                .collect();
            tensors.push(Monitored {
                position,
                role: t.role,
                features,
            });
        }
        Ok(Counters {
            tensors,
            rows: AtomicU64::new(0),
        })
    }

    pub fn features(&self) -> impl Iterator<Item = &Feature> {
        self.tensors.iter().flat_map(|t| t.features.iter())
    }

    /// Bins one request's (or batch's) rows: a tally on the stack per feature, then one atomic
    /// add per touched bin. No allocation.
    pub fn observe(&self, inputs: &[Tensor], outputs: &[Tensor]) {
        let mut rows = 0;
        for m in &self.tensors {
            let list = if m.role == Role::Input {
                inputs
            } else {
                outputs
            };
            let Some(t) = list.get(m.position) else {
                continue;
            };
            rows = rows.max(t.rows());
            for f in &m.features {
                f.observe(t);
            }
        }
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
    }

    /// Takes the open window's counts (each counter reset to 0), feature by feature.
    pub fn drain_into(&self, into: &mut [Vec<u64>]) -> u64 {
        for (f, acc) in self.features().zip(into.iter_mut()) {
            for (c, a) in f.counts.iter().zip(acc.iter_mut()) {
                *a += c.swap(0, Ordering::Relaxed);
            }
        }
        self.rows.swap(0, Ordering::Relaxed)
    }
}

impl Feature {
    /// The open window's counts, read without resetting them.
    pub fn peek(&self) -> impl Iterator<Item = u64> + '_ {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed))
    }

    fn observe(&self, t: &Tensor) {
        let mut tally = [0u32; MAX_BINS];
        let p = &self.profile;
        let other = p.bins() - 1;
        if t.dtype() == DataType::Bytes {
            extract::for_each_bytes(t, p.source(), |b| {
                let bin = p
                    .categories
                    .iter()
                    .position(|c| c.as_bytes() == b)
                    .unwrap_or(other);
                tally[bin] += 1;
            });
        } else {
            match p.kind {
                Kind::Numeric => extract::for_each_value(t, p.source(), |x| {
                    if let Some(b) = numeric_bin(&p.edges, x) {
                        tally[b] += 1;
                    }
                }),
                Kind::Categorical => extract::for_each_value(t, p.source(), |x| {
                    tally[self.values.iter().position(|&v| v == x).unwrap_or(other)] += 1;
                }),
            };
        }
        for (c, &n) in self.counts.iter().zip(&tally) {
            if n > 0 {
                c.fetch_add(u64::from(n), Ordering::Relaxed);
            }
        }
    }
}

/// The scores of one feature in one closed window.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    pub psi: f64,
    pub js_distance: f64,
    pub p_value: Option<f64>,
    pub drifting: bool,
}

/// When a feature counts as drifting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub psi: f64,
    pub js: Option<f64>,
    pub p_value: Option<f64>,
}

/// Scores `counts` against `reference` proportions (same bins).
pub fn score(reference: &[f64], counts: &[u64], t: Thresholds) -> Scores {
    let current = stats::proportions(counts);
    let psi = stats::psi(reference, &current);
    let js_distance = stats::js_distance(reference, &current);
    let p_value = stats::chi_square_p_value(reference, counts);
    let drifting = psi >= t.psi
        || t.js.is_some_and(|j| js_distance >= j)
        || matches!((t.p_value, p_value), (Some(a), Some(p)) if p < a);
    Scores {
        psi,
        js_distance,
        p_value,
        drifting,
    }
}

/// A closed window: its counts and scores per feature (in `Counters::features` order).
#[derive(Debug, Clone)]
pub struct Closed {
    pub index: u64,
    pub rows: u64,
    pub length: Duration,
    pub counts: Vec<Vec<u64>>,
    pub scores: Vec<Scores>,
}

/// The tumbling window between ticks: counts drained so far, when it opened, the last closed one.
pub struct WindowState {
    pub pending: Vec<Vec<u64>>,
    pub rows: u64,
    pub opened: Instant,
    pub closed: u64,
    pub last: Option<Closed>,
    /// Every count since the version loaded (a rollout step reads differences of it).
    pub cumulative: Vec<Vec<u64>>,
}

impl WindowState {
    pub fn new(counters: &Counters, now: Instant) -> WindowState {
        let zero: Vec<Vec<u64>> = counters
            .features()
            .map(|f| vec![0; f.profile.bins()])
            .collect();
        WindowState {
            pending: zero.clone(),
            rows: 0,
            opened: now,
            closed: 0,
            last: None,
            cumulative: zero,
        }
    }

    /// Drains the counters; closes and scores the window once `length` has passed and it holds
    /// `min_count` rows (a window short of rows stays open: its p-value needs the counts).
    pub fn tick(
        &mut self,
        counters: &Counters,
        now: Instant,
        length: Duration,
        min_count: u64,
        t: Thresholds,
    ) -> Option<&Closed> {
        let before = self.pending.clone();
        self.rows += counters.drain_into(&mut self.pending);
        for ((cum, now_c), was) in self.cumulative.iter_mut().zip(&self.pending).zip(&before) {
            for ((c, n), w) in cum.iter_mut().zip(now_c).zip(was) {
                *c += n - w;
            }
        }
        let open_for = now.saturating_duration_since(self.opened);
        if open_for < length || self.rows < min_count {
            return None;
        }
        let scores = counters
            .features()
            .zip(&self.pending)
            .map(|(f, c)| score(&f.profile.proportions, c, t))
            .collect();
        let fresh: Vec<Vec<u64>> = self.pending.iter().map(|c| vec![0; c.len()]).collect();
        self.closed += 1;
        self.last = Some(Closed {
            index: self.closed,
            rows: std::mem::take(&mut self.rows),
            length: open_for,
            counts: std::mem::replace(&mut self.pending, fresh),
            scores,
        });
        self.opened = now;
        self.last.as_ref()
    }
}
