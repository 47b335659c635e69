//! Shadow traffic: a copy of a routed request runs on the shadow version in a task of its own;
//! its answer is compared with the primary's and dropped. The client never waits for it, and
//! under load mirroring is what gives way first: nothing is mirrored while the shadow version's
//! queue holds `MAX_SHADOW_QUEUED` requests or `MAX_SHADOW_IN_FLIGHT` copies are running.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{oneshot, Semaphore};

use super::{validate, NamedTensor};
use crate::metrics::Metrics;
use crate::policy::traffic::RouteReason;
use crate::registry::ModelVersion;
use crate::tensor::{DataType, Element, Tensor};

/// Mirrored requests running at once, across the server.
pub const MAX_SHADOW_IN_FLIGHT: usize = 64;
/// A shadow version with this many requests queued gets no more copies.
pub const MAX_SHADOW_QUEUED: usize = 8;

/// Admission for mirrored requests.
pub struct ShadowGate {
    permits: Arc<Semaphore>,
}

impl Default for ShadowGate {
    fn default() -> Self {
        ShadowGate {
            permits: Arc::new(Semaphore::new(MAX_SHADOW_IN_FLIGHT)),
        }
    }
}

impl ShadowGate {
    /// Mirrors `inputs` to `shadow` unless it is busy. Returns where to send the primary's
    /// outputs once they are known; dropping it (primary failed, client gone) skips the
    /// comparison.
    pub fn mirror(
        &self,
        shadow: Arc<ModelVersion>,
        inputs: Vec<NamedTensor>,
        deadline: Option<Instant>,
        metrics: Arc<Metrics>,
    ) -> Option<oneshot::Sender<Vec<NamedTensor>>> {
        if shadow.batcher.queued() >= MAX_SHADOW_QUEUED {
            count(&metrics, &shadow, "skipped");
            return None;
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            count(&metrics, &shadow, "skipped");
            return None;
        };
        metrics
            .traffic
            .routed
            .with_label_values(&[
                shadow.name.as_str(),
                &shadow.version_label,
                RouteReason::Shadow.as_str(),
            ])
            .inc();
        let (primary_tx, primary_rx) = oneshot::channel::<Vec<NamedTensor>>();
        tokio::spawn(async move {
            let _permit = permit;
            let result = match validate::inputs(&shadow, inputs) {
                Ok((tensors, rows)) => shadow
                    .batcher
                    .submit(tensors, rows, deadline)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let labels = [shadow.name.as_str(), shadow.version_label.as_str()];
            let outputs = match result {
                Ok(outputs) => outputs,
                Err(reason) => {
                    tracing::debug!(
                        model = labels[0],
                        version = labels[1],
                        "shadow request failed: {reason}"
                    );
                    count(&metrics, &shadow, "failed");
                    return;
                }
            };
            // The primary failed or its client left: nothing to compare with.
            let Ok(primary) = primary_rx.await else {
                return;
            };
            count(&metrics, &shadow, "compared");
            let named: Vec<NamedTensor> = outputs
                .into_iter()
                .zip(&shadow.signature.outputs)
                .map(|(tensor, spec)| NamedTensor {
                    name: spec.name.clone(),
                    tensor,
                })
                .collect();
            let t = &metrics.traffic;
            for d in compare(&primary, &named) {
                let l = [labels[0], labels[1], d.output.as_str()];
                if d.compared > 0 {
                    t.shadow_compared.with_label_values(&l).inc_by(d.compared);
                    t.shadow_mismatches
                        .with_label_values(&l)
                        .inc_by(d.mismatches);
                }
                if let Some(diff) = d.max_abs_diff {
                    t.shadow_max_abs_diff.with_label_values(&l).observe(diff);
                }
            }
        });
        Some(primary_tx)
    }
}

fn count(metrics: &Metrics, shadow: &ModelVersion, outcome: &str) {
    metrics
        .traffic
        .shadow_requests
        .with_label_values(&[shadow.name.as_str(), &shadow.version_label, outcome])
        .inc();
}

/// How one output of a mirrored request differed from the primary's.
#[derive(Debug, Clone, PartialEq)]
pub struct Divergence {
    pub output: String,
    /// Integer outputs: elements compared; float outputs of rank >= 2: rows whose argmax over
    /// the non-batch dimensions was compared.
    pub compared: u64,
    pub mismatches: u64,
    /// Float outputs: the largest |shadow - primary|.
    pub max_abs_diff: Option<f64>,
}

/// Compares the outputs both answers have under the same name. A datatype or shape mismatch
/// counts every row as a mismatch.
pub fn compare(primary: &[NamedTensor], shadow: &[NamedTensor]) -> Vec<Divergence> {
    let mut out = Vec::new();
    for p in primary {
        let Some(s) = shadow.iter().find(|s| s.name == p.name) else {
            continue;
        };
        let (a, b) = (&p.tensor, &s.tensor);
        let rows = a.shape().first().copied().unwrap_or(1).max(1) as u64;
        let mut d = Divergence {
            output: p.name.clone(),
            compared: 0,
            mismatches: 0,
            max_abs_diff: None,
        };
        if a.dtype() != b.dtype() || a.shape() != b.shape() {
            d.compared = rows;
            d.mismatches = rows;
            out.push(d);
            continue;
        }
        match a.dtype() {
            DataType::Bytes => continue,
            DataType::F16 | DataType::F32 | DataType::F64 => {
                let (Some(x), Some(y)) = (floats(a), floats(b)) else {
                    continue;
                };
                d.max_abs_diff = Some(
                    x.iter()
                        .zip(&y)
                        .map(|(p, s)| (p - s).abs())
                        .fold(0.0, f64::max),
                );
                if a.shape().len() >= 2 && !x.is_empty() {
                    let width = x.len() / rows as usize;
                    if width > 0 {
                        for (px, sx) in x.chunks_exact(width).zip(y.chunks_exact(width)) {
                            d.compared += 1;
                            d.mismatches += u64::from(argmax(px) != argmax(sx));
                        }
                    }
                }
            }
            dtype => {
                let size = dtype.size().unwrap_or(1).max(1);
                for (x, y) in a.data().chunks_exact(size).zip(b.data().chunks_exact(size)) {
                    d.compared += 1;
                    d.mismatches += u64::from(x != y);
                }
            }
        }
        out.push(d);
    }
    out
}

fn floats(t: &Tensor) -> Option<Vec<f64>> {
    fn conv<T: Element + Into<f64>>(t: &Tensor) -> Option<Vec<f64>> {
        Some(t.to_vec::<T>()?.into_iter().map(Into::into).collect())
    }
    match t.dtype() {
        DataType::F32 => conv::<f32>(t),
        DataType::F64 => conv::<f64>(t),
        DataType::F16 => Some(
            t.to_vec::<half::f16>()?
                .into_iter()
                .map(f64::from)
                .collect(),
        ),
        _ => None,
    }
}

/// Index of the first largest value (NaN never wins).
fn argmax(row: &[f64]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv {
                (i, v)
            } else {
                (bi, bv)
            }
        })
        .0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named<T: Element>(name: &str, shape: Vec<usize>, v: &[T]) -> NamedTensor {
        NamedTensor {
            name: name.into(),
            tensor: Tensor::from_values(shape, v).unwrap(),
        }
    }

    #[test]
    fn labels_count_mismatches_and_floats_their_largest_difference() {
        let primary = [
            named("label", vec![4], &[0i64, 1, 2, 2]),
            named("p", vec![2, 3], &[0.1f32, 0.7, 0.2, 0.5, 0.3, 0.2]),
        ];
        let shadow = [
            named("label", vec![4], &[0i64, 2, 2, 1]),
            named("p", vec![2, 3], &[0.1f32, 0.6, 0.3, 0.2, 0.3, 0.5]),
        ];
        let d = compare(&primary, &shadow);
        assert_eq!(
            (d[0].compared, d[0].mismatches, d[0].max_abs_diff),
            (4, 2, None)
        );
        assert_eq!((d[1].compared, d[1].mismatches), (2, 1));
        let diff = d[1].max_abs_diff.unwrap();
        assert!((diff - 0.3).abs() < 1e-6, "{diff}");
        let same = compare(&primary, &primary);
        assert!(same
            .iter()
            .all(|d| d.mismatches == 0 && d.max_abs_diff.unwrap_or(0.0) == 0.0));
    }

    #[test]
    fn a_different_shape_is_a_mismatch_of_every_row() {
        let d = compare(
            &[named("y", vec![3, 2], &[0f32; 6])],
            &[named("y", vec![3, 4], &[0f32; 12])],
        );
        assert_eq!((d[0].compared, d[0].mismatches), (3, 3));
        assert!(compare(
            &[named("y", vec![1], &[1i32])],
            &[named("z", vec![1], &[1i32])]
        )
        .is_empty());
    }
}
