//! tract needs a fact (datatype and a shape of known rank) for every input before it can type
//! the graph. ONNX files leave dimensions open in three ways (a name, nothing, no shape at all);
//! here each input gets one: the config's `[[input]]` dims where given, the batch symbol for the
//! first dimension of a batching model whatever its form, a fresh symbol for the rest.

use tract_onnx::prelude::{InferenceModel, TDim};
use tract_onnx::tract_hir::infer::Factoid;

use super::{Declared, DeclaredDim, LoadFailure, LoadOptions};

pub(super) fn set_input_facts(
    model: &mut InferenceModel,
    declared: &Declared,
    options: &LoadOptions,
) -> Result<(), LoadFailure> {
    let engine = |e: tract_onnx::prelude::TractError| LoadFailure::Engine(format!("{e:#}"));
    let batched = options.max_batch_size > 0;
    let mut batch: Option<TDim> = None;
    for ix in 0..model.inputs.len() {
        let outlet = model.inputs[ix];
        let name = model.node(outlet.node).name.clone();
        let fact = model.input_fact(ix).map_err(engine)?.clone();
        let hint = options.input_hints.iter().find(|h| h.name == name);
        let Some(shape) = declared.input(&name).and_then(|t| t.shape.clone()) else {
            // No shape in the file: the config's dims, or whatever tract can infer itself.
            if let Some(hint) = hint {
                let mut dims = Vec::with_capacity(hint.dims.len() + 1);
                if batched {
                    dims.push(batch_dim(model, &mut batch, None));
                }
                for &d in &hint.dims {
                    dims.push(open_or(model, d));
                }
                model
                    .set_input_fact(ix, fact.with_shape(dims))
                    .map_err(engine)?;
            }
            continue;
        };
        let current: Vec<Option<TDim>> = fact.shape.dims().map(|d| d.concretize()).collect();
        let mut dims = Vec::with_capacity(shape.len());
        for (pos, d) in shape.iter().enumerate() {
            let known = current.get(pos).cloned().flatten();
            let dim = match (d, known) {
                (DeclaredDim::Fixed(v), _) => TDim::Val(*v as i64),
                _ if batched && pos == 0 => {
                    let named = match d {
                        DeclaredDim::Named(_) => current.first().cloned().flatten(),
                        _ => None,
                    };
                    batch_dim(model, &mut batch, named)
                }
                (_, known) => {
                    let from_config = hint
                        .and_then(|h| h.dims.get(pos - usize::from(batched)))
                        .copied()
                        .filter(|&c| c > 0);
                    match (from_config, known) {
                        (Some(c), _) => TDim::Val(c),
                        (None, Some(k)) => k,
                        (None, None) => open_or(model, -1),
                    }
                }
            };
            dims.push(dim);
        }
        model
            .set_input_fact(ix, fact.with_shape(dims))
            .map_err(engine)?;
    }
    Ok(())
}

/// The one symbol every input's first dimension shares when the model batches: the first
/// input's own name for it when it has one, else a fresh symbol.
fn batch_dim(model: &InferenceModel, batch: &mut Option<TDim>, named: Option<TDim>) -> TDim {
    batch
        .get_or_insert_with(|| match named {
            Some(TDim::Sym(s)) => TDim::Sym(s),
            _ => TDim::Sym(model.new_sym_with_prefix("batch")),
        })
        .clone()
}

/// A config dimension: its value, or a fresh symbol for -1.
fn open_or(model: &InferenceModel, d: i64) -> TDim {
    if d > 0 {
        TDim::Val(d)
    } else {
        TDim::Sym(model.new_sym_with_prefix("unk"))
    }
}
