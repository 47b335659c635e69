//! Turns a version directory into a routable `ModelVersion`: build the backend on a blocking
//! thread, reconcile the graph with the config, warm every instance up at its batch sizes, start
//! the batcher. Any failure is returned and nothing is published.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::{ModelVersion, Signature, TensorSpec};
use crate::backend::{self, Backend, GraphTensor, LoadOptions};
use crate::batching::{BatchPolicy, Batcher, BatcherConfig};
use crate::config::{ModelConfig, TensorConfig};
use crate::metrics::{Metrics, VersionStats};
use crate::policy::admission::Admission;
use crate::tensor::{DataType, Tensor};

/// Loads `file` as version `version` of model `name`. Blocking work runs off the async runtime.
pub async fn load_version(
    name: &str,
    version: u64,
    file: &Path,
    config: &ModelConfig,
    metrics: Arc<Metrics>,
) -> Result<Arc<ModelVersion>, String> {
    let start = Instant::now();
    let meta = std::fs::metadata(file).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{} does not exist", file.display()),
        _ => format!("{}: {e}", file.display()),
    })?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", file.display()));
    }
    let file_fingerprint = meta.modified().ok().map(|m| (meta.len(), m));
    let (signature, instances) = {
        let (file, config) = (file.to_path_buf(), config.clone());
        tokio::task::spawn_blocking(move || build(&file, &config))
            .await
            .map_err(|e| format!("loader thread failed: {e}"))??
    };
    let version_label = version.to_string();
    let stats = Arc::new(VersionStats::default());
    let batcher = Batcher::start(
        BatcherConfig {
            model: name.to_owned(),
            version: version_label.clone(),
            policy: BatchPolicy {
                max_rows: config.max_batch_size,
                combine: config.dynamic_batching.is_some(),
                preferred: config
                    .dynamic_batching
                    .as_ref()
                    .map(|b| b.preferred_batch_sizes.clone())
                    .unwrap_or_default(),
                max_delay: config
                    .dynamic_batching
                    .as_ref()
                    .map(|b| b.max_queue_delay)
                    .unwrap_or_default(),
            },
            max_queue_size: config.queue.max_queue_size,
        },
        instances,
        stats.clone(),
        &metrics,
    )
    .map_err(|e| format!("cannot start instance threads: {e}"))?;
    let admission = Admission::new(
        config.queue.max_concurrent_requests,
        Some(
            metrics
                .in_flight
                .with_label_values(&[name, version_label.as_str()]),
        ),
    );
    Ok(Arc::new(ModelVersion {
        name: name.to_owned(),
        version,
        version_label,
        config: config.clone(),
        signature,
        batcher,
        stats,
        admission,
        window: Default::default(),
        load_time: start.elapsed(),
        file_fingerprint,
    }))
}

fn build(file: &Path, config: &ModelConfig) -> Result<(Signature, Vec<Box<dyn Backend>>), String> {
    let warmup = warmup_sizes(config);
    let options = LoadOptions {
        max_batch_size: config.max_batch_size,
        instance_count: config.instance_count,
        row_invariant: config
            .dynamic_batching
            .as_ref()
            .is_some_and(|b| b.row_invariant),
        device: config.device,
        onnxruntime: config.onnxruntime,
    };
    let mut loaded = backend::load(config.backend, file, &options).map_err(|e| e.to_string())?;
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
    };
    for instance in &mut loaded.instances {
        for &rows in &warmup {
            let Some(inputs) = zero_inputs(&signature, rows) else {
                break;
            };
            let outputs = instance
                .infer(&inputs)
                .map_err(|e| format!("warm-up at batch size {rows} failed: {e}"))?;
            check_outputs(&signature, &outputs, rows)
                .map_err(|e| format!("warm-up at batch size {rows}: {e}"))?;
        }
    }
    Ok((signature, loaded.instances))
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

/// The served signature: the graph's tensors (in graph order), checked against what the config
/// declares. With an empty declaration the graph's own tensors are served.
fn reconcile(
    what: &str,
    graph: &[GraphTensor],
    declared: &[TensorConfig],
    batched: bool,
) -> Result<Vec<TensorSpec>, String> {
    let graph_dims = |t: &GraphTensor| -> Result<Vec<Option<usize>>, String> {
        if !batched {
            return Ok(t.shape.clone());
        }
        match t.shape.split_first() {
            Some((_, rest)) => Ok(rest.to_vec()),
            None => Err(format!(
                "{what} {:?} is a scalar, but max_batch_size > 0 needs a batch dimension",
                t.name
            )),
        }
    };
    if declared.is_empty() {
        return graph
            .iter()
            .map(|t| {
                let dims = graph_dims(t)?
                    .iter()
                    .map(|d| d.map_or(-1, |v| v as i64))
                    .collect();
                Ok(TensorSpec {
                    name: t.name.clone(),
                    dtype: t.dtype,
                    dims,
                })
            })
            .collect();
    }
    if let Some(extra) = declared
        .iter()
        .find(|d| !graph.iter().any(|g| g.name == d.name))
    {
        let names: Vec<&str> = graph.iter().map(|g| g.name.as_str()).collect();
        return Err(format!(
            "config declares {what} {:?}, but the graph's {what}s are {names:?}",
            extra.name
        ));
    }
    graph
        .iter()
        .map(|g| {
            let d = declared
                .iter()
                .find(|d| d.name == g.name)
                .ok_or_else(|| format!("graph {what} {:?} is missing from the config", g.name))?;
            if d.dtype != g.dtype {
                return Err(format!(
                    "{what} {:?}: config says {}, the graph has {}",
                    g.name, d.dtype, g.dtype
                ));
            }
            let dims = graph_dims(g)?;
            let fits = dims.len() == d.dims.len()
                && dims.iter().zip(&d.dims).all(|(g, &c)| match g {
                    None => true,
                    Some(v) => c == -1 || c == *v as i64,
                });
            if !fits {
                let shown: Vec<i64> = dims.iter().map(|d| d.map_or(-1, |v| v as i64)).collect();
                return Err(format!(
                    "{what} {:?}: config dims {:?} do not match the graph's {shown:?}{}",
                    g.name,
                    d.dims,
                    if batched {
                        " (batch dimension excluded)"
                    } else {
                        ""
                    }
                ));
            }
            // Where the graph is fixed and the config says -1, the graph wins.
            let dims = dims
                .iter()
                .zip(&d.dims)
                .map(|(g, &c)| g.map_or(c, |v| v as i64))
                .collect();
            Ok(TensorSpec {
                name: g.name.clone(),
                dtype: g.dtype,
                dims,
            })
        })
        .collect()
}

/// Zero-filled inputs of `rows` rows (variable dims as 1); `None` when an input is BYTES.
fn zero_inputs(signature: &Signature, rows: usize) -> Option<Vec<Tensor>> {
    signature
        .inputs
        .iter()
        .map(|spec| {
            let size = spec.dtype.size()?;
            let mut shape: Vec<usize> = Vec::with_capacity(spec.dims.len() + 1);
            if signature.max_batch_size > 0 {
                shape.push(rows);
            }
            shape.extend(
                spec.dims
                    .iter()
                    .map(|&d| if d < 0 { 1 } else { d as usize }),
            );
            let count: usize = shape.iter().product();
            Tensor::new(spec.dtype, shape, Bytes::from(vec![0u8; count * size])).ok()
        })
        .collect()
}

/// The outputs a backend returned agree with the served signature.
fn check_outputs(signature: &Signature, outputs: &[Tensor], rows: usize) -> Result<(), String> {
    if outputs.len() != signature.outputs.len() {
        return Err(format!(
            "{} outputs, expected {}",
            outputs.len(),
            signature.outputs.len()
        ));
    }
    for (spec, t) in signature.outputs.iter().zip(outputs) {
        if t.dtype() != spec.dtype
            && !(spec.dtype == DataType::Bytes && t.dtype() == DataType::Bytes)
        {
            return Err(format!(
                "output {:?} is {}, expected {}",
                spec.name,
                t.dtype(),
                spec.dtype
            ));
        }
        if signature.max_batch_size > 0 && t.shape().first() != Some(&rows) {
            return Err(format!(
                "output {:?} has shape {:?}, expected {rows} rows first",
                spec.name,
                t.shape()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(name: &str, dtype: DataType, shape: &[Option<usize>]) -> GraphTensor {
        GraphTensor {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
        }
    }

    #[test]
    fn reconcile_reads_the_graph_when_nothing_is_declared() {
        let specs = reconcile(
            "input",
            &[g("x", DataType::F32, &[None, Some(4)])],
            &[],
            true,
        )
        .unwrap();
        assert_eq!(
            specs,
            vec![TensorSpec {
                name: "x".into(),
                dtype: DataType::F32,
                dims: vec![4]
            }]
        );
    }

    #[test]
    fn reconcile_rejects_declarations_that_disagree_with_the_graph() {
        let graph = [g("x", DataType::F32, &[None, Some(4)])];
        let decl = |name: &str, dtype, dims: Vec<i64>| {
            vec![TensorConfig {
                name: name.into(),
                dtype,
                dims,
            }]
        };
        let err = reconcile("input", &graph, &decl("y", DataType::F32, vec![4]), true).unwrap_err();
        assert!(err.contains("declares input \"y\""), "{err}");
        let err = reconcile("input", &graph, &decl("x", DataType::I64, vec![4]), true).unwrap_err();
        assert!(err.contains("config says INT64"), "{err}");
        let err = reconcile("input", &graph, &decl("x", DataType::F32, vec![5]), true).unwrap_err();
        assert!(err.contains("do not match"), "{err}");
        assert!(reconcile("input", &graph, &decl("x", DataType::F32, vec![-1]), true).is_ok());
    }
}
