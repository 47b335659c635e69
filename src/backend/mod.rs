//! Backends run one batch on one model instance. The trait is synchronous on purpose: every
//! instance lives on its own OS thread (see `batching`), never on the async runtime.

#[cfg(feature = "onnxruntime")]
pub mod onnxruntime;
mod padding;
pub mod tract;

use std::path::{Path, PathBuf};

use crate::config::{BackendKind, Device, OnnxRuntimeOptions};
use crate::tensor::{DataType, Tensor, TensorError};

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot load {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("inference failed: {0}")]
    Run(String),
    /// Assembling or slicing a batch inside the backend (single-row padding).
    #[error("inference failed: {0}")]
    Tensor(#[from] TensorError),
    #[error("inference failed: output split into no rows")]
    EmptySplit,
    #[error("unsupported: {0}")]
    Unsupported(String),
}

/// One instance of a loaded model. `infer` takes inputs in the model's input order and returns
/// outputs in its output order; it takes `&mut self` so an engine may keep per-instance state.
pub trait Backend: Send {
    fn infer(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, BackendError>;
}

/// A tensor as the graph declares it: `None` marks a symbolic or unknown dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphTensor {
    pub name: String,
    pub dtype: DataType,
    pub shape: Vec<Option<usize>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GraphSignature {
    pub inputs: Vec<GraphTensor>,
    pub outputs: Vec<GraphTensor>,
}

/// What loading needs to know beyond the file.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub max_batch_size: usize,
    pub instance_count: usize,
    /// A row's result must not depend on the other rows in its batch (requests share batches).
    pub row_invariant: bool,
    /// Where the model runs; engines other than ONNX Runtime take only the CPU.
    pub device: Device,
    pub onnxruntime: OnnxRuntimeOptions,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            max_batch_size: 0,
            instance_count: 1,
            row_invariant: false,
            device: Device::Cpu,
            onnxruntime: OnnxRuntimeOptions::default(),
        }
    }
}

/// A loaded model: its graph's signature and one backend per instance.
pub struct LoadedModel {
    pub signature: GraphSignature,
    pub instances: Vec<Box<dyn Backend>>,
}

/// Loads `path` with the chosen engine. Blocking: call it off the async runtime.
pub fn load(
    kind: BackendKind,
    path: &Path,
    options: &LoadOptions,
) -> Result<LoadedModel, BackendError> {
    match kind {
        BackendKind::Tract => tract::load(path, options),
        #[cfg(feature = "onnxruntime")]
        BackendKind::OnnxRuntime => onnxruntime::load(path, options),
        #[cfg(not(feature = "onnxruntime"))]
        BackendKind::OnnxRuntime => Err(BackendError::Load {
            path: path.display().to_string(),
            reason: "this ferroserve was built without the `onnxruntime` feature".into(),
        }),
    }
}

/// The ONNX Runtime library the server config names (`onnxruntime.library`); `None` falls
/// back to `ORT_DYLIB_PATH`, then the project folder. Loaded only when a model needs it.
pub fn configure_onnxruntime(library: Option<PathBuf>) {
    #[cfg(feature = "onnxruntime")]
    onnxruntime::configure(library);
    #[cfg(not(feature = "onnxruntime"))]
    let _ = library;
}
