//! The load generator (`ferroserve bench`) as a library call against a real server on the
//! bundled models: a short closed-loop run on `mlp` over each protocol, and the JSON report.

mod common;

use clap::Parser;
use common::TestServer;
use ferroserve::loadgen::{self, BenchArgs};
use serde_json::Value;

fn args(protocol: &str, url: &str, model: &str) -> BenchArgs {
    BenchArgs::try_parse_from([
        "bench",
        "--url",
        url,
        "--protocol",
        protocol,
        "--model",
        model,
        "--concurrency",
        "2",
        "--warmup-secs",
        "0.2",
        "--duration-secs",
        "0.8",
    ])
    .unwrap()
}

/// The fields the module doc of `ferroserve::loadgen` promises.
const FIELDS: [&str; 24] = [
    "protocol",
    "url",
    "model",
    "version",
    "batch_size",
    "mode",
    "concurrency",
    "rate",
    "max_in_flight",
    "connections",
    "threads",
    "warmup_secs",
    "duration_secs",
    "requests",
    "errors_total",
    "errors",
    "dropped_by_client",
    "throughput_rps",
    "rows_per_sec",
    "latency_us",
    "rejected",
    "rejected_latency_us",
    "client_cpu_us_per_request",
    "client_cpu_percent",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_mlp_over_each_protocol() {
    let server = TestServer::start().await;
    let (http, grpc) = (server.http.to_string(), server.grpc.to_string());
    for (protocol, url) in [
        ("http-binary", &http),
        ("http-json", &http),
        ("grpc", &grpc),
    ] {
        let report = loadgen::run(&args(protocol, url, "mlp")).await.unwrap();
        assert_eq!(report.errors_total, 0, "{protocol}: {:?}", report.errors);
        assert!(report.requests > 0, "{protocol}: no requests");
        assert!(report.throughput_rps > 0.0);
        assert!(report.latency_us.p50 > 0 && report.latency_us.p50 <= report.latency_us.max);

        let json: Value = serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
        let obj = json.as_object().unwrap();
        for f in FIELDS {
            assert!(
                obj.contains_key(f),
                "{protocol}: report lacks {f:?}: {json}"
            );
        }
        assert_eq!(obj.len(), FIELDS.len(), "undocumented fields in {json}");
        assert_eq!(json["protocol"], protocol);
        assert_eq!(json["mode"], "closed");
        assert_eq!(json["concurrency"], 2);
        for q in ["p50", "p90", "p99", "p999", "max"] {
            assert!(json["latency_us"][q].is_u64(), "latency_us.{q}");
        }
    }

    // Open loop: 400 requests/s for 0.8 s, each sent on schedule (the server keeps up easily).
    let open = BenchArgs::try_parse_from([
        "bench",
        "--url",
        &http,
        "--protocol",
        "http-binary",
        "--model",
        "mlp",
        "--rate",
        "400",
        "--max-in-flight",
        "8",
        "--warmup-secs",
        "0.2",
        "--duration-secs",
        "0.8",
    ])
    .unwrap();
    let report = loadgen::run(&open).await.unwrap();
    assert_eq!(report.errors_total, 0, "{:?}", report.errors);
    assert_eq!(report.mode, "open");
    assert!(
        (300..=340).contains(&(report.requests + report.dropped_by_client)),
        "{} sent + {} dropped, want 320 scheduled",
        report.requests,
        report.dropped_by_client
    );

    // A model the server does not have: a clear error before any load.
    let err = loadgen::run(&args("grpc", &grpc, "nope"))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("NOT_FOUND"), "{err:#}");
    let err = loadgen::run(&args("http-json", &http, "nope"))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("404"), "{err:#}");
    server.stop().await.unwrap();
}

/// A model that admits one request at a time under 8 closed-loop workers: most requests are
/// refused, and the report keeps their count and latency apart from the admitted ones'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_are_reported_apart() {
    let repo = common::repo([common::copy_model("dense").config("max_concurrent_requests = 1")]);
    let server = TestServer::builder().repo(repo.path()).start().await;
    let mut a = args("http-binary", &server.http.to_string(), "dense");
    a.concurrency = Some(8);
    a.batch_size = 16;
    let report = loadgen::run(&a).await.unwrap();
    assert!(report.rejected > 0, "nothing refused: {report:?}");
    assert_eq!(
        Some(&report.rejected),
        report.errors.get("429"),
        "{report:?}"
    );
    assert!(report.requests > 0, "nothing admitted: {report:?}");
    assert!(report.rejected_latency_us.max > 0, "{report:?}");
    server.stop().await.unwrap();
}
