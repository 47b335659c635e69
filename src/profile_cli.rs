//! `ferroserve profile`: a version's drift reference (`profile.json`) from a sample of its
//! training data. The model is loaded as the server loads it and runs on the sample, so the
//! outputs' reference (class proportions, score quantiles) comes with the inputs'.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use ferroserve::config::ModelConfig;
use ferroserve::drift::profile::Role;
use ferroserve::drift::profile_input::{read_columns, Column};
use ferroserve::drift::{layout, ProfileBuilder, Slot};
use ferroserve::metrics::Metrics;
use ferroserve::registry::loader::{load_version, PROFILE_FILE};
use ferroserve::tensor::{DataType, Tensor};

#[derive(clap::Args)]
pub struct ProfileArgs {
    /// The model's directory: config.toml (with its `[drift]` section) and version directories.
    #[arg(long)]
    model_dir: PathBuf,
    /// The sample: CSV with a header, or `.npy` (rows × features).
    #[arg(long)]
    data: PathBuf,
    /// The version to profile (default: the highest).
    #[arg(long)]
    version: Option<u64>,
    /// Where to write (default: <model-dir>/<version>/profile.json).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
pub async fn run(args: ProfileArgs) -> anyhow::Result<()> {
    let dir = args
        .model_dir
        .canonicalize()
        .with_context(|| format!("{}", args.model_dir.display()))?;
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("the model directory has no name")?
        .to_owned();
    let root = dir.parent().context("the model directory has no parent")?;
    let config_file = dir.join("config.toml");
    let mut config = if config_file.exists() {
        ModelConfig::from_file(&config_file, &name)?
    } else {
        ModelConfig::parse("", &name).map_err(anyhow::Error::msg)?
    };
    let drift = config.drift.take().unwrap_or_default();
    let version = match args.version {
        Some(v) => v,
        None => highest_version(&dir)?,
    };
    let file = dir.join(version.to_string()).join("model.onnx");
    let metrics = Arc::new(Metrics::new()?);
    let mv = load_version(&name, version, root, &file, &config, metrics).await?;
    let slots = |specs: &[ferroserve::registry::TensorSpec]| -> Vec<Slot> {
        specs
            .iter()
            .map(|t| Slot {
                name: t.name.clone(),
                dtype: t.dtype,
                dims: t.dims.clone(),
            })
            .collect()
    };
    let (inputs, outputs) = (slots(&mv.signature.inputs), slots(&mv.signature.outputs));
    if inputs.len() != 1 {
        bail!(
            "`ferroserve profile` feeds models of one input; {name} has {}",
            inputs.len()
        );
    }
    let specs = layout(&drift, &inputs, &outputs).map_err(anyhow::Error::msg)?;
    let columns = read_columns(&args.data).map_err(anyhow::Error::msg)?;
    let input = &inputs[0];
    let width: usize = input
        .dims
        .iter()
        .map(|&d| usize::try_from(d).unwrap_or(0))
        .product();
    // The input's columns: named by `[drift] features` when the header has those names, else
    // the sample's numeric columns in order.
    let numeric: Vec<(&String, &Vec<f64>)> = columns
        .iter()
        .filter_map(|(n, c)| match c {
            Column::Numeric(v) => Some((n, v)),
            Column::Text(_) => None,
        })
        .collect();
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
        bail!(
            "input {:?} takes {width} values a row; {} has {} numeric columns",
            input.name,
            args.data.display(),
            picked.len()
        );
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
            .await?;
        for (i, spec) in builder.specs().to_vec().iter().enumerate() {
            let t = match spec.role {
                Role::Input => Some(&tensor),
                Role::Output => outputs
                    .iter()
                    .position(|o| o.name == spec.tensor)
                    .and_then(|p| answer.get(p)),
            };
            if let Some(t) = t {
                builder.feed_tensor(i, t).map_err(anyhow::Error::msg)?;
            }
        }
    }
    let profile = builder.finish().map_err(anyhow::Error::msg)?;
    let out = args
        .out
        .unwrap_or_else(|| dir.join(version.to_string()).join(PROFILE_FILE));
    std::fs::write(&out, profile.to_json() + "\n").with_context(|| format!("{}", out.display()))?;
    let features: usize = profile.tensors.iter().map(|t| t.features.len()).sum();
    println!("{}: {features} features from {rows} rows", out.display());
    Ok(())
}

fn typed(dtype: DataType, shape: Vec<usize>, v: &[f64]) -> anyhow::Result<Tensor> {
    Ok(match dtype {
        DataType::F32 => {
            Tensor::from_values(shape, &v.iter().map(|&x| x as f32).collect::<Vec<_>>())?
        }
        DataType::F64 => Tensor::from_values(shape, v)?,
        DataType::I64 => {
            Tensor::from_values(shape, &v.iter().map(|&x| x as i64).collect::<Vec<_>>())?
        }
        DataType::I32 => {
            Tensor::from_values(shape, &v.iter().map(|&x| x as i32).collect::<Vec<_>>())?
        }
        d => bail!("`ferroserve profile` does not feed {d} inputs"),
    })
}

fn highest_version(dir: &Path) -> anyhow::Result<u64> {
    std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .with_context(|| format!("{} has no version directories", dir.display()))
}
