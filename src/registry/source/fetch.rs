//! One object downloaded into the cache (ETag checked with `If-Match`, size checked, written
//! beside its blob and renamed), and the words of a store error: its kind for the metric, its
//! message with credentials blanked.

use std::io::Write;

use futures_util::StreamExt;
use object_store::{path::Path as ObjectPath, GetOptions, ObjectStore};

use super::cache::Cache;
use super::plan::Listed;
use super::{ObjectSource, GET_TIMEOUT, SOURCE};

impl ObjectSource {
    /// Downloads one object into its blob unless the cache has it; checks the ETag it read
    /// (an object replaced since the listing waits for the next poll) and the size.
    pub(super) async fn fetch(&self, cache: &Cache, obj: &Listed) -> Result<(), String> {
        let name = obj.blob_name();
        if cache.has_blob(&name, obj.size) {
            return Ok(());
        }
        let path = match self.prefix.is_empty() {
            true => ObjectPath::from(obj.key.as_str()),
            false => ObjectPath::from(format!("{}/{}", self.prefix, obj.key)),
        };
        let options = GetOptions {
            if_match: (!obj.etag.starts_with("lm")).then(|| obj.etag.clone()),
            ..Default::default()
        };
        let part = cache.partial_path(&name);
        let download = async {
            let got = self
                .store
                .get_opts(&path, options)
                .await
                .map_err(|e| (kind(&e), e.to_string()))?;
            let mut stream = got.into_stream();
            let io = |e: std::io::Error| ("cache", e.to_string());
            let mut file = std::fs::File::create(&part).map_err(io)?;
            let mut written = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| (kind(&e), e.to_string()))?;
                written = written.saturating_add(chunk.len() as u64);
                if written > obj.size {
                    return Err(("changed", "the object grew while it was read".to_owned()));
                }
                file.write_all(&chunk).map_err(io)?;
            }
            if written != obj.size {
                return Err(("changed", format!("read {written} of {} bytes", obj.size)));
            }
            if let Some(t) = obj.modified {
                // Best effort: without it a `[rollout]` starts from the download time.
                let _ = file.set_modified(t);
            }
            drop(file);
            std::fs::rename(&part, cache.blob_path(&name)).map_err(io)
        };
        let result = match tokio::time::timeout(GET_TIMEOUT, download).await {
            Ok(r) => r,
            Err(_) => Err(("unreachable", "download timed out".to_owned())),
        };
        result.map_err(|(kind, message)| {
            let _ = std::fs::remove_file(&part);
            let (_, message) = self.failed(kind, message);
            tracing::warn!(source = SOURCE, kind, key = %obj.key, "model download failed: {message}");
            format!("{}: {message}", obj.key)
        })
    }
}

pub(super) fn kind(e: &object_store::Error) -> &'static str {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => "not_found",
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => "forbidden",
        E::Precondition { .. } | E::NotModified { .. } => "changed",
        other => {
            let text = other.to_string().to_ascii_lowercase();
            if ["slowdown", "429", "503", "throttl"]
                .iter()
                .any(|w| text.contains(w))
            {
                "throttled"
            } else if ["connect", "dns", "timed out", "error sending request"]
                .iter()
                .any(|w| text.contains(w))
            {
                "unreachable"
            } else if ["403", "accessdenied", "signature"]
                .iter()
                .any(|w| text.contains(w))
            {
                "forbidden"
            } else {
                "other"
            }
        }
    }
}

pub(super) fn scrub(message: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .fold(message.to_owned(), |m, s| m.replace(s.as_str(), "***"))
}
