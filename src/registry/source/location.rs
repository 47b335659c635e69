//! Where a model repository lives, opened the same way for `serve` and `predict`: a directory,
//! or the local mirror of an `s3://` bucket; and, with either, the models an MLflow registry
//! feeds (`[source]` in their config.toml), generated into the model cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{mlflow::MlflowSource, ObjectSource};
use crate::config::ModelControlMode;
use crate::metrics::Metrics;
use crate::registry::manager::ModelManager;
use crate::registry::repository::Repository;
use crate::registry::Registry;

/// What names the repository: `serve`'s settings, or `predict`'s flags.
pub struct Location<'a> {
    /// A directory, or `s3://bucket/prefix`.
    pub repository: &'a Path,
    /// Single-model mode (`--model-name`): the directory is one model's.
    pub model_name: Option<String>,
    /// `[model_repository_options]`: object_store's S3 settings.
    pub options: &'a BTreeMap<String, String>,
    pub cache_dir: PathBuf,
    pub cache_max_bytes: u64,
    /// The cache directory was chosen by the operator: MLflow-fed models may appear later even
    /// when none is declared at start (otherwise the mirror is made only for those declared).
    pub own_cache: bool,
}

/// An opened repository: what the scan reads, and the sources that fill it.
pub struct Opened {
    pub repo: Repository,
    source: Option<Arc<ObjectSource>>,
    mlflow: Option<Arc<MlflowSource>>,
}

impl Location<'_> {
    /// Opens the repository; nothing is listed or downloaded yet (the manager's first sync does).
    pub fn open(&self, metrics: &Arc<Metrics>) -> Result<Opened, String> {
        let source = match crate::config::object_repository(self.repository) {
            Some(url) => Some(Arc::new(ObjectSource::open(
                url,
                self.options,
                &self.cache_dir,
                self.cache_max_bytes,
                metrics.clone(),
            )?)),
            None => None,
        };
        let root = match &source {
            Some(s) => s.tree().to_path_buf(),
            None => self.repository.to_path_buf(),
        };
        let mut repo = Repository::new(root.clone(), self.model_name.clone())?;
        let mlflow = (self.own_cache || declares_source(&root)).then(|| {
            let mirror = self.cache_dir.join("mlflow");
            repo = repo.clone().with_mirror(mirror.clone());
            Arc::new(MlflowSource::new(
                mirror,
                self.cache_max_bytes,
                metrics.clone(),
            ))
        });
        Ok(Opened {
            repo,
            source,
            mlflow,
        })
    }
}

impl Opened {
    /// The directory the scan reads (the bucket's mirror for `s3://`).
    pub fn root(&self) -> &Path {
        self.repo.root()
    }

    /// The manager of this repository, its sources synced before every scan.
    pub fn manager(
        self,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        mode: ModelControlMode,
        drain_timeout: Duration,
    ) -> ModelManager {
        let manager = ModelManager::new(registry, metrics, self.repo, mode, drain_timeout);
        let manager = match self.source {
            Some(s) => manager.with_source(s),
            None => manager,
        };
        match self.mlflow {
            Some(m) => manager.with_mlflow(m),
            None => manager,
        }
    }
}

/// Whether a model directory of `root` names a `[source]` (an MLflow registry).
fn declares_source(root: &Path) -> bool {
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| super::mlflow::declared_source(&e.path().join("config.toml")).is_some())
}
