//! Checks a request against the served signature; every message names the tensor and what was
//! expected, so a client can fix its request without reading our code.

use super::{InferError, NamedTensor};
use crate::error::clip;
use crate::registry::{ModelVersion, TensorSpec};
use crate::tensor::Tensor;

fn invalid(msg: String) -> InferError {
    InferError::InvalidInput(msg)
}

fn names(specs: &[TensorSpec]) -> Vec<&str> {
    specs.iter().map(|s| s.name.as_str()).collect()
}

/// Orders the inputs as the model wants them and returns the batch's row count.
pub fn inputs(
    mv: &ModelVersion,
    given: Vec<NamedTensor>,
) -> Result<(Vec<Tensor>, usize), InferError> {
    let sig = &mv.signature;
    // A repeated name is named as such (Triton's wording), not counted as one input too many.
    // A set, not pairwise comparison: 1024 long names sharing a prefix would cost seconds.
    let mut seen = std::collections::HashSet::with_capacity(given.len());
    for t in &given {
        if !seen.insert(t.name.as_str()) {
            return Err(invalid(format!(
                "input {} already exists in request",
                clip(&t.name)
            )));
        }
    }
    if given.len() != sig.inputs.len() {
        return Err(invalid(format!(
            "model {:?} expects {} input(s) {:?}, got {}",
            mv.name,
            sig.inputs.len(),
            names(&sig.inputs),
            given.len()
        )));
    }
    let mut slots: Vec<Option<Tensor>> = vec![None; sig.inputs.len()];
    for t in given {
        let ix = sig
            .inputs
            .iter()
            .position(|s| s.name == t.name)
            .ok_or_else(|| {
                invalid(format!(
                    "unknown input {} for model {:?}; expected {:?}",
                    clip(&t.name),
                    mv.name,
                    names(&sig.inputs)
                ))
            })?;
        slots[ix] = Some(t.tensor);
    }
    let mut batch: Option<usize> = None;
    let mut ordered = Vec::with_capacity(slots.len());
    for (spec, slot) in sig.inputs.iter().zip(slots) {
        // Every slot is filled: the counts match and names are unique.
        let t = slot.ok_or_else(|| invalid(format!("input {:?} is missing", spec.name)))?;
        if t.dtype() != spec.dtype {
            return Err(invalid(format!(
                "input {:?}: expected datatype {}, got {}",
                spec.name,
                spec.dtype,
                t.dtype()
            )));
        }
        let shape = t.shape();
        let dims = if sig.max_batch_size > 0 {
            let Some((&rows, rest)) = shape.split_first() else {
                return Err(invalid(format!(
                    "input {:?}: expected shape {:?}, got a scalar",
                    spec.name,
                    sig.public_shape(spec)
                )));
            };
            if rows == 0 || rows > sig.max_batch_size {
                return Err(invalid(format!(
                    "input {:?}: batch size {rows} is outside 1..={} (max_batch_size of model {:?})",
                    spec.name, sig.max_batch_size, mv.name
                )));
            }
            if let Some(b) = batch.filter(|&b| b != rows) {
                return Err(invalid(format!(
                    "input {:?}: batch size {rows} differs from {b} of the other inputs",
                    spec.name
                )));
            }
            batch = Some(rows);
            rest
        } else {
            shape
        };
        let fits = dims.len() == spec.dims.len()
            && dims
                .iter()
                .zip(&spec.dims)
                .all(|(&d, &want)| want < 0 || d as i64 == want);
        if !fits {
            return Err(invalid(format!(
                "input {:?}: expected shape {:?}, got {:?}",
                spec.name,
                sig.public_shape(spec),
                shape
            )));
        }
        ordered.push(t);
    }
    Ok((ordered, batch.unwrap_or(1)))
}

/// Indices of the wanted outputs in model order (all when none is named).
pub fn outputs(mv: &ModelVersion, wanted: &[String]) -> Result<Vec<usize>, InferError> {
    let specs = &mv.signature.outputs;
    if wanted.is_empty() {
        return Ok((0..specs.len()).collect());
    }
    let mut out: Vec<usize> = Vec::with_capacity(wanted.len());
    for name in wanted {
        let ix = specs.iter().position(|s| &s.name == name).ok_or_else(|| {
            invalid(format!(
                "unexpected inference output {} for model {:?}; expected {:?}",
                clip(name),
                mv.name,
                names(specs)
            ))
        })?;
        if out.contains(&ix) {
            return Err(invalid(format!(
                "output {} already exists in request",
                clip(name)
            )));
        }
        out.push(ix);
    }
    Ok(out)
}
