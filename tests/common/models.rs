//! Model repositories for tests: copies of the bundled models, renamed, on another backend or
//! with extra config lines.

use std::path::{Path, PathBuf};

/// The repository shipped with the crate (`models/`), served by tract.
pub fn bundled_models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// Models only ONNX Runtime can run (`models-onnxruntime/`).
pub fn onnxruntime_models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models-onnxruntime")
}

/// A copy of one model (version 1 and its config) about to be written into a repository:
/// `copy_model("mlp").named("mlp_ort").backend("onnxruntime").config("device = \"cuda:0\"").to(dir)`.
#[derive(Clone, Debug)]
pub struct ModelCopy {
    from: PathBuf,
    model: String,
    name: String,
    backend: Option<String>,
    extra: String,
}

/// Bundled `model`, under its own name, its config unchanged until told otherwise.
pub fn copy_model(model: &str) -> ModelCopy {
    ModelCopy {
        from: bundled_models(),
        model: model.into(),
        name: model.into(),
        backend: None,
        extra: String::new(),
    }
}

impl ModelCopy {
    /// Take the model from repository `dir` instead of the bundled one.
    pub fn from(mut self, dir: &Path) -> Self {
        self.from = dir.to_path_buf();
        self
    }

    /// Write it under `name`.
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }

    /// Replace the config's `backend` line with `backend`.
    pub fn backend(mut self, backend: &str) -> Self {
        self.backend = Some(backend.into());
        self
    }

    /// Append `lines` to the config (after its own top-level keys).
    pub fn config(mut self, lines: &str) -> Self {
        self.extra = lines.into();
        self
    }

    /// Writes `<repo>/<name>/1/model.onnx` and `<repo>/<name>/config.toml`.
    pub fn to(&self, repo: &Path) {
        let (src, dst) = (self.from.join(&self.model), repo.join(&self.name));
        std::fs::create_dir_all(dst.join("1")).unwrap();
        std::fs::copy(src.join("1/model.onnx"), dst.join("1/model.onnx")).unwrap();
        let mut cfg = std::fs::read_to_string(src.join("config.toml")).unwrap();
        if let Some(backend) = &self.backend {
            let rest: String = cfg
                .lines()
                .filter(|l| !l.starts_with("backend"))
                .map(|l| format!("{l}\n"))
                .collect();
            cfg = format!("backend = \"{backend}\"\n{rest}");
        }
        if !self.extra.is_empty() {
            cfg = format!("{cfg}\n{}\n", self.extra);
        }
        std::fs::write(dst.join("config.toml"), cfg).unwrap();
    }
}

/// A new repository holding `models`.
pub fn repo(models: impl IntoIterator<Item = ModelCopy>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for m in models {
        m.to(dir.path());
    }
    dir
}

/// Adds version `v` of `model` to `repo`: the bundled graph of version 1 again.
pub fn add_version(repo: &Path, model: &str, v: u64) {
    let d = repo.join(model).join(v.to_string());
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(
        bundled_models().join(model).join("1/model.onnx"),
        d.join("model.onnx"),
    )
    .unwrap();
}
