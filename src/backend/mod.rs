//! Backends run one batch on one model instance; their load and run errors are typed here. The
//! trait is synchronous on purpose: every instance lives on its own OS thread (see `batching`),
//! never on the async runtime.

pub mod declared;
#[cfg(feature = "onnxruntime")]
pub mod onnxruntime;
mod padding;
pub mod tract;
mod tract_facts;

use std::path::{Path, PathBuf};

use crate::config::{BackendKind, Device, OnnxRuntimeOptions, TensorConfig};
use crate::tensor::{DataType, Tensor, TensorError};
pub use declared::{Declared, DeclaredDim, DeclaredTensor};

/// A failure of an engine: loading a model, or running a batch on one instance. Cloned once per
/// request of a failed batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("cannot load {path}: {reason}")]
    Load { path: String, reason: LoadFailure },
    /// The engine's own message about a run, or ours about data it cannot take or give back.
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

/// Why an engine could not load a model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadFailure {
    /// The engine's own message (parsing, typing, optimising the graph).
    #[error("{0}")]
    Engine(String),
    #[error("tensor {name:?} has unsupported datatype {datatype}")]
    UnsupportedDatatype { name: String, datatype: String },
    #[error(
        "max_batch_size is {max_batch_size} but the graph's first input has a fixed batch \
         dimension {dim}; export it with a symbolic batch dimension or set max_batch_size = 0"
    )]
    FixedBatchDimension { max_batch_size: usize, dim: String },
    #[error("max_batch_size > 0 but the first input is a scalar")]
    ScalarBatchInput,
    #[error(
        "input {0:?} has no shape in the graph: declare its dims in an [[input]] of config.toml"
    )]
    NoShape(String),
    #[error("backend \"auto\" is chosen when the model loads, not by an engine")]
    AutoIsNotAnEngine,
    #[error("cannot read: {0}")]
    Read(String),
    #[error("this ferroserve was built without the `onnxruntime` feature")]
    NotCompiledIn,
    #[cfg(feature = "onnxruntime")]
    #[error(transparent)]
    OnnxRuntime(#[from] onnxruntime::SetupError),
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
    /// The config's `[[input]]`: supplies dimensions (batch excluded when batching) and shapes
    /// the graph leaves open.
    pub input_hints: Vec<TensorConfig>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            max_batch_size: 0,
            instance_count: 1,
            row_invariant: false,
            device: Device::Cpu,
            onnxruntime: OnnxRuntimeOptions::default(),
            input_hints: Vec::new(),
        }
    }
}

/// A loaded model: its graph's signature and one backend per instance.
pub struct LoadedModel {
    pub signature: GraphSignature,
    pub instances: Vec<Box<dyn Backend>>,
}

/// Loads the model file at `path` with the chosen engine. Blocking: call it off the async
/// runtime. The server loads through [`load_bytes`] with bytes it read and checked itself.
pub fn load(
    kind: BackendKind,
    path: &Path,
    options: &LoadOptions,
) -> Result<LoadedModel, BackendError> {
    let model = std::fs::read(path).map_err(|e| BackendError::Load {
        path: path.display().to_string(),
        reason: LoadFailure::Read(e.to_string()),
    })?;
    load_bytes(kind, model.into(), path, options)
}

/// Loads a model from its file's bytes; `path` only names it in messages. Nothing else is read
/// from disk: the server inlines an ONNX file's external data before (`registry::onnx_file`),
/// an engine never follows it.
pub fn load_bytes(
    kind: BackendKind,
    model: bytes::Bytes,
    path: &Path,
    options: &LoadOptions,
) -> Result<LoadedModel, BackendError> {
    let declared = Declared::read(&model).map_err(|e| BackendError::Load {
        path: path.display().to_string(),
        reason: LoadFailure::Engine(e),
    })?;
    match kind {
        BackendKind::Tract => tract::load(model, &declared, path, options),
        #[cfg(feature = "onnxruntime")]
        BackendKind::OnnxRuntime => onnxruntime::load(&model, &declared, path, options),
        BackendKind::Auto => Err(BackendError::Load {
            path: path.display().to_string(),
            reason: LoadFailure::AutoIsNotAnEngine,
        }),
        #[cfg(not(feature = "onnxruntime"))]
        BackendKind::OnnxRuntime => {
            let _ = model;
            Err(BackendError::Load {
                path: path.display().to_string(),
                reason: LoadFailure::NotCompiledIn,
            })
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The typed load errors print what the `String`s they replaced printed.
    #[test]
    fn load_failures_keep_their_messages() {
        let err = BackendError::Load {
            path: "m/1/model.onnx".into(),
            reason: LoadFailure::FixedBatchDimension {
                max_batch_size: 8,
                dim: "1".into(),
            },
        };
        assert_eq!(
            err.to_string(),
            "cannot load m/1/model.onnx: max_batch_size is 8 but the graph's first input has a \
             fixed batch dimension 1; export it with a symbolic batch dimension or set \
             max_batch_size = 0"
        );
        assert_eq!(
            LoadFailure::ScalarBatchInput.to_string(),
            "max_batch_size > 0 but the first input is a scalar"
        );
        assert_eq!(
            BackendError::from(TensorError::Incompatible("x".into())).to_string(),
            "inference failed: cannot combine tensors: x"
        );
    }

    #[cfg(feature = "onnxruntime")]
    #[test]
    fn onnxruntime_setup_errors_keep_their_messages() {
        use onnxruntime::SetupError;
        assert_eq!(
            SetupError::AlreadyLoaded {
                from: "/a/libonnxruntime.so".into(),
                wanted: "/b/libonnxruntime.so".into(),
            }
            .to_string(),
            "ONNX Runtime is already loaded from /a/libonnxruntime.so in this process; \
             /b/libonnxruntime.so cannot replace it (restart the server to switch libraries)"
        );
        assert_eq!(
            SetupError::LibraryNotFound("/x.so".into()).to_string(),
            "ONNX Runtime library not found at /x.so: run scripts/fetch-onnxruntime.sh, or point \
             `onnxruntime.library` (server config) or ORT_DYLIB_PATH at libonnxruntime.so 1.31 or \
             newer"
        );
        assert_eq!(
            SetupError::SessionOption {
                option: "intra_op_threads",
                reason: "bad".into()
            }
            .to_string(),
            "intra_op_threads: bad"
        );
    }
}
