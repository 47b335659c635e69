//! `ferroserve predict`: scores a file offline through the same path as the server: the
//! repository is loaded by `registry::manager` (config, engine choice, warm-up, batcher) and
//! every batch goes through `routing::Router::infer`, so predictions equal the server's answers
//! for the same rows and version. Input is read in batches of the model's `max_batch_size`
//! (`dataio`), a few batches in flight (one per instance, plus one), and written in order.
//!
//! Exit codes: 0 every row scored; 3 done, bad rows skipped (`--on-error skip`); 4 stopped at a
//! bad row (`--on-error fail`, before anything of its batch was written); 130 interrupted
//! (Ctrl-C: what was scored is flushed); 1 any other error.

pub mod mapping;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures_util::stream::{FuturesOrdered, StreamExt};

use crate::config::ModelControlMode;
use crate::dataio::{Batch, Column, Reader, RowError, Writer};
use crate::metrics::{Metrics, Protocol};
use crate::registry::source::location::Location;
use crate::registry::{ModelVersion, Registry};
use crate::routing::{InferRequest, InferResponse, Router};
use mapping::InputPlan;
use progress::Progress;

pub const EXIT_SKIPPED: u8 = 3;
pub const EXIT_BAD_ROW: u8 = 4;
pub const EXIT_INTERRUPTED: u8 = 130;
/// Row errors printed one by one; the rest are counted.
const ERRORS_SHOWN: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnError {
    /// Report the rows, leave them out, score the rest (exit code 3).
    Skip,
    /// Stop before writing anything of the batch (exit code 4).
    Fail,
}

/// Score a file with a model of a repository, offline, as the server would.
#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// The model repository, as `serve --model-repository`: a directory or `s3://bucket/prefix`
    /// (credentials and endpoint from the standard AWS variables); models fed by an MLflow
    /// registry (`[source]` in their config.toml) are fetched as the server fetches them.
    #[arg(long)]
    pub model_repository: PathBuf,
    /// Where a bucket's or a registry's files are cached (one process at a time per folder).
    #[arg(long, value_name = "DIR")]
    pub model_cache_dir: Option<PathBuf>,
    /// The model's name in the repository.
    #[arg(long)]
    pub model: String,
    /// The version (default: the one the server would serve to a request naming none).
    #[arg(long)]
    pub version: Option<u64>,
    /// Input file: .csv (with a header), .parquet, .jsonl, .npy.
    #[arg(long)]
    pub input: PathBuf,
    /// Output file, its format by extension: .csv, .parquet, .jsonl, .npy.
    #[arg(long)]
    pub output: PathBuf,
    /// Columns of an input: INPUT=COL,COL,... (repeat per input); COL,COL,... for a model of one
    /// input. Default: the column named as the input, else (one input) every numeric column.
    #[arg(long = "columns", value_name = "[INPUT=]COL,...")]
    pub columns: Vec<String>,
    /// Input columns copied into the output before the predictions (keys, ids).
    #[arg(long, value_delimiter = ',', value_name = "COL,...")]
    pub keep: Vec<String>,
    /// What a row that cannot be converted does.
    #[arg(long, value_enum, default_value = "fail")]
    pub on_error: OnError,
    /// Rows per batch (default and most: the model's max_batch_size).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// The ONNX Runtime shared library (default: ORT_DYLIB_PATH, then .cache/onnxruntime/).
    #[arg(long, value_name = "PATH")]
    pub onnxruntime_library: Option<PathBuf>,
}

/// Runs `ferroserve predict` on its own runtime.
pub fn main(args: PredictArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    // Errors are printed as one line (with their causes), not as a backtrace: a CLI's answer.
    match runtime.block_on(run(args)) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("predict: error: {e:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Loads the model as the server does, in explicit mode: only this model.
async fn load(args: &PredictArgs) -> anyhow::Result<(Arc<Router>, Arc<ModelVersion>)> {
    crate::backend::configure_onnxruntime(args.onnxruntime_library.clone());
    let metrics = Arc::new(Metrics::new().context("metrics registry")?);
    let registry = Arc::new(Registry::default());
    let router = Arc::new(Router::new(registry.clone(), metrics.clone(), false));
    let options = std::collections::BTreeMap::new();
    let cache_dir = args
        .model_cache_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("ferroserve-predict-cache"));
    let manager = Location {
        repository: &args.model_repository,
        model_name: None,
        options: &options,
        cache_dir,
        cache_max_bytes: crate::config::DEFAULT_MODEL_CACHE_MAX_BYTES,
        own_cache: false,
    }
    .open(&metrics)
    .map_err(|e| anyhow!(e))?
    .manager(
        registry.clone(),
        metrics,
        ModelControlMode::Explicit,
        Duration::from_secs(5),
    );
    manager
        .load_initial(std::slice::from_ref(&args.model))
        .await
        .with_context(|| {
            format!(
                "cannot read the model repository {}",
                args.model_repository.display()
            )
        })?;
    let snapshot = registry.snapshot();
    let entry = snapshot.models.get(&args.model).ok_or_else(|| {
        anyhow!(
            "no model {:?} in the repository {}",
            args.model,
            args.model_repository.display()
        )
    })?;
    let mv = match args.version {
        Some(v) => entry.ready(v).cloned().ok_or_else(|| {
            let why = match entry.versions.get(&v) {
                Some(crate::registry::VersionState::Unavailable(r)) => r.clone(),
                Some(_) => "not ready".into(),
                None => "not in the repository, or not served by its version policy".into(),
            };
            anyhow!("model {:?} version {v}: {why}", args.model)
        })?,
        None => entry.default_version().cloned().ok_or_else(|| {
            anyhow!(
                "model {:?} did not load: {}",
                args.model,
                entry.reason().unwrap_or_else(|| "no ready version".into())
            )
        })?,
    };
    Ok((router, mv))
}

/// How the run ended.
enum End {
    Done,
    BadRows(Vec<RowError>),
    /// The file broke after some rows were read.
    Unreadable(crate::dataio::DataError),
    Interrupted,
}

async fn run(args: PredictArgs) -> anyhow::Result<ExitCode> {
    let columns = mapping::parse_columns(&args.columns).map_err(|e| anyhow!(e))?;
    let mut reader = Reader::open(&args.input)?;
    crate::dataio::Format::of(&args.output)?;
    let (router, mv) = load(&args).await?;
    let sig = &mv.signature;
    if sig.max_batch_size == 0 {
        bail!(
            "model {:?} does not batch (max_batch_size 0): predict scores models with a batch dimension",
            args.model
        );
    }
    let rows_per_batch = args
        .batch_size
        .unwrap_or(sig.max_batch_size)
        .clamp(1, sig.max_batch_size);
    mapping::preset_kinds(&mut reader, sig, &columns, &args.keep).map_err(|e| anyhow!(e))?;

    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, Ordering::SeqCst);
        }
    });

    let mut progress = Progress::new();
    let mut shown = 0usize;
    let mut plans: Option<Vec<InputPlan>> = None;
    let mut writer: Option<Writer> = None;
    let mut inflight = FuturesOrdered::new();
    let depth = mv.config.instance_count + 1;
    let version = mv.version.to_string();
    let mut end = End::Done;
    loop {
        if interrupted.load(Ordering::SeqCst) {
            end = End::Interrupted;
            break;
        }
        let mut batch = match reader.next_batch(rows_per_batch) {
            Ok(Some(batch)) => batch,
            Ok(None) => break,
            // What was read before stays scored and written.
            Err(e) if plans.is_some() => {
                end = End::Unreadable(e);
                break;
            }
            Err(e) => return Err(e.into()),
        };
        let plan = match &plans {
            Some(p) => p,
            None => {
                let p = mapping::plan(sig, &columns, &args.keep, &batch, reader.columns())
                    .map_err(|e| anyhow!("{}: {e}", args.input.display()))?;
                mapping::final_kinds(&mut reader, &p, &args.keep);
                plans.insert(p)
            }
        };
        batch.errors.extend(mapping::check_rows(&batch, plan));
        batch.errors.sort_by_key(|e| e.row);
        batch.errors.dedup_by_key(|e| e.row);
        if !batch.errors.is_empty() {
            match args.on_error {
                OnError::Fail => {
                    end = End::BadRows(std::mem::take(&mut batch.errors));
                    break;
                }
                OnError::Skip => {
                    for e in &batch.errors {
                        if shown < ERRORS_SHOWN {
                            progress.suspend(|| eprintln!("predict: skipped {e}"));
                        }
                        shown += 1;
                    }
                    progress.skipped += batch.drop_bad_rows() as u64;
                    if batch.rows == 0 {
                        continue;
                    }
                }
            }
        }
        let inputs = mapping::tensors(&batch, plan).map_err(|e| anyhow!(e))?;
        let request = InferRequest {
            model: args.model.clone(),
            version: Some(version.clone()),
            id: String::new(),
            inputs,
            outputs: Vec::new(),
            timeout: None,
            protocol: Protocol::Http,
            route_key: None,
        };
        let router = router.clone();
        inflight.push_back(async move { (router.infer(request).await, batch) });
        while inflight.len() >= depth {
            if let Some((answer, batch)) = inflight.next().await {
                write(&args, &mut writer, answer, batch, &mut progress)?;
                progress.update(reader.fraction());
            }
        }
    }
    while let Some((answer, batch)) = inflight.next().await {
        write(&args, &mut writer, answer, batch, &mut progress)?;
        progress.update(reader.fraction());
    }
    let writer = match writer {
        Some(w) => w,
        None => Writer::create(&args.output, empty_names(&args, &mv))?,
    };
    writer.finish()?;
    let output = args.output.display();
    Ok(match end {
        End::Done if progress.skipped > 0 => {
            progress.finish(&format!("done, written to {output}"));
            if shown > ERRORS_SHOWN {
                eprintln!("predict: {} more bad rows not shown", shown - ERRORS_SHOWN);
            }
            ExitCode::from(EXIT_SKIPPED)
        }
        End::Done => {
            progress.finish(&format!("done, written to {output}"));
            ExitCode::SUCCESS
        }
        End::BadRows(errors) => {
            progress.finish(&format!(
                "stopped at a bad row; the rows before it are in {output}"
            ));
            for e in errors.iter().take(ERRORS_SHOWN) {
                eprintln!("predict: error: {}: {e}", args.input.display());
            }
            if errors.len() > ERRORS_SHOWN {
                eprintln!(
                    "predict: {} more bad rows in that batch",
                    errors.len() - ERRORS_SHOWN
                );
            }
            eprintln!("predict: --on-error skip leaves bad rows out and scores the rest");
            ExitCode::from(EXIT_BAD_ROW)
        }
        End::Unreadable(e) => {
            progress.finish(&format!("stopped; the rows read before are in {output}"));
            eprintln!("predict: error: {e}");
            ExitCode::FAILURE
        }
        End::Interrupted => {
            progress.finish(&format!(
                "interrupted; the rows scored so far are in {output}"
            ));
            ExitCode::from(EXIT_INTERRUPTED)
        }
    })
}

/// The output's columns when no row was scored: keep columns and the outputs' names.
fn empty_names(args: &PredictArgs, mv: &ModelVersion) -> Vec<String> {
    let mut names = args.keep.clone();
    names.extend(mv.signature.outputs.iter().map(|o| o.name.clone()));
    names
}

fn write(
    args: &PredictArgs,
    writer: &mut Option<Writer>,
    answer: Result<InferResponse, crate::routing::InferError>,
    batch: Batch,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let last = batch.first_row + batch.rows as u64 - 1;
    let answer = answer.map_err(|e| {
        anyhow!(
            "rows {}..{last} of {}: the model refused them: {e}",
            batch.first_row,
            args.input.display()
        )
    })?;
    let mut columns: Vec<Column> = args
        .keep
        .iter()
        .filter_map(|k| batch.column(k).cloned())
        .collect();
    columns.extend(mapping::output_columns(&answer.outputs, batch.rows).map_err(|e| anyhow!(e))?);
    let w = match writer {
        Some(w) => w,
        None => writer.insert(Writer::create(
            &args.output,
            columns.iter().map(|c| c.name.clone()).collect(),
        )?),
    };
    w.write(&columns)?;
    progress.rows += batch.rows as u64;
    progress.batches += 1;
    Ok(())
}
