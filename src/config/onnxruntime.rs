//! ONNX Runtime's settings: where its library comes from (`[onnxruntime]` of the server), the
//! device a model runs on, and per-model session options, checked against the model's backend.

use std::path::PathBuf;

use serde::Deserialize;

use super::model::RawModelConfig;
use super::{BackendKind, ModelConfig};

/// `[onnxruntime]` in the server config. The library is loaded once per process, by the first
/// model that needs it; `library` unset means `ORT_DYLIB_PATH`, then
/// `.cache/onnxruntime/libonnxruntime.so` (what `scripts/fetch-onnxruntime.sh` writes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OnnxRuntimeConfig {
    pub library: Option<PathBuf>,
}

/// `device = "cpu" | "cuda:N"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(u32),
}

impl Device {
    pub fn parse(text: &str) -> Option<Device> {
        match text.trim() {
            "cpu" => Some(Device::Cpu),
            other => {
                let id = other.strip_prefix("cuda:")?;
                // Digits only: `u32::from_str` would also take "+1".
                if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                id.parse().ok().map(Device::Cuda)
            }
        }
    }

    /// The GPU index, for Triton's `instance_group.gpus`.
    pub fn gpu(self) -> Option<u32> {
        match self {
            Device::Cpu => None,
            Device::Cuda(id) => Some(id),
        }
    }

    /// Triton's `instance_group.kind`.
    pub fn instance_kind(self) -> &'static str {
        match self {
            Device::Cpu => "KIND_CPU",
            Device::Cuda(_) => "KIND_GPU",
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(id) => write!(f, "cuda:{id}"),
        }
    }
}

/// ONNX Runtime's graph optimisation levels, by its own names (`ORT_ENABLE_BASIC` is "basic").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GraphOptimizationLevel {
    Disable,
    Basic,
    Extended,
    Layout,
    #[default]
    All,
}

/// Per-model ONNX Runtime session options; `None` leaves ONNX Runtime's default (one intra-op
/// thread per physical core, sequential execution).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OnnxRuntimeOptions {
    pub intra_op_threads: Option<usize>,
    pub inter_op_threads: Option<usize>,
    pub graph_optimization_level: GraphOptimizationLevel,
}

impl ModelConfig {
    /// What computes the model, as reported in its Triton config (`parameters`): ONNX Runtime's
    /// provider name, or the engine's. The configured device is the one used: ONNX Runtime
    /// registers CUDA strictly, so a CUDA model that cannot use CUDA does not load.
    pub fn execution_provider(&self) -> &'static str {
        match (self.backend, self.device) {
            (BackendKind::Tract, _) => "tract",
            (BackendKind::Auto, _) => "auto",
            (BackendKind::OnnxRuntime, Device::Cpu) => "CPUExecutionProvider",
            (BackendKind::OnnxRuntime, Device::Cuda(_)) => "CUDAExecutionProvider",
        }
    }
}

/// The `device` and ONNX Runtime keys of a model config, checked against its backend.
pub(super) fn onnxruntime_keys(
    raw: &RawModelConfig,
) -> Result<(Device, OnnxRuntimeOptions), String> {
    let device = match &raw.device {
        None => Device::default(),
        Some(text) => Device::parse(text)
            .ok_or_else(|| format!("device must be \"cpu\" or \"cuda:N\", got {text:?}"))?,
    };
    for (key, threads) in [
        ("intra_op_threads", raw.intra_op_threads),
        ("inter_op_threads", raw.inter_op_threads),
    ] {
        if threads.is_some_and(|n| n == 0 || n > 1024) {
            return Err(format!(
                "{key} must be 1..=1024 (omit it for ONNX Runtime's default)"
            ));
        }
    }
    if raw.backend != BackendKind::OnnxRuntime {
        if device != Device::Cpu {
            return Err(format!(
                "device \"{device}\" needs backend = \"onnxruntime\" ({} runs on the CPU only)",
                raw.backend.as_str()
            ));
        }
        let set = [
            ("intra_op_threads", raw.intra_op_threads.is_some()),
            ("inter_op_threads", raw.inter_op_threads.is_some()),
            (
                "graph_optimization_level",
                raw.graph_optimization_level.is_some(),
            ),
        ];
        if let Some((key, _)) = set.iter().find(|(_, present)| *present) {
            return Err(format!("{key} applies to backend = \"onnxruntime\" only"));
        }
    }
    Ok((
        device,
        OnnxRuntimeOptions {
            intra_op_threads: raw.intra_op_threads,
            inter_op_threads: raw.inter_op_threads,
            graph_optimization_level: raw.graph_optimization_level.unwrap_or_default(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onnxruntime_keys_parse_and_belong_to_their_backend() {
        let cfg = ModelConfig::parse(
            "backend = 'onnxruntime'\ndevice = 'cuda:1'\nintra_op_threads = 2\n\
             graph_optimization_level = 'extended'",
            "m",
        )
        .unwrap();
        assert_eq!(cfg.backend, BackendKind::OnnxRuntime);
        assert_eq!(cfg.device, Device::Cuda(1));
        assert_eq!(cfg.device.instance_kind(), "KIND_GPU");
        assert_eq!(cfg.onnxruntime.intra_op_threads, Some(2));
        assert_eq!(cfg.onnxruntime.inter_op_threads, None);
        assert_eq!(
            cfg.onnxruntime.graph_optimization_level,
            GraphOptimizationLevel::Extended
        );
        assert_eq!(
            ModelConfig::parse("", "m").unwrap().backend,
            BackendKind::Auto
        );
        let auto = ModelConfig::parse("backend = 'auto'", "m").unwrap();
        assert_eq!(auto.backend, BackendKind::Auto);
        let plain = ModelConfig::parse("backend = 'onnxruntime'", "m").unwrap();
        assert_eq!(plain.device, Device::Cpu);
        assert_eq!(plain.onnxruntime, OnnxRuntimeOptions::default());
        for (text, want) in [
            ("backend = 'onnxruntime'\ndevice = 'gpu'", "device must be"),
            (
                "backend = 'onnxruntime'\ndevice = 'cuda:+1'",
                "device must be",
            ),
            ("backend = 'onnxruntime'\nintra_op_threads = 0", "1..=1024"),
            ("device = 'cuda:0'", "needs backend = \"onnxruntime\""),
            ("inter_op_threads = 2", "applies to backend"),
            (
                "backend = 'onnxruntime'\ngraph_optimization_level = 'max'",
                "unknown variant",
            ),
        ] {
            let err = ModelConfig::parse(text, "m").unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
