//! `ferroserve models add`: an ONNX file and its external data copied into the repository as a
//! new version the safe way. Everything is written under a hidden name the scan skips (a
//! leading dot is neither a model nor a version name), synced, checked with the server's own
//! load (the file rewrite, derived batching, the engine `auto` picks, the warm-up), then renamed
//! into place in one step, so no scan ever sees half a model. A model without a `config.toml`
//! gets one, with the signature and the engine that load settled on.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use prost::Message;
use tract_onnx::pb;

use super::engine::build;
use super::loader::LoadError;
use super::repository::{self, Missing, CONFIG_FILE, MODEL_FILE};
use super::{onnx_file, Signature};
use crate::config::{BackendKind, ModelConfig};
use stage::{sync_dir, write_synced, Stage};

mod stage;

/// What to add, from the command line.
pub struct AddRequest<'a> {
    pub file: &'a Path,
    pub name: &'a str,
    /// `None`: the next after the highest version present (1 for a new model).
    pub version: Option<u64>,
    pub repository: &'a Path,
}

/// The version added and what its load settled on.
#[derive(Debug)]
pub struct Added {
    pub version: u64,
    /// The version directory, now in place.
    pub dir: PathBuf,
    /// The files copied, relative to the version directory (`model.onnx` first).
    pub files: Vec<PathBuf>,
    pub backend: BackendKind,
    /// Why that engine and what was derived, as the server logs it.
    pub note: String,
    /// The `config.toml` written, when the model had none.
    pub config_written: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error(
        "invalid model name {0:?}: use ASCII letters, digits, '_', '-' and '.', not starting \
         with '.', at most 128 characters"
    )]
    Name(String),
    #[error("invalid version 0: versions are positive integers")]
    VersionZero,
    #[error("model repository {}: {error}", .path.display())]
    Repository {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("model directory {} resolves outside the model repository", .0.display())]
    Outside(PathBuf),
    #[error("{}: not an ONNX file: {reason}", .path.display())]
    NotOnnx { path: PathBuf, reason: String },
    #[error(
        "{}: tensor {tensor:?} keeps its data in {location:?}, which is not a file inside {}",
        .file.display(), .dir.display()
    )]
    ExternalPath {
        file: PathBuf,
        tensor: String,
        location: String,
        dir: PathBuf,
    },
    #[error("model {name:?} already has version {version} ({})", .path.display())]
    Exists {
        name: String,
        version: u64,
        path: PathBuf,
    },
    #[error("model {0:?} has a version {max}, the largest there is: give --version", max = u64::MAX)]
    NoNextVersion(String),
    #[error("the model's config.toml: {0}")]
    Config(String),
    #[error("cannot read {}: {error}", .path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot write {}: {error}", .path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the server would refuse this version: {0}")]
    Load(#[from] LoadError),
}

/// Adds `req.file` as a new version; see the module comment. On any error nothing is left in
/// the repository.
pub fn add(req: &AddRequest<'_>) -> Result<Added, AddError> {
    if !repository::valid_model_name(req.name) {
        return Err(AddError::Name(req.name.to_owned()));
    }
    let repo_err = |error| AddError::Repository {
        path: req.repository.to_path_buf(),
        error,
    };
    let root = req.repository.canonicalize().map_err(repo_err)?;
    if !root.is_dir() {
        return Err(repo_err(std::io::Error::other("not a directory")));
    }
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |error| AddError::Read { path, error }
    };
    let bytes = std::fs::read(req.file).map_err(read_err(req.file))?;
    let sidecars = external_files(req.file, &bytes)?;

    let model_dir = root.join(req.name);
    // `models add` writes into a repository of Triton's layout, never a single model's directory.
    let existing = match repository::scan_one(&root.as_path().into(), req.name).map_err(repo_err)? {
        Ok(dir) => Some(dir),
        Err(Missing::Absent) => None,
        Err(Missing::Outside) => return Err(AddError::Outside(model_dir)),
    };
    let has_config = model_dir.join(CONFIG_FILE).symlink_metadata().is_ok();
    let config = match &existing {
        Some(dir) => dir.config.clone().map_err(AddError::Config)?,
        None => ModelConfig::parse("", req.name).map_err(AddError::Config)?,
    };
    let present: Vec<u64> = existing
        .iter()
        .flat_map(|d| d.versions.iter().map(|(v, _)| *v))
        .collect();
    let version = match req.version {
        Some(0) => return Err(AddError::VersionZero),
        Some(v) => v,
        None => match present.iter().max() {
            None => 1,
            Some(v) => v
                .checked_add(1)
                .ok_or_else(|| AddError::NoNextVersion(req.name.to_owned()))?,
        },
    };
    let final_dir = model_dir.join(version.to_string());
    if present.contains(&version) || final_dir.symlink_metadata().is_ok() {
        return Err(AddError::Exists {
            name: req.name.to_owned(),
            version,
            path: final_dir,
        });
    }

    // A new model is staged whole at the root (config and version appear together); a version
    // of an existing model is staged inside its directory.
    let hidden = format!(
        ".{}.tmp-{}-{}",
        req.name,
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let stage = Stage::new(match existing {
        Some(_) => model_dir.join(&hidden),
        None => root.join(&hidden),
    })?;
    let staged_version = match existing {
        Some(_) => stage.path.clone(),
        None => stage.path.join(version.to_string()),
    };
    let mut files = vec![PathBuf::from(MODEL_FILE)];
    write_synced(&staged_version.join(MODEL_FILE), &bytes)?;
    for (relative, source) in &sidecars {
        let data = std::fs::read(source).map_err(read_err(source))?;
        write_synced(&staged_version.join(relative), &data)?;
        files.push(relative.clone());
    }

    // The server's own load, on the staged copy: what it would serve, or why it would not.
    let staged_file = staged_version.join(MODEL_FILE);
    let prepared = onnx_file::prepare(&root, &staged_file, bytes).map_err(LoadError::from)?;
    let built = build(prepared.bytes, &staged_file, &config)?;
    drop(built.instances);
    let config_text =
        (!has_config).then(|| render(version, &built.config, &built.signature, &built.note));

    sync_dir(&staged_version)?;
    match (&existing, &config_text) {
        (None, text) => {
            if let Some(text) = text {
                write_synced(&stage.path.join(CONFIG_FILE), text.as_bytes())?;
            }
            sync_dir(&stage.path)?;
            stage.publish(&model_dir)?;
        }
        (Some(_), text) => {
            stage.publish(&final_dir)?;
            // The version first: a scan in between serves it derived from the graph, as the
            // file written next says; written the other way round, the config would apply to
            // the versions already there.
            if let Some(text) = text {
                let tmp = model_dir.join(format!("{hidden}.config"));
                write_synced(&tmp, text.as_bytes())?;
                let target = model_dir.join(CONFIG_FILE);
                std::fs::rename(&tmp, &target).map_err(|error| {
                    let _ = std::fs::remove_file(&tmp);
                    AddError::Write {
                        path: target,
                        error,
                    }
                })?;
                sync_dir(&model_dir)?;
            }
        }
    }
    Ok(Added {
        version,
        dir: final_dir,
        files,
        backend: built.config.backend,
        note: built.note,
        config_written: config_text,
    })
}

/// The sidecar files the file's tensors name (`data_location = EXTERNAL`), as (path relative
/// to the version directory, source path). Each must be a plain relative path that resolves
/// inside the source file's directory.
fn external_files(file: &Path, bytes: &[u8]) -> Result<Vec<(PathBuf, PathBuf)>, AddError> {
    let not_onnx = |reason: String| AddError::NotOnnx {
        path: file.to_path_buf(),
        reason,
    };
    let model = pb::ModelProto::decode(bytes).map_err(|e| not_onnx(e.to_string()))?;
    let Some(graph) = model.graph.as_ref() else {
        return Err(not_onnx("it has no graph".into()));
    };
    if graph.output.is_empty() {
        return Err(not_onnx("its graph has no outputs".into()));
    }
    let mut named = Vec::new();
    tensors_with_external_data(graph, &mut named);
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = parent.canonicalize().map_err(|error| AddError::Read {
        path: parent.to_path_buf(),
        error,
    })?;
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (tensor, location) in named {
        let escape = || AddError::ExternalPath {
            file: file.to_path_buf(),
            tensor: tensor.clone(),
            location: location.clone(),
            dir: dir.clone(),
        };
        let relative = Path::new(&location);
        let plain = relative
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if location.is_empty() || !plain || relative.file_name().is_none() {
            return Err(escape());
        }
        let source = dir.join(relative);
        let real = source.canonicalize().map_err(|error| AddError::Read {
            path: source.clone(),
            error,
        })?;
        if !real.starts_with(&dir) || !real.is_file() {
            return Err(escape());
        }
        let relative: PathBuf = relative
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        if seen.insert(relative.clone()) {
            out.push((relative, real));
        }
    }
    Ok(out)
}

/// (tensor name, location) of every tensor of `graph` and its subgraphs stored externally.
fn tensors_with_external_data(graph: &pb::GraphProto, out: &mut Vec<(String, String)>) {
    let mut one = |t: &pb::TensorProto| {
        if t.data_location == Some(pb::tensor_proto::DataLocation::External as i32) {
            let location = t.external_data.iter().find(|e| e.key == "location");
            out.push((
                t.name.clone(),
                location.map(|e| e.value.clone()).unwrap_or_default(),
            ));
        }
    };
    graph.initializer.iter().for_each(&mut one);
    let mut subgraphs = Vec::new();
    for attr in graph.node.iter().flat_map(|n| &n.attribute) {
        attr.t.iter().chain(&attr.tensors).for_each(&mut one);
        subgraphs.extend(attr.g.iter().chain(&attr.graphs));
    }
    for g in subgraphs {
        tensors_with_external_data(g, out);
    }
}

/// The `config.toml` of what the load settled on: the engine, the batching and the signature.
fn render(version: u64, config: &ModelConfig, signature: &Signature, note: &str) -> String {
    let quote = |s: &str| toml::Value::from(s).to_string();
    let mut text =
        format!("# Written by `ferroserve models add` from the graph of version {version}.\n");
    if !note.is_empty() {
        text.push_str(&format!("# {}\n", note.replace(['\n', '\r'], " ")));
    }
    text.push_str(&format!(
        "backend = {}\nmax_batch_size = {}\n",
        quote(config.backend.as_str()),
        config.max_batch_size
    ));
    if config.max_batch_size > 0 && config.dynamic_batching.is_some() {
        text.push_str("\n[dynamic_batching]\n");
    }
    for (table, specs) in [("input", &signature.inputs), ("output", &signature.outputs)] {
        for spec in specs {
            let dims: Vec<String> = spec.dims.iter().map(i64::to_string).collect();
            text.push_str(&format!(
                "\n[[{table}]]\nname = {}\ndatatype = {}\ndims = [{}]\n",
                quote(&spec.name),
                quote(spec.dtype.as_str()),
                dims.join(", ")
            ));
        }
    }
    text
}
