//! The control path: load, reload and unload models from the repository and publish the result
//! atomically. A version is published only after it loaded and warmed up; a failure leaves what
//! serves unchanged and is reported (answer, index, log, metric). Control operations run one at
//! a time; requests never wait on them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::repository::{self, ModelDir};
use super::source::{mlflow::MlflowSource, ObjectSource};
use super::upload::{self, Upload, UploadError};
use super::{ModelEntry, Registry, VersionState};
use crate::config::ModelControlMode;
use crate::error::{clip, quote, ErrorCode};
use crate::metrics::Metrics;

mod sync;
use sync::{disk_state, DiskState};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    #[error(
        "invalid model name {}: use letters, digits, '_', '-' and '.', not starting with '.'",
        clip(.0)
    )]
    InvalidName(String),
    #[error("no model {} in the repository", clip(.0))]
    NotFound(String),
    /// A load of a model the repository does not hold: Triton's words and code (INTERNAL).
    #[error("failed to load {}, failed to poll from model repository", quote(.0))]
    NotInRepository(String),
    #[error("model {} resolves outside the model repository", clip(.0))]
    OutsideRepository(String),
    #[error("{0}")]
    NotAllowed(String),
    #[error("load failed for model {}: {reason}", quote(.model))]
    LoadFailed { model: String, reason: String },
    #[error("model repository: {0}")]
    Repository(String),
    #[error(transparent)]
    Upload(#[from] UploadError),
}

impl ControlError {
    /// Its code, from which the HTTP status and gRPC code derive.
    pub fn code(&self) -> ErrorCode {
        match self {
            ControlError::InvalidName(_)
            | ControlError::OutsideRepository(_)
            | ControlError::LoadFailed { .. } => ErrorCode::InvalidArgument,
            ControlError::NotFound(_) => ErrorCode::NotFound,
            ControlError::NotAllowed(_) => ErrorCode::FailedPrecondition,
            ControlError::Repository(_) | ControlError::NotInRepository(_) => ErrorCode::Internal,
            ControlError::Upload(UploadError::Invalid(_)) => ErrorCode::InvalidArgument,
            ControlError::Upload(UploadError::TooLarge(_)) => ErrorCode::PayloadTooLarge,
            ControlError::Upload(UploadError::Io(_)) => ErrorCode::Internal,
        }
    }
}

/// One row of the repository index (Triton's RepositoryIndex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexRow {
    pub name: String,
    /// Empty for a model-level row.
    pub version: String,
    /// READY, LOADING, UNAVAILABLE, or empty for a model present but never loaded.
    pub state: String,
    pub reason: String,
}

pub struct ModelManager {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    root: repository::Repository,
    mode: ModelControlMode,
    /// How long an unload waits for a version's queue to drain and its threads to stop.
    drain_timeout: Duration,
    /// Held for the length of one control operation: what each model looked like on disk when
    /// it was last synced, so polling reloads only what changed.
    ops: Mutex<HashMap<String, DiskState>>,
    /// Models unloaded on request, for the index.
    unloaded: std::sync::Mutex<BTreeSet<String>>,
    /// Versions being loaded right now, for the index. They are not in the table until ready:
    /// a load must not change what serves or what readiness says before it succeeds.
    loading: std::sync::Mutex<BTreeSet<(String, u64)>>,
    /// A repository on object storage, mirrored into `root` before each scan.
    source: Option<Arc<ObjectSource>>,
    /// Models whose versions come from an MLflow registry, generated before each scan.
    mlflow: Option<Arc<MlflowSource>>,
}

impl ModelManager {
    pub fn new(
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        root: repository::Repository,
        mode: ModelControlMode,
        drain_timeout: Duration,
    ) -> ModelManager {
        ModelManager {
            registry,
            metrics,
            root,
            mode,
            drain_timeout,
            ops: Mutex::new(HashMap::new()),
            unloaded: std::sync::Mutex::new(BTreeSet::new()),
            loading: std::sync::Mutex::new(BTreeSet::new()),
            source: None,
            mlflow: None,
        }
    }

    /// The repository is `source`'s mirror (`root` is its tree): synced before every scan.
    pub fn with_source(mut self, source: Arc<ObjectSource>) -> ModelManager {
        self.source = Some(source);
        self
    }

    /// Models from an MLflow registry: synced into the repository's mirror before each scan.
    pub fn with_mlflow(mut self, mlflow: Arc<MlflowSource>) -> ModelManager {
        self.mlflow = Some(mlflow);
        self
    }

    async fn pull(&self) {
        if let Some(source) = &self.source {
            source.sync().await;
        }
        if let Some(mlflow) = &self.mlflow {
            mlflow.sync(self.root.root()).await;
        }
    }

    pub fn mode(&self) -> ModelControlMode {
        self.mode
    }

    /// Start-up: every model (modes none and poll) or the named ones (explicit), concurrently.
    pub async fn load_initial(&self, names: &[String]) -> Result<(), ControlError> {
        let mut ops = self.ops.lock().await;
        self.pull().await;
        let mut dirs =
            repository::scan(&self.root).map_err(|e| ControlError::Repository(e.to_string()))?;
        if self.mode == ModelControlMode::Explicit {
            for n in names {
                if !dirs.iter().any(|d| &d.name == n) {
                    tracing::error!(model = %n, "--load-model: no such model in the repository");
                }
            }
            dirs.retain(|d| names.contains(&d.name));
        }
        // Publish every model as loading first: readiness waits for all of them.
        self.registry.publish(|table| {
            for d in &dirs {
                let versions = d
                    .served_versions()
                    .into_iter()
                    .map(|(v, _)| (v, VersionState::Loading))
                    .collect();
                table.models.insert(
                    d.name.clone(),
                    ModelEntry {
                        name: d.name.clone(),
                        versions,
                        error: None,
                        last_failure: None,
                        traffic: None,
                        file_traffic: None,
                        file_rollout: None,
                    },
                );
            }
        });
        for d in &dirs {
            ops.insert(d.name.clone(), disk_state(d));
        }
        futures_util::future::join_all(dirs.into_iter().map(|d| self.sync(d))).await;
        self.registry.mark_initialized();
        Ok(())
    }

    /// Explicit load (or reload): re-reads the model's directory and config and applies its
    /// version policy. Errors when nothing of what was asked could be published.
    pub async fn load(&self, name: &str) -> Result<(), ControlError> {
        self.load_from(name, None).await
    }

    /// Explicit load of a model the request brings (Triton's load with `config` and `file:`
    /// parameters): written into the repository (`registry::upload`), then loaded as
    /// [`ModelManager::load`] loads, within the same control operation. `max_bytes` bounds
    /// the files together.
    pub async fn load_uploaded(
        &self,
        name: &str,
        upload: Upload,
        max_bytes: usize,
    ) -> Result<(), ControlError> {
        self.load_from(name, Some((upload, max_bytes))).await
    }

    async fn load_from(
        &self,
        name: &str,
        upload: Option<(Upload, usize)>,
    ) -> Result<(), ControlError> {
        if self.mode != ModelControlMode::Explicit {
            return Err(ControlError::NotAllowed(format!(
                "loading models through the API needs --model-control-mode explicit (this server runs in {} mode)",
                self.mode.as_str()
            )));
        }
        if !repository::valid_model_name(name) {
            return Err(ControlError::InvalidName(name.to_owned()));
        }
        let mut ops = self.ops.lock().await;
        self.pull().await;
        if let Some((upload, max_bytes)) = upload {
            if self.source.is_some() {
                return Err(ControlError::NotAllowed(
                    "uploads need a local model repository; this one is on object storage".into(),
                ));
            }
            let with_files = !upload.files.is_empty();
            // A config override needs the model in the repository; an upload brings it.
            if !with_files {
                self.dir(name)?;
            }
            // One model's directory (`model_name`) has no place for another model's files.
            if self.root.is_single_model() {
                return Err(ControlError::Repository(
                    "uploads need a model repository; this server serves one model's directory (model_name)".to_owned(),
                ));
            }
            let root = self
                .root
                .root()
                .canonicalize()
                .map_err(|e| ControlError::Repository(e.to_string()))?;
            tokio::task::spawn_blocking({
                let name = name.to_owned();
                move || upload::write(&root, &name, &upload, max_bytes)
            })
            .await
            .map_err(|e| ControlError::Repository(format!("upload task failed: {e}")))??;
        }
        let dir = match self.dir(name) {
            Err(ControlError::NotFound(_)) => {
                return Err(ControlError::NotInRepository(name.to_owned()))
            }
            other => other?,
        };
        self.unloaded_set().remove(name);
        ops.insert(name.to_owned(), disk_state(&dir));
        match self.sync(dir).await {
            Some(reason) => Err(ControlError::LoadFailed {
                model: name.to_owned(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Explicit unload: new requests get NOT_FOUND at once; requests in flight finish; returns
    /// once the versions' queues are answered and their threads joined. A model not loaded
    /// (or not in the repository) has nothing to unload: success, as in Triton.
    pub async fn unload(&self, name: &str) -> Result<(), ControlError> {
        if self.mode != ModelControlMode::Explicit {
            return Err(ControlError::NotAllowed(format!(
                "unloading models through the API needs --model-control-mode explicit (this server runs in {} mode)",
                self.mode.as_str()
            )));
        }
        if !repository::valid_model_name(name) {
            return Err(ControlError::InvalidName(name.to_owned()));
        }
        let mut ops = self.ops.lock().await;
        if !self.registry.snapshot().models.contains_key(name) {
            return Ok(());
        }
        ops.remove(name);
        self.unloaded_set().insert(name.to_owned());
        self.retire(name).await;
        Ok(())
    }

    /// Poll mode: one rescan. New or changed versions load, removed ones unload.
    pub async fn poll(&self) {
        let mut ops = self.ops.lock().await;
        self.pull().await;
        let dirs = match repository::scan(&self.root) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("repository poll failed: {e}");
                return;
            }
        };
        let gone: Vec<String> = self
            .registry
            .snapshot()
            .models
            .keys()
            .filter(|n| !dirs.iter().any(|d| &d.name == *n))
            .cloned()
            .collect();
        for name in gone {
            tracing::info!(model = %name, "model directory removed: unloading");
            ops.remove(&name);
            self.retire(&name).await;
        }
        for d in dirs {
            let now = disk_state(&d);
            if ops.get(&d.name) != Some(&now) {
                tracing::info!(model = %d.name, "model directory changed: syncing");
                ops.insert(d.name.clone(), now);
                self.sync(d).await;
            }
        }
    }

    /// Every model of the repository with the state of each of its versions.
    pub fn index(&self, ready_only: bool) -> Result<Vec<IndexRow>, ControlError> {
        let table = self.registry.snapshot();
        let dirs =
            repository::scan(&self.root).map_err(|e| ControlError::Repository(e.to_string()))?;
        let unloaded = self.unloaded_set().clone();
        let mut rows = Vec::new();
        let names: BTreeSet<&String> = dirs
            .iter()
            .map(|d| &d.name)
            .chain(table.models.keys())
            .collect();
        for name in names {
            let row = |version: String, state: &str, reason: String| IndexRow {
                name: name.clone(),
                version,
                state: state.into(),
                reason,
            };
            let loading: Vec<u64> = self
                .loading_set()
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| *v)
                .collect();
            // Per version: what the table says, then "loading" where a load is under way and
            // the table has nothing ready under that number.
            let mut versions: BTreeMap<u64, (&str, String)> = BTreeMap::new();
            if let Some(entry) = table.models.get(name) {
                if let Some(e) = &entry.error {
                    rows.push(row(String::new(), "UNAVAILABLE", e.clone()));
                }
                for (v, state) in &entry.versions {
                    let reason = match state {
                        VersionState::Unavailable(r) => r.clone(),
                        // The engine `auto` chose and why, warm-up warnings.
                        VersionState::Ready(mv) => mv.note.clone(),
                        _ => String::new(),
                    };
                    versions.insert(*v, (state.as_str(), reason));
                }
            }
            for v in loading {
                let ready = versions.get(&v).is_some_and(|(s, _)| *s == "READY");
                if !ready {
                    versions.insert(v, ("LOADING", String::new()));
                }
            }
            if versions.is_empty() && !table.models.contains_key(name) {
                if unloaded.contains(name) {
                    rows.push(row(String::new(), "UNAVAILABLE", "unloaded".into()));
                } else {
                    rows.push(row(String::new(), "", String::new()));
                }
            }
            for (v, (state, reason)) in versions {
                rows.push(row(v.to_string(), state, reason));
            }
        }
        if let Some(source) = &self.source {
            sync::note_source(&mut rows, &source.status());
        }
        if let Some(mlflow) = &self.mlflow {
            sync::note_registry(&mut rows, &mlflow.status());
        }
        if ready_only {
            rows.retain(|r| r.state == "READY");
        }
        Ok(rows)
    }

    fn dir(&self, name: &str) -> Result<ModelDir, ControlError> {
        if !repository::valid_model_name(name) {
            return Err(ControlError::InvalidName(name.to_owned()));
        }
        match repository::scan_one(&self.root, name) {
            Ok(Ok(dir)) => Ok(dir),
            Ok(Err(repository::Missing::Absent)) => Err(ControlError::NotFound(name.to_owned())),
            Ok(Err(repository::Missing::Outside)) => {
                Err(ControlError::OutsideRepository(name.to_owned()))
            }
            Err(e) => Err(ControlError::Repository(e.to_string())),
        }
    }

    fn loading_set(&self) -> std::sync::MutexGuard<'_, BTreeSet<(String, u64)>> {
        // As for `unloaded_set`.
        self.loading.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unloaded_set(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        // Poisoning only means a panic elsewhere mid-update of a set of names: still usable.
        self.unloaded.lock().unwrap_or_else(|p| p.into_inner())
    }
}
