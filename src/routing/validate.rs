//! Checks a request against the served signature; every message names the tensor and what was
//! expected, in Triton's words (its core's `infer_request.cc` and `model.cc`), which clients
//! match on.

use super::{InferError, NamedTensor};
use crate::error::quote;
use crate::registry::ModelVersion;
use crate::tensor::Tensor;

fn invalid(msg: String) -> InferError {
    InferError::InvalidInput(msg)
}

/// Names as Triton lists them: `['a','b']`.
fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = names.map(|n| quote(n).to_string()).collect();
    format!("[{}]", quoted.join(","))
}

/// Dims as Triton prints them (`DimsListToString`): `[-1,64]`.
fn dims_list<T: std::fmt::Display>(d: &[T]) -> String {
    let parts: Vec<String> = d.iter().map(T::to_string).collect();
    format!("[{}]", parts.join(","))
}

/// Triton's note on a shape mismatch of a batching model.
const BATCH_NOTE: &str = "NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension to be prepended to each input shape. If you want to specify the full shape including the batch dim in your input dims config, try setting max_batch_size to zero. See the model configuration docs for more info on max_batch_size.";

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
                quote(&t.name)
            )));
        }
    }
    if given.len() != sig.inputs.len() {
        // At most 1024 inputs reach here (the decoders bound the count); each name is clipped.
        let missing = sig
            .inputs
            .iter()
            .filter(|s| !seen.contains(s.name.as_str()))
            .map(|s| s.name.as_str());
        return Err(invalid(format!(
            "expected {} inputs but got {} inputs for model {}. Got input(s) {}, but missing required input(s) {}. Please provide all required input(s).",
            sig.inputs.len(),
            given.len(),
            quote(&mv.name),
            list(given.iter().map(|t| t.name.as_str())),
            list(missing),
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
                    "unexpected inference input {} for model {}",
                    quote(&t.name),
                    quote(&mv.name)
                ))
            })?;
        slots[ix] = Some(t.tensor);
    }
    let mut batch: Option<usize> = None;
    let mut ordered = Vec::with_capacity(slots.len());
    for (spec, slot) in sig.inputs.iter().zip(slots) {
        // Every slot is filled: the counts match and names are unique.
        let t = slot.ok_or_else(|| {
            invalid(format!(
                "input {} does not exist in request",
                quote(&spec.name)
            ))
        })?;
        let (input, model) = (quote(&spec.name), quote(&mv.name));
        if t.dtype() != spec.dtype {
            return Err(invalid(format!(
                "inference input {input} data-type is '{}', but model {model} expects '{}'",
                t.dtype(),
                spec.dtype,
            )));
        }
        let shape = t.shape();
        let dims = if sig.max_batch_size > 0 {
            let Some((&rows, rest)) = shape.split_first() else {
                return Err(invalid(format!(
                    "input {input} has no shape but model requires batch dimension for {model}"
                )));
            };
            if rows > sig.max_batch_size {
                return Err(invalid(format!(
                    "inference request batch-size must be <= {} for {model}",
                    sig.max_batch_size
                )));
            }
            if rows == 0 {
                // Triton has no words for an empty batch; ours say the range.
                return Err(invalid(format!(
                    "input {input}: batch size 0 is outside 1..={} (max_batch_size of model {model})",
                    sig.max_batch_size
                )));
            }
            if batch.is_some_and(|b| b != rows) {
                return Err(invalid(format!(
                    "input {input} batch size does not match other inputs for {model}"
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
            let note = if sig.max_batch_size > 0 {
                BATCH_NOTE
            } else {
                ""
            };
            return Err(invalid(format!(
                "unexpected shape for input {input} for model {model}. Expected {}, got {}. {note}",
                dims_list(&sig.public_shape(spec)),
                dims_list(shape),
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
                "unexpected inference output {} for model {}",
                quote(name),
                quote(&mv.name)
            ))
        })?;
        if out.contains(&ix) {
            return Err(invalid(format!(
                "output {} already exists in request",
                quote(name)
            )));
        }
        out.push(ix);
    }
    Ok(out)
}
