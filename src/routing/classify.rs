//! Triton's classification extension: a requested output with `classification: K` comes back as
//! its top K classes per row, BYTES strings `"score:index[:label]"` (score printed as C's `%f`,
//! as Triton's `std::to_string` does), shape `[batch, K]` when the model batches, else `[K]`.

use super::{InferError, InferResponse, Router};
use crate::error::clip;
use crate::tensor::{DataType, Tensor};

/// The most classes one request may ask for per row; more than the output has gives them all.
pub const MAX_CLASSIFICATION: usize = 1 << 16;

fn scores(t: &Tensor) -> Result<Vec<(f64, String)>, String> {
    fn float<T: crate::tensor::Element + Into<f64>>(t: &Tensor) -> Option<Vec<(f64, String)>> {
        t.to_vec::<T>().map(|v| {
            v.into_iter()
                .map(|x| {
                    let x: f64 = x.into();
                    (x, format!("{x:.6}"))
                })
                .collect()
        })
    }
    fn int<T: crate::tensor::Element + Into<i64>>(t: &Tensor) -> Option<Vec<(f64, String)>> {
        t.to_vec::<T>().map(|v| {
            v.into_iter()
                .map(|x| {
                    let x: i64 = x.into();
                    (x as f64, x.to_string())
                })
                .collect()
        })
    }
    let got = match t.dtype() {
        DataType::F32 => float::<f32>(t),
        DataType::F64 => float::<f64>(t),
        DataType::I8 => int::<i8>(t),
        DataType::I16 => int::<i16>(t),
        DataType::I32 => int::<i32>(t),
        DataType::I64 => int::<i64>(t),
        DataType::U8 => int::<u8>(t),
        DataType::U16 => int::<u16>(t),
        DataType::U32 => int::<u32>(t),
        other => {
            return Err(format!(
                "classification of a {} output is not supported",
                other.as_str()
            ))
        }
    };
    got.ok_or_else(|| "output data does not match its datatype".into())
}

/// The top `k` of each row of `t` (every element when `batched` is false).
pub fn top_k(
    t: &Tensor,
    k: usize,
    batched: bool,
    labels: Option<&[String]>,
) -> Result<Tensor, String> {
    if k == 0 || k > MAX_CLASSIFICATION {
        return Err(format!(
            "classification count must be in 1..={MAX_CLASSIFICATION}, got {k}"
        ));
    }
    let values = scores(t)?;
    let rows = if batched { t.rows().max(1) } else { 1 };
    let per_row = values.len().checked_div(rows).unwrap_or(0);
    let k = k.min(per_row);
    let mut out = Vec::with_capacity(rows * k);
    for row in values.chunks(per_row.max(1)).take(rows) {
        let mut order: Vec<usize> = (0..row.len()).collect();
        // Highest first; equal scores keep their index order.
        order.sort_by(|&a, &b| row[b].0.total_cmp(&row[a].0));
        for &ix in order.iter().take(k) {
            let mut s = format!("{}:{ix}", row[ix].1);
            if let Some(label) = labels.and_then(|l| l.get(ix)) {
                s.push(':');
                s.push_str(label);
            }
            out.push(s);
        }
    }
    let shape = if batched { vec![rows, k] } else { vec![k] };
    Tensor::from_byte_strings(shape, &out).map_err(|e| e.to_string())
}

impl Router {
    /// Replaces each output of `wanted` (name, K) in `resp` by its top K, labelled from the
    /// version's labels (a `label_filename` of its config, or the classifier's ZipMap).
    pub fn classify(
        &self,
        resp: &mut InferResponse,
        wanted: &[(String, usize)],
    ) -> Result<(), InferError> {
        if wanted.is_empty() {
            return Ok(());
        }
        let mv = self.version(&resp.model, Some(&resp.version))?;
        let batched = mv.signature.max_batch_size > 0;
        for (name, k) in wanted {
            if let Some(o) = resp.outputs.iter_mut().find(|o| &o.name == name) {
                let labels = mv.signature.output_labels.get(name).map(Vec::as_slice);
                o.tensor = top_k(&o.tensor, *k, batched, labels)
                    .map_err(|e| InferError::InvalidInput(format!("output {}: {e}", clip(name))))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_rows_are_highest_first_with_labels() {
        let t = Tensor::from_values(vec![2, 3], &[0.1f32, 0.7, 0.2, 0.5, 0.25, 0.25]).unwrap();
        let labels = ["a".to_string(), "b".into(), "c".into()];
        let r = top_k(&t, 2, true, Some(&labels)).unwrap();
        assert_eq!(r.shape(), &[2, 2]);
        let s: Vec<&[u8]> = r.byte_strings().unwrap();
        assert_eq!(
            s,
            vec![
                &b"0.700000:1:b"[..],
                b"0.200000:2:c",
                b"0.500000:0:a",
                b"0.250000:1:b"
            ]
        );
        let r = top_k(&t, 9, false, None).unwrap();
        assert_eq!(r.shape(), &[6]);
        assert_eq!(r.byte_strings().unwrap()[0], b"0.700000:1");
        assert!(top_k(&t, 0, true, None).is_err());
    }
}
