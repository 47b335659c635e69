//! Observability and overload control through a real server: after a known sequence of
//! successes, failures and refusals, `/metrics` and the statistics extension (HTTP and gRPC)
//! report exactly those counts; bounded admission refuses at once with 429 + Retry-After /
//! RESOURCE_EXHAUSTED; slow clients are cut off by the header read timeout.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{copy_model, pb, poll_until, TestServer};
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn mlp_json(rows: usize) -> Value {
    json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [rows, 64], "data": vec![0.5f32; rows * 64]}]})
}

fn mlp_grpc(model: &str, version: &str) -> pb::ModelInferRequest {
    pb::ModelInferRequest {
        model_name: model.into(),
        model_version: version.into(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 64],
            ..Default::default()
        }],
        raw_input_contents: vec![vec![0u8; 64 * 4].into()],
        ..Default::default()
    }
}

/// The value of the metric line `series` (name and labels exactly as rendered), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Waits (bounded) until `series` reads `want`: a request dropped from the queue is counted by
/// the instance that drops it, which may be a moment after its caller was answered.
async fn eventually(server: &TestServer, series: &str, want: f64) -> String {
    poll_until(
        Duration::from_secs(10),
        &format!("{series} never reached {want}"),
        || server.metrics_text(),
        |text| value(text, series) == Some(want),
    )
    .await
}

fn assert_series(text: &str, series: &str, want: f64) {
    assert_eq!(value(text, series), Some(want), "{series} in:\n{text}");
}

/// A server on `mlp` after a known sequence: 3 successes of 2 rows over HTTP, 2 of 1 row over
/// gRPC, a bad input, an undecodable body, an unknown version, an unknown model and an expired
/// deadline. Returns once the expired request has been counted, with the metrics text then.
async fn server_after_known_requests() -> (tempfile::TempDir, TestServer, String) {
    let repo = common::repo([copy_model("mlp")]);
    let server = TestServer::builder().repo(repo.path()).start().await;
    let c = reqwest::Client::new();
    let infer = server.url("/v2/models/mlp/infer");
    let mut grpc = GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();

    // 3 successes of 2 rows over HTTP, 2 of 1 row over gRPC.
    for _ in 0..3 {
        let r = c.post(&infer).json(&mlp_json(2)).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    for _ in 0..2 {
        grpc.model_infer(mlp_grpc("mlp", "")).await.unwrap();
    }
    // Bad input: a valid request of the wrong shape.
    let bad = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]});
    assert_eq!(
        c.post(&infer).json(&bad).send().await.unwrap().status(),
        400
    );
    // Undecodable: not JSON at all.
    let r = c
        .post(&infer)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Unknown version, unknown model.
    let r = c
        .post(server.url("/v2/models/mlp/versions/9/infer"))
        .json(&mlp_json(1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let err = grpc.model_infer(mlp_grpc("nope", "")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    // A deadline of 1 µs has passed before any instance can take the request.
    let mut expired = mlp_json(1);
    expired["parameters"] = json!({"timeout": 1});
    assert_eq!(
        c.post(&infer).json(&expired).send().await.unwrap().status(),
        504
    );

    let text = eventually(
        &server,
        r#"ferroserve_rejected_total{model="mlp",reason="deadline",version="1"}"#,
        1.0,
    )
    .await;
    (repo, server, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_status_code() {
    let (_repo, server, text) = server_after_known_requests().await;
    for (series, want) in [
        (
            r#"ferroserve_requests_total{code="ok",model="mlp",protocol="http",version="1"}"#,
            3.0,
        ),
        (
            r#"ferroserve_requests_total{code="ok",model="mlp",protocol="grpc",version="1"}"#,
            2.0,
        ),
        (
            r#"ferroserve_requests_total{code="invalid_argument",model="mlp",protocol="http",version="1"}"#,
            1.0,
        ),
        (
            r#"ferroserve_requests_total{code="invalid_argument",model="mlp",protocol="http",version=""}"#,
            1.0,
        ),
        (
            r#"ferroserve_requests_total{code="not_found",model="mlp",protocol="http",version=""}"#,
            1.0,
        ),
        (
            r#"ferroserve_requests_total{code="not_found",model="",protocol="grpc",version=""}"#,
            1.0,
        ),
        (
            r#"ferroserve_requests_total{code="deadline_exceeded",model="mlp",protocol="http",version="1"}"#,
            1.0,
        ),
    ] {
        assert_series(&text, series, want);
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_time_each_computed_request_and_sum_batch_rows() {
    let (_repo, server, text) = server_after_known_requests().await;
    for (series, want) in [
        (
            r#"ferroserve_request_duration_seconds_count{model="mlp",protocol="http",version="1"}"#,
            5.0,
        ),
        (
            r#"ferroserve_queue_duration_seconds_count{model="mlp",version="1"}"#,
            5.0,
        ),
        (
            r#"ferroserve_compute_duration_seconds_count{model="mlp",version="1"}"#,
            5.0,
        ),
        (r#"ferroserve_batch_size_sum{model="mlp",version="1"}"#, 8.0),
    ] {
        assert_series(&text, series, want);
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_nothing_in_flight_or_queued_once_answered() {
    let (_repo, server, text) = server_after_known_requests().await;
    for (series, want) in [
        (
            r#"ferroserve_inflight_requests{model="mlp",version="1"}"#,
            0.0,
        ),
        (r#"ferroserve_queue_depth{model="mlp",version="1"}"#, 0.0),
    ] {
        assert_series(&text, series, want);
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_the_model_state_and_its_load_time() {
    let (_repo, server, text) = server_after_known_requests().await;
    for (series, want) in [
        (r#"ferroserve_model_ready{model="mlp",version="1"}"#, 1.0),
        (
            r#"ferroserve_model_state{model="mlp",state="READY",version="1"}"#,
            1.0,
        ),
        (
            r#"ferroserve_model_state{model="mlp",state="LOADING",version="1"}"#,
            0.0,
        ),
    ] {
        assert_series(&text, series, want);
    }
    assert!(
        value(
            &text,
            r#"ferroserve_model_load_duration_seconds{model="mlp",version="1"}"#
        )
        .is_some_and(|s| s > 0.0),
        "{text}"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_model_names_stay_out_of_metric_labels() {
    let (_repo, server, text) = server_after_known_requests().await;
    assert!(!text.contains("nope"), "unknown names stay out of labels");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_describe_the_build_and_the_process() {
    let (_repo, server, text) = server_after_known_requests().await;
    assert!(
        text.contains("ferroserve_build_info{backends=\"tract"),
        "{text}"
    );
    assert!(
        text.contains("\nferroserve_process_resident_memory_bytes "),
        "{text}"
    );
    server.stop().await.unwrap();
}

/// The HTTP statistics of `mlp` version 1, and the batch sizes they list: (rows, executions).
async fn http_statistics(server: &TestServer) -> (Value, Vec<(u64, u64)>) {
    let http_stats: Value = reqwest::get(server.url("/v2/models/mlp/versions/1/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let s = http_stats["model_stats"][0].clone();
    let sizes: Vec<(u64, u64)> = s["batch_stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            assert_eq!(b["compute_input"]["count"], b["compute_infer"]["count"]);
            assert_eq!(b["compute_output"]["count"], b["compute_infer"]["count"]);
            (
                b["batch_size"].as_u64().unwrap(),
                b["compute_infer"]["count"].as_u64().unwrap(),
            )
        })
        .collect();
    (s, sizes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_statistics_count_each_outcome_phase_and_batch_size() {
    let (_repo, server, _) = server_after_known_requests().await;
    let (s, sizes) = http_statistics(&server).await;
    for (phase, want) in [
        ("success", 5),
        ("fail", 2),
        ("queue", 5),
        ("compute_input", 5),
        ("compute_infer", 5),
        ("compute_output", 5),
    ] {
        assert_eq!(
            s["inference_stats"][phase]["count"], want,
            "http {phase}: {s}"
        );
    }
    assert!(
        s["inference_stats"]["compute_infer"]["ns"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(
        (s["inference_count"].as_u64(), s["execution_count"].as_u64()),
        (Some(8), Some(5)),
        "3 x 2 rows + 2 x 1 row in 5 executions; the expired request never ran"
    );
    // Each request is its own batch (no dynamic batching): two sizes, by rows.
    assert_eq!(sizes, [(1, 2), (2, 3)], "{s}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_statistics_say_what_http_statistics_say() {
    let (_repo, server, _) = server_after_known_requests().await;
    let (_, sizes) = http_statistics(&server).await;
    let mut grpc = GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let grpc_stats = grpc
        .model_statistics(pb::ModelStatisticsRequest {
            name: "mlp".into(),
            version: "1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let g = &grpc_stats.model_stats[0];
    let is = g.inference_stats.as_ref().unwrap();
    let count = |d: &Option<pb::StatisticDuration>| d.as_ref().unwrap().count;
    for (phase, d, want) in [
        ("success", &is.success, 5),
        ("fail", &is.fail, 2),
        ("queue", &is.queue, 5),
        ("compute_input", &is.compute_input, 5),
        ("compute_infer", &is.compute_infer, 5),
        ("compute_output", &is.compute_output, 5),
    ] {
        assert_eq!(count(d), want, "grpc {phase}: {g:?}");
    }
    assert_eq!((g.inference_count, g.execution_count), (8, 5));
    let grpc_sizes: Vec<(u64, u64)> = g
        .batch_stats
        .iter()
        .map(|b| (b.batch_size, count(&b.compute_infer)))
        .collect();
    assert_eq!(grpc_sizes, sizes);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn server_metadata_lists_the_statistics_extension() {
    let repo = common::repo([copy_model("mlp")]);
    let server = TestServer::builder().repo(repo.path()).start().await;
    let meta: Value = reqwest::get(server.url("/v2"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(meta["extensions"]
        .as_array()
        .unwrap()
        .contains(&json!("statistics")));
    server.stop().await.unwrap();
}

/// `n` concurrent 64-row requests to `model` over HTTP: (HTTP statuses, Retry-After headers of
/// the 429s).
async fn http_burst(server: &TestServer, model: &str, n: usize) -> (Vec<u16>, Vec<Option<String>>) {
    let body = serde_json::to_vec(&json!({"inputs": [{"name": "input", "datatype": "FP32",
        "shape": [64, 512], "data": vec![0.01f32; 64 * 512]}]}))
    .unwrap();
    let answers = futures_util::future::join_all((0..n).map(|_| {
        let (c, u, b) = (
            reqwest::Client::new(),
            server.url(&format!("/v2/models/{model}/infer")),
            body.clone(),
        );
        async move {
            let r = c
                .post(u)
                .header("content-type", "application/json")
                .body(b)
                .send()
                .await
                .unwrap();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            (r.status().as_u16(), retry)
        }
    }))
    .await;
    let retry = answers
        .iter()
        .filter(|(s, _)| *s == 429)
        .map(|(_, r)| r.clone())
        .collect();
    (answers.into_iter().map(|(s, _)| s).collect(), retry)
}

/// `n` concurrent 64-row requests over gRPC: the codes of the refusals, and the successes.
async fn grpc_burst(server: &TestServer, model: &str, n: usize) -> (Vec<tonic::Code>, usize) {
    let answers = futures_util::future::join_all((0..n).map(|_| {
        let url = server.grpc_url();
        let model = model.to_owned();
        async move {
            let mut c = GrpcInferenceServiceClient::connect(url).await.unwrap();
            let req = pb::ModelInferRequest {
                model_name: model,
                inputs: vec![pb::model_infer_request::InferInputTensor {
                    name: "input".into(),
                    datatype: "FP32".into(),
                    shape: vec![64, 512],
                    ..Default::default()
                }],
                raw_input_contents: vec![vec![0u8; 64 * 512 * 4].into()],
                ..Default::default()
            };
            c.model_infer(req).await.map(|_| ()).map_err(|s| s.code())
        }
    }))
    .await;
    let ok = answers.iter().filter(|a| a.is_ok()).count();
    (answers.into_iter().filter_map(Result::err).collect(), ok)
}

/// `dense` twice: `limited` (one request in flight at most) and `short` (one instance, a queue
/// of one). `dense` takes milliseconds at 64 rows: one in flight (or one queued) is soon exceeded.
async fn admission_server() -> (tempfile::TempDir, TestServer) {
    let repo = common::repo([
        copy_model("dense")
            .named("limited")
            .config("max_concurrent_requests = 1"),
        copy_model("dense")
            .named("short")
            .config("instance_count = 1\nmax_queue_size = 1"),
    ]);
    let server = TestServer::builder().repo(repo.path()).start().await;
    (repo, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_concurrency_limit_refuses_http_at_once_with_retry_after() {
    let (_repo, server) = admission_server().await;
    let (statuses, retry) = http_burst(&server, "limited", 16).await;
    let http_refused = statuses.iter().filter(|&&s| s == 429).count();
    assert!(http_refused > 0, "no 429 among {statuses:?}");
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 429),
        "{statuses:?}"
    );
    assert!(
        retry.iter().all(|r| r.as_deref() == Some("1")),
        "Retry-After: {retry:?}"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_concurrency_limit_refuses_grpc_with_resource_exhausted() {
    let (_repo, server) = admission_server().await;
    let (codes, _) = grpc_burst(&server, "limited", 16).await;
    assert!(!codes.is_empty(), "no refusal over gRPC");
    assert!(
        codes.iter().all(|&c| c == tonic::Code::ResourceExhausted),
        "{codes:?}"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once() {
    let (_repo, server) = admission_server().await;
    let (statuses, _) = http_burst(&server, "short", 16).await;
    let queue_refused = statuses.iter().filter(|&&s| s == 429).count();
    assert!(queue_refused > 0, "no 429 among {statuses:?}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_is_counted_by_reason_and_protocol_and_in_statistics() {
    let (_repo, server) = admission_server().await;
    let (statuses, _) = http_burst(&server, "limited", 16).await;
    let http_refused = statuses.iter().filter(|&&s| s == 429).count();
    let http_ok = statuses.len() - http_refused;
    let (codes, grpc_ok) = grpc_burst(&server, "limited", 16).await;
    let grpc_refused = codes.len();
    let (statuses, _) = http_burst(&server, "short", 16).await;
    let queue_refused = statuses.iter().filter(|&&s| s == 429).count();
    // Not vacuous: there are refusals to count (their answers are the tests above).
    assert!(http_refused > 0 && grpc_refused > 0 && queue_refused > 0);

    let text = server.metrics_text().await;
    for (series, want) in [
        (
            r#"ferroserve_rejected_total{model="limited",reason="overloaded",version="1"}"#,
            http_refused + grpc_refused,
        ),
        (
            r#"ferroserve_requests_total{code="resource_exhausted",model="limited",protocol="http",version="1"}"#,
            http_refused,
        ),
        (
            r#"ferroserve_requests_total{code="resource_exhausted",model="limited",protocol="grpc",version="1"}"#,
            grpc_refused,
        ),
        (
            r#"ferroserve_requests_total{code="ok",model="limited",protocol="http",version="1"}"#,
            http_ok,
        ),
        (
            r#"ferroserve_requests_total{code="ok",model="limited",protocol="grpc",version="1"}"#,
            grpc_ok,
        ),
        (
            r#"ferroserve_rejected_total{model="short",reason="queue_full",version="1"}"#,
            queue_refused,
        ),
        (
            r#"ferroserve_requests_total{code="resource_exhausted",model="short",protocol="http",version="1"}"#,
            queue_refused,
        ),
        (
            r#"ferroserve_inflight_requests{model="limited",version="1"}"#,
            0,
        ),
    ] {
        assert_series(&text, series, want as f64);
    }
    let stats: Value = reqwest::get(server.url("/v2/models/limited/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let s = &stats["model_stats"][0]["inference_stats"];
    assert_eq!(s["success"]["count"], http_ok + grpc_ok, "{s}");
    assert_eq!(s["fail"]["count"], http_refused + grpc_refused, "{s}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_wide_limit_refuses_at_once() {
    let repo = common::repo([copy_model("dense").config("instance_count = 2")]);
    let server = TestServer::builder()
        .repo(repo.path())
        .configure(|c| c.max_concurrent_requests = 1)
        .start()
        .await;
    let (statuses, _) = http_burst(&server, "dense", 16).await;
    let refused = statuses.iter().filter(|&&s| s == 429).count();
    assert!(refused > 0, "no 429 among {statuses:?}");
    let text = server.metrics_text().await;
    assert_series(
        &text,
        r#"ferroserve_rejected_total{model="dense",reason="overloaded",version="1"}"#,
        refused as f64,
    );
    // Health and metadata are not inference: the limit does not apply to them.
    assert_eq!(
        reqwest::get(server.url("/v2/health/ready"))
            .await
            .unwrap()
            .status(),
        200
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_with_a_clear_message() {
    let repo = common::repo([copy_model("mlp")]);
    let server = TestServer::builder()
        .repo(repo.path())
        .configure(|c| c.max_request_bytes = 1000)
        .start()
        .await;
    let r = reqwest::Client::new()
        .post(server.url("/v2/models/mlp/infer"))
        .json(&mlp_json(4))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("too large: it exceeds the server's max_request_bytes (1000 bytes)"),
        "{body}"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_cut_off_by_the_header_timeout_while_others_are_served() {
    let repo = common::repo([copy_model("mlp")]);
    let server = TestServer::builder()
        .repo(repo.path())
        .configure(|c| c.header_read_timeout_secs = 1.0)
        .start()
        .await;

    // Headers one byte a second: 60 bytes would take a minute.
    let head = b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaa\r\n\r\n";
    let tcp = tokio::net::TcpStream::connect(server.http).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = tokio::spawn({
        let sent = sent.clone();
        async move {
            for b in head {
                if wr.write_all(&[*b]).await.is_err() {
                    return;
                }
                sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // The slowness under test: a deliberate pace, not a wait for the server.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        // Ends when the server closes the connection (EOF or reset).
        let _ = rd.read_to_end(&mut got).await;
        got
    });

    // Meanwhile, other clients are served.
    let c = reqwest::Client::new();
    for _ in 0..5 {
        let r = c
            .post(server.url("/v2/models/mlp/infer"))
            .json(&mlp_json(1))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    // A hang guard, not a timing assertion: the cut comes after about a second.
    let got = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the slow connection was never closed")
        .unwrap();
    let sent = sent.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        sent < head.len(),
        "closed only after the whole head was sent ({sent} bytes)"
    );
    assert!(
        !String::from_utf8_lossy(&got).contains(" 200 "),
        "the slow request was not answered: {}",
        String::from_utf8_lossy(&got)
    );
    writer.abort();
    server.stop().await.unwrap();
}

/// Runs the `ferroserve` binary on `repo` with JSON logs and `RUST_LOG=rust_log`, sends an HTTP
/// request with `id`, a bad one with `bad_id` and a gRPC one without an id; returns the log.
async fn log_of_three_requests(repo: &Path, rust_log: &str, id: &str, bad_id: &str) -> String {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ferroserve"))
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
        ])
        .args([
            "--metrics-port",
            "0",
            "--log-format",
            "json",
            "--drain-delay",
            "0",
        ])
        .arg("--model-repository")
        .arg(repo)
        .env("RUST_LOG", rust_log)
        // Logs are tested here, not admin: a token keeps it from writing the default token file.
        .env("FERROSERVE_ADMIN_TOKEN", "observability-test-token")
        .stdout(std::process::Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let field = |text: &str, key: &str| -> Option<String> {
        let line = text.lines().find(|l| l.contains("ferroserve serving"))?;
        let v: Value = serde_json::from_str(line).ok()?;
        Some(v["fields"][key].as_str()?.to_owned())
    };
    let announced = poll_until(
        Duration::from_secs(30),
        "the server never announced its addresses",
        || async { std::fs::read_to_string(log.path()).unwrap() },
        |text| field(text, "http_addr").is_some() && field(text, "grpc_addr").is_some(),
    )
    .await;
    let (http, grpc) = (
        field(&announced, "http_addr").unwrap(),
        field(&announced, "grpc_addr").unwrap(),
    );
    let c = reqwest::Client::new();
    let url = format!("http://{http}/v2/models/mlp/infer");
    let mut ok = mlp_json(1);
    ok["id"] = json!(id);
    assert_eq!(c.post(&url).json(&ok).send().await.unwrap().status(), 200);
    let bad = json!({"id": bad_id, "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]});
    assert_eq!(c.post(&url).json(&bad).send().await.unwrap().status(), 400);
    let mut g = GrpcInferenceServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    g.model_infer(mlp_grpc("mlp", "")).await.unwrap();
    // SAFETY: plain signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    child.wait().unwrap();
    std::fs::read_to_string(log.path()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_log_lines_carry_the_request_id() {
    let repo = common::repo([copy_model("mlp")]);
    let debug = log_of_three_requests(repo.path(), "info,ferroserve=debug", "req-1", "req-2").await;
    let answered: Vec<Value> = debug
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "answered")
        .collect();
    let ids: Vec<&str> = answered
        .iter()
        .map(|v| {
            assert_eq!(v["span"]["name"], "request", "{v}");
            assert_eq!(v["span"]["model"], "mlp", "{v}");
            v["span"]["id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 3, "one line per request at debug: {debug}");
    assert_eq!(&ids[..2], ["req-1", "req-2"], "{debug}");
    assert!(
        ids[2].starts_with('~'),
        "a generated id for the request without one: {ids:?}"
    );
    assert_eq!(answered[1]["fields"]["code"], "invalid_argument");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_load_is_logged_with_its_duration() {
    let repo = common::repo([copy_model("mlp")]);
    let debug = log_of_three_requests(repo.path(), "info,ferroserve=debug", "req-1", "req-2").await;
    let load = debug
        .lines()
        .find(|l| l.contains("model version ready"))
        .expect("a model load line");
    assert!(load.contains("\"load_ms\":"), "{load}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_logs_nothing_per_request() {
    let repo = common::repo([copy_model("mlp")]);
    let info = log_of_three_requests(repo.path(), "info", "req-3", "req-4").await;
    assert!(info.contains("ferroserve serving"), "{info}");
    assert!(
        !info.contains("req-3") && !info.contains("req-4") && !info.contains("\"request\""),
        "nothing per request at info: {info}"
    );
}
