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

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use ort::environment::Environment;
use ort::ep::{ExecutionProviderDispatch, CUDA};
use ort::logging::LogLevel;
use ort::memory::Allocator;
use ort::session::builder::{AutoDevicePolicy, GraphOptimizationLevel, SessionBuilder};
use ort::session::{Session, SessionInputValue};
use ort::value::{
    DynTensor, DynTensorValueType, DynValue, PrimitiveTensorElementType, Tensor as OrtTensor,
    TensorElementType, TensorRef, ValueType,
};

use super::{
    padding, Backend, BackendError, GraphSignature, GraphTensor, LoadOptions, LoadedModel,
};
use crate::config::{self, Device, OnnxRuntimeOptions};
use crate::tensor::{DataType, Tensor};

/// Where `scripts/fetch-onnxruntime.sh` links the CPU library, relative to the project root.
pub const PROJECT_LIBRARY: &str = ".cache/onnxruntime/libonnxruntime.so";

/// The fix named in every "library unavailable" message.
const FIX: &str = "run scripts/fetch-onnxruntime.sh, or point `onnxruntime.library` \
                   (server config) or ORT_DYLIB_PATH at libonnxruntime.so 1.31 or newer";

/// What the server configured (`onnxruntime.library`); read when the library is first needed.
static CONFIGURED: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The process's ONNX Runtime: where it was loaded from and, once built, its environment.
static STATE: Mutex<State> = Mutex::new(State {
    loaded_from: None,
    environment: None,
});

struct State {
    /// Set once `ort::init_from` succeeded: `ort` keeps that library for the process.
    loaded_from: Option<PathBuf>,
    environment: Option<Environment>,
}

/// A poisoned lock only means a thread panicked while holding it; the data is plain and valid.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sets the library path from the server config (`None`: `ORT_DYLIB_PATH`, then the project
/// folder). Cheap: nothing is loaded until a model needs ONNX Runtime.
pub fn configure(library: Option<PathBuf>) {
    *lock(&CONFIGURED) = library;
}

/// The library the next load would use: the configured path, `ORT_DYLIB_PATH`, or the project
/// folder (the working directory's `.cache/onnxruntime`, else this checkout's).
pub fn library_path() -> PathBuf {
    if let Some(p) = lock(&CONFIGURED).clone() {
        return p;
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let here = PathBuf::from(PROJECT_LIBRARY);
    if here.exists() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join(PROJECT_LIBRARY)
}

/// The environment sessions are built in, loading the library on first use. Failures are not
/// cached: a later model load (say, after running the fetch script) tries again.
fn runtime() -> Result<(Environment, PathBuf), String> {
    let wanted = library_path();
    // `ort` resolves relative paths against the executable's folder (and panics if it has
    // none); ours mean the working directory.
    let wanted = std::path::absolute(&wanted).unwrap_or(wanted);
    let mut state = lock(&STATE);
    if let Some(from) = &state.loaded_from {
        if !same_file(from, &wanted) {
            return Err(format!(
                "ONNX Runtime is already loaded from {} in this process; {} cannot replace it \
                 (restart the server to switch libraries)",
                from.display(),
                wanted.display()
            ));
        }
    } else {
        if !wanted.is_file() {
            return Err(format!(
                "ONNX Runtime library not found at {}: {FIX}",
                wanted.display()
            ));
        }
        // Checks the library's version against the API level `ort` was built for (1.31).
        ort::init_from(&wanted).map_err(|e| format!("cannot load ONNX Runtime: {e}; {FIX}"))?;
        state.loaded_from = Some(wanted.clone());
    }
    if let Some(env) = &state.environment {
        return Ok((env.clone(), wanted));
    }
    let env = ort::init()
        .with_name("ferroserve")
        .with_telemetry(false)
        .with_logger(std::sync::Arc::new(log_from_onnxruntime))
        .build()
        .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", wanted.display()))?;
    tracing::info!(library = %wanted.display(), "ONNX Runtime loaded");
    state.environment = Some(env.clone());
    Ok((env, wanted))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// ONNX Runtime's own log lines, into ours. Its informational chatter (graph transforms, node
/// placement) goes to debug/trace so `info` stays readable.
fn log_from_onnxruntime(level: LogLevel, category: &str, id: &str, location: &str, msg: &str) {
    match level {
        LogLevel::Verbose => {
            tracing::trace!(target: "onnxruntime", category, id, location, "{msg}")
        }
        LogLevel::Info => tracing::debug!(target: "onnxruntime", category, id, location, "{msg}"),
        LogLevel::Warning => tracing::warn!(target: "onnxruntime", category, id, location, "{msg}"),
        LogLevel::Error | LogLevel::Fatal => {
            tracing::error!(target: "onnxruntime", category, id, location, "{msg}")
        }
    }
}

/// The execution provider a model configured for `device` runs on, as ONNX Runtime names it.
pub fn provider_name(device: Device) -> &'static str {
    match device {
        Device::Cpu => "CPUExecutionProvider",
        Device::Cuda(_) => "CUDAExecutionProvider",
    }
}

pub fn load(path: &Path, options: &LoadOptions) -> Result<LoadedModel, BackendError> {
    let fail = |reason: String| BackendError::Load {
        path: path.display().to_string(),
        reason,
    };
    let (env, library) = runtime().map_err(&fail)?;
    let mut instances: Vec<Box<dyn Backend>> = Vec::with_capacity(options.instance_count);
    let mut signature = None;
    for _ in 0..options.instance_count.max(1) {
        let session =
            session(&env, &library, path, options.device, &options.onnxruntime).map_err(&fail)?;
        if signature.is_none() {
            signature = Some(read_signature(&session, options).map_err(&fail)?);
        }
        instances.push(Box::new(OrtInstance {
            session,
            pad_single_rows: padding::pads_single_rows(options),
        }));
    }
    let signature = signature.ok_or_else(|| fail("no instance was built".into()))?;
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

/// One session, on exactly the configured device: CUDA is registered with `error_on_failure`,
/// so a missing driver or library fails the load instead of running on the CPU unnoticed.
fn session(
    env: &Environment,
    library: &Path,
    path: &Path,
    device: Device,
    opts: &OnnxRuntimeOptions,
) -> Result<Session, String> {
    fn e(what: &'static str) -> impl Fn(ort::Error<SessionBuilder>) -> String {
        move |err| format!("{what}: {err}")
    }
    let mut builder = Session::builder(env)
        .map_err(|err| format!("session options: {err}"))?
        .with_optimization_level(match opts.graph_optimization_level {
            config::GraphOptimizationLevel::Disable => GraphOptimizationLevel::Disable,
            config::GraphOptimizationLevel::Basic => GraphOptimizationLevel::Level1,
            config::GraphOptimizationLevel::Extended => GraphOptimizationLevel::Level2,
            config::GraphOptimizationLevel::Layout => GraphOptimizationLevel::Level3,
            config::GraphOptimizationLevel::All => GraphOptimizationLevel::All,
        })
        .map_err(e("graph_optimization_level"))?;
    if let Some(n) = opts.intra_op_threads {
        builder = builder
            .with_intra_threads(n)
            .map_err(e("intra_op_threads"))?;
    }
    if let Some(n) = opts.inter_op_threads {
        // Inter-op threads only run independent nodes side by side in parallel mode.
        builder = builder
            .with_parallel_execution(n > 1)
            .map_err(e("inter_op_threads"))?
            .with_inter_threads(n)
            .map_err(e("inter_op_threads"))?;
    }
    builder = match device {
        // With no provider registered, ONNX Runtime >= 1.22 may pick devices by policy; keep
        // CPU models on the CPU.
        Device::Cpu => builder
            .with_auto_device(AutoDevicePolicy::PreferCPU)
            .map_err(e("CPU execution provider"))?,
        Device::Cuda(id) => {
            preload_cuda_libraries(library)?;
            let id = i32::try_from(id).map_err(|_| format!("CUDA device {id} is out of range"))?;
            let cuda: ExecutionProviderDispatch = CUDA::default()
                .with_device_id(id)
                .build()
                .error_on_failure();
            builder.with_execution_providers([cuda]).map_err(|err| {
                format!(
                    "cannot use CUDA device {id} ({err}); the library at {} must be the GPU \
                     build (scripts/fetch-onnxruntime.sh --gpu) and the machine needs an NVIDIA \
                     driver for CUDA 13",
                    library.display()
                )
            })?
        }
    };
    builder
        .commit_from_file(path)
        .map_err(|err| format!("{err}"))
}

/// The GPU fetch puts CUDA and cuDNN next to libonnxruntime.so; load them from there so the
/// CUDA provider finds them without LD_LIBRARY_PATH. Without them there, the system's are used.
fn preload_cuda_libraries(library: &Path) -> Result<(), String> {
    static OUTCOME: OnceLock<Result<(), String>> = OnceLock::new();
    let Some(dir) = library.parent() else {
        return Ok(());
    };
    if !dir.join("libcudart.so.13").is_file() {
        return Ok(());
    }
    OUTCOME
        .get_or_init(|| {
            ort::ep::cuda::preload_dylibs(Some(dir), Some(dir))
                .map_err(|e| format!("cannot load CUDA libraries from {}: {e}", dir.display()))
        })
        .clone()
}

fn read_signature(session: &Session, options: &LoadOptions) -> Result<GraphSignature, String> {
    let tensor = |what: &str, name: &str, dtype: &ValueType| -> Result<GraphTensor, String> {
        let ValueType::Tensor { ty, shape, .. } = dtype else {
            return Err(format!(
                "{what} {name:?} is a {dtype}, not a tensor; only tensors can be served"
            ));
        };
        let dtype = from_element(*ty)
            .ok_or_else(|| format!("{what} {name:?} has unsupported element type {ty}"))?;
        Ok(GraphTensor {
            name: name.to_owned(),
            dtype,
            shape: shape.iter().map(|&d| usize::try_from(d).ok()).collect(),
        })
    };
    let signature = GraphSignature {
        inputs: session
            .inputs()
            .iter()
            .map(|o| tensor("input", o.name(), o.dtype()))
            .collect::<Result<_, _>>()?,
        outputs: session
            .outputs()
            .iter()
            .map(|o| tensor("output", o.name(), o.dtype()))
            .collect::<Result<_, _>>()?,
    };
    if options.max_batch_size > 0 {
        match signature.inputs.first().map(|t| t.shape.first()) {
            Some(Some(None)) => {}
            Some(Some(Some(d))) => {
                return Err(format!(
                    "max_batch_size is {} but the graph's first input has a fixed batch \
                     dimension {d}; export it with a symbolic batch dimension or set \
                     max_batch_size = 0",
                    options.max_batch_size
                ))
            }
            _ => return Err("max_batch_size > 0 but the first input is a scalar".into()),
        }
    }
    Ok(signature)
}

fn from_element(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::U8,
        TensorElementType::Uint16 => DataType::U16,
        TensorElementType::Uint32 => DataType::U32,
        TensorElementType::Uint64 => DataType::U64,
        TensorElementType::Int8 => DataType::I8,
        TensorElementType::Int16 => DataType::I16,
        TensorElementType::Int32 => DataType::I32,
        TensorElementType::Int64 => DataType::I64,
        TensorElementType::Float16 => DataType::F16,
        TensorElementType::Float32 => DataType::F32,
        TensorElementType::Float64 => DataType::F64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

fn to_element(dt: DataType) -> TensorElementType {
    match dt {
        DataType::Bool => TensorElementType::Bool,
        DataType::U8 => TensorElementType::Uint8,
        DataType::U16 => TensorElementType::Uint16,
        DataType::U32 => TensorElementType::Uint32,
        DataType::U64 => TensorElementType::Uint64,
        DataType::I8 => TensorElementType::Int8,
        DataType::I16 => TensorElementType::Int16,
        DataType::I32 => TensorElementType::Int32,
        DataType::I64 => TensorElementType::Int64,
        DataType::F16 => TensorElementType::Float16,
        DataType::F32 => TensorElementType::Float32,
        DataType::F64 => TensorElementType::Float64,
        DataType::Bytes => TensorElementType::String,
    }
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
        let values = inputs.iter().map(to_value).collect::<Result<Vec<_>, _>>()?;
        let outputs = self
            .session
            .run(values.as_slice())
            .map_err(|e| BackendError::Run(e.to_string()))?;
        outputs.values().map(|v| from_value(&v)).collect()
    }
}

fn run_err(what: &str) -> impl Fn(ort::Error) -> BackendError + '_ {
    move |e| BackendError::Run(format!("{what}: {e}"))
}

/// Our tensor as an ONNX Runtime input: a borrowed view of its bytes when they are aligned for
/// the element type (the usual case: request bodies are read into fresh buffers), else a copy.
fn to_value(t: &Tensor) -> Result<SessionInputValue<'_>, BackendError> {
    let shape: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
    let view = match t.dtype() {
        DataType::F32 => view::<f32>(t, &shape)?,
        DataType::F64 => view::<f64>(t, &shape)?,
        DataType::I8 => view::<i8>(t, &shape)?,
        DataType::I16 => view::<i16>(t, &shape)?,
        DataType::I32 => view::<i32>(t, &shape)?,
        DataType::I64 => view::<i64>(t, &shape)?,
        DataType::U8 => view::<u8>(t, &shape)?,
        DataType::U16 => view::<u16>(t, &shape)?,
        DataType::U32 => view::<u32>(t, &shape)?,
        DataType::U64 => view::<u64>(t, &shape)?,
        // Not every byte is a valid `bool`: decode instead of reinterpreting.
        DataType::Bool => {
            let values: Vec<bool> = t.data().iter().map(|&b| b != 0).collect();
            let value = OrtTensor::from_array((shape, values)).map_err(run_err("BOOL input"))?;
            return Ok(value.into());
        }
        DataType::Bytes => {
            let items = t
                .byte_strings()
                .ok_or_else(|| BackendError::Run("malformed BYTES tensor".into()))?
                .into_iter()
                .map(|b| std::str::from_utf8(b).map(str::to_owned))
                .collect::<Result<Vec<String>, _>>()
                .map_err(|_| BackendError::Unsupported("BYTES input that is not UTF-8".into()))?;
            let value = OrtTensor::from_string_array((shape, items.as_slice()))
                .map_err(run_err("BYTES input"))?;
            return Ok(value.into());
        }
        // FP16 has no primitive Rust type here, so it is always copied.
        DataType::F16 => None,
    };
    match view {
        Some(v) => Ok(v),
        None => copy_in(t, shape),
    }
}

/// A zero-copy view of `t`'s bytes as `T`, or `None` when they are not aligned for `T`.
fn view<'a, T>(t: &'a Tensor, shape: &[i64]) -> Result<Option<SessionInputValue<'a>>, BackendError>
where
    T: PrimitiveTensorElementType + Clone + std::fmt::Debug + 'static,
{
    let bytes: &'a [u8] = t.data();
    let size = std::mem::size_of::<T>();
    if cfg!(target_endian = "big")
        || !(bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>())
        || !bytes.len().is_multiple_of(size)
    {
        return Ok(None);
    }
    // SAFETY: the pointer is aligned for `T` and the length is a whole number of `T`s (both
    // checked above); every bit pattern is a valid value of these numeric types; the wire's
    // little-endian order is the target's (checked above); the slice borrows `t`.
    let values =
        unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), bytes.len() / size) };
    let value = TensorRef::from_array_view((shape.to_vec(), values)).map_err(run_err("input"))?;
    Ok(Some(value.into()))
}

/// A copy of `t`'s bytes in an ONNX Runtime-allocated tensor (for unaligned bytes and FP16).
fn copy_in(t: &Tensor, shape: Vec<i64>) -> Result<SessionInputValue<'static>, BackendError> {
    let ty = to_element(t.dtype());
    let mut value =
        DynTensor::new(&Allocator::default(), ty, shape).map_err(run_err("input tensor"))?;
    let bytes = t.data();
    if ty.byte_size(t.element_count()) != Some(bytes.len()) {
        return Err(BackendError::Run(format!(
            "input of {} bytes does not fill a {ty} tensor of shape {:?}",
            bytes.len(),
            t.shape()
        )));
    }
    if !bytes.is_empty() {
        // SAFETY: ONNX Runtime allocated `bytes.len()` bytes on the CPU for this tensor (the
        // size is checked above); the regions cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                value.data_ptr_mut().cast::<u8>(),
                bytes.len(),
            )
        };
    }
    Ok(value.into())
}

/// An output back into our tensor: numeric bytes are copied once out of ONNX Runtime's buffer,
/// in the element type the graph declares.
fn from_value(value: &DynValue) -> Result<Tensor, BackendError> {
    let ValueType::Tensor { ty, shape, .. } = value.dtype() else {
        return Err(BackendError::Unsupported(format!(
            "output of type {}",
            value.dtype()
        )));
    };
    let dims = shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<usize>, _>>()
        .map_err(|_| BackendError::Run(format!("output shape {shape:?}")))?;
    let out = |r: Result<Tensor, crate::tensor::TensorError>| {
        r.map_err(|e| BackendError::Run(format!("output tensor: {e}")))
    };
    if *ty == TensorElementType::String {
        let (_, items) = value
            .try_extract_strings()
            .map_err(run_err("string output"))?;
        return out(Tensor::from_byte_strings(dims, &items));
    }
    let dtype = from_element(*ty)
        .ok_or_else(|| BackendError::Unsupported(format!("output element type {ty}")))?;
    let tensor = value
        .view()
        .downcast::<DynTensorValueType>()
        .map_err(run_err("output"))?;
    if !tensor.memory_info().is_cpu_accessible() {
        return Err(BackendError::Run("output left on the device".into()));
    }
    let len = ty
        .byte_size(shape.num_elements())
        .ok_or_else(|| BackendError::Unsupported(format!("output element type {ty}")))?;
    let data = if len == 0 {
        Bytes::new()
    } else {
        // SAFETY: ONNX Runtime holds `len` bytes of this CPU tensor at `data_ptr` for as long as
        // `value` lives, which outlasts this copy.
        Bytes::copy_from_slice(unsafe {
            std::slice::from_raw_parts(tensor.data_ptr().cast::<u8>(), len)
        })
    };
    out(Tensor::new(dtype, dims, data))
}
