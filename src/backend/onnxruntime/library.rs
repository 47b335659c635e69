//! Finding and loading the ONNX Runtime shared library once per process: the configured path,
//! `ORT_DYLIB_PATH` or the project folder; the environment sessions are built in; the CUDA and
//! cuDNN libraries the GPU fetch puts next to it.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use ort::environment::Environment;
use ort::logging::LogLevel;

use super::SetupError;

/// Where `scripts/fetch-onnxruntime.sh` links the CPU library, relative to the project root.
pub const PROJECT_LIBRARY: &str = ".cache/onnxruntime/libonnxruntime.so";

/// The fix named in every "library unavailable" message.
pub(super) const FIX: &str = "run scripts/fetch-onnxruntime.sh, or point `onnxruntime.library` \
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
pub(super) fn runtime() -> Result<(Environment, PathBuf), SetupError> {
    let wanted = library_path();
    // `ort` resolves relative paths against the executable's folder (and panics if it has
    // none); ours mean the working directory.
    let wanted = std::path::absolute(&wanted).unwrap_or(wanted);
    let mut state = lock(&STATE);
    if let Some(from) = &state.loaded_from {
        if !same_file(from, &wanted) {
            return Err(SetupError::AlreadyLoaded {
                from: from.clone(),
                wanted,
            });
        }
    } else {
        if !wanted.is_file() {
            return Err(SetupError::LibraryNotFound(wanted));
        }
        // Checks the library's version against the API level `ort` was built for (1.31).
        ort::init_from(&wanted).map_err(|e| SetupError::Library(e.to_string()))?;
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
        .map_err(|e| SetupError::Environment {
            library: wanted.clone(),
            reason: e.to_string(),
        })?;
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

/// The GPU fetch puts CUDA and cuDNN next to libonnxruntime.so; load them from there so the
/// CUDA provider finds them without LD_LIBRARY_PATH. Without them there, the system's are used.
pub(super) fn preload_cuda_libraries(library: &Path) -> Result<(), SetupError> {
    static OUTCOME: OnceLock<Result<(), SetupError>> = OnceLock::new();
    let Some(dir) = library.parent() else {
        return Ok(());
    };
    if !dir.join("libcudart.so.13").is_file() {
        return Ok(());
    }
    OUTCOME
        .get_or_init(|| {
            ort::ep::cuda::preload_dylibs(Some(dir), Some(dir)).map_err(|e| {
                SetupError::CudaLibraries {
                    dir: dir.to_path_buf(),
                    reason: e.to_string(),
                }
            })
        })
        .clone()
}
