//! The `ferroserve` command line: `serve` (load configuration, start logging, run the server) and
//! `bench` (the load generator of [`ferroserve::loadgen`]).

mod models_cli;
mod profile_cli;
mod traffic_cli;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferroserve::config::ServerConfig;
use ferroserve::server::{self, Listeners};

#[derive(Parser)]
#[command(
    name = "ferroserve",
    version,
    about = "Low-latency ONNX model serving over the Open Inference Protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the models of a repository over HTTP and gRPC.
    Serve(Box<ServeArgs>),
    /// Measure a server: closed- or open-loop load on one model, latency percentiles.
    Bench(ferroserve::loadgen::BenchArgs),
    /// List, load or unload the models of a running server (its repository API).
    Models(models_cli::ModelsArgs),
    /// Show or change a model's traffic policy (weights, shadow) or promote a version.
    Traffic(traffic_cli::TrafficArgs),
    /// Start, watch or abort a progressive rollout of a model version.
    Rollout(traffic_cli::RolloutArgs),
    /// Score a file (CSV, Parquet, JSONL, .npy) with a model of a repository, offline.
    Predict(Box<ferroserve::predict::PredictArgs>),
    /// Build a version's drift reference (profile.json) from a sample of its training data.
    Profile(profile_cli::ProfileArgs),
}

/// Flags override `FERROSERVE_*` variables, which override the config file.
#[derive(clap::Args)]
struct ServeArgs {
    /// TOML file with server settings.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Model repository: <dir>/<model>/config.toml (optional) and <dir>/<model>/<version>/model.onnx,
    /// or s3://bucket/prefix in that layout (AWS_* variables; a version needs its `ready` object).
    #[arg(long)]
    model_repository: Option<PathBuf>,
    /// Where an s3:// repository is cached (one server process per directory).
    #[arg(long)]
    model_cache_dir: Option<PathBuf>,
    /// Bound on the model cache, in bytes.
    #[arg(long)]
    model_cache_max_bytes: Option<u64>,
    /// Serve --model-repository as the directory of one model with this name: a bare model.onnx
    /// (version 1) or version directories, config.toml optional (KServe's /mnt/models).
    #[arg(long, value_name = "NAME")]
    model_name: Option<String>,
    /// Address to listen on.
    #[arg(long)]
    host: Option<String>,
    #[arg(long)]
    http_port: Option<u16>,
    #[arg(long)]
    grpc_port: Option<u16>,
    #[arg(long)]
    metrics_port: Option<u16>,
    /// The name server metadata reports (default ferroserve; `triton` for clients that check).
    #[arg(long)]
    server_name: Option<String>,
    /// Largest request body / gRPC message in bytes.
    #[arg(long)]
    max_request_bytes: Option<usize>,
    /// Inference requests in flight on the whole server beyond which new ones are refused at
    /// once (429 / RESOURCE_EXHAUSTED); 0: no server-wide limit.
    #[arg(long)]
    max_concurrent_requests: Option<usize>,
    /// Seconds an HTTP/1 client gets to send a request's headers before its connection closes.
    #[arg(long)]
    header_read_timeout_secs: Option<f64>,
    /// Require every model to be ready for server readiness (Triton's default).
    #[arg(long)]
    strict_readiness: Option<bool>,
    /// Log format: text or json.
    #[arg(long)]
    log_format: Option<String>,
    /// none: load everything at start, read-only repository API; poll: also rescan the
    /// repository every --repository-poll-secs; explicit: load only --load-model at start,
    /// then only through the repository API.
    #[arg(long, value_parser = ["none", "poll", "explicit"])]
    model_control_mode: Option<String>,
    /// Seconds between repository scans in poll mode.
    #[arg(long)]
    repository_poll_secs: Option<f64>,
    /// A model to load at start in explicit mode (repeat the flag for several).
    #[arg(long = "load-model", value_name = "NAME")]
    load_models: Vec<String>,
    /// Bearer token the repository API's load and unload require (at least 16 characters).
    /// Prefer FERROSERVE_ADMIN_TOKEN: flags show in the process list.
    #[arg(long)]
    admin_token: Option<String>,
    /// Without an admin token: where the token made at start is written (mode 0600; default
    /// $XDG_RUNTIME_DIR/ferroserve/admin-token, else <tmp>/ferroserve-<uid>/admin-token).
    #[arg(long, value_name = "PATH")]
    admin_token_file: Option<PathBuf>,
    /// Let anyone who reaches the ports load, unload and change traffic without a token.
    #[arg(long)]
    allow_unauthenticated_admin: Option<bool>,
    /// Serve Triton's system shared memory extension (regions under /dev/shm; registering
    /// takes the admin token unless unauthenticated admin is allowed).
    #[arg(long)]
    allow_shared_memory: Option<bool>,
    /// Accept Triton's `load_model(config=..., files=...)` from admitted admin callers: the
    /// model is written into the repository, then loaded.
    #[arg(long)]
    allow_model_upload: Option<bool>,
    /// Seconds to keep serving, not ready, after SIGTERM before closing the listeners. A second
    /// signal exits at once.
    #[arg(long)]
    drain_delay: Option<f64>,
    /// Seconds requests in flight get to finish once the listeners close.
    #[arg(long)]
    shutdown_timeout: Option<f64>,
    /// The ONNX Runtime shared library (default: ORT_DYLIB_PATH, then
    /// .cache/onnxruntime/libonnxruntime.so).
    #[arg(long)]
    onnxruntime_library: Option<PathBuf>,
    /// PEM certificate chain: serve the HTTP and gRPC ports with TLS (with --tls-key-file).
    #[arg(long, value_name = "PATH")]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, value_name = "PATH")]
    tls_key_file: Option<PathBuf>,
    /// PEM CA certificates: require client certificates they issued (mTLS).
    #[arg(long, value_name = "PATH")]
    tls_client_ca_file: Option<PathBuf>,
}

impl ServeArgs {
    fn overrides(&self) -> Vec<(&'static str, String)> {
        let mut o = Vec::new();
        let mut set = |k: &'static str, v: Option<String>| {
            if let Some(v) = v {
                o.push((k, v));
            }
        };
        set(
            "model_repository",
            self.model_repository
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
        );
        set("model_name", self.model_name.clone());
        set(
            "model_cache_dir",
            self.model_cache_dir
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
        );
        set(
            "model_cache_max_bytes",
            self.model_cache_max_bytes.map(|v| v.to_string()),
        );
        set("host", self.host.clone());
        set("server_name", self.server_name.clone());
        set("http_port", self.http_port.map(|p| p.to_string()));
        set("grpc_port", self.grpc_port.map(|p| p.to_string()));
        set("metrics_port", self.metrics_port.map(|p| p.to_string()));
        set(
            "max_request_bytes",
            self.max_request_bytes.map(|p| p.to_string()),
        );
        set(
            "max_concurrent_requests",
            self.max_concurrent_requests.map(|v| v.to_string()),
        );
        set(
            "header_read_timeout_secs",
            self.header_read_timeout_secs.map(|v| v.to_string()),
        );
        set(
            "strict_readiness",
            self.strict_readiness.map(|p| p.to_string()),
        );
        set("log_format", self.log_format.clone());
        set("model_control_mode", self.model_control_mode.clone());
        set(
            "repository_poll_secs",
            self.repository_poll_secs.map(|v| v.to_string()),
        );
        set("admin_token", self.admin_token.clone());
        set(
            "admin_token_file",
            self.admin_token_file
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
        );
        set(
            "allow_unauthenticated_admin",
            self.allow_unauthenticated_admin.map(|v| v.to_string()),
        );
        set(
            "allow_shared_memory",
            self.allow_shared_memory.map(|v| v.to_string()),
        );
        set(
            "allow_model_upload",
            self.allow_model_upload.map(|v| v.to_string()),
        );
        set(
            "shutdown.drain_delay",
            self.drain_delay.map(|v| v.to_string()),
        );
        set(
            "shutdown.timeout",
            self.shutdown_timeout.map(|v| v.to_string()),
        );
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.to_string_lossy().into_owned());
        set("onnxruntime.library", path(&self.onnxruntime_library));
        set("tls.cert_file", path(&self.tls_cert_file));
        set("tls.key_file", path(&self.tls_key_file));
        set("tls.client_ca_file", path(&self.tls_client_ca_file));
        o
    }
}

/// Resolves on the first SIGTERM or SIGINT; a second one, during the drain, exits at once.
async fn shutdown_signal() {
    one_signal().await;
    tokio::spawn(async {
        one_signal().await;
        tracing::warn!("second shutdown signal: exiting now, without draining");
        std::process::exit(1);
    });
}

async fn one_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args).map(|()| ExitCode::SUCCESS),
        // The load generator builds its own runtime (`--threads`), separate from the server's.
        Command::Bench(args) => ferroserve::loadgen::main(args),
        Command::Models(args) => models_cli::run(args).map(|()| ExitCode::SUCCESS),
        Command::Traffic(args) => traffic_cli::traffic(args).map(|()| ExitCode::SUCCESS),
        Command::Rollout(args) => traffic_cli::rollout(args).map(|()| ExitCode::SUCCESS),
        Command::Predict(args) => {
            ferroserve::telemetry::init_logs(ferroserve::config::LogFormat::Text, "warn");
            ferroserve::predict::main(*args)
        }
        Command::Profile(args) => profile_cli::run(args).map(|()| ExitCode::SUCCESS),
    }
}

#[tokio::main]
async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = ServerConfig::load(args.config.as_deref(), &args.overrides())?;
    if !args.load_models.is_empty() {
        config.load_models = args.load_models.clone();
    }
    // Flushes the trace exporter when `serve` returns.
    let _telemetry = ferroserve::telemetry::init(config.log_format, &config.tracing)?;
    let listeners = Listeners::bind(&config)
        .await
        .with_context(|| format!("cannot listen on {}", config.host))?;
    server::run(config, listeners, shutdown_signal()).await
}
