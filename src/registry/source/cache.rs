//! The local cache of a repository on object storage: `blobs/` holds each object's content
//! once, named by its ETag and size; `repo/` is the repository tree the scan reads, made of
//! hard links to the blobs (a version directory is built hidden and renamed into place);
//! `manifest.tsv` records which blob each tree file is, so a restart downloads nothing that
//! is already here. The directory is locked: one server process per cache.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::super::repository::{parse_version, valid_model_name};

const MANIFEST: &str = "manifest.tsv";

/// Tree path (`model/config.toml`, `model/3/model.onnx`) → blob name.
pub type Files = BTreeMap<String, String>;

pub struct Cache {
    dir: PathBuf,
    manifest: Files,
    /// Held open: the lock on the directory lives as long as the cache.
    _lock: File,
}

impl Cache {
    pub fn open(dir: &Path) -> io::Result<Cache> {
        fs::create_dir_all(dir.join("blobs"))?;
        fs::create_dir_all(dir.join("repo"))?;
        let lock = File::create(dir.join(".lock"))?;
        lock.try_lock().map_err(|_| {
            io::Error::other(format!(
                "the model cache {} is in use by another process: give each server its own model_cache_dir",
                dir.display()
            ))
        })?;
        let mut cache = Cache {
            dir: dir.to_path_buf(),
            manifest: Files::new(),
            _lock: lock,
        };
        cache.manifest = cache.read_manifest();
        Ok(cache)
    }

    /// The repository tree, for `repository::scan`.
    pub fn tree(&self) -> PathBuf {
        self.dir.join("repo")
    }

    pub fn blob_path(&self, name: &str) -> PathBuf {
        self.dir.join("blobs").join(name)
    }

    /// Where a download is written before it is renamed to its blob name.
    pub fn partial_path(&self, name: &str) -> PathBuf {
        self.dir.join("blobs").join(format!(".{name}.part"))
    }

    pub fn has_blob(&self, name: &str, size: u64) -> bool {
        fs::metadata(self.blob_path(name)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    pub fn manifest(&self) -> &Files {
        &self.manifest
    }

    /// Makes the tree exactly `want` (every blob it names is present), then drops the blobs
    /// nothing names any more: a version gone from the tree leaves no file behind.
    pub fn apply(&mut self, want: &Files) -> io::Result<()> {
        let tree = self.tree();
        let group = |files: &Files| -> BTreeMap<(String, Option<u64>), Files> {
            let mut dirs: BTreeMap<(String, Option<u64>), Files> = BTreeMap::new();
            for (path, blob) in files {
                let mut parts = path.splitn(3, '/');
                let (Some(model), Some(second)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let key = match parts.next() {
                    None => (model.to_owned(), None),
                    Some(_) => (model.to_owned(), parse_version(second)),
                };
                dirs.entry(key)
                    .or_default()
                    .insert(path.clone(), blob.clone());
            }
            dirs
        };
        let (now, next) = (group(&self.manifest), group(want));
        for ((model, version), files) in &next {
            let model_dir = tree.join(model);
            fs::create_dir_all(&model_dir)?;
            match version {
                None => {
                    for (path, blob) in files {
                        let target = tree.join(path);
                        if self.manifest.get(path) != Some(blob) || !target.exists() {
                            let tmp = model_dir.join(".config.tmp");
                            let _ = fs::remove_file(&tmp);
                            fs::hard_link(self.blob_path(blob), &tmp)?;
                            fs::rename(&tmp, &target)?;
                        }
                    }
                }
                Some(v) => {
                    let dir = model_dir.join(v.to_string());
                    if now.get(&(model.clone(), Some(*v))) == Some(files) && dir.is_dir() {
                        continue;
                    }
                    let stage = model_dir.join(format!(".{v}.stage"));
                    remove_dir(&stage)?;
                    for (path, blob) in files {
                        let target = tree.join(path);
                        let Ok(inside) = target.strip_prefix(&dir) else {
                            continue;
                        };
                        let staged = stage.join(inside);
                        if let Some(parent) = staged.parent() {
                            fs::create_dir_all(parent)?;
                        }
                        fs::hard_link(self.blob_path(blob), staged)?;
                    }
                    remove_dir(&dir)?;
                    fs::rename(&stage, &dir)?;
                }
            }
        }
        self.prune(&tree, &next)?;
        self.manifest = want.clone();
        self.write_manifest()?;
        self.collect_blobs()
    }

    /// Removes from the tree what `next` does not hold: models, versions, a config removed.
    fn prune(&self, tree: &Path, next: &BTreeMap<(String, Option<u64>), Files>) -> io::Result<()> {
        let models: BTreeSet<&String> = next.keys().map(|(m, _)| m).collect();
        for entry in fs::read_dir(tree)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !models.contains(&name) {
                remove_any(&entry.path())?;
                continue;
            }
            for inner in fs::read_dir(entry.path())?.flatten() {
                let file = inner.file_name().to_string_lossy().into_owned();
                let keep = match parse_version(&file) {
                    Some(v) => next.contains_key(&(name.clone(), Some(v))),
                    None => next
                        .get(&(name.clone(), None))
                        .is_some_and(|f| f.contains_key(&format!("{name}/{file}"))),
                };
                if !keep {
                    remove_any(&inner.path())?;
                }
            }
        }
        Ok(())
    }

    fn collect_blobs(&self) -> io::Result<()> {
        let named: BTreeSet<&String> = self.manifest.values().collect();
        for entry in fs::read_dir(self.dir.join("blobs"))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !named.contains(&name) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    fn read_manifest(&self) -> Files {
        let text = fs::read_to_string(self.dir.join(MANIFEST)).unwrap_or_default();
        text.lines()
            .filter_map(|line| line.split_once('\t'))
            .filter(|(path, _)| {
                path.split('/').next().is_some_and(valid_model_name)
                    && self.tree().join(path).is_file()
            })
            .map(|(path, blob)| (path.to_owned(), blob.to_owned()))
            .collect()
    }

    fn write_manifest(&self) -> io::Result<()> {
        let tmp = self.dir.join(".manifest.tmp");
        let mut file = File::create(&tmp)?;
        for (path, blob) in &self.manifest {
            writeln!(file, "{path}\t{blob}")?;
        }
        file.sync_all()?;
        fs::rename(tmp, self.dir.join(MANIFEST))
    }
}

fn remove_dir(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn remove_any(path: &Path) -> io::Result<()> {
    match path.is_dir() {
        true => remove_dir(path),
        false => match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_blob(cache: &Cache, name: &str, bytes: &[u8]) {
        fs::write(cache.blob_path(name), bytes).unwrap();
    }

    fn files(pairs: &[(&str, &str)]) -> Files {
        pairs
            .iter()
            .map(|(p, b)| (p.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn the_tree_follows_the_wanted_files_and_unused_blobs_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = Cache::open(dir.path()).unwrap();
        put_blob(&cache, "a-1", b"a");
        put_blob(&cache, "b-1", b"b");
        cache
            .apply(&files(&[
                ("m/config.toml", "a-1"),
                ("m/1/model.onnx", "b-1"),
            ]))
            .unwrap();
        assert_eq!(fs::read(cache.tree().join("m/1/model.onnx")).unwrap(), b"b");
        put_blob(&cache, "c-1", b"c");
        cache.apply(&files(&[("m/2/model.onnx", "c-1")])).unwrap();
        assert!(!cache.tree().join("m/1").exists());
        assert!(!cache.tree().join("m/config.toml").exists());
        assert_eq!(fs::read(cache.tree().join("m/2/model.onnx")).unwrap(), b"c");
        assert!(!cache.blob_path("a-1").exists() && !cache.blob_path("b-1").exists());
    }

    #[test]
    fn a_reopened_cache_knows_its_files_and_a_second_process_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = Cache::open(dir.path()).unwrap();
        put_blob(&cache, "a-1", b"a");
        cache.apply(&files(&[("m/1/model.onnx", "a-1")])).unwrap();
        let second = Cache::open(dir.path());
        assert!(second.err().unwrap().to_string().contains("in use"));
        drop(cache);
        let cache = Cache::open(dir.path()).unwrap();
        assert_eq!(cache.manifest(), &files(&[("m/1/model.onnx", "a-1")]));
    }
}
