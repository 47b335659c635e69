//! `ferroserve bench`: a load generator for Open Inference Protocol servers (ours, Triton, or
//! `examples/noop_server.rs`, the transport floor), cheap enough per request to share a small
//! machine with the server it measures.
//!
//! How it works: read the model metadata, build one request with deterministic pseudo-random
//! inputs (batch dimension = `--batch-size`, other `-1` dimensions = 1), encode it once
//! ([`inputs`]), send it once and validate the answer (abort otherwise), then drive it from
//! worker tasks for `--warmup-secs` + `--duration-secs` and measure the second part
//! ([`driver`]). Per request the client only clones `Bytes` and a few headers or strings; what
//! that costs is measured and reported as `client_cpu_us_per_request`.
//!
//! ```text
//! ferroserve bench --url 127.0.0.1:8001 --protocol grpc --model mlp --concurrency 32 \
//!     --warmup-secs 2 --duration-secs 5 --json-out grpc-c32.json
//! ```
//!
//! Load models: closed loop (`--concurrency C`: C workers, each sending when its previous
//! answer arrives) or open loop (`--rate R`: requests scheduled every 1/R s, latency measured
//! from the *intended* send time, at most `--max-in-flight` outstanding; a scheduled request
//! finding them all busy is not sent and counts in `dropped_by_client`).
//!
//! Files, each importing only those listed before it: [`config`] (options, validation),
//! [`inputs`] (metadata, synthetic tensors, encodings), [`stats`] (error codes, counts,
//! latencies, CPU time), [`http`] and [`grpc`] (clients), [`conn`] (a worker's connection, either
//! client), [`schedule`] (the open loop), [`driver`] (closed-loop workers, the measured window),
//! [`report`] (table and JSON).
//!
//! # Report fields (`--json-out`, one JSON object; [`Report`])
//! - `protocol`: `http-json`, `http-binary` or `grpc`; `url`: host:port; `model`, `version`
//!   (null: the server's choice); `batch_size`: rows per request.
//! - `mode`: `closed` (then `concurrency` is set) or `open` (then `rate` in requests/s and
//!   `max_in_flight`); the others are null.
//! - `connections`: TCP connections (HTTP/1.1) or HTTP/2 channels (gRPC); `threads`: runtime
//!   threads of the load generator.
//! - `warmup_secs`; `duration_secs`: the measured wall-clock window.
//! - `requests`: successful requests whose (intended) send time fell in the window;
//!   `errors_total` and `errors` (by code: the HTTP status such as `"503"`, the gRPC code name
//!   such as `"UNAVAILABLE"`, `"connect"`: a connection could not be (re)opened, `"io"`: it
//!   failed mid-request); `dropped_by_client` (open loop).
//! - `throughput_rps` = `requests` / `duration_secs`; `rows_per_sec` = that × `batch_size`.
//! - `latency_us`: `p50`, `p90`, `p99`, `p999`, `max`, `min` (integers) and `mean`, in
//!   microseconds, successful requests only (HdrHistogram, 3 significant digits).
//! - `rejected`: requests the server refused at admission (HTTP 429, gRPC
//!   `RESOURCE_EXHAUSTED`; also counted in `errors`), and `rejected_latency_us`: their latency,
//!   same fields as `latency_us`, kept apart so that fast refusals do not flatter the admitted
//!   requests' percentiles (all zero when none).
//! - `client_cpu_us_per_request`: user + system CPU time of the load generator process over
//!   the window (`getrusage`) divided by the requests it sent (successful + failed);
//!   `client_cpu_percent`: the same CPU time over the window, in % of one core. Both are about
//!   the load generator only when it runs in a process of its own (the CLI), not in-process
//!   with a server (tests).

pub mod config;
pub mod conn;
pub mod driver;
pub mod grpc;
pub mod http;
pub mod inputs;
pub mod report;
pub mod schedule;
pub mod stats;

use std::process::ExitCode;

use anyhow::Context;

pub use config::{BenchArgs, Protocol};
pub use report::Report;

/// Runs one benchmark on the current tokio runtime and returns its report. Fails before
/// measuring when the server is unreachable or answers the first request wrongly.
pub async fn run(args: &BenchArgs) -> anyhow::Result<Report> {
    let plan = args.plan()?;
    let conns = conn::connect(&plan).await?;
    let measured = driver::drive(&plan, conns).await?;
    Ok(Report::new(&plan, args, &measured))
}

/// The `bench` subcommand: builds the runtime (`--threads`), runs, prints the table to stdout,
/// writes `--json-out`. Fails (non-zero exit) when no request succeeded.
pub fn main(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let rt = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    let plan = args.plan()?;
    eprintln!(
        "bench: {} {} on {}, B={}, {}, {} connection(s), warm-up {:?}, measuring {:?}",
        plan.protocol.as_str(),
        plan.model,
        plan.addr,
        plan.batch_size,
        plan.load,
        plan.connections,
        plan.warmup,
        plan.duration
    );
    let report = rt.block_on(run(&args))?;
    println!("{}", Report::table_header());
    println!("{}", report.table_row());
    if let Some(line) = report.rejected_row() {
        println!("{line}");
    }
    if let Some(path) = &args.json_out {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if report.requests == 0 {
        eprintln!(
            "bench: every request failed ({} errors, {} dropped by the client)",
            report.errors_total, report.dropped_by_client
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
