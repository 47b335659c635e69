//! Drift monitoring of one version: its inputs and predictions binned against a reference
//! profile (`profile`, `profile.json`), per feature, into tumbling windows; each closed window
//! is scored in the background (`stats`: PSI, Jensen-Shannon distance, chi-square p-value) and
//! exported as gauges and in the drift endpoint. The request path only bins (`window`), after
//! the answer is sent, on a sampled share of batches.
//!
//! The reference is `profile.json` of the version directory (built by `ferroserve profile` from
//! training data), or the first N rows the version serves (`baseline = "first: N"`): no file to
//! ship, but the reference is whatever traffic came first, and until N rows are in nothing is
//! scored (and those rows are copied into the builder, under a lock).

pub mod builder;
pub mod extract;
pub mod layout;
pub mod profile;
pub mod stats;
pub mod window;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

pub use builder::ProfileBuilder;
pub use layout::{layout, Slot};
pub use profile::Profile;
use profile::{FeatureProfile, Kind, Role};
use window::{Closed, Counters, Thresholds, WindowState};

use crate::config::drift::{Baseline, DriftConfig, FeatureRef};
use crate::metrics::Metrics;
use crate::tensor::Tensor;

/// The monitor of one version; shared by its batcher (which observes) and its registry entry.
pub struct Monitor {
    pub model: String,
    pub version: String,
    config: DriftConfig,
    sampled: AtomicU64,
    active: OnceLock<Active>,
    baseline: Option<Mutex<Option<ProfileBuilder>>>,
    inputs: Vec<String>,
    outputs: Vec<String>,
    metrics: Arc<Metrics>,
}

struct Active {
    counters: Counters,
    window: Mutex<WindowState>,
}

/// One feature in the drift report: the reference and the windows side by side.
#[derive(Debug, Clone)]
pub struct FeatureReport {
    pub tensor: String,
    pub role: Role,
    pub profile: FeatureProfile,
    /// The last closed window's counts and scores.
    pub closed: Option<(Vec<u64>, window::Scores)>,
    /// The open window's counts so far.
    pub current: Vec<u64>,
}

/// What the drift endpoints report for one version.
#[derive(Debug, Clone)]
pub struct Report {
    pub model: String,
    pub version: String,
    /// `None` while a `first: N` baseline is still collecting: (rows so far, N).
    pub baseline: Option<(u64, u64)>,
    pub window: Duration,
    pub min_count: u64,
    pub sample_rate: f64,
    /// Index, rows and length of the last closed window.
    pub closed: Option<(u64, u64, Duration)>,
    pub current_rows: u64,
    pub drifting_share: Option<f64>,
    pub features: Vec<FeatureReport>,
}

impl Monitor {
    /// A monitor for `config` with the version's `profile` (required unless the baseline is
    /// the first rows served); `inputs`/`outputs` are the served signature's.
    pub fn new(
        model: &str,
        version: &str,
        config: &DriftConfig,
        profile: Option<Profile>,
        inputs: &[Slot],
        outputs: &[Slot],
        metrics: Arc<Metrics>,
    ) -> Result<Monitor, String> {
        let names = |s: &[Slot]| s.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        let monitor = |active: OnceLock<Active>, baseline| Monitor {
            model: model.to_owned(),
            version: version.to_owned(),
            config: config.clone(),
            sampled: AtomicU64::new(0),
            active,
            baseline,
            inputs: names(inputs),
            outputs: names(outputs),
            metrics,
        };
        match config.baseline {
            Baseline::First(_) => {
                let specs = layout(config, inputs, outputs)?;
                let b = ProfileBuilder::new(specs, config.bins, config.max_categories);
                Ok(monitor(OnceLock::new(), Some(Mutex::new(Some(b)))))
            }
            Baseline::Profile => {
                let profile = profile.ok_or(
                    "[drift] needs profile.json in the version directory (`ferroserve profile`) or baseline = \"first: N\"",
                )?;
                let profile = select(profile, config);
                let counters = Counters::new(&profile, &names(inputs), &names(outputs))?;
                let active = OnceLock::new();
                let _ = active.set(Active::new(counters));
                Ok(monitor(active, None))
            }
        }
    }

    fn take_sample(&self) -> bool {
        let rate = self.config.sample_rate;
        if rate >= 1.0 {
            return true;
        }
        // Every 1/rate-th batch, counted: no random numbers on the request path.
        let n = self.sampled.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * rate).floor() > (n * rate).floor()
    }

    /// Bins one request's inputs and outputs (model order); called after its answer is sent.
    pub fn observe(&self, inputs: &[Tensor], outputs: &[Tensor]) {
        if !self.take_sample() {
            return;
        }
        if let Some(a) = self.active.get() {
            a.counters.observe(inputs, outputs);
        } else {
            self.feed_baseline(inputs, outputs);
        }
    }

    fn feed_baseline(&self, inputs: &[Tensor], outputs: &[Tensor]) {
        let (Some(lock), Baseline::First(n)) = (&self.baseline, self.config.baseline) else {
            return;
        };
        let mut slot = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(b) = slot.as_mut() else { return };
        for i in 0..b.specs().len() {
            let s = &b.specs()[i];
            let (names, list) = match s.role {
                Role::Input => (&self.inputs, inputs),
                Role::Output => (&self.outputs, outputs),
            };
            if let Some(t) = names
                .iter()
                .position(|x| x == &s.tensor)
                .and_then(|p| list.get(p))
            {
                let _ = b.feed_tensor(i, t);
            }
        }
        if b.rows() < n {
            return;
        }
        let Some(b) = slot.take() else { return };
        let built = b
            .finish()
            .and_then(|p| Counters::new(&p, &self.inputs, &self.outputs));
        match built {
            Ok(counters) => {
                tracing::info!(model = %self.model, version = %self.version, rows = n, "drift baseline built from the first rows served");
                let _ = self.active.set(Active::new(counters));
            }
            Err(e) => {
                tracing::warn!(model = %self.model, version = %self.version, "drift baseline not built: {e}")
            }
        }
    }

    fn thresholds(&self) -> Thresholds {
        Thresholds {
            psi: self.config.psi_threshold,
            js: self.config.js_threshold,
            p_value: self.config.p_value_threshold,
        }
    }

    /// Drains the open window and, when it is due, closes, scores and exports it.
    pub fn tick(&self, now: Instant) {
        let Some(a) = self.active.get() else { return };
        let mut w = a.window.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(closed) = w.tick(
            &a.counters,
            now,
            self.config.window,
            self.config.min_count,
            self.thresholds(),
        ) {
            self.export(&a.counters, closed);
        }
    }

    fn export(&self, counters: &Counters, closed: &Closed) {
        let d = &self.metrics.drift;
        let mv = [self.model.as_str(), self.version.as_str()];
        let mut drifting = 0;
        for (f, s) in counters.features().zip(&closed.scores) {
            let labels = [mv[0], mv[1], f.tensor.as_str(), f.profile.name.as_str()];
            d.psi.with_label_values(&labels).set(s.psi);
            d.js_distance.with_label_values(&labels).set(s.js_distance);
            match s.p_value {
                Some(p) => d.p_value.with_label_values(&labels).set(p),
                None => {
                    let _ = d.p_value.remove_label_values(&labels);
                }
            }
            drifting += usize::from(s.drifting);
        }
        let n = closed.scores.len().max(1);
        d.samples
            .with_label_values(&mv)
            .set(i64::try_from(closed.rows).unwrap_or(i64::MAX));
        d.drifting_share
            .with_label_values(&mv)
            .set(drifting as f64 / n as f64);
        d.windows.with_label_values(&mv).inc();
    }

    /// Runs the ticks on the async runtime until the monitor is dropped.
    pub fn start(self: &Arc<Self>) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak: Weak<Monitor> = Arc::downgrade(self);
        let period =
            (self.config.window / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
        handle.spawn(async move {
            let mut every = tokio::time::interval(period);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(m) = weak.upgrade() else { break };
                m.tick(Instant::now());
            }
        });
    }

    /// Cumulative counts per monitored output feature (tensor, feature, its bins' profile),
    /// including the open window: a rollout step compares differences of them.
    pub fn output_counts(&self) -> Vec<(String, FeatureProfile, Vec<u64>)> {
        let Some(a) = self.active.get() else {
            return Vec::new();
        };
        let w = a.window.lock().unwrap_or_else(PoisonError::into_inner);
        a.counters
            .features()
            .zip(&w.cumulative)
            .filter(|(f, _)| f.role == Role::Output)
            .map(|(f, c)| {
                let live: Vec<u64> = c.iter().zip(f.peek()).map(|(a, b)| a + b).collect();
                (f.tensor.clone(), f.profile.clone(), live)
            })
            .collect()
    }

    /// The reference and the windows side by side.
    pub fn report(&self) -> Report {
        let mut r = Report {
            model: self.model.clone(),
            version: self.version.clone(),
            baseline: None,
            window: self.config.window,
            min_count: self.config.min_count,
            sample_rate: self.config.sample_rate,
            closed: None,
            current_rows: 0,
            drifting_share: None,
            features: Vec::new(),
        };
        let Some(a) = self.active.get() else {
            if let (Some(lock), Baseline::First(n)) = (&self.baseline, self.config.baseline) {
                let rows = lock
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_ref()
                    .map_or(n, |b| b.rows());
                r.baseline = Some((rows, n));
            }
            return r;
        };
        let w = a.window.lock().unwrap_or_else(PoisonError::into_inner);
        r.current_rows = w.rows + a.counters.rows.load(Ordering::Relaxed);
        if let Some(c) = &w.last {
            r.closed = Some((c.index, c.rows, c.length));
            let n = c.scores.len().max(1);
            r.drifting_share =
                Some(c.scores.iter().filter(|s| s.drifting).count() as f64 / n as f64);
        }
        for (i, (f, pending)) in a.counters.features().zip(&w.pending).enumerate() {
            r.features.push(FeatureReport {
                tensor: f.tensor.clone(),
                role: f.role,
                profile: f.profile.clone(),
                closed: w
                    .last
                    .as_ref()
                    .map(|c| (c.counts[i].clone(), c.scores[i].clone())),
                current: pending.iter().zip(f.peek()).map(|(a, b)| a + b).collect(),
            });
        }
        r
    }
}

impl Active {
    fn new(counters: Counters) -> Active {
        let window = Mutex::new(WindowState::new(&counters, Instant::now()));
        Active { counters, window }
    }
}

/// The profile's features `[drift]` names (all when it names none), outputs as listed.
fn select(mut profile: Profile, config: &DriftConfig) -> Profile {
    for t in &mut profile.tensors {
        match t.role {
            Role::Input if !config.features.is_empty() => t.features.retain(|f| {
                config.features.iter().any(|r| match r {
                    FeatureRef::Name(n) => n == &f.name,
                    FeatureRef::Index(i) => f.column == Some(*i),
                })
            }),
            Role::Output => {
                if let Some(list) = &config.outputs {
                    if !list.contains(&t.tensor) {
                        t.features.clear();
                    }
                }
            }
            Role::Input => {}
        }
    }
    profile.tensors.retain(|t| !t.features.is_empty());
    profile
}

/// PSI of the candidate's predictions against the stable version's over the same span (counts
/// are differences of `output_counts`), the largest over the output features both monitor with
/// the same bins; `None` when they share none or either side has no rows.
pub fn prediction_drift(
    stable: &[(String, FeatureProfile, Vec<u64>)],
    candidate: &[(String, FeatureProfile, Vec<u64>)],
) -> Option<f64> {
    let mut worst: Option<f64> = None;
    for (tensor, fp, counts) in candidate {
        let same = stable.iter().find(|(t, s, _)| {
            t == tensor
                && s.name == fp.name
                && s.kind == fp.kind
                && s.edges == fp.edges
                && s.categories == fp.categories
        });
        let Some((_, _, base)) = same else { continue };
        if counts.iter().sum::<u64>() == 0 || base.iter().sum::<u64>() == 0 {
            continue;
        }
        let v = stats::psi(&stats::proportions(base), &stats::proportions(counts));
        worst = Some(worst.map_or(v, |w: f64| w.max(v)));
    }
    worst
}

/// Categorical features take their name from the kind (for the report's JSON).
pub fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Numeric => "numeric",
        Kind::Categorical => "categorical",
    }
}
