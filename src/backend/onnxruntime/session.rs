//! Building one ONNX Runtime session: graph optimisation and thread options, the execution
//! provider of the configured device, and the graph's signature read back from it.

use std::path::Path;

use ort::environment::Environment;
use ort::ep::{ExecutionProviderDispatch, CUDA};
use ort::session::builder::{AutoDevicePolicy, GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;
use ort::value::ValueType;

use super::convert::from_element;
use super::library::preload_cuda_libraries;
use super::SetupError;
use crate::backend::{Declared, GraphSignature, GraphTensor, LoadFailure, LoadOptions};
use crate::config::{self, Device, OnnxRuntimeOptions};

/// One session, on exactly the configured device: CUDA is registered with `error_on_failure`,
/// so a missing driver or library fails the load instead of running on the CPU unnoticed.
pub(super) fn session(
    env: &Environment,
    library: &Path,
    model: &[u8],
    device: Device,
    opts: &OnnxRuntimeOptions,
) -> Result<Session, SetupError> {
    fn e(option: &'static str) -> impl Fn(ort::Error<SessionBuilder>) -> SetupError {
        move |err| SetupError::SessionOption {
            option,
            reason: err.to_string(),
        }
    }
    let mut builder = Session::builder(env)
        .map_err(|err| SetupError::SessionOption {
            option: "session options",
            reason: err.to_string(),
        })?
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
            let id = i32::try_from(id).map_err(|_| SetupError::CudaDeviceOutOfRange(id))?;
            let cuda: ExecutionProviderDispatch = CUDA::default()
                .with_device_id(id)
                .build()
                .error_on_failure();
            builder
                .with_execution_providers([cuda])
                .map_err(|err| SetupError::CudaProvider {
                    id,
                    reason: err.to_string(),
                    library: library.to_path_buf(),
                })?
        }
    };
    builder
        .commit_from_memory(model)
        .map_err(|err| SetupError::Session(without_source_location(&err.to_string())))
}

/// ONNX Runtime's load errors start with the C++ file, line and function signature
/// (`/onnxruntime_src/.../model.cc:256 onnxruntime::Model::Model(...) Unsupported model IR
/// version: 99, max supported IR version: 13`); users need the sentence after it.
fn without_source_location(message: &str) -> String {
    let Some(rest) = message.strip_prefix("/onnxruntime_src/") else {
        return message.to_owned();
    };
    // Skip the path and line, then the signature up to its closing parenthesis.
    let Some(open) = rest.find('(') else {
        return message.to_owned();
    };
    let mut depth = 0usize;
    for (i, c) in rest[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    let sentence = rest[open + i + 1..].trim_start();
                    return if sentence.is_empty() {
                        message.to_owned()
                    } else {
                        sentence.to_owned()
                    };
                }
            }
            _ => {}
        }
    }
    message.to_owned()
}

pub(super) fn read_signature(
    session: &Session,
    declared: &Declared,
    options: &LoadOptions,
) -> Result<GraphSignature, LoadFailure> {
    let tensor = |what: &'static str, name: &str, dtype: &ValueType| {
        let ValueType::Tensor { ty, shape, .. } = dtype else {
            return Err(SetupError::NotATensor {
                what,
                name: name.to_owned(),
                kind: dtype.to_string(),
            });
        };
        let dtype = from_element(*ty).ok_or_else(|| SetupError::UnsupportedElement {
            what,
            name: name.to_owned(),
            element: ty.to_string(),
        })?;
        Ok(GraphTensor {
            name: name.to_owned(),
            dtype,
            shape: shape.iter().map(|&d| usize::try_from(d).ok()).collect(),
        })
    };
    let batched = options.max_batch_size > 0;
    let signature = GraphSignature {
        inputs: session
            .inputs()
            .iter()
            .map(|o| {
                let mut t = tensor("input", o.name(), o.dtype())?;
                // ONNX Runtime reports an input the file gives no shape as rank 0; it is not a
                // scalar: its shape comes from the config, or the load says it must.
                if declared.input(&t.name).is_some_and(|d| d.shape.is_none()) {
                    let hint = options.input_hints.iter().find(|h| h.name == t.name);
                    let Some(hint) = hint else {
                        return Err(LoadFailure::NoShape(t.name));
                    };
                    t.shape = batched
                        .then_some(None)
                        .into_iter()
                        .chain(hint.dims.iter().map(|&d| usize::try_from(d).ok()))
                        .collect();
                }
                Ok(t)
            })
            .collect::<Result<_, LoadFailure>>()?,
        outputs: session
            .outputs()
            .iter()
            .map(|o| {
                let mut t = tensor("output", o.name(), o.dtype())?;
                // An output of unknown rank: only its batch dimension is known.
                let shapeless = declared
                    .outputs
                    .iter()
                    .any(|d| d.name == t.name && d.shape.is_none());
                if shapeless && batched {
                    t.shape = vec![None];
                }
                Ok::<_, LoadFailure>(t)
            })
            .collect::<Result<_, _>>()?,
    };
    if options.max_batch_size > 0 {
        match signature.inputs.first().map(|t| t.shape.first()) {
            Some(Some(None)) => {}
            Some(Some(Some(d))) => {
                return Err(LoadFailure::FixedBatchDimension {
                    max_batch_size: options.max_batch_size,
                    dim: d.to_string(),
                })
            }
            _ => return Err(LoadFailure::ScalarBatchInput),
        }
    }
    Ok(signature)
}

#[cfg(test)]
mod tests {
    use super::without_source_location;

    #[test]
    fn load_errors_lose_the_cpp_source_location() {
        let raw = "/onnxruntime_src/onnxruntime/core/graph/model.cc:256 onnxruntime::Model::Model(\
                   onnx::ModelProto&&, const onnxruntime::PathString&, const \
                   onnxruntime::logging::Logger&) Unsupported model IR version: 99, max supported IR \
                   version: 13";
        assert_eq!(
            without_source_location(raw),
            "Unsupported model IR version: 99, max supported IR version: 13"
        );
        let plain = "Load model from memory failed: Protobuf parsing failed.";
        assert_eq!(without_source_location(plain), plain);
        assert_eq!(
            without_source_location("/onnxruntime_src/x.cc:1 f()"),
            "/onnxruntime_src/x.cc:1 f()"
        );
    }
}
