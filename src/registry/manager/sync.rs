//! Reconciling one model with its directory: load what changed, publish the new table,
//! retire what left it and wait (bounded) for retired versions to drain.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::super::repository::{self, ModelDir, CONFIG_FILE};
use super::super::{loader, DeclaredRollout, ModelEntry, ModelVersion, VersionState};
use super::ModelManager;
use crate::metrics::Metrics;
use crate::policy::traffic::TrafficPolicy;

/// Sizes and modification times of a model's config and served model files.
pub(super) type DiskState = (Option<Fingerprint>, Vec<(u64, Option<Fingerprint>)>);
type Fingerprint = (u64, std::time::SystemTime);

pub(super) fn disk_state(dir: &ModelDir) -> DiskState {
    let config = fingerprint(&dir.path.join(repository::CONFIG_FILE));
    (
        config,
        dir.served_versions()
            .iter()
            .map(|(v, f)| (*v, fingerprint(f)))
            .collect(),
    )
}

/// A source's failures on the index rows they concern: a listing error on every row, a
/// model's download or cache-bound error on its rows (what serves is unchanged by either).
pub(super) fn note_source(
    rows: &mut Vec<super::IndexRow>,
    status: &crate::registry::source::SourceStatus,
) {
    // A model none of whose versions could be mirrored yet has no row of its own.
    for name in status.model_errors.keys() {
        if !rows.iter().any(|r| &r.name == name) {
            rows.push(super::IndexRow {
                name: name.clone(),
                version: String::new(),
                state: String::new(),
                reason: String::new(),
            });
        }
    }
    for row in rows.iter_mut() {
        let notes = status
            .error
            .iter()
            .chain(status.model_errors.get(&row.name));
        for note in notes {
            if !row.reason.is_empty() {
                row.reason.push_str("; ");
            }
            row.reason.push_str(note);
        }
    }
}

/// Each registry model's aliases, versions and last sync (or error) on its rows.
/// A file's modification time: when the source declared what it says (an S3 object's mirrored
/// file carries the object's Last-Modified).
fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

pub(super) fn note_registry(rows: &mut [super::IndexRow], notes: &BTreeMap<String, String>) {
    for row in rows.iter_mut() {
        if let Some(note) = notes.get(&row.name) {
            if !row.reason.is_empty() {
                row.reason.push_str("; ");
            }
            row.reason.push_str(note);
        }
    }
}

impl ModelManager {
    /// Brings one model in line with its directory and publishes the result. Returns the
    /// failure reason when nothing of what was wanted could be published.
    pub(super) async fn sync(&self, dir: ModelDir) -> Option<String> {
        let name = dir.name.clone();
        let current = self.registry.snapshot().models.get(&name).cloned();
        let config = match &dir.config {
            Ok(c) => c.clone(),
            Err(e) => return self.fail_model(&name, current, e.clone()),
        };
        let wanted = dir.served_versions();
        if wanted.is_empty() {
            return self.fail_model(
                &name,
                current,
                format!("{} has no version directories", dir.path.display()),
            );
        }
        let mut versions: BTreeMap<u64, VersionState> = BTreeMap::new();
        let mut failures = Vec::new();
        for (v, file) in &wanted {
            let kept = current.as_ref().and_then(|e| match e.versions.get(v) {
                Some(VersionState::Ready(mv))
                    if mv.source.same_versions_as(&config)
                        && mv.file_fingerprint == fingerprint(file) =>
                {
                    Some(mv.clone())
                }
                _ => None,
            });
            if let Some(mv) = kept {
                versions.insert(*v, VersionState::Ready(mv));
                continue;
            }
            self.loading_set().insert((name.clone(), *v));
            self.metrics
                .set_model_state(&name, &v.to_string(), "LOADING");
            let started = std::time::Instant::now();
            let loaded =
                loader::load_version(&name, *v, &dir.root, file, &config, self.metrics.clone())
                    .await;
            self.loading_set().remove(&(name.clone(), *v));
            match loaded {
                Ok(mv) => {
                    tracing::info!(model = %name, version = v, backend = mv.config.backend.as_str(),
                        load_ms = mv.load_time.as_millis() as u64, "model version ready");
                    self.metrics
                        .model_load_duration
                        .with_label_values(&[name.as_str(), &v.to_string()])
                        .set(mv.load_time.as_secs_f64());
                    versions.insert(*v, VersionState::Ready(mv));
                }
                Err(e) => {
                    let reason = e.to_string();
                    tracing::error!(model = %name, version = v, file = %file.display(),
                        load_ms = started.elapsed().as_millis() as u64, "model version failed to load: {reason}");
                    self.metrics
                        .load_failures
                        .with_label_values(&[name.as_str()])
                        .inc();
                    failures.push(format!("version {v}: {reason}"));
                    // A version that fails never replaces the one serving under the same number.
                    let previous = current
                        .as_ref()
                        .and_then(|e| e.versions.get(v))
                        .filter(|s| matches!(s, VersionState::Ready(_)));
                    versions.insert(
                        *v,
                        previous
                            .cloned()
                            .unwrap_or(VersionState::Unavailable(reason)),
                    );
                }
            }
        }
        let any_new_ready = versions
            .values()
            .any(|s| matches!(s, VersionState::Ready(_)));
        // Versions the policy no longer wants retire only once something else serves.
        if let Some(cur) = &current {
            if !any_new_ready {
                for (v, s) in &cur.versions {
                    if matches!(s, VersionState::Ready(_)) {
                        versions.entry(*v).or_insert_with(|| s.clone());
                    }
                }
            }
        }
        let last_failure = (!failures.is_empty()).then(|| failures.join("; "));
        // Our copy of the old entry must go before waiting for retired versions to stop.
        drop(current);
        let declared = config.rollout.clone().map(|section| DeclaredRollout {
            declared_at: section
                .start
                .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(s))
                .or_else(|| modified(&dir.path.join(CONFIG_FILE)))
                .unwrap_or_else(SystemTime::now),
            section,
        });
        let retired = self.publish(
            &name,
            versions,
            None,
            last_failure.clone(),
            Some((config.traffic.clone(), declared)),
        );
        self.wait_stopped(retired).await;
        if any_new_ready {
            None
        } else {
            last_failure
        }
    }

    /// Records a model-level failure; what serves keeps serving.
    pub(super) fn fail_model(
        &self,
        name: &str,
        current: Option<ModelEntry>,
        reason: String,
    ) -> Option<String> {
        tracing::error!(model = %name, "model not loaded: {reason}");
        self.metrics.load_failures.with_label_values(&[name]).inc();
        match current.filter(ModelEntry::is_ready) {
            Some(entry) => {
                self.publish(name, entry.versions, None, Some(reason.clone()), None);
            }
            None => {
                self.publish(name, BTreeMap::new(), Some(reason.clone()), None, None);
            }
        }
        Some(reason)
    }

    /// Swaps the model's entry in; returns the versions that left the table. `file_traffic`
    /// is the config's `[traffic]` when the config was read (`None`: unreadable, keep what is
    /// set). The policy is carried over from the table as it is at the swap, not as it was when
    /// the load began, so a policy set through the admin API meanwhile is not lost.
    pub(super) fn publish(
        &self,
        name: &str,
        versions: BTreeMap<u64, VersionState>,
        error: Option<String>,
        last_failure: Option<String>,
        file: Option<(Option<TrafficPolicy>, Option<DeclaredRollout>)>,
    ) -> Vec<Arc<ModelVersion>> {
        let (file_traffic, file_rollout) = match file {
            Some((t, r)) => (Some(t), Some(r)),
            None => (None, None),
        };
        let before = self.registry.snapshot().models.get(name).cloned();
        for (v, s) in &versions {
            let ready = i64::from(matches!(s, VersionState::Ready(_)));
            self.metrics
                .model_ready
                .with_label_values(&[name, &v.to_string()])
                .set(ready);
            self.metrics
                .set_model_state(name, &v.to_string(), s.as_str());
        }
        let entry = ModelEntry {
            name: name.to_owned(),
            versions: versions.clone(),
            error,
            last_failure,
            traffic: None,
            file_traffic: None,
            file_rollout: None,
        };
        self.registry.publish(|table| {
            let mut entry = entry.clone();
            let current = table.models.get(name);
            match (&file_traffic, current) {
                (Some(file), Some(cur)) if cur.file_traffic == *file => {
                    entry.traffic = cur.traffic.clone();
                    entry.file_traffic = cur.file_traffic.clone();
                }
                (Some(file), _) => {
                    entry.traffic = file.clone().map(Arc::new);
                    entry.file_traffic = file.clone();
                }
                (None, Some(cur)) => {
                    entry.traffic = cur.traffic.clone();
                    entry.file_traffic = cur.file_traffic.clone();
                }
                (None, None) => {}
            }
            entry.file_rollout = match (&file_rollout, current) {
                (Some(r), _) => r.clone(),
                (None, Some(cur)) => cur.file_rollout.clone(),
                (None, None) => None,
            };
            table.models.insert(name.to_owned(), entry);
        });
        retired(before, &versions, &self.metrics)
    }

    /// Removes the model from the table and waits for its versions to stop.
    pub(super) async fn retire(&self, name: &str) {
        let before = self.registry.snapshot().models.get(name).cloned();
        self.registry.publish(|table| {
            table.models.remove(name);
        });
        let gone = retired(before, &BTreeMap::new(), &self.metrics);
        tracing::info!(model = %name, versions = gone.len(), "model unloaded; draining");
        self.wait_stopped(gone).await;
    }

    /// Waits (bounded) until retired versions have answered their queues and joined threads.
    pub(super) async fn wait_stopped(&self, versions: Vec<Arc<ModelVersion>>) {
        let stops: Vec<_> = versions.iter().map(|mv| mv.batcher.stopped()).collect();
        // Our references must go, or the batchers would wait for us.
        drop(versions);
        if tokio::time::timeout(self.drain_timeout, futures_util::future::join_all(stops))
            .await
            .is_err()
        {
            tracing::warn!(
                "retired model versions still draining after {:?}",
                self.drain_timeout
            );
        }
    }
}

/// The ready versions of `before` that `after` no longer holds (or holds as another instance).
pub(super) fn retired(
    before: Option<ModelEntry>,
    after: &BTreeMap<u64, VersionState>,
    metrics: &Metrics,
) -> Vec<Arc<ModelVersion>> {
    let Some(before) = before else {
        return Vec::new();
    };
    for v in before.versions.keys().filter(|v| !after.contains_key(v)) {
        metrics.forget_version_state(&before.name, &v.to_string());
    }
    before
        .versions
        .into_iter()
        .filter_map(|(v, s)| match s {
            VersionState::Ready(old) => {
                let kept = matches!(after.get(&v), Some(VersionState::Ready(new)) if Arc::ptr_eq(new, &old));
                (!kept).then_some(old)
            }
            _ => None,
        })
        .collect()
}

fn fingerprint(file: &std::path::Path) -> Option<(u64, std::time::SystemTime)> {
    let meta = std::fs::metadata(file).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}
