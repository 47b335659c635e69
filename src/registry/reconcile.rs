//! The graph against the config: the served signature a version gets from its graph and its
//! declared tensors, and the check that a warm-up's outputs fit it.

use super::{Signature, TensorSpec};
use crate::backend::GraphTensor;
use crate::config::TensorConfig;
use crate::tensor::{DataType, Tensor};

/// Where the graph and the config disagree about a tensor (`what` is "input" or "output").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("{what} {name:?} is a scalar, but max_batch_size > 0 needs a batch dimension")]
    ScalarWithBatch { what: &'static str, name: String },
    #[error("config declares {what} {name:?}, but the graph's {what}s are {graph:?}")]
    NotInGraph {
        what: &'static str,
        name: String,
        graph: Vec<String>,
    },
    #[error("graph {what} {name:?} is missing from the config")]
    NotInConfig { what: &'static str, name: String },
    #[error("{what} {name:?}: config says {config}, the graph has {graph}")]
    Datatype {
        what: &'static str,
        name: String,
        config: DataType,
        graph: DataType,
    },
    #[error(
        "{what} {name:?}: config dims {config:?} do not match the graph's {graph:?}{}",
        if *.batched { " (batch dimension excluded)" } else { "" }
    )]
    Dims {
        what: &'static str,
        name: String,
        config: Vec<i64>,
        graph: Vec<i64>,
        batched: bool,
    },
}

/// Where a warm-up's outputs disagree with the served signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputMismatch {
    #[error("{got} outputs, expected {expected}")]
    Count { got: usize, expected: usize },
    #[error("output {name:?} is {got}, expected {expected}")]
    Datatype {
        name: String,
        got: DataType,
        expected: DataType,
    },
    #[error("output {name:?} has shape {shape:?}, expected {rows} rows first")]
    Rows {
        name: String,
        shape: Vec<usize>,
        rows: usize,
    },
}

/// The served signature: the graph's tensors (in graph order), checked against what the config
/// declares. With an empty declaration the graph's own tensors are served.
pub(super) fn reconcile(
    what: &'static str,
    graph: &[GraphTensor],
    declared: &[TensorConfig],
    batched: bool,
) -> Result<Vec<TensorSpec>, SignatureError> {
    let graph_dims = |t: &GraphTensor| -> Result<Vec<Option<usize>>, SignatureError> {
        if !batched {
            return Ok(t.shape.clone());
        }
        match t.shape.split_first() {
            Some((_, rest)) => Ok(rest.to_vec()),
            None => Err(SignatureError::ScalarWithBatch {
                what,
                name: t.name.clone(),
            }),
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
        return Err(SignatureError::NotInGraph {
            what,
            name: extra.name.clone(),
            graph: graph.iter().map(|g| g.name.clone()).collect(),
        });
    }
    graph
        .iter()
        .map(|g| {
            let d = declared.iter().find(|d| d.name == g.name).ok_or_else(|| {
                SignatureError::NotInConfig {
                    what,
                    name: g.name.clone(),
                }
            })?;
            if d.dtype != g.dtype {
                return Err(SignatureError::Datatype {
                    what,
                    name: g.name.clone(),
                    config: d.dtype,
                    graph: g.dtype,
                });
            }
            let dims = graph_dims(g)?;
            let fits = dims.len() == d.dims.len()
                && dims.iter().zip(&d.dims).all(|(g, &c)| match g {
                    None => true,
                    Some(v) => c == -1 || c == *v as i64,
                });
            if !fits {
                return Err(SignatureError::Dims {
                    what,
                    name: g.name.clone(),
                    config: d.dims.clone(),
                    graph: dims.iter().map(|d| d.map_or(-1, |v| v as i64)).collect(),
                    batched,
                });
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

/// The outputs a backend returned agree with the served signature.
pub(super) fn check_outputs(
    signature: &Signature,
    outputs: &[Tensor],
    rows: usize,
) -> Result<(), OutputMismatch> {
    if outputs.len() != signature.outputs.len() {
        return Err(OutputMismatch::Count {
            got: outputs.len(),
            expected: signature.outputs.len(),
        });
    }
    for (spec, t) in signature.outputs.iter().zip(outputs) {
        if t.dtype() != spec.dtype
            && !(spec.dtype == DataType::Bytes && t.dtype() == DataType::Bytes)
        {
            return Err(OutputMismatch::Datatype {
                name: spec.name.clone(),
                got: t.dtype(),
                expected: spec.dtype,
            });
        }
        if signature.max_batch_size > 0 && t.shape().first() != Some(&rows) {
            return Err(OutputMismatch::Rows {
                name: spec.name.clone(),
                shape: t.shape().to_vec(),
                rows,
            });
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
        let err = reconcile("input", &graph, &decl("y", DataType::F32, vec![4]), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("declares input \"y\""), "{err}");
        let err = reconcile("input", &graph, &decl("x", DataType::I64, vec![4]), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("config says INT64"), "{err}");
        let err = reconcile("input", &graph, &decl("x", DataType::F32, vec![5]), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("do not match"), "{err}");
        assert!(reconcile("input", &graph, &decl("x", DataType::F32, vec![-1]), true).is_ok());
    }

    #[test]
    fn mismatches_say_which_tensor_and_how() {
        let graph = [g("x", DataType::F32, &[None, Some(4)])];
        let decl = [TensorConfig {
            name: "x".into(),
            dtype: DataType::F32,
            dims: vec![5],
        }];
        assert_eq!(
            reconcile("input", &graph, &decl, true)
                .unwrap_err()
                .to_string(),
            "input \"x\": config dims [5] do not match the graph's [4] (batch dimension excluded)"
        );
        assert_eq!(
            reconcile("output", &[g("y", DataType::F32, &[])], &[], true)
                .unwrap_err()
                .to_string(),
            "output \"y\" is a scalar, but max_batch_size > 0 needs a batch dimension"
        );
        assert_eq!(
            OutputMismatch::Rows {
                name: "y".into(),
                shape: vec![2, 3],
                rows: 1
            }
            .to_string(),
            "output \"y\" has shape [2, 3], expected 1 rows first"
        );
    }
}
