//! Models whose versions come from an MLflow Model Registry: a model directory whose
//! `config.toml` has `[source] mlflow = "http://..." , registered_model = "fraud"` is served from
//! a generated directory (`<model_cache_dir>/mlflow/<model>`) that the scan reads instead
//! (`repository::Repository::with_mirror`). Each sync asks the registry for the model's aliases;
//! the versions behind them are downloaded once (the `onnx` flavour's files, external data
//! included, through the tracking server's artifact proxy, or from the bucket for `s3://`
//! URIs), the others removed; the generated `config.toml` is the model's own with
//! `version_policy = { specific = [...] }` and its `[traffic] weights` keyed by version numbers
//! (aliases resolved; an alias that is gone drops out; no weights: all to `champion`). Registry
//! errors keep the generated directory as it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::super::repository::{valid_model_name, CONFIG_FILE, MODEL_FILE};
use super::mlflow_config::generated_config;
use crate::metrics::Metrics;

const SOURCE: &str = "mlflow";
const TIMEOUT: Duration = Duration::from_secs(60);

pub struct MlflowSource {
    mirror: PathBuf,
    client: reqwest::Client,
    token: Option<String>,
    max_bytes: u64,
    metrics: Arc<Metrics>,
    /// Per model: aliases, versions and the last sync, or the last error (for the index).
    status: std::sync::Mutex<BTreeMap<String, String>>,
}

impl MlflowSource {
    /// `mirror`: where the generated model directories go (created on first use).
    pub fn new(mirror: PathBuf, max_bytes: u64, metrics: Arc<Metrics>) -> MlflowSource {
        MlflowSource {
            mirror,
            client: reqwest::Client::builder()
                .timeout(TIMEOUT)
                .build()
                .unwrap_or_default(),
            token: std::env::var("MLFLOW_TRACKING_TOKEN").ok(),
            max_bytes,
            metrics,
            status: Default::default(),
        }
    }

    pub fn mirror(&self) -> &Path {
        &self.mirror
    }

    /// Per model: what the index shows.
    pub fn status(&self) -> BTreeMap<String, String> {
        self.lock_status().clone()
    }

    /// Syncs every model of `root` that names a registry; removes the generated directories of
    /// models that no longer do.
    pub async fn sync(&self, root: &Path) {
        let mut declared = BTreeMap::new();
        for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !valid_model_name(&name) {
                continue;
            }
            if let Some(table) = declared_source(&entry.path().join(CONFIG_FILE)) {
                declared.insert(name, table);
            }
        }
        if let Ok(entries) = std::fs::read_dir(&self.mirror) {
            for e in entries.flatten() {
                if !declared.contains_key(&*e.file_name().to_string_lossy()) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        for (name, table) in declared {
            let note = match self.sync_model(&name, &table).await {
                Ok(note) => note,
                Err(e) => {
                    self.metrics
                        .source
                        .errors
                        .with_label_values(&[SOURCE, "other"])
                        .inc();
                    tracing::error!(source = SOURCE, model = %name, "model registry sync failed, serving what was synced: {e}");
                    format!("mlflow: {e} (serving what was synced)")
                }
            };
            self.lock_status().insert(name, note);
        }
    }

    async fn sync_model(&self, name: &str, table: &toml::Table) -> Result<String, String> {
        let source = table.get("source").and_then(|s| s.as_table());
        let get = |k: &str| source.and_then(|s| s.get(k)).and_then(|v| v.as_str());
        let (Some(base), Some(registered)) = (get("mlflow"), get("registered_model")) else {
            return Err("[source] needs mlflow = \"http://...\" and registered_model".into());
        };
        let base = base.trim_end_matches('/');
        let got = self
            .json(
                base,
                "/api/2.0/mlflow/registered-models/get",
                &[("name", registered)],
            )
            .await?;
        let mut aliases = BTreeMap::new();
        for a in got["registered_model"]["aliases"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let (Some(alias), Some(v)) = (a["alias"].as_str(), a["version"].as_str()) {
                if let Ok(v) = v.parse::<u64>() {
                    aliases.insert(alias.to_owned(), v);
                }
            }
        }
        let dir = self.mirror.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut versions: Vec<u64> = aliases.values().copied().collect();
        versions.sort_unstable();
        versions.dedup();
        for &v in &versions {
            if !dir.join(v.to_string()).is_dir() {
                self.download(base, registered, v, &dir).await?;
            }
        }
        for e in std::fs::read_dir(&dir)
            .map_err(|e| e.to_string())?
            .flatten()
        {
            let file = e.file_name().to_string_lossy().into_owned();
            let stale = file.parse::<u64>().is_ok_and(|v| !versions.contains(&v));
            if stale || file.starts_with(".stage") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let config = generated_config(table, &aliases, &versions)?;
        let path = dir.join(CONFIG_FILE);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(config.as_str()) {
            let tmp = dir.join(".config.tmp");
            std::fs::write(&tmp, &config).map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, &path).map_err(|e| e.to_string())?;
        }
        let listed: Vec<String> = aliases.iter().map(|(a, v)| format!("{a}={v}")).collect();
        let at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(format!(
            "mlflow {registered}: aliases {}; versions {versions:?}; synced at {at}",
            listed.join(", ")
        ))
    }

    /// Version `v`'s artifacts into `<dir>/<v>` (staged hidden, renamed in): the `onnx`
    /// flavour's file becomes `model.onnx`, the other files (external data) keep their names.
    async fn download(&self, base: &str, model: &str, v: u64, dir: &Path) -> Result<(), String> {
        let version = v.to_string();
        let uri = self
            .json(
                base,
                "/api/2.0/mlflow/model-versions/get-download-uri",
                &[("name", model), ("version", &version)],
            )
            .await?;
        let uri = uri["artifact_uri"].as_str().unwrap_or_default().to_owned();
        let stage = dir.join(format!(".stage-{v}"));
        let _ = std::fs::remove_dir_all(&stage);
        std::fs::create_dir_all(&stage).map_err(|e| e.to_string())?;
        if uri.starts_with("s3://") {
            self.download_from_bucket(&uri, &stage).await?;
            return self.finish_download(v, &stage, dir);
        }
        let Some(path) = uri.strip_prefix("mlflow-artifacts:") else {
            return Err(format!(
                "version {v}: artifact URI {uri:?}: only mlflow-artifacts: (the tracking server's artifact proxy) and s3:// are supported"
            ));
        };
        let path = path.trim_matches('/');
        let listed = self
            .json(
                base,
                "/api/2.0/mlflow-artifacts/artifacts",
                &[("path", path)],
            )
            .await?;
        let mut total = 0u64;
        for f in listed["files"].as_array().into_iter().flatten() {
            let (Some(file), false) = (f["path"].as_str(), f["is_dir"].as_bool().unwrap_or(false))
            else {
                continue;
            };
            if file.contains('/') || file.starts_with('.') || file.is_empty() {
                continue;
            }
            let bytes = self
                .bytes(
                    &format!("{base}/api/2.0/mlflow-artifacts/artifacts/{path}/{file}"),
                    &mut total,
                )
                .await?;
            std::fs::write(stage.join(file), bytes).map_err(|e| e.to_string())?;
        }
        self.finish_download(v, &stage, dir)
    }

    /// The staged version with its `onnx` flavour's file as `model.onnx`, renamed in.
    fn finish_download(&self, v: u64, stage: &Path, dir: &Path) -> Result<(), String> {
        let mlmodel = std::fs::read_to_string(stage.join("MLmodel")).unwrap_or_default();
        let Some(data) = onnx_data(&mlmodel) else {
            return Err(format!("version {v}: its MLmodel has no onnx flavour"));
        };
        if data != MODEL_FILE {
            std::fs::rename(stage.join(&data), stage.join(MODEL_FILE))
                .map_err(|e| format!("version {v}: {data}: {e}"))?;
        }
        std::fs::rename(stage, dir.join(v.to_string())).map_err(|e| e.to_string())
    }

    /// The files directly under an `s3://bucket/prefix` artifact URI into `stage`, through
    /// object_store with the environment's credentials (`AWS_ENDPOINT_URL`, keys, IRSA, ...),
    /// counted against the cache bound.
    async fn download_from_bucket(&self, uri: &str, stage: &Path) -> Result<(), String> {
        use futures_util::TryStreamExt;
        use object_store::{path::Path as ObjectPath, ObjectStore};
        let (bucket, prefix) = super::parse_url(uri).ok_or("not an s3:// URL")??;
        let (store, secrets) = super::build_store(uri, &bucket, &BTreeMap::new())?;
        let blank = |e: String| super::fetch::scrub(&e, &secrets);
        let listed = tokio::time::timeout(
            TIMEOUT,
            store
                .list(Some(&ObjectPath::from(prefix.as_str())))
                .try_collect::<Vec<_>>(),
        )
        .await
        .map_err(|_| format!("{uri}: listing timed out"))?
        .map_err(|e| blank(format!("{uri}: {e}")))?;
        let mut total = 0u64;
        for meta in listed {
            let key = meta.location.as_ref();
            let Some(file) = key.get(prefix.len()..).map(|f| f.trim_start_matches('/')) else {
                continue;
            };
            if file.contains('/') || file.starts_with('.') || file.is_empty() {
                continue;
            }
            total = total.saturating_add(meta.size);
            if total > self.max_bytes {
                return Err(format!(
                    "artifacts pass model_cache_max_bytes = {}",
                    self.max_bytes
                ));
            }
            let got = tokio::time::timeout(TIMEOUT, async {
                store.get(&meta.location).await?.bytes().await
            })
            .await
            .map_err(|_| format!("{uri}/{file}: download timed out"))?
            .map_err(|e| blank(format!("{uri}/{file}: {e}")))?;
            if got.len() as u64 != meta.size {
                return Err(format!("{uri}/{file}: changed while it was read"));
            }
            std::fs::write(stage.join(file), &got).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn json(&self, base: &str, path: &str, query: &[(&str, &str)]) -> Result<Value, String> {
        let mut req = self.client.get(format!("{base}{path}")).query(query);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let r = req
            .send()
            .await
            .map_err(|e| format!("{path}: {}", e.without_url()))?;
        let status = r.status();
        let body = r.bytes().await.map_err(|e| e.without_url().to_string())?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            return Err(format!("{path}: HTTP {status}: {text}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("{path}: {e}"))
    }

    /// One artifact, counted against the cache bound as it arrives.
    async fn bytes(&self, url: &str, total: &mut u64) -> Result<Vec<u8>, String> {
        let mut req = self.client.get(url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let mut r = req.send().await.map_err(|e| e.without_url().to_string())?;
        if !r.status().is_success() {
            return Err(format!("artifact download: HTTP {}", r.status()));
        }
        let mut out = Vec::new();
        while let Some(chunk) = r.chunk().await.map_err(|e| e.without_url().to_string())? {
            *total = total.saturating_add(chunk.len() as u64);
            if *total > self.max_bytes {
                return Err(format!(
                    "artifacts pass model_cache_max_bytes = {}",
                    self.max_bytes
                ));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        // Poisoning only means a panic elsewhere mid-insert of a note: still readable.
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The config table when it has a `[source]` naming a registry.
pub fn declared_source(config: &Path) -> Option<toml::Table> {
    let text = std::fs::read_to_string(config).ok()?;
    let table: toml::Table = text.parse().ok()?;
    table
        .get("source")
        .and_then(|s| s.as_table())
        .filter(|s| s.contains_key("mlflow"))?;
    Some(table)
}

/// `flavors.onnx.data` of an MLmodel file (YAML; read by its indentation, MLflow writes it so).
fn onnx_data(mlmodel: &str) -> Option<String> {
    let mut in_onnx = false;
    for line in mlmodel.lines() {
        if line.starts_with("  ") && !line.starts_with("   ") {
            in_onnx = line.trim_end() == "  onnx:";
        } else if in_onnx {
            if let Some(v) = line.trim_start().strip_prefix("data: ") {
                return Some(v.trim().trim_matches(['"', '\'']).to_owned());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_onnx_flavours_file_is_found() {
        let mlmodel = "artifact_path: x\nflavors:\n  onnx:\n    code: null\n    data: model.onnx\n  python_function:\n    data: other\n";
        assert_eq!(onnx_data(mlmodel).as_deref(), Some("model.onnx"));
        assert_eq!(onnx_data("flavors:\n  sklearn:\n    data: m.pkl\n"), None);
    }
}
