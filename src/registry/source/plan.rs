//! A bucket listing read as a model repository (pure): which keys are a model's `config.toml`,
//! which are a version's files, and which versions are complete (their `ready` marker is
//! listed). Keys outside the layout are ignored, never mirrored.

use std::collections::{BTreeMap, BTreeSet};

use super::super::repository::{parse_version, valid_model_name, CONFIG_FILE};

/// The object a writer uploads last into `<model>/<version>/`: the version exists for the
/// server only once it is listed.
pub const READY_MARKER: &str = "ready";

/// Directory depth allowed under a version (external data in sub-folders).
const MAX_DEPTH: usize = 8;

/// One listed object, its key relative to the repository prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub etag: String,
    pub size: u64,
    /// Last-Modified: the mirrored file's modification time (a `[rollout]`'s clock starts there).
    pub modified: Option<std::time::SystemTime>,
}

impl Listed {
    /// The cache's name for this content: ETag and size, in file-name-safe characters.
    pub fn blob_name(&self) -> String {
        let tag: String = self
            .etag
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(96)
            .collect();
        format!("{tag}-{}", self.size)
    }
}

/// One model as listed: its config object and its versions' files.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListedModel {
    pub config: Option<Listed>,
    /// Per version: its files (path inside the version directory → object) and whether its
    /// `ready` marker is listed.
    pub versions: BTreeMap<u64, ListedVersion>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListedVersion {
    pub files: BTreeMap<String, Listed>,
    pub ready: bool,
}

impl ListedVersion {
    pub fn bytes(&self) -> u64 {
        self.files
            .values()
            .map(|f| f.size)
            .fold(0, u64::saturating_add)
    }
}

/// Groups a listing by model. A model is listed only with at least one complete version, so a
/// model being uploaded for the first time never shows as a failed model.
pub fn group(listing: &[Listed]) -> BTreeMap<String, ListedModel> {
    let mut models: BTreeMap<String, ListedModel> = BTreeMap::new();
    for obj in listing {
        let parts: Vec<&str> = obj.key.split('/').collect();
        let Some((name, rest)) = parts.split_first() else {
            continue;
        };
        if !valid_model_name(name) {
            continue;
        }
        match rest {
            [file] if *file == CONFIG_FILE => {
                models.entry(name.to_string()).or_default().config = Some(obj.clone());
            }
            [version, path @ ..] if !path.is_empty() && path.len() <= MAX_DEPTH => {
                let Some(v) = parse_version(version) else {
                    continue;
                };
                if !path.iter().all(|p| safe_component(p)) {
                    continue;
                }
                let entry = models.entry(name.to_string()).or_default();
                let version = entry.versions.entry(v).or_default();
                if path == [READY_MARKER] {
                    version.ready = true;
                } else {
                    version.files.insert(path.join("/"), obj.clone());
                }
            }
            _ => {}
        }
    }
    for model in models.values_mut() {
        model.versions.retain(|_, v| v.ready);
    }
    models.retain(|_, m| !m.versions.is_empty());
    models
}

/// A path component the cache may create: not empty, not hidden (staging names start with
/// '.'), no separators.
fn safe_component(part: &str) -> bool {
    !part.is_empty()
        && !part.starts_with('.')
        && part.len() <= 255
        && !part.contains(['\\', '\0', '\t', '\n', '\r'])
}

/// A cheap identity of a listing: equal listings mean nothing to do.
pub fn listing_id(listing: &[Listed]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for obj in listing {
        (&obj.key, &obj.etag, obj.size).hash(&mut h);
    }
    h.finish()
}

/// The cache bound, counted per distinct blob.
#[derive(Default)]
pub struct Budget {
    blobs: BTreeSet<String>,
    bytes: u64,
}

impl Budget {
    pub fn take<'a>(
        &mut self,
        files: impl Iterator<Item = &'a Listed>,
        max: u64,
    ) -> Result<(), String> {
        let new: BTreeMap<String, u64> = files
            .filter(|f| !self.blobs.contains(&f.blob_name()))
            .map(|f| (f.blob_name(), f.size))
            .collect();
        let more = new.values().fold(0, |a: u64, b| a.saturating_add(*b));
        if self.bytes.saturating_add(more) > max {
            return Err(format!(
                "needs {more} bytes more in the model cache, which holds {} of model_cache_max_bytes = {max}",
                self.bytes
            ));
        }
        self.bytes += more;
        self.blobs.extend(new.into_keys());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_counts_shared_blobs_once_and_refuses_past_the_bound() {
        let f = |etag: &str, size| Listed {
            key: "k".into(),
            etag: etag.into(),
            size,
            modified: None,
        };
        let mut b = Budget::default();
        assert!(b.take([f("a", 60)].iter(), 100).is_ok());
        assert!(b.take([f("a", 60), f("b", 40)].iter(), 100).is_ok());
        let refused = b.take([f("c", 1)].iter(), 100).unwrap_err();
        assert!(refused.contains("needs 1 bytes more"), "{refused}");
    }

    fn obj(key: &str) -> Listed {
        Listed {
            key: key.into(),
            etag: format!("\"{}\"", key.len()),
            size: 10,
            modified: None,
        }
    }

    #[test]
    fn versions_count_only_with_their_ready_marker() {
        let listing = [
            obj("m/config.toml"),
            obj("m/1/model.onnx"),
            obj("m/1/ready"),
            obj("m/2/model.onnx"),
        ];
        let models = group(&listing);
        let m = &models["m"];
        assert_eq!(m.versions.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert!(m.config.is_some());
        assert_eq!(
            m.versions[&1].files.keys().cloned().collect::<Vec<_>>(),
            vec!["model.onnx".to_string()]
        );
    }

    #[test]
    fn a_model_without_a_complete_version_is_not_listed() {
        let models = group(&[obj("n/config.toml"), obj("n/1/model.onnx")]);
        assert!(models.is_empty());
    }

    #[test]
    fn keys_outside_the_layout_are_ignored() {
        let models = group(&[
            obj("README.md"),
            obj(".hidden/1/ready"),
            obj("m/notes/x"),
            obj("m/01/ready"),
            obj("m/1/.part/x"),
            obj("m/1/data/weights.bin"),
            obj("m/1/ready"),
        ]);
        assert_eq!(models.len(), 1);
        let files: Vec<_> = models["m"].versions[&1].files.keys().cloned().collect();
        assert_eq!(files, vec!["data/weights.bin".to_string()]);
    }

    #[test]
    fn blob_names_are_file_name_safe() {
        let o = Listed {
            key: "k".into(),
            etag: "\"ab/../c-3\"".into(),
            size: 7,
            modified: None,
        };
        assert_eq!(o.blob_name(), "abc-3-7");
    }
}
