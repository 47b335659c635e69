//! In-process throughput of the backends (tract, ONNX Runtime): the physical limit of one model
//! instance, with no server, transport, queue or batcher in the way. Each point calls
//! `Backend::infer` on one instance in a loop with a fixed input batch and times every call.
//!
//!     cargo bench --bench inprocess -- [MODEL|PATH.onnx ...] [--batch 1,8,32,64] [--secs 3]
//!                                      [--warmup 1] [--row-invariant on|off] [--json-out FILE|-]
//!                                      [--backend tract|onnxruntime|both] [--intra-op-threads N]
//!                                      [--seq-len 128]
//!
//! Models are names under `models/`, `models-onnxruntime/` or `models-heavy/` (default:
//! `mlp dense`) or paths to `.onnx` files. Batch sizes default to 1 and the model's
//! `max_batch_size` from its `config.toml` (64 for a bare file).
//! `--backend` defaults to `both` when the ONNX Runtime library is found (`ORT_DYLIB_PATH`, else
//! `.cache/onnxruntime/`, as the server looks; `scripts/fetch-onnxruntime.sh` puts it there),
//! else `tract`. Under `both`, a model one engine cannot load (say, an op tract lacks) is
//! skipped on that engine with the reason; a backend named alone must load every model.
//! ONNX Runtime sessions use the model config's session options (`intra_op_threads` etc.;
//! unset: ONNX Runtime's defaults, one intra-op thread per core); `--intra-op-threads` overrides.
//! tract runs each call on the calling thread.
//! `--row-invariant` sets `LoadOptions::row_invariant` (single rows then run as two, as the server
//! does for models with `[dynamic_batching]` unless `row_invariant = false`); by default it follows
//! the config like the loader.
//! Inputs have a symbolic batch dimension. FP32 inputs are filled with fixed pseudo-random
//! values; INT64 inputs (token models such as `minilm`) with ids in 1000..2000, or ones for an
//! input whose name contains `mask`. Other symbolic dimensions take `--seq-len` (default 128).
//! Before timing a named model, its reference rows (`tests/data/<name>.json`) are run once as a
//! sanity check: floats within 1e-4, integers exact.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use ferroserve::backend::{self, Backend, GraphSignature, LoadOptions};
use ferroserve::config::{BackendKind, ModelConfig, OnnxRuntimeOptions};
use ferroserve::tensor::{DataType, Tensor};
use serde_json::json;

const DEFAULT_MODELS: &[&str] = &["mlp", "dense"];
/// Where named models are looked for, in order.
const MODEL_DIRS: &[&str] = &["models", "models-onnxruntime", "models-heavy"];
const BARE_FILE_MAX_BATCH: usize = 64;

/// In-process throughput of the backends: one model instance called in a loop, no server.
#[derive(Parser)]
#[command(name = "inprocess")]
struct Args {
    /// Model names under models/, models-onnxruntime/ or models-heavy/, or paths to .onnx files.
    #[arg(value_name = "MODEL|PATH.onnx", default_values = DEFAULT_MODELS)]
    models: Vec<String>,
    /// Batch sizes (default: 1 and the model's max_batch_size).
    #[arg(long = "batch", alias = "batches", value_name = "1,8,32,64", value_delimiter = ',',
          value_parser = positive("batch size"))]
    batches: Option<Vec<usize>>,
    /// Seconds timed per point.
    #[arg(long, default_value_t = 3.0, value_parser = parse_secs)]
    secs: f64,
    /// Seconds of warm-up per point, not timed.
    #[arg(long, default_value_t = 1.0, value_parser = parse_secs)]
    warmup: f64,
    /// Write the points as JSON to FILE (`-`: stdout).
    #[arg(long, value_name = "FILE|-")]
    json_out: Option<String>,
    /// `LoadOptions::row_invariant` (default: as the loader would, from the config).
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    row_invariant: Option<bool>,
    /// Default: both when the ONNX Runtime library is found, else tract.
    #[arg(long = "backend", value_enum)]
    backend: Option<BackendChoice>,
    /// ONNX Runtime's intra-op threads (default: the model config's, else ONNX Runtime's).
    #[arg(long, value_name = "N", value_parser = positive("thread count"))]
    intra_op_threads: Option<usize>,
    /// The size of symbolic dimensions other than the batch (a sequence length).
    #[arg(long, default_value_t = 128, value_parser = positive("sequence length"))]
    seq_len: usize,
    /// `cargo bench` passes `--bench` to every bench binary: accepted and ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendChoice {
    Tract,
    #[value(alias = "ort")]
    Onnxruntime,
    Both,
}

impl Args {
    /// The backends asked for; `None`: both when the ONNX Runtime library is found, else tract.
    fn backends(&self) -> Option<Vec<BackendKind>> {
        self.backend.map(|b| match b {
            BackendChoice::Tract => vec![BackendKind::Tract],
            BackendChoice::Onnxruntime => vec![BackendKind::OnnxRuntime],
            BackendChoice::Both => vec![BackendKind::Tract, BackendKind::OnnxRuntime],
        })
    }
}

/// A parser for a positive count; `what` names it in the error.
fn positive(what: &'static str) -> impl Fn(&str) -> Result<usize, String> + Clone {
    move |s| match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("bad {what} {s:?}")),
    }
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        v => Err(format!("--row-invariant takes on or off, not {v:?}")),
    }
}

/// Whether the library the `onnxruntime` backend would load exists.
fn onnxruntime_library_found() -> bool {
    #[cfg(feature = "onnxruntime")]
    {
        backend::onnxruntime::library_path().is_file()
    }
    #[cfg(not(feature = "onnxruntime"))]
    false
}

fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("bad duration {s:?} (seconds)")),
    }
}

/// The .onnx file and max batch size for a model name or path.
struct Resolved {
    name: String,
    path: PathBuf,
    max_batch: usize,
    /// Whether the loader asks for row invariance: the config has `[dynamic_batching]` without
    /// `row_invariant = false`.
    row_invariant: bool,
    /// The config's ONNX Runtime session options.
    onnxruntime: OnnxRuntimeOptions,
    /// A named model (which may have reference data), not a bare file.
    named: bool,
}

fn resolve(model: &str) -> Result<Resolved, String> {
    let as_path = Path::new(model);
    if model.ends_with(".onnx") || as_path.is_file() {
        let name = as_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| model.to_owned());
        return Ok(Resolved {
            name,
            path: as_path.to_path_buf(),
            max_batch: BARE_FILE_MAX_BATCH,
            row_invariant: false,
            onnxruntime: OnnxRuntimeOptions::default(),
            named: false,
        });
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(dir) = MODEL_DIRS
        .iter()
        .map(|d| root.join(d).join(model))
        .find(|d| d.join("1").join("model.onnx").is_file())
    else {
        return Err(format!(
            "model {model:?}: no {model}/1/model.onnx under {}",
            MODEL_DIRS.join(", ")
        ));
    };
    let onnx = dir.join("1").join("model.onnx");
    let text = std::fs::read_to_string(dir.join("config.toml")).unwrap_or_default();
    let config = text
        .parse::<toml::Table>()
        .map_err(|e| format!("model {model:?}: config.toml: {e}"))?;
    // Session options exist only for backend = "onnxruntime": read them as that backend would.
    let onnxruntime = if config.get("backend").and_then(|v| v.as_str()) == Some("onnxruntime") {
        ModelConfig::parse(&text, model)
            .map_err(|e| format!("model {model:?}: config.toml: {e}"))?
            .onnxruntime
    } else {
        OnnxRuntimeOptions::default()
    };
    let max_batch = config
        .get("max_batch_size")
        .and_then(|v| v.as_integer())
        .and_then(|v| usize::try_from(v).ok())
        .unwrap_or(0);
    Ok(Resolved {
        name: model.to_owned(),
        path: onnx,
        max_batch,
        row_invariant: config.get("dynamic_batching").is_some_and(|b| {
            b.get("row_invariant")
                .and_then(|v| v.as_bool())
                .unwrap_or(true)
        }),
        onnxruntime,
        named: true,
    })
}

/// Deterministic values in [-1, 1) (xorshift), so runs are comparable.
fn fill(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

struct Point {
    model: String,
    backend: BackendKind,
    batch: usize,
    calls: usize,
    secs: f64,
    mean_us: f64,
    p50_us: f64,
    p99_us: f64,
    first_call_ms: f64,
    row_invariant: bool,
}

impl Point {
    fn calls_per_s(&self) -> f64 {
        self.calls as f64 / self.secs
    }
    fn rows_per_s(&self) -> f64 {
        self.calls_per_s() * self.batch as f64
    }
}

fn percentile(sorted_ns: &[u64], q: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    let ix = ((sorted_ns.len() - 1) as f64 * q).round() as usize;
    sorted_ns[ix] as f64 / 1e3
}

fn run_point(
    name: &str,
    instance: &mut dyn Backend,
    inputs: &[Tensor],
    batch: usize,
    args: &Args,
) -> Result<Point, String> {
    let call = |instance: &mut dyn Backend| {
        instance
            .infer(black_box(inputs))
            .map_err(|e| format!("{name} batch {batch}: {e}"))
    };
    // First call builds (optimises) the plan for this batch size: timed apart.
    let t0 = Instant::now();
    let out = call(instance)?;
    let first_call_ms = t0.elapsed().as_secs_f64() * 1e3;
    if out.first().map(Tensor::rows) != Some(batch) {
        return Err(format!(
            "{name} batch {batch}: output shape {:?}",
            out.first().map(Tensor::shape)
        ));
    }
    let warm_until = Instant::now() + Duration::from_secs_f64(args.warmup);
    while Instant::now() < warm_until {
        black_box(call(instance)?);
    }
    let mut times = Vec::with_capacity(1 << 16);
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(args.secs);
    loop {
        let t = Instant::now();
        black_box(call(instance)?);
        let end = Instant::now();
        times.push((end - t).as_nanos() as u64);
        if end >= until {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let mean_us = times.iter().sum::<u64>() as f64 / times.len() as f64 / 1e3;
    times.sort_unstable();
    Ok(Point {
        model: name.to_owned(),
        backend: BackendKind::Tract,
        batch,
        calls: times.len(),
        secs,
        mean_us,
        p50_us: percentile(&times, 0.50),
        p99_us: percentile(&times, 0.99),
        first_call_ms,
        row_invariant: false,
    })
}

/// Runs `tests/data/<name>.json` through the instance; `Ok(None)` when there is no such file.
fn check_reference(
    name: &str,
    instance: &mut dyn Backend,
    signature: &GraphSignature,
) -> Result<Option<f64>, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(format!("{name}.json"));
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let fail = |m: String| format!("{name} reference {}: {m}", path.display());
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
    let shape_of = |t: &serde_json::Value| -> Vec<usize> {
        t["shape"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_u64())
                    .map(|d| d as usize)
                    .collect()
            })
            .unwrap_or_default()
    };
    let floats = |t: &serde_json::Value| -> Vec<f64> {
        t["data"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
            .unwrap_or_default()
    };
    let inputs = signature
        .inputs
        .iter()
        .map(|gt| {
            let t = &doc["inputs"][&gt.name];
            let tensor = match t["datatype"].as_str() {
                Some("FP32") => {
                    let values: Vec<f32> = floats(t).into_iter().map(|v| v as f32).collect();
                    Tensor::from_values(shape_of(t), &values)
                }
                Some("INT64") => {
                    let values: Vec<i64> = t["data"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|v| v.as_i64()).collect())
                        .unwrap_or_default();
                    Tensor::from_values(shape_of(t), &values)
                }
                _ => return Err(fail(format!("input {} is not FP32 or INT64", gt.name))),
            };
            tensor.map_err(|e| fail(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = instance.infer(&inputs).map_err(|e| fail(e.to_string()))?;
    let mut max_diff = 0f64;
    for (gt, got) in signature.outputs.iter().zip(&outputs) {
        let want = &doc["outputs"][&gt.name];
        if want.is_null() {
            continue;
        }
        if got.shape() != shape_of(want).as_slice() {
            return Err(fail(format!(
                "output {} has shape {:?}",
                gt.name,
                got.shape()
            )));
        }
        let got: Vec<f64> = match got.dtype() {
            DataType::F32 => got
                .to_vec::<f32>()
                .unwrap_or_default()
                .into_iter()
                .map(f64::from)
                .collect(),
            DataType::I64 => got
                .to_vec::<i64>()
                .unwrap_or_default()
                .into_iter()
                .map(|v| v as f64)
                .collect(),
            dt => return Err(fail(format!("output {} is {dt}: not compared", gt.name))),
        };
        for (g, w) in got.iter().zip(floats(want)) {
            max_diff = max_diff.max((g - w).abs());
        }
    }
    if max_diff > 1e-4 {
        return Err(fail(format!("max|diff| = {max_diff:.2e} > 1e-4")));
    }
    Ok(Some(max_diff))
}

/// Benchmarks `model` on each of `backends`; `skip_unloadable`: a backend that cannot load the
/// model is reported and skipped instead of failing the run.
fn bench_model(
    model: &str,
    args: &Args,
    backends: &[BackendKind],
    skip_unloadable: bool,
    points: &mut Vec<Point>,
) -> Result<(), String> {
    let resolved = resolve(model)?;
    for &kind in backends {
        let mut onnxruntime = resolved.onnxruntime;
        if let Some(n) = args.intra_op_threads {
            onnxruntime.intra_op_threads = Some(n);
        }
        match bench_backend(&resolved, kind, onnxruntime, args, points) {
            Err(Skip::Load(e)) if skip_unloadable => {
                eprintln!("skipped: {e}");
            }
            Err(Skip::Load(e) | Skip::Run(e)) => return Err(e),
            Ok(()) => {}
        }
    }
    Ok(())
}

enum Skip {
    /// The engine could not load the model.
    Load(String),
    Run(String),
}

fn bench_backend(
    resolved: &Resolved,
    kind: BackendKind,
    onnxruntime: OnnxRuntimeOptions,
    args: &Args,
    points: &mut Vec<Point>,
) -> Result<(), Skip> {
    let Resolved {
        name,
        path,
        max_batch,
        row_invariant: config_row_invariant,
        named,
        ..
    } = resolved;
    let (name, max_batch, engine) = (name.as_str(), *max_batch, kind.as_str());
    let row_invariant = args.row_invariant.unwrap_or(*config_row_invariant);
    let batches = args.batches.clone().unwrap_or_else(|| {
        let mut b = vec![1];
        if max_batch > 1 {
            b.push(max_batch);
        }
        b
    });
    let threads = onnxruntime.intra_op_threads;
    let options = LoadOptions {
        max_batch_size: batches.iter().copied().max().unwrap_or(1).max(max_batch),
        instance_count: 1,
        row_invariant,
        onnxruntime,
        ..LoadOptions::default()
    };
    let t0 = Instant::now();
    let mut loaded = backend::load(kind, path, &options)
        .map_err(|e| Skip::Load(format!("{name} on {engine}: {e}")))?;
    let threads = match (kind, threads) {
        (BackendKind::Tract, _) => String::new(),
        (_, Some(n)) => format!(", intra_op_threads = {n}"),
        (_, None) => ", intra_op_threads = ONNX Runtime's default".into(),
    };
    eprintln!(
        "{name} on {engine}: loaded {} in {:.0} ms (row_invariant = {row_invariant}{threads})",
        path.display(),
        t0.elapsed().as_secs_f64() * 1e3
    );
    let mut instance = loaded
        .instances
        .pop()
        .ok_or_else(|| Skip::Run(format!("{name}: no instance")))?;
    if *named {
        if let Some(diff) =
            check_reference(name, instance.as_mut(), &loaded.signature).map_err(Skip::Run)?
        {
            eprintln!("{name} on {engine}: reference rows match (max|diff| = {diff:.2e})");
        }
    }
    for &batch in &batches {
        let inputs = loaded
            .signature
            .inputs
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let shape: Vec<usize> = t
                    .shape
                    .iter()
                    .enumerate()
                    .map(|(d, dim)| match (d, dim) {
                        (0, _) => batch,
                        (_, Some(n)) => *n,
                        (_, None) => args.seq_len,
                    })
                    .collect();
                let n: usize = shape.iter().product();
                let seed = 0x9E37_79B9 + i as u64;
                let tensor = match t.dtype {
                    DataType::F32 => Tensor::from_values(shape, &fill(n, seed)),
                    DataType::I64 if t.name.contains("mask") => {
                        Tensor::from_values(shape, &vec![1i64; n])
                    }
                    DataType::I64 => {
                        let ids: Vec<i64> = fill(n, seed)
                            .into_iter()
                            .map(|v| 1500 + (v * 500.0) as i64)
                            .collect();
                        Tensor::from_values(shape, &ids)
                    }
                    dt => {
                        return Err(format!(
                            "{name}: input {} is {dt}, not FP32 or INT64",
                            t.name
                        ))
                    }
                };
                tensor.map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(Skip::Run)?;
        let mut p = run_point(name, instance.as_mut(), &inputs, batch, args).map_err(Skip::Run)?;
        p.backend = kind;
        p.row_invariant = row_invariant;
        eprintln!(
            "{name} on {engine} batch {batch}: {} calls in {:.2} s (first call {:.1} ms)",
            p.calls, p.secs, p.first_call_ms
        );
        points.push(p);
    }
    Ok(())
}

fn print_table(points: &[Point]) {
    println!(
        "{:<10} {:<11} {:>5} {:>9} {:>11} {:>12} {:>10} {:>10} {:>10} {:>8} {:>9}",
        "model",
        "backend",
        "batch",
        "calls",
        "calls/s",
        "rows/s",
        "mean µs",
        "p50 µs",
        "p99 µs",
        "vs b=1",
        "vs tract"
    );
    for p in points {
        let ratio = |q: Option<&Point>| {
            q.map(|q| format!("{:.2}x", p.rows_per_s() / q.rows_per_s()))
                .unwrap_or_else(|| "-".into())
        };
        let base = ratio(
            points
                .iter()
                .find(|q| q.model == p.model && q.backend == p.backend && q.batch == 1),
        );
        let tract = if p.backend == BackendKind::Tract {
            "-".into()
        } else {
            ratio(points.iter().find(|q| {
                q.model == p.model && q.backend == BackendKind::Tract && q.batch == p.batch
            }))
        };
        println!(
            "{:<10} {:<11} {:>5} {:>9} {:>11.1} {:>12.1} {:>10.1} {:>10.1} {:>10.1} {:>8} {:>9}",
            p.model,
            p.backend.as_str(),
            p.batch,
            p.calls,
            p.calls_per_s(),
            p.rows_per_s(),
            p.mean_us,
            p.p50_us,
            p.p99_us,
            base,
            tract
        );
    }
}

fn to_json(points: &[Point], args: &Args, backends: &[BackendKind]) -> serde_json::Value {
    let backend = match backends {
        [one] => one.as_str(),
        _ => "both",
    };
    json!({
        "bench": "inprocess",
        "backend": backend,
        "secs_per_point": args.secs,
        "warmup_secs": args.warmup,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "points": points.iter().map(|p| json!({
            "model": p.model,
            "backend": p.backend.as_str(),
            "batch": p.batch,
            "calls": p.calls,
            "secs": p.secs,
            "calls_per_s": p.calls_per_s(),
            "rows_per_s": p.rows_per_s(),
            "mean_us": p.mean_us,
            "p50_us": p.p50_us,
            "p99_us": p.p99_us,
            "first_call_ms": p.first_call_ms,
            "row_invariant": p.row_invariant,
        })).collect::<Vec<_>>(),
    })
}

fn main() -> ExitCode {
    // A bad flag exits with status 2 and the reason, as before clap.
    let args = Args::parse();
    let (backends, skip_unloadable) = match &args.backends() {
        Some(b) => (b.clone(), b.len() > 1),
        None if onnxruntime_library_found() => {
            (vec![BackendKind::Tract, BackendKind::OnnxRuntime], true)
        }
        None => {
            eprintln!(
                "ONNX Runtime library not found (run scripts/fetch-onnxruntime.sh or set \
                 ORT_DYLIB_PATH): tract only"
            );
            (vec![BackendKind::Tract], false)
        }
    };
    let mut points = Vec::new();
    for model in &args.models {
        if let Err(e) = bench_model(model, &args, &backends, skip_unloadable, &mut points) {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    print_table(&points);
    if let Some(out) = &args.json_out {
        let text =
            serde_json::to_string_pretty(&to_json(&points, &args, &backends)).unwrap_or_default();
        if out == "-" {
            println!("{text}");
        } else if let Err(e) = std::fs::write(out, text + "\n") {
            eprintln!("error: cannot write {out}: {e}");
            return ExitCode::FAILURE;
        } else {
            eprintln!("wrote {out}");
        }
    }
    ExitCode::SUCCESS
}
