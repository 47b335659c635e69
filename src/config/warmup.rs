//! `[[warmup]]` of a model's `config.toml` (Triton's `model_warmup`): shapes the model is
//! known to run at, so the load-time warm-up uses them instead of invented ones. A declared
//! warm-up that fails refuses the version; see `registry::loader`.
//!
//! ```toml
//! [[warmup]]
//! batch_size = 4            # rows, when the model batches (default 1)
//! [warmup.inputs.input_ids]
//! dims = [128]              # batch dimension excluded when batching
//! data_type = "TYPE_INT64"  # optional, checked against the input's
//! random_data = true        # optional: values in [0, 1) (0 or 1 for integers); default zeros
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::tensor::DataType;

/// One declared warm-up call: inputs of these shapes, zeros unless `random`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmupConfig {
    pub batch_size: usize,
    /// Per input name; an input not named here takes its served dims (variable ones as 1), zeros.
    pub inputs: BTreeMap<String, WarmupInput>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmupInput {
    /// Batch dimension excluded when batching.
    pub dims: Vec<usize>,
    /// Checked against the served input's datatype at load.
    pub dtype: Option<DataType>,
    /// Deterministic pseudo-random values (Triton's `random_data`) instead of zeros.
    pub random: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWarmup {
    #[serde(default)]
    #[allow(dead_code)]
    name: Option<String>,
    batch_size: Option<usize>,
    #[serde(default)]
    inputs: BTreeMap<String, RawWarmupInput>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWarmupInput {
    dims: Vec<i64>,
    #[serde(alias = "data_type")]
    datatype: Option<String>,
    zero_data: Option<bool>,
    #[serde(default)]
    random_data: bool,
}

/// Most elements one warm-up input may have: a warm-up allocates its zeros at load time.
const MAX_WARMUP_ELEMENTS: u64 = 1 << 26;

pub(super) fn validate(
    list: Vec<RawWarmup>,
    max_batch_size: usize,
) -> Result<Vec<WarmupConfig>, String> {
    list.into_iter()
        .enumerate()
        .map(|(i, w)| {
            let batch_size = w.batch_size.unwrap_or(1);
            // With max_batch_size left to the graph, the bound is checked at load.
            let most = max_batch_size.max(1);
            if batch_size == 0 || (max_batch_size > 0 && batch_size > most) {
                return Err(format!(
                    "warmup {i}: batch_size {batch_size} is outside 1..={most}"
                ));
            }
            let mut inputs = BTreeMap::new();
            for (name, input) in w.inputs {
                let dims = input
                    .dims
                    .iter()
                    .map(|&d| usize::try_from(d).ok().filter(|&d| d > 0))
                    .collect::<Option<Vec<usize>>>()
                    .ok_or_else(|| format!("warmup {i}: input {name:?}: dims must be positive"))?;
                let elements = dims
                    .iter()
                    .try_fold(batch_size as u64, |n, &d| n.checked_mul(d as u64))
                    .filter(|&n| n <= MAX_WARMUP_ELEMENTS);
                if elements.is_none() {
                    return Err(format!(
                        "warmup {i}: input {name:?} has more than {MAX_WARMUP_ELEMENTS} elements"
                    ));
                }
                if input.random_data && input.zero_data == Some(true) {
                    return Err(format!(
                        "warmup {i}: input {name:?}: zero_data and random_data exclude each other"
                    ));
                }
                let dtype = match &input.datatype {
                    None => None,
                    Some(t) => Some(DataType::parse(t).ok_or_else(|| {
                        format!("warmup {i}: input {name:?}: unknown datatype {t:?}")
                    })?),
                };
                let random = input.random_data;
                inputs.insert(
                    name,
                    WarmupInput {
                        dims,
                        dtype,
                        random,
                    },
                );
            }
            Ok(WarmupConfig { batch_size, inputs })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::config::ModelConfig;
    use crate::tensor::DataType;

    #[test]
    fn warmup_declares_batch_size_and_dims_within_bounds() {
        let cfg = "max_batch_size = 4\n[[warmup]]\nbatch_size = 2\n[warmup.inputs.x]\ndims = [8]";
        let w = &ModelConfig::parse(cfg, "m").unwrap().warmup[0];
        assert_eq!((w.batch_size, w.inputs["x"].dims.clone()), (2, vec![8]));
        let typed = "[[warmup]]\n[warmup.inputs.x]\ndims = [2]\ndata_type = 'TYPE_FP32'\n\
                     random_data = true";
        let x = &ModelConfig::parse(typed, "m").unwrap().warmup[0].inputs["x"];
        assert_eq!((x.dtype, x.random), (Some(DataType::F32), true));
        let both =
            "[[warmup]]\n[warmup.inputs.x]\ndims = [2]\nzero_data = true\nrandom_data = true";
        assert!(ModelConfig::parse(both, "m")
            .unwrap_err()
            .contains("exclude"));
        let big = "max_batch_size = 4\n[[warmup]]\nbatch_size = 5";
        let err = ModelConfig::parse(big, "m").unwrap_err();
        assert!(err.contains("batch_size 5 is outside 1..=4"), "{err}");
        let bad = "[[warmup]]\n[warmup.inputs.x]\ndims = [-1]";
        let err = ModelConfig::parse(bad, "m").unwrap_err();
        assert!(err.contains("dims must be positive"), "{err}");
        let huge = "[[warmup]]\n[warmup.inputs.x]\ndims = [100000, 100000]";
        let err = ModelConfig::parse(huge, "m").unwrap_err();
        assert!(err.contains("elements"), "{err}");
    }

    #[test]
    fn batching_is_derived_only_when_the_config_leaves_it_open() {
        assert!(ModelConfig::parse("", "m").unwrap().derive_batching);
        assert!(
            !ModelConfig::parse("max_batch_size = 0", "m")
                .unwrap()
                .derive_batching
        );
        let declared = "[[input]]\nname = \"x\"\ndatatype = \"FP32\"\ndims = [3]";
        assert!(!ModelConfig::parse(declared, "m").unwrap().derive_batching);
    }
}
