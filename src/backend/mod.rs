//! Backends run one batch on one model instance. The trait is synchronous on purpose: every
//! instance lives on its own OS thread (see `worker`), never on the async runtime.

pub mod tract;
pub mod worker;

use std::path::Path;

use crate::config::BackendKind;
use crate::tensor::{DataType, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot load {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("inference failed: {0}")]
    Run(String),
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
    }
}
