//! ONNX Runtime (CPU, or CUDA when configured) through the `ort` crate, with the shared library
//! loaded at run time: one `Session` per instance, tensors passed without copies where the
//! bytes allow it.
//!
//! Loading the library is explicit and fallible. `ort` would otherwise load it lazily on first
//! use and panic when it is missing, so nothing here touches an `ort` API before [`runtime`]
//! has loaded the library with `ort::init_from` and built the environment. A missing or
//! too-old library fails only the models that use this backend, with the fix in the message.
//! One library per process: `ort` keeps it in a process-wide slot, so a server configured with
//! another path after one was loaded gets an error instead of silently using the first.
//!
//! Batch invariance: ONNX Runtime's CPU kernels give a row the same bits in any batch of two or
//! more rows, but a single row can take another kernel: on the bundled iris and digits models
//! (`LinearClassifier`) the probabilities of a row alone differ in the last bit from the same
//! row in a batch, while Gemm/MatMul graphs (mlp, dense) agree. So, as with tract, single rows
//! run as two when `LoadOptions::row_invariant` asks for it (`tests/onnxruntime.rs` checks
//! every sub-batch of the reference rows of every bundled model).

mod convert;
mod library;
mod session;

use std::path::{Path, PathBuf};

use ort::session::Session;

use super::{padding, Backend, BackendError, Declared, LoadFailure, LoadOptions, LoadedModel};
use crate::config::Device;
use crate::tensor::Tensor;
pub use library::{configure, library_path, PROJECT_LIBRARY};
use library::{runtime, FIX};
use session::{read_signature, session};

/// Why ONNX Runtime could not load a model: the library, its environment, a session option, the
/// execution provider, or a graph it cannot serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    #[error(
        "ONNX Runtime is already loaded from {} in this process; {} cannot replace it \
         (restart the server to switch libraries)",
        .from.display(),
        .wanted.display()
    )]
    AlreadyLoaded { from: PathBuf, wanted: PathBuf },
    #[error("ONNX Runtime library not found at {}: {}", .0.display(), FIX)]
    LibraryNotFound(PathBuf),
    /// `ort::init_from` refused the library (unloadable, or older than 1.31).
    #[error("cannot load ONNX Runtime: {}; {}", .0, FIX)]
    Library(String),
    #[error("cannot start ONNX Runtime from {}: {reason}", .library.display())]
    Environment { library: PathBuf, reason: String },
    #[error("cannot load CUDA libraries from {}: {reason}", .dir.display())]
    CudaLibraries { dir: PathBuf, reason: String },
    #[error("{option}: {reason}")]
    SessionOption {
        option: &'static str,
        reason: String,
    },
    #[error("CUDA device {0} is out of range")]
    CudaDeviceOutOfRange(u32),
    #[error(
        "cannot use CUDA device {id} ({reason}); the library at {} must be the GPU \
         build (scripts/fetch-onnxruntime.sh --gpu) and the machine needs an NVIDIA \
         driver for CUDA 13",
        .library.display()
    )]
    CudaProvider {
        id: i32,
        reason: String,
        library: PathBuf,
    },
    /// Building the session from the file (parsing, optimising, placing the graph).
    #[error("{0}")]
    Session(String),
    #[error("{what} {name:?} is a {kind}, not a tensor; only tensors can be served")]
    NotATensor {
        what: &'static str,
        name: String,
        kind: String,
    },
    #[error("{what} {name:?} has unsupported element type {element}")]
    UnsupportedElement {
        what: &'static str,
        name: String,
        element: String,
    },
    #[error("no instance was built")]
    NoInstance,
}

/// The execution provider a model configured for `device` runs on, as ONNX Runtime names it.
pub fn provider_name(device: Device) -> &'static str {
    match device {
        Device::Cpu => "CPUExecutionProvider",
        Device::Cuda(_) => "CUDAExecutionProvider",
    }
}

pub fn load(
    model: &[u8],
    declared: &Declared,
    path: &Path,
    options: &LoadOptions,
) -> Result<LoadedModel, BackendError> {
    let fail = |reason: LoadFailure| BackendError::Load {
        path: path.display().to_string(),
        reason,
    };
    let setup = |e: SetupError| fail(e.into());
    let (env, library) = runtime().map_err(setup)?;
    let mut instances: Vec<Box<dyn Backend>> = Vec::with_capacity(options.instance_count);
    let mut signature = None;
    for _ in 0..options.instance_count.max(1) {
        let session =
            session(&env, &library, model, options.device, &options.onnxruntime).map_err(setup)?;
        if signature.is_none() {
            signature = Some(read_signature(&session, declared, options).map_err(&fail)?);
        }
        instances.push(Box::new(OrtInstance {
            session,
            pad_single_rows: padding::pads_single_rows(options),
        }));
    }
    let signature = signature.ok_or_else(|| setup(SetupError::NoInstance))?;
    tracing::info!(
        model = %path.display(),
        provider = provider_name(options.device),
        device = %options.device,
        instances = instances.len(),
        "ONNX Runtime sessions ready"
    );
    Ok(LoadedModel {
        signature,
        instances,
    })
}

struct OrtInstance {
    /// `Session::run` takes `&mut self`: each instance owns its session, so instances never
    /// wait on each other.
    session: Session,
    /// A single row runs as two (itself twice) so its answer has the bits it would have inside
    /// any batch; see the module comment.
    pad_single_rows: bool,
}

impl Backend for OrtInstance {
    fn infer(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, BackendError> {
        padding::run_padded(self.pad_single_rows, inputs, |inputs| self.run(inputs))
    }
}

impl OrtInstance {
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, BackendError> {
        let values = inputs
            .iter()
            .map(convert::to_value)
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = self
            .session
            .run(values.as_slice())
            .map_err(|e| BackendError::Run(e.to_string()))?;
        outputs.values().map(|v| convert::from_value(&v)).collect()
    }
}
