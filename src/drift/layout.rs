//! Which features a version's tensors offer under `[drift]`: the columns of the 2-D input
//! (named or indexed), per-row summaries of wider inputs, and each monitored output (its one
//! value, its class-score columns, or summaries).

use super::profile::{Kind, Role, Source, Summary, MAX_FEATURES};
use crate::config::drift::{DriftConfig, FeatureRef};
use crate::tensor::DataType;

/// Columns of an output monitored one by one (class scores); wider ones are summarised.
const MAX_OUTPUT_COLUMNS: usize = 16;

/// One feature to build: its name, where it comes from, how it is binned.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSpec {
    pub name: String,
    pub source: Source,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub tensor: String,
    pub role: Role,
    pub features: Vec<FeatureSpec>,
}

/// A tensor of the served signature as the layout sees it: dims exclude the batch dimension.
#[derive(Debug, Clone)]
pub struct Slot {
    pub name: String,
    pub dtype: DataType,
    pub dims: Vec<i64>,
}

fn categorical_dtype(d: DataType) -> bool {
    !matches!(d, DataType::F16 | DataType::F32 | DataType::F64)
}

fn summaries() -> Vec<FeatureSpec> {
    Summary::ALL
        .iter()
        .map(|&s| FeatureSpec {
            name: s.as_str().to_owned(),
            source: Source::Summary(s),
            kind: Kind::Numeric,
        })
        .collect()
}

/// The features `[drift]` asks for on these tensors: columns of the 2-D input (named or
/// indexed), per-row summaries of wider inputs, and each monitored output.
pub fn layout(
    config: &DriftConfig,
    inputs: &[Slot],
    outputs: &[Slot],
) -> Result<Vec<TensorSpec>, String> {
    let input = match &config.input {
        Some(n) => inputs
            .iter()
            .find(|s| &s.name == n)
            .ok_or_else(|| format!("[drift] input {n:?} is not an input of the model"))?,
        None => inputs.first().ok_or("[drift]: the model has no inputs")?,
    };
    let categorical = |name: &str, dtype| {
        categorical_dtype(dtype) || config.categorical.iter().any(|c| c == name)
    };
    let width = match input.dims.as_slice() {
        [w] if *w > 0 => Some(*w as usize),
        _ => None,
    };
    let features = match (width, input.dims.len()) {
        (_, 0) => vec![FeatureSpec {
            name: input.name.clone(),
            source: Source::Value,
            kind: if categorical(&input.name, input.dtype) {
                Kind::Categorical
            } else {
                Kind::Numeric
            },
        }],
        (Some(w), _) if !config.features.is_empty() || w <= MAX_FEATURES => {
            let refs: Vec<FeatureRef> = if config.features.is_empty() {
                (0..w).map(FeatureRef::Index).collect()
            } else {
                config.features.clone()
            };
            let mut out = Vec::with_capacity(refs.len());
            for (i, r) in refs.iter().enumerate() {
                let (name, column) = match r {
                    FeatureRef::Name(n) => (n.clone(), i),
                    FeatureRef::Index(c) => (c.to_string(), *c),
                };
                if column >= w {
                    return Err(format!("[drift] feature {name:?}: column {column} of {w}"));
                }
                let kind = if categorical(&name, input.dtype) {
                    Kind::Categorical
                } else {
                    Kind::Numeric
                };
                out.push(FeatureSpec {
                    name,
                    source: Source::Column(column),
                    kind,
                });
            }
            out
        }
        _ if input.dtype == DataType::Bytes => {
            return Err(format!(
                "[drift] input {:?}: BYTES rows wider than one value cannot be summarised",
                input.name
            ))
        }
        _ => summaries(),
    };
    let mut specs = vec![TensorSpec {
        tensor: input.name.clone(),
        role: Role::Input,
        features,
    }];
    for o in outputs {
        if config
            .outputs
            .as_ref()
            .is_some_and(|list| !list.contains(&o.name))
            || o.dtype == DataType::Bytes
        {
            continue;
        }
        let kind = if categorical_dtype(o.dtype) {
            Kind::Categorical
        } else {
            Kind::Numeric
        };
        let features = match o.dims.as_slice() {
            [] | [1] => vec![FeatureSpec {
                name: o.name.clone(),
                source: Source::Value,
                kind,
            }],
            [w] if *w > 0 && (*w as usize) <= MAX_OUTPUT_COLUMNS => (0..*w as usize)
                .map(|c| FeatureSpec {
                    name: c.to_string(),
                    source: Source::Column(c),
                    kind,
                })
                .collect(),
            _ => summaries(),
        };
        specs.push(TensorSpec {
            tensor: o.name.clone(),
            role: Role::Output,
            features,
        });
    }
    let count: usize = specs.iter().map(|t| t.features.len()).sum();
    if count > MAX_FEATURES {
        return Err(format!("[drift] {count} features, at most {MAX_FEATURES}"));
    }
    Ok(specs)
}
