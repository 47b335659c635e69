//! `ferroserve bench` options and their resolution into a run plan (address, load model,
//! connection count), so that everything the measurement loop reads is decided up front.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

/// Wire format of the inference requests.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1, JSON tensors in and out.
    HttpJson,
    /// HTTP/1.1, binary tensor data extension in and out (`Inference-Header-Content-Length`).
    HttpBinary,
    /// gRPC (HTTP/2), `raw_input_contents` in, `raw_output_contents` out.
    Grpc,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::HttpJson => "http-json",
            Protocol::HttpBinary => "http-binary",
            Protocol::Grpc => "grpc",
        }
    }

    fn default_url(self) -> &'static str {
        match self {
            Protocol::HttpJson | Protocol::HttpBinary => "127.0.0.1:8000",
            Protocol::Grpc => "127.0.0.1:8001",
        }
    }
}

/// Load generator options. Also a standalone [`clap::Parser`] so that library callers (tests)
/// get exactly the CLI's defaults: `BenchArgs::try_parse_from(["bench", "--model", "mlp"])`.
#[derive(clap::Parser, Clone, Debug)]
#[command(name = "bench")]
pub struct BenchArgs {
    /// Server address, host:port (an `http://` prefix is accepted) [default: 127.0.0.1:8000
    /// for HTTP, 127.0.0.1:8001 for gRPC].
    #[arg(long)]
    pub url: Option<String>,
    #[arg(long, value_enum, default_value = "http-binary")]
    pub protocol: Protocol,
    /// Model to call.
    #[arg(long)]
    pub model: String,
    /// Model version (default: the server's choice).
    #[arg(long)]
    pub version: Option<String>,
    /// Rows per request: the size of the batch (first) dimension.
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Size of the other variable dimensions (the sequence length of token models such as
    /// `minilm`).
    #[arg(long, default_value_t = 1)]
    pub seq_len: usize,
    /// Closed loop: this many workers, each sending its next request when the previous answer
    /// arrives [default: 1 when --rate is not given].
    #[arg(long, conflicts_with = "rate")]
    pub concurrency: Option<usize>,
    /// Open loop: requests scheduled at this fixed rate (per second); latency is measured from
    /// the intended send time, so a slow server is not hidden (coordinated omission).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Open loop: the most requests in flight; a scheduled request finding them all busy is
    /// not sent and counts as `dropped_by_client`.
    #[arg(long, default_value_t = 256, requires = "rate")]
    pub max_in_flight: usize,
    /// Seconds of load before measuring (connections, caches, server threads warm up).
    #[arg(long, default_value_t = 2.0)]
    pub warmup_secs: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Also write the report as one JSON object to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// TCP connections [default: one per worker]. HTTP/1.1 carries one request at a time, so
    /// fewer connections than workers make workers wait for one (the wait counts as latency);
    /// gRPC multiplexes workers over the HTTP/2 channels.
    #[arg(long)]
    pub connections: Option<usize>,
    /// Load generator runtime threads; 1 (a current-thread runtime) is the cheapest per
    /// request and leaves the other cores to the server.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// How requests are issued.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    Closed { concurrency: usize },
    Open { rate: f64, max_in_flight: usize },
}

impl Load {
    /// Number of worker tasks (each owns one request in flight at most).
    pub fn workers(self) -> usize {
        match self {
            Load::Closed { concurrency } => concurrency,
            Load::Open { max_in_flight, .. } => max_in_flight,
        }
    }
}

impl std::fmt::Display for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Load::Closed { concurrency } => write!(f, "closed loop, concurrency {concurrency}"),
            Load::Open {
                rate,
                max_in_flight,
            } => write!(
                f,
                "open loop, {rate} requests/s, at most {max_in_flight} in flight"
            ),
        }
    }
}

/// The validated options.
#[derive(Clone, Debug)]
pub struct Plan {
    pub protocol: Protocol,
    /// host:port.
    pub addr: String,
    pub model: String,
    pub version: Option<String>,
    pub batch_size: usize,
    pub seq_len: usize,
    pub load: Load,
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

impl BenchArgs {
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let url = self.url.as_deref().unwrap_or(self.protocol.default_url());
        let addr = url
            .strip_prefix("http://")
            .unwrap_or(url)
            .trim_end_matches('/');
        if addr.is_empty() || addr.contains('/') || !addr.contains(':') {
            bail!("--url {url:?}: expected host:port, e.g. 127.0.0.1:8000");
        }
        if self.model.is_empty() {
            bail!("--model is empty");
        }
        if self.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        if self.seq_len == 0 {
            bail!("--seq-len must be at least 1");
        }
        let load = match (self.concurrency, self.rate) {
            (_, Some(rate)) => {
                if !(rate.is_finite() && rate > 0.0) {
                    bail!("--rate must be a positive number of requests per second");
                }
                if self.max_in_flight == 0 {
                    bail!("--max-in-flight must be at least 1");
                }
                Load::Open {
                    rate,
                    max_in_flight: self.max_in_flight,
                }
            }
            (c, None) => {
                let concurrency = c.unwrap_or(1);
                if concurrency == 0 {
                    bail!("--concurrency must be at least 1");
                }
                Load::Closed { concurrency }
            }
        };
        let workers = load.workers();
        let connections = match self.connections {
            None => workers,
            Some(0) => bail!("--connections must be at least 1"),
            // More connections than workers would leave some idle.
            Some(n) => n.min(workers),
        };
        let secs = |name: &str, v: f64, min: f64| -> anyhow::Result<Duration> {
            if !(v.is_finite() && v >= min) {
                bail!("--{name} must be a number of seconds >= {min}");
            }
            Duration::try_from_secs_f64(v).with_context(|| format!("--{name} {v}"))
        };
        if self.threads == 0 {
            bail!("--threads must be at least 1");
        }
        Ok(Plan {
            protocol: self.protocol,
            addr: addr.to_string(),
            model: self.model.clone(),
            version: self.version.clone().filter(|v| !v.is_empty()),
            batch_size: self.batch_size,
            seq_len: self.seq_len,
            load,
            connections,
            warmup: secs("warmup-secs", self.warmup_secs, 0.0)?,
            duration: secs("duration-secs", self.duration_secs, 0.001)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn plan(args: &[&str]) -> anyhow::Result<Plan> {
        let mut all = vec!["bench", "--model", "mlp"];
        all.extend_from_slice(args);
        BenchArgs::try_parse_from(all)?.plan()
    }

    #[test]
    fn defaults() {
        let p = plan(&[]).unwrap();
        assert_eq!(p.addr, "127.0.0.1:8000");
        assert_eq!(p.load, Load::Closed { concurrency: 1 });
        assert_eq!(p.connections, 1);
        assert_eq!(p.duration, Duration::from_secs(10));
        let p = plan(&["--protocol", "grpc", "--concurrency", "8"]).unwrap();
        assert_eq!(p.addr, "127.0.0.1:8001");
        assert_eq!(p.connections, 8);
    }

    #[test]
    fn open_loop_and_errors() {
        let p = plan(&[
            "--rate",
            "500",
            "--max-in-flight",
            "4",
            "--url",
            "http://h:1/",
        ])
        .unwrap();
        assert_eq!(p.addr, "h:1");
        assert_eq!(
            p.load,
            Load::Open {
                rate: 500.0,
                max_in_flight: 4
            }
        );
        assert!(plan(&["--rate", "5", "--concurrency", "2"]).is_err());
        assert!(plan(&["--rate", "0"]).is_err());
        assert!(plan(&["--batch-size", "0"]).is_err());
        assert!(plan(&["--url", "nohost"]).is_err());
        assert!(plan(&["--max-in-flight", "3"]).is_err());
    }
}
