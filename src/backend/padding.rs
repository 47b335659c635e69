//! Single-row padding, shared by every engine: a lone row runs as two (itself twice) and its
//! output is sliced back, so its answer has the bits it would have inside any batch.
//!
//! Why: tract multiplies a single row with a matrix-vector kernel, and some ONNX Runtime CPU
//! kernels (`LinearClassifier`) also take another path for one row, whose rounding differs from
//! the batched one in the last bits. When requests share batches (`row_invariant`), a row's
//! answer must not depend on its companions.

use super::{BackendError, LoadOptions};
use crate::tensor::Tensor;

/// Whether single rows must be padded: rows share batches and a batch can hold two.
pub fn pads_single_rows(options: &LoadOptions) -> bool {
    options.row_invariant && options.max_batch_size > 1
}

/// Runs `run` on `inputs`; with `pad` on and a batch of one row, runs it on the row doubled and
/// keeps the first row of every output.
pub fn run_padded(
    pad: bool,
    inputs: &[Tensor],
    run: impl FnOnce(&[Tensor]) -> Result<Vec<Tensor>, BackendError>,
) -> Result<Vec<Tensor>, BackendError> {
    if !pad || inputs.first().map(Tensor::rows) != Some(1) {
        return run(inputs);
    }
    let doubled = inputs
        .iter()
        .map(|t| Tensor::concat(&[t.clone(), t.clone()]))
        .collect::<Result<Vec<_>, _>>()?;
    run(&doubled)?
        .into_iter()
        .map(|out| {
            out.split(&[1, 1])?
                .into_iter()
                .next()
                .ok_or(BackendError::EmptySplit)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize) -> Tensor {
        let values: Vec<f32> = (0..n * 2).map(|v| v as f32).collect();
        Tensor::from_values(vec![n, 2], &values).unwrap()
    }

    #[test]
    fn a_lone_row_runs_as_two_and_comes_back_as_one() {
        let mut seen = 0;
        let out = run_padded(true, &[rows(1)], |inputs| {
            seen = inputs[0].rows();
            Ok(inputs.to_vec())
        })
        .unwrap();
        assert_eq!(seen, 2);
        assert_eq!(out, vec![rows(1)]);
    }

    #[test]
    fn batches_and_unpadded_models_run_as_they_are() {
        for (pad, n) in [(true, 3), (false, 1)] {
            let mut seen = 0;
            let out = run_padded(pad, &[rows(n)], |inputs| {
                seen = inputs[0].rows();
                Ok(inputs.to_vec())
            })
            .unwrap();
            assert_eq!(seen, n);
            assert_eq!(out, vec![rows(n)]);
        }
    }
}
