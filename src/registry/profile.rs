//! What `ferroserve profile` does: a version's drift reference from a sample of its training
//! data. The version is loaded as the server loads it and runs on the sample, so the outputs'
//! reference (class proportions, score quantiles) comes with the inputs'.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::loader::{load_version, PROFILE_FILE};
use crate::config::ModelConfig;
use crate::dataio::{Reader, Values};
use crate::drift::profile::Role;
use crate::drift::{layout, Profile, ProfileBuilder};
use crate::metrics::Metrics;
use crate::tensor::{DataType, Tensor};

/// A built profile, where it belongs (`<model dir>/<version>/profile.json`) and the rows read.
pub struct Built {
    pub profile: Profile,
    pub path: PathBuf,
    pub rows: usize,
}

/// Builds the profile of `version` (default: the highest) of the model in `model_dir` from
/// the sample `data` (CSV with a header, or `.npy`), under the model's `[drift]` settings.
pub async fn build_profile(
    model_dir: &Path,
    data: &Path,
    version: Option<u64>,
) -> Result<Built, String> {
    let dir = model_dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", model_dir.display()))?;
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("the model directory has no name")?
        .to_owned();
    let root = dir.parent().ok_or("the model directory has no parent")?;
    let config_file = dir.join("config.toml");
    let mut config = if config_file.exists() {
        ModelConfig::from_file(&config_file, &name).map_err(|e| e.to_string())?
    } else {
        ModelConfig::parse("", &name)?
    };
    // Loaded without monitoring: the profile is what monitoring needs.
    let drift = config.drift.take().unwrap_or_default();
    let version = match version {
        Some(v) => v,
        None => highest_version(&dir)?,
    };
    let file = dir.join(version.to_string()).join("model.onnx");
    let metrics = Arc::new(Metrics::new().map_err(|e| e.to_string())?);
    let mv = load_version(&name, version, root, &file, &config, metrics)
        .await
        .map_err(|e| e.to_string())?;
    let slots = super::TensorSpec::drift_slots;
    let (inputs, outputs) = (slots(&mv.signature.inputs), slots(&mv.signature.outputs));
    if inputs.len() != 1 {
        return Err(format!(
            "`ferroserve profile` feeds models of one input; {name} has {}",
            inputs.len()
        ));
    }
    let specs = layout(&drift, &inputs, &outputs)?;
    let columns = numeric_columns(data)?;
    let input = &inputs[0];
    let width: usize = input
        .dims
        .iter()
        .map(|&d| usize::try_from(d).unwrap_or(0))
        .product();
    // The input's columns: named by `[drift] features` when the header has those names, else
    // the sample's numeric columns in order.
    let numeric: Vec<(&String, &Vec<f64>)> = columns.iter().map(|(n, v)| (n, v)).collect();
    let by_name: Vec<&Vec<f64>> = specs[0]
        .features
        .iter()
        .filter_map(|f| numeric.iter().find(|(n, _)| **n == f.name).map(|(_, v)| *v))
        .collect();
    let picked: Vec<&Vec<f64>> = if by_name.len() == width {
        by_name
    } else {
        numeric.iter().map(|(_, v)| *v).collect()
    };
    if width == 0 || picked.len() != width {
        return Err(format!(
            "input {:?} takes {width} values a row; {} has {} numeric columns",
            input.name,
            data.display(),
            picked.len()
        ));
    }
    let rows = picked[0].len();
    let mut builder = ProfileBuilder::new(specs, drift.bins, drift.max_categories);
    let chunk = mv.signature.max_batch_size.max(1);
    for start in (0..rows).step_by(chunk) {
        let end = (start + chunk).min(rows);
        let values: Vec<f64> = (start..end)
            .flat_map(|r| picked.iter().map(move |c| c[r]))
            .collect();
        let mut shape = vec![end - start];
        shape.extend(input.dims.iter().map(|&d| d as usize));
        let tensor = typed(input.dtype, shape, &values)?;
        let answer = mv
            .batcher
            .submit(vec![tensor.clone()], end - start, None)
            .await
            .map_err(|e| e.to_string())?;
        for (i, spec) in builder.specs().to_vec().iter().enumerate() {
            let t = match spec.role {
                Role::Input => Some(&tensor),
                Role::Output => outputs
                    .iter()
                    .position(|o| o.name == spec.tensor)
                    .and_then(|p| answer.get(p)),
            };
            if let Some(t) = t {
                builder.feed_tensor(i, t)?;
            }
        }
    }
    Ok(Built {
        profile: builder.finish()?,
        path: dir.join(version.to_string()).join(PROFILE_FILE),
        rows,
    })
}

fn typed(dtype: DataType, shape: Vec<usize>, v: &[f64]) -> Result<Tensor, String> {
    let t = match dtype {
        DataType::F32 => {
            Tensor::from_values(shape, &v.iter().map(|&x| x as f32).collect::<Vec<_>>())
        }
        DataType::F64 => Tensor::from_values(shape, v),
        DataType::I64 => {
            Tensor::from_values(shape, &v.iter().map(|&x| x as i64).collect::<Vec<_>>())
        }
        DataType::I32 => {
            Tensor::from_values(shape, &v.iter().map(|&x| x as i32).collect::<Vec<_>>())
        }
        d => return Err(format!("`ferroserve profile` does not feed {d} inputs")),
    };
    t.map_err(|e| e.to_string())
}

fn highest_version(dir: &Path) -> Result<u64, String> {
    std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .ok_or_else(|| format!("{} has no version directories", dir.display()))
}

/// A sample larger than this is refused: its columns are held whole while the model runs on them.
const MAX_SAMPLE_BYTES: u64 = 1 << 30;
/// Rows read at a time from the sample.
const SAMPLE_BATCH: usize = 4096;

/// The sample's numeric columns, whole, in file order, read by the shared readers (`dataio`:
/// CSV with a header, Parquet, JSONL, `.npy`); text columns are left out. A row that cannot be
/// read refuses the sample, named by its row (and line).
fn numeric_columns(path: &Path) -> Result<Vec<(String, Vec<f64>)>, String> {
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let size = std::fs::metadata(path).map_err(|e| at(&e))?.len();
    if size > MAX_SAMPLE_BYTES {
        return Err(at(&format!(
            "{size} bytes, a sample is at most {MAX_SAMPLE_BYTES}"
        )));
    }
    let mut reader = Reader::open(path).map_err(|e| at(&e))?;
    // `None`: a text column (its kind is fixed by the first batch).
    let mut columns: Vec<(String, Option<Vec<f64>>)> = Vec::new();
    while let Some(batch) = reader.next_batch(SAMPLE_BATCH).map_err(|e| at(&e))? {
        if let Some(e) = batch.errors.first() {
            return Err(at(e));
        }
        if columns.is_empty() {
            columns = batch
                .columns
                .iter()
                .map(|c| {
                    let numeric = !matches!(c.values, Values::Str(_));
                    (c.name.clone(), numeric.then(Vec::new))
                })
                .collect();
        }
        for (c, (_, out)) in batch.columns.iter().zip(columns.iter_mut()) {
            if let Some(out) = out {
                out.extend((0..c.values.len()).filter_map(|i| c.values.f64_at(i)));
            }
        }
    }
    if columns.is_empty() {
        return Err(at(&"no rows"));
    }
    Ok(columns
        .into_iter()
        .filter_map(|(name, values)| Some((name, values?)))
        .collect())
}
