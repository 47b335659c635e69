//! The `ferroserve` command line: parse, load configuration, start logging, run the server.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferroserve::config::{LogFormat, ServerConfig};
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
    Serve(ServeArgs),
}

/// Flags override `FERROSERVE_*` variables, which override the config file.
#[derive(clap::Args)]
struct ServeArgs {
    /// TOML file with server settings.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Model repository: <dir>/<model>/config.toml and <dir>/<model>/<version>/model.onnx.
    #[arg(long)]
    model_repository: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long)]
    host: Option<String>,
    #[arg(long)]
    http_port: Option<u16>,
    #[arg(long)]
    grpc_port: Option<u16>,
    #[arg(long)]
    metrics_port: Option<u16>,
    /// Largest request body / gRPC message in bytes.
    #[arg(long)]
    max_request_bytes: Option<usize>,
    /// Require every model to be ready for server readiness (Triton's default).
    #[arg(long)]
    strict_readiness: Option<bool>,
    /// Log format: text or json.
    #[arg(long)]
    log_format: Option<String>,
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
        set("host", self.host.clone());
        set("http_port", self.http_port.map(|p| p.to_string()));
        set("grpc_port", self.grpc_port.map(|p| p.to_string()));
        set("metrics_port", self.metrics_port.map(|p| p.to_string()));
        set(
            "max_request_bytes",
            self.max_request_bytes.map(|p| p.to_string()),
        );
        set(
            "strict_readiness",
            self.strict_readiness.map(|p| p.to_string()),
        );
        set("log_format", self.log_format.clone());
        o
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = ServerConfig::load(args.config.as_deref(), &args.overrides())?;
            init_logging(config.log_format);
            let listeners = Listeners::bind(&config)
                .await
                .with_context(|| format!("cannot listen on {}", config.host))?;
            server::run(config, listeners, shutdown_signal()).await
        }
    }
}
