//! A model repository on S3-compatible object storage (`model_repository = "s3://bucket/prefix"`),
//! mirrored into a local cache that the ordinary scan then reads, so hot swap, traffic and the
//! index work as on disk. One sync = one listing of the prefix; when it equals the last one
//! nothing else happens. A version exists once its `ready` marker object is listed (writers
//! upload it last); only the versions the model's version policy serves are downloaded, each
//! object once per ETag, within `model_cache_max_bytes`. Store errors keep the cache (and so
//! what serves) as it was and are reported in the index, the log and
//! `ferroserve_model_source_errors_total`; credentials never appear in any of them.

mod cache;
mod fetch;
pub mod location;
pub mod mlflow;
mod mlflow_config;
pub mod plan;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::{path::Path as ObjectPath, ObjectStore, RetryConfig};

use cache::{Cache, Files};
use fetch::{kind, scrub};
use plan::{Budget, Listed, ListedModel};

use super::repository::CONFIG_FILE;
use crate::config::ModelConfig;
use crate::metrics::Metrics;

/// The `source` label of this kind of source in metrics.
const SOURCE: &str = "s3";
/// A listing or a download that takes longer than this is abandoned (and retried next poll).
const LIST_TIMEOUT: Duration = Duration::from_secs(60);
const GET_TIMEOUT: Duration = Duration::from_secs(600);

/// What the last sync found, for the repository index.
#[derive(Debug, Clone, Default)]
pub struct SourceStatus {
    /// Why the last listing failed (the cache kept serving), `None` after a good one.
    pub error: Option<String>,
    /// Per model: why a version could not be mirrored (download failed, over the cache bound).
    pub model_errors: BTreeMap<String, String>,
    pub last_sync: Option<SystemTime>,
}

struct State {
    cache: Cache,
    /// The identity of the last listing fully applied: an equal listing is a no-op.
    applied: Option<u64>,
}

pub struct ObjectSource {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    url: String,
    tree: PathBuf,
    max_bytes: u64,
    state: tokio::sync::Mutex<State>,
    status: std::sync::Mutex<SourceStatus>,
    metrics: Arc<Metrics>,
    /// Credential values to blank out of any message that leaves this module.
    secrets: Vec<String>,
}

/// `s3://bucket/prefix` → (bucket, prefix without slashes at its ends); `None` when `repo` is
/// not an object-store URL.
pub fn parse_url(repo: &str) -> Option<Result<(String, String), String>> {
    let rest = repo.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Some(Err(format!("model_repository {repo:?}: no bucket name")));
    }
    Some(Ok((bucket.to_owned(), prefix.trim_matches('/').to_owned())))
}

impl ObjectSource {
    /// The store from the standard AWS variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, keys,
    /// `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`, the instance metadata service) and
    /// the cache, locked for this process. Nothing is listed yet.
    /// `options`: object_store's S3 keys (`aws_endpoint`, `aws_region`, ...) over the
    /// environment's.
    pub fn open(
        repo: &str,
        options: &BTreeMap<String, String>,
        cache_dir: &Path,
        max_bytes: u64,
        metrics: Arc<Metrics>,
    ) -> Result<ObjectSource, String> {
        let (bucket, prefix) = parse_url(repo).ok_or("not an s3:// URL")??;
        let (store, secrets) = build_store(&format!("model_repository {repo}"), &bucket, options)?;
        let cache = Cache::open(cache_dir).map_err(|e| scrub(&e.to_string(), &secrets))?;
        Ok(ObjectSource {
            store: Arc::new(store),
            prefix,
            url: format!("s3://{bucket}"),
            tree: cache.tree(),
            max_bytes,
            state: tokio::sync::Mutex::new(State {
                cache,
                applied: None,
            }),
            status: Default::default(),
            metrics,
            secrets,
        })
    }
}

/// The store of `bucket` from the environment and `options` (see [`ObjectSource::open`]), and
/// the credential values to blank out of messages. `what` names it in errors.
pub(super) fn build_store(
    what: &str,
    bucket: &str,
    options: &BTreeMap<String, String>,
) -> Result<(object_store::aws::AmazonS3, Vec<String>), String> {
    let mut secrets: Vec<String> = [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok())
    .collect();
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(15),
            ..Default::default()
        });
    if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL_S3") {
        builder = builder.with_endpoint(endpoint);
    }
    for (key, value) in options {
        let parsed: AmazonS3ConfigKey = key.parse().map_err(|_| {
            format!("model_repository_options: {key:?} is not an S3 setting of object_store")
        })?;
        if ["secret", "key_id", "token"]
            .iter()
            .any(|w| key.contains(w))
        {
            secrets.push(value.clone());
        }
        builder = builder.with_config(parsed, value);
    }
    secrets.retain(|v| v.len() >= 4);
    // An endpoint named explicitly as http:// (MinIO, SeaweedFS in a cluster) is meant.
    let plain = builder
        .get_config_value(&AmazonS3ConfigKey::Endpoint)
        .is_some_and(|e| e.starts_with("http://"));
    if plain {
        builder = builder.with_allow_http(true);
    }
    let store = builder
        .build()
        .map_err(|e| scrub(&format!("{what}: {e}"), &secrets))?;
    Ok((store, secrets))
}

impl ObjectSource {
    /// The mirrored repository: what `repository::scan` reads.
    pub fn tree(&self) -> &Path {
        &self.tree
    }

    pub fn status(&self) -> SourceStatus {
        self.lock_status().clone()
    }

    /// One listing; downloads and tree changes only when it differs from the last one applied.
    /// Every failure is reported and leaves the cache serving what it held.
    pub async fn sync(&self) {
        let mut state = self.state.lock().await;
        let listing = match self.list().await {
            Ok(listing) => listing,
            Err((kind, message)) => {
                tracing::error!(
                    source = SOURCE,
                    kind,
                    "model repository {}: listing failed, serving the cached versions: {message}",
                    self.url
                );
                self.lock_status().error = Some(format!(
                    "model source {}: {message} (serving the cached versions)",
                    self.url
                ));
                return;
            }
        };
        let id = plan::listing_id(&listing);
        if state.applied == Some(id) {
            self.settled(None);
            return;
        }
        let models = plan::group(&listing);
        let (want, errors) = self.mirror(&mut state.cache, &models).await;
        let applied = {
            let cache = &mut state.cache;
            cache.apply(&want)
        };
        match applied {
            Ok(()) if errors.is_empty() => state.applied = Some(id),
            Ok(()) => {}
            Err(e) => {
                self.count("cache");
                tracing::error!(source = SOURCE, "model cache: {e}");
            }
        }
        self.settled(Some(errors));
    }

    fn settled(&self, model_errors: Option<BTreeMap<String, String>>) {
        let mut status = self.lock_status();
        status.error = None;
        if let Some(errors) = model_errors {
            status.model_errors = errors;
        }
        status.last_sync = Some(SystemTime::now());
        let now = status
            .last_sync
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok());
        self.metrics
            .source
            .last_sync
            .with_label_values(&[SOURCE])
            .set(now.map_or(0.0, |d| d.as_secs_f64()));
    }

    async fn list(&self) -> Result<Vec<Listed>, (&'static str, String)> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let started = std::time::Instant::now();
        let listed = tokio::time::timeout(
            LIST_TIMEOUT,
            self.store.list(prefix.as_ref()).try_collect::<Vec<_>>(),
        )
        .await;
        let metas = match listed {
            Err(_) => return Err(self.failed("unreachable", "listing timed out".into())),
            Ok(Err(e)) => return Err(self.failed(kind(&e), e.to_string())),
            Ok(Ok(metas)) => metas,
        };
        self.metrics
            .source
            .list_duration
            .with_label_values(&[SOURCE])
            .set(started.elapsed().as_secs_f64());
        let skip = match self.prefix.is_empty() {
            true => 0,
            false => self.prefix.len() + 1,
        };
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let key = m.location.as_ref().get(skip..)?.to_owned();
                let etag = m.e_tag.unwrap_or_else(|| {
                    format!("lm{}", m.last_modified.timestamp_nanos_opt().unwrap_or(0))
                });
                let modified = u64::try_from(m.last_modified.timestamp_millis())
                    .ok()
                    .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
                Some(Listed {
                    key,
                    etag,
                    size: m.size,
                    modified,
                })
            })
            .collect())
    }

    /// The files the tree should hold: each model's config and the files of the versions its
    /// policy serves, downloaded where the cache lacks them. A version that cannot be had
    /// keeps what the cache held for it.
    async fn mirror(
        &self,
        cache: &mut Cache,
        models: &BTreeMap<String, ListedModel>,
    ) -> (Files, BTreeMap<String, String>) {
        let mut want = Files::new();
        let mut errors = BTreeMap::new();
        let held = cache.manifest().clone();
        let mut budget = Budget::default();
        for (name, model) in models {
            let mut wanted_versions = model.versions.keys().copied().collect::<Vec<_>>();
            if let Some(config) = &model.config {
                match self.fetch(cache, config).await {
                    Ok(()) => {
                        want.insert(format!("{name}/{CONFIG_FILE}"), config.blob_name());
                        wanted_versions = served(cache, config, name, &wanted_versions);
                    }
                    Err(e) => {
                        // Keep what serves: the model as the cache held it.
                        let mine = format!("{name}/");
                        want.extend(
                            held.iter()
                                .filter(|(k, _)| k.starts_with(&mine))
                                .map(|(k, b)| (k.clone(), b.clone())),
                        );
                        errors.insert(name.clone(), e);
                        continue;
                    }
                }
            }
            // Versions already cached first: a new one never pushes out one that serves.
            wanted_versions
                .sort_by_key(|v| !held.keys().any(|k| k.starts_with(&format!("{name}/{v}/"))));
            for v in wanted_versions {
                let files = &model.versions[&v].files;
                if let Err(e) = budget.take(files.values(), self.max_bytes) {
                    errors.insert(name.clone(), format!("version {v}: {e}"));
                    continue;
                }
                let mut fetched = Ok(());
                for obj in files.values() {
                    fetched = self.fetch(cache, obj).await;
                    if fetched.is_err() {
                        break;
                    }
                }
                let dir = format!("{name}/{v}/");
                match fetched {
                    Ok(()) => want.extend(
                        files
                            .iter()
                            .map(|(p, o)| (format!("{dir}{p}"), o.blob_name())),
                    ),
                    Err(e) => {
                        errors.insert(name.clone(), format!("version {v}: {e}"));
                        want.extend(
                            held.iter()
                                .filter(|(k, _)| k.starts_with(&dir))
                                .map(|(k, b)| (k.clone(), b.clone())),
                        );
                    }
                }
            }
        }
        (want, errors)
    }

    /// Counts an error and returns its message with credentials blanked and its length bounded.
    fn failed(&self, kind: &'static str, message: String) -> (&'static str, String) {
        self.count(kind);
        (
            kind,
            crate::error::clip_message(scrub(&message, &self.secrets)),
        )
    }

    fn count(&self, kind: &str) {
        self.metrics
            .source
            .errors
            .with_label_values(&[SOURCE, kind])
            .inc();
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, SourceStatus> {
        // Poisoning only means a panic elsewhere mid-update of a status: still readable.
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The versions `config`'s policy serves, of those listed; all listed when it does not parse
/// (the scan then reports the config error as it would on disk).
fn served(cache: &Cache, config: &Listed, name: &str, listed: &[u64]) -> Vec<u64> {
    let text = std::fs::read_to_string(cache.blob_path(&config.blob_name())).unwrap_or_default();
    match ModelConfig::parse(&text, name) {
        Ok(c) => c.version_policy.select(listed),
        Err(_) => listed.iter().max().copied().into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_bucket_and_an_optional_prefix() {
        assert_eq!(parse_url("models"), None);
        assert_eq!(
            parse_url("s3://b/team/models/"),
            Some(Ok(("b".into(), "team/models".into())))
        );
        assert_eq!(parse_url("s3://b"), Some(Ok(("b".into(), String::new()))));
        assert!(parse_url("s3:///x").unwrap().is_err());
    }

    #[test]
    fn secrets_are_blanked() {
        let s = vec!["AKIASECRETVALUE".to_owned()];
        assert_eq!(scrub("key AKIASECRETVALUE refused", &s), "key *** refused");
    }
}
