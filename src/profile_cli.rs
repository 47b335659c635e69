//! `ferroserve profile`: writes a version's drift reference (`profile.json`) built from a
//! sample of its training data (`registry::profile`).

use std::path::PathBuf;

use anyhow::Context;
use ferroserve::registry::profile::build_profile;

#[derive(clap::Args)]
pub struct ProfileArgs {
    /// The model's directory: config.toml (with its `[drift]` section) and version directories.
    #[arg(long)]
    model_dir: PathBuf,
    /// The sample: CSV with a header, Parquet, JSONL or `.npy` (rows × features), as `predict` reads.
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
    let built = build_profile(&args.model_dir, &args.data, args.version)
        .await
        .map_err(anyhow::Error::msg)?;
    let out = args.out.unwrap_or(built.path);
    let text = built.profile.to_json() + "\n";
    std::fs::write(&out, text).with_context(|| format!("{}", out.display()))?;
    let features: usize = built.profile.tensors.iter().map(|t| t.features.len()).sum();
    println!(
        "{}: {features} features from {} rows",
        out.display(),
        built.rows
    );
    Ok(())
}
