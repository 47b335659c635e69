//! Peak RSS per request byte for the worst request shapes of issue 13 (empty repeated gRPC
//! entries, JSON `data` of zeros, a large body on the repository index), and the server-wide
//! `max_inflight_bytes` budget under many large requests at once. Each shape runs in a fresh
//! child process (this binary re-run with `--shape`), with the server in it, so the peak
//! (`VmHWM`, reset through `/proc/self/clear_refs`) is that one request's, client copy
//! included.
//!
//!     cargo bench --bench memory -- [--mib 8] [--clients 64] [--client-mib 64] [--budget-mib 256]

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferroserve::config::ServerConfig;
use ferroserve::proto::inference as pb;
use ferroserve::server::{self, Listeners};

/// The raw codec and the hostile message builders, shared with the tests.
#[path = "../tests/common/raw_codec.rs"]
mod raw_codec;
use raw_codec::{empty_bytes_contents, repeated_entries};

const SHAPES: &[&str] = &[
    "grpc-empty-inputs",
    "grpc-empty-outputs",
    "grpc-empty-raw",
    "grpc-empty-bytes-contents",
    "http-json-zeros",
    "http-index-body",
    "budget",
];

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn json_zeros(size: usize) -> Vec<u8> {
    let rows = size / 128;
    let mut body =
        format!(r#"{{"inputs":[{{"name":"input","datatype":"FP32","shape":[{rows},64],"data":[0"#)
            .into_bytes();
    for _ in 1..rows * 64 {
        body.extend_from_slice(b",0");
    }
    body.extend_from_slice(b"]}]}");
    body
}

/// A valid mlp request (one zero row) padded with whitespace to `size` bytes.
fn padded_valid(size: usize) -> Bytes {
    let zeros = vec!["0"; 64].join(",");
    let mut body = format!(
        r#"{{"inputs":[{{"name":"input","datatype":"FP32","shape":[1,64],"data":[{zeros}]}}]}}"#
    )
    .into_bytes();
    body.resize(size, b' ');
    body.into()
}

async fn grpc(addr: std::net::SocketAddr, msg: Bytes) -> String {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let path = "/inference.GRPCInferenceService/ModelInfer";
    match raw_codec::unary::<pb::ModelInferResponse>(channel, path, tonic::Request::new(msg)).await
    {
        Ok(_) => "OK".into(),
        Err(s) => format!("{:?}", s.code()),
    }
}

async fn http_post(url: String, body: impl Into<reqwest::Body>) -> String {
    match reqwest::Client::new().post(url).body(body).send().await {
        Ok(r) => r.status().as_u16().to_string(),
        Err(e) => format!("error: {e}"),
    }
}

/// One shape in this process: prints `shape body_bytes peak_growth_bytes outcome`.
async fn child(shape: &str) {
    let mib = arg("--mib", 8) << 20;
    let budget = arg("--budget-mib", 256) << 20;
    let config = ServerConfig {
        host: "127.0.0.1".into(),
        http_port: 0,
        grpc_port: 0,
        metrics_port: 0,
        model_repository: concat!(env!("CARGO_MANIFEST_DIR"), "/models").into(),
        max_inflight_bytes: budget,
        ..ServerConfig::default()
    };
    let listeners = Listeners::bind(&config).await.expect("bind");
    let (http, grpc_addr, _) = listeners.addrs().expect("addrs");
    tokio::spawn(server::run(config, listeners, std::future::pending()));
    let ready = format!("http://{http}/v2/health/ready");
    let start = Instant::now();
    while !reqwest::get(&ready).await.is_ok_and(|r| r.status() == 200) {
        assert!(start.elapsed() < Duration::from_secs(60), "server ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let infer = format!("http://{http}/v2/models/mlp/infer");
    let mut small = Vec::new();
    let body_len;
    let reset = || {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        kib("VmRSS:")
    };
    let (base, outcome) = match shape {
        "grpc-empty-inputs" | "grpc-empty-outputs" | "grpc-empty-raw" => {
            let tag = match shape {
                "grpc-empty-inputs" => 0x2a,
                "grpc-empty-outputs" => 0x32,
                _ => 0x3a,
            };
            let msg = repeated_entries(&[tag, 0], mib);
            body_len = msg.len();
            let base = reset();
            (base, grpc(grpc_addr, msg).await)
        }
        "grpc-empty-bytes-contents" => {
            let msg = empty_bytes_contents(mib);
            body_len = msg.len();
            let base = reset();
            (base, grpc(grpc_addr, msg).await)
        }
        "http-json-zeros" => {
            let body = json_zeros(mib);
            body_len = body.len();
            let base = reset();
            (base, http_post(infer, body).await)
        }
        "http-index-body" => {
            let body = vec![b' '; 2 * mib];
            body_len = body.len();
            let base = reset();
            (
                base,
                http_post(format!("http://{http}/v2/repository/index"), body).await,
            )
        }
        _ => {
            let clients = arg("--clients", 64);
            let body = padded_valid(arg("--client-mib", 64) << 20);
            body_len = body.len() * clients;
            let base = reset();
            let tasks: Vec<_> = (0..clients)
                .map(|_| tokio::spawn(http_post(infer.clone(), body.clone())))
                .collect();
            for t in tasks {
                small.push(t.await.unwrap_or_default());
            }
            let ok = small.iter().filter(|s| *s == "200").count();
            let refused = small.iter().filter(|s| *s == "429").count();
            (
                base,
                format!("{ok}x200,{refused}x429,{}xother", clients - ok - refused),
            )
        }
    };
    let growth = kib("VmHWM:").saturating_sub(base) * 1024;
    println!("{shape} {body_len} {growth} {outcome}");
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--shape") {
        let shape = args.get(i + 1).cloned().unwrap_or_default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(child(&shape));
        return ExitCode::SUCCESS;
    }
    let exe = std::env::current_exe().expect("own path");
    println!(
        "{:<28} {:>12} {:>14} {:>10}  outcome",
        "shape", "body bytes", "peak growth", "x body"
    );
    for shape in SHAPES {
        let out = Command::new(&exe)
            .args(&args[1..])
            .args(["--shape", shape])
            .output()
            .expect("run a shape");
        let line = String::from_utf8_lossy(&out.stdout);
        let Some(line) = line.lines().last() else {
            eprintln!(
                "{shape}: no result: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return ExitCode::FAILURE;
        };
        let f: Vec<&str> = line.split_whitespace().collect();
        let (body, growth): (f64, f64) = (
            f.get(1).and_then(|v| v.parse().ok()).unwrap_or(0.0),
            f.get(2).and_then(|v| v.parse().ok()).unwrap_or(0.0),
        );
        println!(
            "{shape:<28} {body:>12} {growth:>14} {:>10.2}  {}",
            growth / body.max(1.0),
            f.get(3).unwrap_or(&"?")
        );
    }
    ExitCode::SUCCESS
}
