//! Reads the model repository (Triton's layout): `<root>/<model>/config.toml` (optional: a
//! model without one is configured from its graph) and `<root>/<model>/<version>/model.onnx`;
//! or, given a model name, one model's own directory (KServe mounts one model at `/mnt/models`,
//! often a bare `model.onnx`). Nothing is read from outside the root: every file is
//! read through `open::read_inside`, which checks the file it opened, not the path.

use std::path::{Path, PathBuf};

use super::open::{read_inside, ReadError, RepoFile};
use crate::config::ModelConfig;

pub const CONFIG_FILE: &str = "config.toml";
pub const MODEL_FILE: &str = "model.onnx";

/// Where the models are: a repository of model directories, or (with a name) the directory of
/// one model, served under that name.
#[derive(Debug, Clone)]
pub struct Repository {
    root: PathBuf,
    single: Option<String>,
    /// Where models whose `config.toml` names a `[source]` (`registry::source::mlflow`) are
    /// read from instead: `<mirror>/<model>`, generated from the source.
    mirror: Option<PathBuf>,
}

impl Repository {
    /// `single`: the root is one model's directory, served as that name (validated here).
    pub fn new(root: PathBuf, single: Option<String>) -> Result<Repository, String> {
        if let Some(name) = single.as_deref().filter(|n| !valid_model_name(n)) {
            return Err(format!(
                "model_name {name:?}: use 1 to 128 of A-Z a-z 0-9 _ - . (not starting with '.')"
            ));
        }
        Ok(Repository {
            root,
            single,
            mirror: None,
        })
    }

    /// Models that name a `[source]` are read from `<mirror>/<model>`.
    pub fn with_mirror(mut self, mirror: PathBuf) -> Repository {
        self.mirror = Some(mirror);
        self
    }

    /// A model directory, or its generated mirror when its config names a source.
    fn read_model(&self, root: &Path, name: &str) -> ModelDir {
        let declared = super::source::mlflow::declared_source(&root.join(name).join(CONFIG_FILE));
        match (&self.mirror, declared) {
            (Some(mirror), Some(_)) => {
                let mirror = mirror.canonicalize().unwrap_or_else(|_| mirror.clone());
                read_dir_as(&mirror, mirror.join(name), name)
            }
            _ => read_model_dir(root, name),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the root is one model's directory (`model_name`) rather than a repository.
    pub fn is_single_model(&self) -> bool {
        self.single.is_some()
    }
}

impl From<&Path> for Repository {
    fn from(root: &Path) -> Repository {
        Repository {
            root: root.to_path_buf(),
            single: None,
            mirror: None,
        }
    }
}

/// A model directory as found on disk.
#[derive(Debug)]
pub struct ModelDir {
    pub name: String,
    /// The repository root, canonical: what every file read must stay inside.
    pub root: PathBuf,
    pub path: PathBuf,
    /// The parsed config, or why it could not be read.
    pub config: Result<ModelConfig, String>,
    /// Version numbers with their model file, ascending.
    pub versions: Vec<(u64, PathBuf)>,
}

impl ModelDir {
    /// The versions its version policy selects, with their model files (a `specific` version
    /// without a directory is included, so loading it reports the absence). Empty when the
    /// config is unreadable.
    pub fn served_versions(&self) -> Vec<(u64, PathBuf)> {
        let Ok(config) = &self.config else {
            return Vec::new();
        };
        let present: Vec<u64> = self.versions.iter().map(|(v, _)| *v).collect();
        config
            .version_policy
            .select(&present)
            .into_iter()
            .map(|v| {
                let file = self
                    .versions
                    .iter()
                    .find(|(p, _)| *p == v)
                    .map(|(_, f)| f.clone())
                    .unwrap_or_else(|| self.path.join(v.to_string()).join(MODEL_FILE));
                (v, file)
            })
            .collect()
    }
}

/// Names are used in URLs, metric labels and paths: keep them to a safe alphabet.
pub fn valid_model_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// A version directory name: a positive integer without sign or leading zeros.
pub fn parse_version(name: &str) -> Option<u64> {
    if name.starts_with('0') || !name.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    name.parse().ok().filter(|&v| v > 0)
}

/// Lists the models under the root, sorted by name. Entries that are not model directories
/// (files, hidden or oddly named folders) are skipped. A single-model root lists that model.
pub fn scan(repo: &Repository) -> std::io::Result<Vec<ModelDir>> {
    let root = repo.root.canonicalize()?;
    if let Some(name) = &repo.single {
        return Ok(vec![read_single(&root, name)?]);
    }
    let mut models = Vec::new();
    for entry in std::fs::read_dir(&root)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !valid_model_name(&name) || !entry.path().is_dir() {
            continue;
        }
        // A model directory linked out of the root is listed (so the index shows why) but
        // nothing under it is read, as `scan_one` refuses it for explicit loads.
        models.push(match entry.path().canonicalize() {
            Ok(real) if !real.starts_with(&root) => outside_model_dir(&root, &name, &real),
            _ => repo.read_model(&root, &name),
        });
    }
    models.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(models)
}

/// Why `scan_one` found no model directory.
#[derive(Debug, PartialEq, Eq)]
pub enum Missing {
    Absent,
    /// The name resolves (through a symlink) outside the repository root.
    Outside,
}

/// Reads one model directory by name (already validated with `valid_model_name`). Used by
/// explicit loads, which must never leave the root.
pub fn scan_one(repo: &Repository, name: &str) -> std::io::Result<Result<ModelDir, Missing>> {
    let root = repo.root.canonicalize()?;
    if let Some(single) = &repo.single {
        return Ok(match single == name {
            true => Ok(read_single(&root, name)?),
            false => Err(Missing::Absent),
        });
    }
    let path = root.join(name);
    Ok(match path.canonicalize() {
        Ok(real) if !real.starts_with(&root) => Err(Missing::Outside),
        Ok(real) if real.is_dir() => Ok(repo.read_model(&root, name)),
        _ => Err(Missing::Absent),
    })
}

fn outside_model_dir(root: &Path, name: &str, real: &Path) -> ModelDir {
    let path = root.join(name);
    let config = Err(format!(
        "{} resolves outside the model repository (to {})",
        path.display(),
        real.display()
    ));
    ModelDir {
        name: name.to_owned(),
        root: root.to_path_buf(),
        path,
        config,
        versions: Vec::new(),
    }
}

fn read_model_dir(root: &Path, name: &str) -> ModelDir {
    read_dir_as(root, root.join(name), name)
}

/// The root as one model's directory: its version directories, else a bare `model.onnx` as
/// version 1 (both at once is refused: which one serves would be a guess).
fn read_single(root: &Path, name: &str) -> std::io::Result<ModelDir> {
    if !root.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            format!("{} is not a directory", root.display()),
        ));
    }
    let mut dir = read_dir_as(root, root.to_path_buf(), name);
    let bare = root.join(MODEL_FILE);
    if bare.exists() {
        if dir.versions.is_empty() {
            dir.versions.push((1, bare));
        } else if dir.config.is_ok() {
            dir.config = Err(format!(
                "{} has both {MODEL_FILE} and version directories: keep one layout",
                root.display()
            ));
        }
    }
    Ok(dir)
}

fn read_dir_as(root: &Path, path: PathBuf, name: &str) -> ModelDir {
    let config_file = path.join(CONFIG_FILE);
    let config = match read_inside(root, &config_file) {
        // No config.toml: everything comes from the graph (Triton's auto-complete).
        Err(ReadError::Missing(_)) => Ok(b"".to_vec()).map(|bytes| RepoFile {
            bytes,
            fingerprint: None,
        }),
        read => read,
    };
    let config = config.map_err(|e| e.to_string()).and_then(|file| {
        let text = String::from_utf8(file.bytes)
            .map_err(|_| format!("{}: not UTF-8 text", config_file.display()))?;
        ModelConfig::parse(&text, name).map_err(|e| format!("{}: {e}", config_file.display()))
    });
    let mut versions = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&path) {
        for entry in entries.flatten() {
            let Some(v) = entry.file_name().to_str().and_then(parse_version) else {
                continue;
            };
            // Listed as found (a version whose file is missing or escapes the root too, so
            // the failure shows); the load checks the file it opens.
            versions.push((v, entry.path().join(MODEL_FILE)));
        }
    }
    versions.sort_by_key(|(v, _)| *v);
    ModelDir {
        name: name.to_owned(),
        root: root.to_path_buf(),
        path,
        config,
        versions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_are_positive_integers() {
        assert_eq!(parse_version("3"), Some(3));
        for bad in ["0", "01", "-1", "+2", "1a", ""] {
            assert_eq!(parse_version(bad), None, "{bad}");
        }
    }

    #[test]
    fn model_names_are_restricted() {
        assert!(valid_model_name("resnet-50_v1.2"));
        for bad in ["", ".hidden", "a/b", "a b", "..", "ü"] {
            assert!(!valid_model_name(bad), "{bad}");
        }
    }

    #[test]
    fn scan_lists_versions_and_skips_non_models() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("m");
        std::fs::create_dir_all(m.join("1")).unwrap();
        std::fs::create_dir_all(m.join("10")).unwrap();
        std::fs::create_dir_all(m.join("notes")).unwrap();
        std::fs::write(m.join("config.toml"), "max_batch_size = 4").unwrap();
        std::fs::write(dir.path().join("README.md"), "hi").unwrap();
        let models = scan(&dir.path().into()).unwrap();
        assert_eq!(models.len(), 1);
        assert_eq!(
            models[0].versions.iter().map(|v| v.0).collect::<Vec<_>>(),
            vec![1, 10]
        );
        assert_eq!(models[0].served_versions()[0].0, 10);
        assert_eq!(models[0].config.as_ref().unwrap().max_batch_size, 4);
    }

    /// `models add` stages under these names (`registry::add`): never a model or a version.
    #[test]
    fn hidden_staging_directories_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".n.tmp-1-2/1")).unwrap();
        std::fs::create_dir_all(dir.path().join("m/.m.tmp-1-2")).unwrap();
        std::fs::create_dir_all(dir.path().join("m/1")).unwrap();
        let models = scan(&dir.path().into()).unwrap();
        assert_eq!(models.len(), 1);
        assert_eq!(models[0].name, "m");
        assert_eq!(
            models[0].versions.iter().map(|v| v.0).collect::<Vec<_>>(),
            vec![1]
        );
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_out_of_the_repository_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("config.toml"), "").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("m");
        std::fs::create_dir_all(&m).unwrap();
        std::os::unix::fs::symlink(outside.path().join("config.toml"), m.join("config.toml"))
            .unwrap();
        let models = scan(&dir.path().into()).unwrap();
        assert!(models[0].config.as_ref().unwrap_err().contains("outside"));
    }

    /// Found by fuzzing (fuzz/corpus/repository_scan/model_out_back_in): a model directory
    /// linked out of the root whose config and versions link back in was served by the scan
    /// (start-up, poll) while an explicit load refused it.
    #[cfg(unix)]
    #[test]
    fn a_model_directory_linked_out_is_listed_with_the_reason_and_reads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (root, out) = (dir.path().join("repo"), dir.path().join("out"));
        std::fs::create_dir_all(root.join("m/1")).unwrap();
        std::fs::write(root.join("m/config.toml"), "").unwrap();
        std::fs::create_dir_all(&out).unwrap();
        std::os::unix::fs::symlink("../repo/m/config.toml", out.join("config.toml")).unwrap();
        std::os::unix::fs::symlink("../repo/m/1", out.join("1")).unwrap();
        std::os::unix::fs::symlink(&out, root.join("n")).unwrap();
        let models = scan(&root.as_path().into()).unwrap();
        let n = models.iter().find(|m| m.name == "n").unwrap();
        assert!(n
            .config
            .as_ref()
            .unwrap_err()
            .contains("resolves outside the model repository"));
        assert!(n.versions.is_empty() && n.served_versions().is_empty());
        assert_eq!(
            models
                .iter()
                .find(|m| m.name == "m")
                .unwrap()
                .versions
                .len(),
            1
        );
    }
}
