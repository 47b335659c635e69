//! A version's metric series live as long as the version: each loaded instance of a model
//! version holds a [`VersionSeries`], and when the last one of a (model, version) goes (unloaded,
//! its last request answered, its threads stopped) every series labelled with that model and
//! version is removed. A server that swaps versions for months then exports (and keeps in
//! memory) only the series of what serves. Counters that vanish with their version are what
//! Prometheus expects; a version loaded again starts them from zero.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};

use super::Metrics;

/// Live instances per (model, version) label pair.
pub(super) type Live = std::sync::Mutex<HashMap<(String, String), usize>>;

/// Keeps the series of one (model, version) while it lives; the last one dropped removes them.
/// `Default` holds nothing (for versions built outside a server, in unit tests).
#[derive(Default)]
pub struct VersionSeries(Option<(Arc<Metrics>, String, String)>);

impl Metrics {
    /// Called when a version starts loading, before any of its series is created: a reload of
    /// the same version number holds the series while the old instance drains.
    pub fn hold_version(self: &Arc<Self>, model: &str, version: &str) -> VersionSeries {
        *self
            .live_versions()
            .entry((model.to_owned(), version.to_owned()))
            .or_default() += 1;
        VersionSeries(Some((self.clone(), model.to_owned(), version.to_owned())))
    }

    /// Removes every series labelled `model` and `version` but the state gauges, which the
    /// manager owns ([`Metrics::forget_version_state`]).
    pub fn forget_version(&self, model: &str, version: &str) {
        let t = &self.traffic;
        remove_matching(&self.requests, model, version);
        remove_matching(&self.request_duration, model, version);
        remove_matching(&self.queue_duration, model, version);
        remove_matching(&self.compute_duration, model, version);
        remove_matching(&self.batch_size, model, version);
        remove_matching(&self.model_load_duration, model, version);
        remove_matching(&self.queue_depth, model, version);
        remove_matching(&self.in_flight, model, version);
        remove_matching(&self.rejected, model, version);
        remove_matching(&t.routed, model, version);
        remove_matching(&t.shadow_requests, model, version);
        remove_matching(&t.shadow_compared, model, version);
        remove_matching(&t.shadow_mismatches, model, version);
        remove_matching(&t.shadow_max_abs_diff, model, version);
        let d = &self.drift;
        remove_matching(&d.psi, model, version);
        remove_matching(&d.js_distance, model, version);
        remove_matching(&d.p_value, model, version);
        remove_matching(&d.samples, model, version);
        remove_matching(&d.drifting_share, model, version);
        remove_matching(&d.windows, model, version);
    }

    /// Removes the state gauges (`model_ready`, `model_state`) of a version that left the
    /// model's table; the manager calls it, since a version is in the table before it loads.
    pub fn forget_version_state(&self, model: &str, version: &str) {
        let _ = self.model_ready.remove_label_values(&[model, version]);
        self.clear_model_state(model, version);
    }

    fn live_versions(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), usize>> {
        // Poisoning only means a panic elsewhere mid-update of a count: still usable.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for VersionSeries {
    fn drop(&mut self) {
        let Some((metrics, model, version)) = self.0.take() else {
            return;
        };
        let key = (model, version);
        // Removed under the lock, so a load of the same version starting now cannot create
        // series (its batcher's handles) that this removal would then cut off.
        let mut live = metrics.live_versions();
        match live.get_mut(&key) {
            Some(n) if *n > 1 => *n -= 1,
            _ => {
                live.remove(&key);
                metrics.forget_version(&key.0, &key.1);
            }
        }
    }
}

/// Removes the children of `vec` whose `model` and `version` labels are these.
fn remove_matching<T: MetricVecBuilder>(vec: &MetricVec<T>, model: &str, version: &str) {
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels: HashMap<&str, &str> = metric
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            if labels.get("model") == Some(&model) && labels.get("version") == Some(&version) {
                let _ = vec.remove(&labels);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series_of(m: &Metrics, version: &str) -> usize {
        let needle = format!("version=\"{version}\"");
        m.render().lines().filter(|l| l.contains(&needle)).count()
    }

    #[test]
    fn the_last_instance_dropped_removes_the_versions_series() {
        let m = Arc::new(Metrics::new().unwrap());
        let (first, second) = (m.hold_version("m", "1"), m.hold_version("m", "1"));
        let other = m.hold_version("m", "2");
        for v in ["1", "2"] {
            m.requests.with_label_values(&["m", v, "http", "ok"]).inc();
            m.queue_duration.with_label_values(&["m", v]).observe(0.1);
            m.traffic
                .routed
                .with_label_values(&["m", v, "default"])
                .inc();
        }
        drop(first);
        assert!(
            series_of(&m, "1") > 0,
            "a reload's instance still holds them"
        );
        drop(second);
        assert_eq!(series_of(&m, "1"), 0, "{}", m.render());
        assert!(series_of(&m, "2") > 0);
        drop(other);
        assert_eq!(series_of(&m, "2"), 0);
        assert!(m.live_versions().is_empty());
    }
}
