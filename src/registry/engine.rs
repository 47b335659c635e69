//! Building a version's backend: the batching derived from the graph when the config leaves it
//! open (Triton's auto-complete), the engine (`auto`: tract when it builds the model and runs
//! its warm-up, else ONNX Runtime), and the warm-up itself: declared shapes (`[[warmup]]`) must
//! run, invented ones that fail only warn.

use bytes::Bytes;
use std::path::Path;

use super::loader::LoadError;
use super::reconcile::{check_outputs, reconcile};
use super::Signature;
use crate::backend::{self, Backend, BackendError, Declared, LoadFailure, LoadOptions};
use crate::config::{BackendKind, BatchingConfig, ModelConfig, WarmupConfig};
use crate::tensor::{DataType, Tensor};

/// `max_batch_size` of a model whose config leaves batching open and whose graph can batch:
/// Triton's `default-max-batch-size`.
pub const DERIVED_MAX_BATCH_SIZE: usize = 4;

/// What a version is built with: the config it serves under (engine and batching resolved),
/// its signature and instances, and what the index and the config endpoint say about it.
pub(super) struct Built {
    pub config: ModelConfig,
    pub signature: Signature,
    pub instances: Vec<Box<dyn Backend>>,
    /// Why this engine and what was derived or only warned about; empty when nothing was.
    pub note: String,
}

pub(super) fn build(model: Bytes, file: &Path, config: &ModelConfig) -> Result<Built, LoadError> {
    let declared = Declared::read(&model).map_err(|e| BackendError::Load {
        path: file.display().to_string(),
        reason: LoadFailure::Engine(e),
    })?;
    let mut config = config.clone();
    let mut notes = Vec::new();
    if config.derive_batching && declared.batchable() {
        config.max_batch_size = DERIVED_MAX_BATCH_SIZE;
        config
            .dynamic_batching
            .get_or_insert_with(BatchingConfig::default);
        notes.push(format!(
            "max_batch_size {DERIVED_MAX_BATCH_SIZE} derived from the graph (the first \
             dimension of every input and output is open)"
        ));
    }
    let built = match config.backend {
        BackendKind::Auto => choose(model, file, &config)?,
        kind => {
            let (signature, instances, warning) = try_engine(kind, model, file, &config)?;
            Candidate {
                kind,
                signature,
                instances,
                warning,
                why: None,
            }
        }
    };
    config.backend = built.kind;
    notes.extend(built.why);
    notes.extend(built.warning);
    Ok(Built {
        config,
        signature: built.signature,
        instances: built.instances,
        note: notes.join("; "),
    })
}

struct Candidate {
    kind: BackendKind,
    signature: Signature,
    instances: Vec<Box<dyn Backend>>,
    /// The invented warm-up failed on it.
    warning: Option<String>,
    /// Why `auto` chose it.
    why: Option<String>,
}

/// `auto`: tract when it builds and warms up cleanly, else ONNX Runtime when it can, else
/// tract with its warm-up warning; no engine at all: both reasons.
fn choose(model: Bytes, file: &Path, config: &ModelConfig) -> Result<Candidate, LoadError> {
    let tract = try_engine(BackendKind::Tract, model.clone(), file, config);
    let tract_failure = match tract {
        Ok((signature, instances, None)) => {
            return Ok(Candidate {
                kind: BackendKind::Tract,
                signature,
                instances,
                warning: None,
                why: Some(
                    "backend auto chose tract: it builds the model and runs its warm-up".into(),
                ),
            })
        }
        Ok(warned) => Ok(warned),
        Err(e) => Err(e),
    };
    let ort = try_engine(BackendKind::OnnxRuntime, model, file, config);
    match (tract_failure, ort) {
        (Ok((_, _, Some(w))), Ok((signature, instances, None))) => Ok(Candidate {
            kind: BackendKind::OnnxRuntime,
            signature,
            instances,
            warning: None,
            why: Some(format!(
                "backend auto chose onnxruntime: tract's warm-up failed ({w}), ONNX Runtime's ran"
            )),
        }),
        (Ok((signature, instances, warning)), ort) => Ok(Candidate {
            kind: BackendKind::Tract,
            signature,
            instances,
            warning,
            why: Some(match ort {
                Ok(_) => "backend auto chose tract: neither engine ran the invented warm-up, \
                          tract comes first"
                    .into(),
                Err(e) => format!("backend auto chose tract: onnxruntime cannot load it ({e})"),
            }),
        }),
        (Err(t), Ok((signature, instances, warning))) => Ok(Candidate {
            kind: BackendKind::OnnxRuntime,
            signature,
            instances,
            warning,
            why: Some(format!(
                "backend auto chose onnxruntime: tract cannot run the model ({t})"
            )),
        }),
        (Err(t), Err(o)) => Err(LoadError::NoEngine {
            tract: t.to_string(),
            onnxruntime: o.to_string(),
        }),
    }
}

type Engine = (Signature, Vec<Box<dyn Backend>>, Option<String>);

/// Loads with one engine, reconciles the graph with the config and warms every instance up.
fn try_engine(
    kind: BackendKind,
    model: Bytes,
    file: &Path,
    config: &ModelConfig,
) -> Result<Engine, LoadError> {
    let options = LoadOptions {
        max_batch_size: config.max_batch_size,
        instance_count: config.instance_count,
        row_invariant: config
            .dynamic_batching
            .as_ref()
            .is_some_and(|b| b.row_invariant),
        device: config.device,
        onnxruntime: config.onnxruntime,
        input_hints: config.inputs.clone(),
    };
    let mut loaded = backend::load_bytes(kind, model, file, &options)?;
    let batched = config.max_batch_size > 0;
    let signature = Signature {
        max_batch_size: config.max_batch_size,
        inputs: reconcile("input", &loaded.signature.inputs, &config.inputs, batched)?,
        outputs: reconcile(
            "output",
            &loaded.signature.outputs,
            &config.outputs,
            batched,
        )?,
        output_labels: Default::default(),
    };
    let warning = warm_up(&signature, &mut loaded.instances, config)?;
    Ok((signature, loaded.instances, warning))
}

/// Declared warm-ups must run (an error refuses the version); without them the invented ones
/// (batch sizes 1, the preferred ones and the maximum, variable dims as 1) may fail with a
/// warning, because a model may run only at the shapes its users send.
fn warm_up(
    signature: &Signature,
    instances: &mut [Box<dyn Backend>],
    config: &ModelConfig,
) -> Result<Option<String>, LoadError> {
    if !config.warmup.is_empty() {
        for (index, w) in config.warmup.iter().enumerate() {
            if let Some(name) = w
                .inputs
                .keys()
                .find(|n| !signature.inputs.iter().any(|s| &s.name == *n))
            {
                return Err(LoadError::DeclaredWarmup {
                    index,
                    rows: w.batch_size,
                    reason: format!(
                        "it names input {name:?}; the model's inputs are {:?}",
                        signature.inputs.iter().map(|s| &s.name).collect::<Vec<_>>()
                    ),
                });
            }
            let most = signature.max_batch_size.max(1);
            if w.batch_size > most {
                return Err(LoadError::DeclaredWarmup {
                    index,
                    rows: w.batch_size,
                    reason: format!("batch_size is above max_batch_size {most}"),
                });
            }
            let declared_error = |reason: String| LoadError::DeclaredWarmup {
                index,
                rows: w.batch_size,
                reason,
            };
            let Some(inputs) =
                warmup_inputs(signature, w.batch_size, Some(w)).map_err(declared_error)?
            else {
                continue;
            };
            for instance in instances.iter_mut() {
                run_one(signature, instance.as_mut(), &inputs, w.batch_size).map_err(|reason| {
                    LoadError::DeclaredWarmup {
                        index,
                        rows: w.batch_size,
                        reason,
                    }
                })?;
            }
        }
        return Ok(None);
    }
    for instance in instances.iter_mut() {
        for rows in warmup_sizes(config) {
            let Ok(Some(inputs)) = warmup_inputs(signature, rows, None) else {
                break;
            };
            if let Err(reason) = run_one(signature, instance.as_mut(), &inputs, rows) {
                return Ok(Some(format!(
                    "warm-up at batch size {rows} on invented shapes (variable dimensions as 1) \
                     failed: {reason}; declare the shapes it runs at in [[warmup]]"
                )));
            }
        }
    }
    Ok(None)
}

fn run_one(
    signature: &Signature,
    instance: &mut dyn Backend,
    inputs: &[Tensor],
    rows: usize,
) -> Result<(), String> {
    let outputs = instance.infer(inputs).map_err(|e| e.to_string())?;
    check_outputs(signature, &outputs, rows).map_err(|e| e.to_string())
}

/// Batch sizes prepared before a version serves: 1, the preferred sizes and the maximum.
fn warmup_sizes(config: &ModelConfig) -> Vec<usize> {
    let mut sizes = vec![1];
    if let Some(b) = &config.dynamic_batching {
        sizes.extend(&b.preferred_batch_sizes);
    }
    sizes.push(config.max_batch_size.max(1));
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// Warm-up inputs of `rows` rows: the declared warm-up's dims and data where it names the
/// input, else the served dims with variable ones as 1, zeros. `Ok(None)` when an input is BYTES.
fn warmup_inputs(
    signature: &Signature,
    rows: usize,
    declared: Option<&WarmupConfig>,
) -> Result<Option<Vec<Tensor>>, String> {
    let mut tensors = Vec::with_capacity(signature.inputs.len());
    for spec in &signature.inputs {
        let Some(size) = spec.dtype.size() else {
            return Ok(None);
        };
        let mut shape: Vec<usize> = Vec::with_capacity(spec.dims.len() + 1);
        if signature.max_batch_size > 0 {
            shape.push(rows);
        }
        let given = declared.and_then(|w| w.inputs.get(&spec.name));
        match given {
            Some(input) => {
                if input.dtype.is_some_and(|d| d != spec.dtype) {
                    return Err(format!(
                        "input {:?} is {}, the warm-up declares {}",
                        spec.name,
                        spec.dtype,
                        input.dtype.map_or_else(String::new, |d| d.to_string())
                    ));
                }
                shape.extend(&input.dims);
            }
            None => shape.extend(
                spec.dims
                    .iter()
                    .map(|&d| if d < 0 { 1 } else { d as usize }),
            ),
        }
        let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        let bytes = count.and_then(|n| n.checked_mul(size)).ok_or("too large")?;
        let data = match given {
            Some(input) if input.random => random_bytes(spec.dtype, bytes / size),
            _ => vec![0u8; bytes],
        };
        let tensor =
            Tensor::new(spec.dtype, shape, Bytes::from(data)).map_err(|e| e.to_string())?;
        tensors.push(tensor);
    }
    Ok(Some(tensors))
}

/// `count` little-endian values of `dtype` from a fixed-seed xorshift: floats in [0, 1),
/// integers and booleans 0 or 1 (valid as indices, lengths and masks alike).
fn random_bytes(dtype: DataType, count: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = Vec::with_capacity(count * dtype.size().unwrap_or(1));
    for _ in 0..count {
        let r = next();
        let unit = (r >> 11) as f64 / (1u64 << 53) as f64;
        let bit = r >> 63;
        match dtype {
            DataType::F32 => out.extend((unit as f32).to_le_bytes()),
            DataType::F64 => out.extend(unit.to_le_bytes()),
            // 0.0 or 1.0 in binary16.
            DataType::F16 => out.extend(if bit == 1 { [0x00, 0x3C] } else { [0, 0] }),
            other => {
                let width = other.size().unwrap_or(1);
                out.push(bit as u8);
                out.extend(std::iter::repeat_n(0u8, width - 1));
            }
        }
    }
    out
}
