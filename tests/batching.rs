//! Dynamic batching through a real server: responses equal the unbatched result bit for bit
//! under random arrivals and sizes; deadlines are answered and not computed.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{bundled_models, test_config, TestServer};
use ferroserve::backend::{self, LoadOptions};
use ferroserve::config::{BackendKind, ServerConfig};
use ferroserve::proto::inference as pb;
use ferroserve::tensor::Tensor;
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use serde_json::{json, Value};

/// A repository holding `model` from the bundled ones with `extra` appended to its config.
fn repo_with_config(model: &str, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = bundled_models().join(model);
    let dst = dir.path().join(model);
    std::fs::create_dir_all(dst.join("1")).unwrap();
    std::fs::copy(src.join("1/model.onnx"), dst.join("1/model.onnx")).unwrap();
    let cfg = std::fs::read_to_string(src.join("config.toml")).unwrap();
    std::fs::write(dst.join("config.toml"), format!("{cfg}\n{extra}\n")).unwrap();
    dir
}

async fn start(repo: &Path) -> TestServer {
    TestServer::start_with(
        ServerConfig {
            model_repository: repo.to_path_buf(),
            ..test_config()
        },
        true,
    )
    .await
}

/// A gRPC request for `mlp` with `rows` rows of `values` as raw contents.
fn mlp_request(rows: usize, values: &[f32]) -> pb::ModelInferRequest {
    pb::ModelInferRequest {
        model_name: "mlp".into(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![rows as i64, 64],
            ..Default::default()
        }],
        raw_input_contents: vec![values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()
            .into()],
        ..Default::default()
    }
}

/// A small deterministic generator (xorshift), so failures replay.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn f32(&mut self) -> f32 {
        (self.below(2_000_001) as f32 - 1_000_000.0) / 250_000.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_responses_equal_unbatched_results_bit_for_bit() {
    let repo = repo_with_config(
        "mlp",
        "[dynamic_batching]\nmax_queue_delay_us = 2000\npreferred_batch_sizes = [16, 32]",
    );
    let server = start(repo.path()).await;

    const TASKS: u64 = 8;
    const PER_TASK: u64 = 40;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let url = server.grpc_url();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t + 1));
            let mut client = GrpcInferenceServiceClient::connect(url).await.unwrap();
            let mut sent = Vec::new();
            for _ in 0..PER_TASK {
                let rows = 1 + rng.below(6) as usize;
                let values: Vec<f32> = (0..rows * 64).map(|_| rng.f32()).collect();
                let req = mlp_request(rows, &values);
                let resp = client.model_infer(req).await.unwrap().into_inner();
                assert_eq!(resp.outputs[0].shape, [rows as i64, 10]);
                sent.push((rows, values, resp.raw_output_contents[0].clone()));
                // Random gaps make arrivals bursty: some requests meet companions, some not.
                if rng.below(3) == 0 {
                    tokio::time::sleep(Duration::from_micros(rng.below(3000))).await;
                }
            }
            sent
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.extend(t.await.unwrap());
    }

    // The unbatched result: the same backend, each request's rows alone.
    let file = bundled_models().join("mlp/1/model.onnx");
    let options = LoadOptions {
        max_batch_size: 64,
        instance_count: 1,
        row_invariant: true,
        ..LoadOptions::default()
    };
    let mut alone = backend::load(BackendKind::Tract, &file, &options).unwrap();
    for (i, (rows, values, got)) in results.iter().enumerate() {
        let input = Tensor::from_values(vec![*rows, 64], values).unwrap();
        let want = alone.instances[0].infer(&[input]).unwrap();
        assert_eq!(
            got,
            want[0].data(),
            "request {i} ({rows} rows) differs from its unbatched result"
        );
    }

    // Not vacuous: requests really shared batches.
    let stats: Value = reqwest::get(server.url("/v2/models/mlp/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let s = &stats["model_stats"][0];
    let requests = s["inference_stats"]["success"]["count"].as_u64().unwrap();
    let executions = s["execution_count"].as_u64().unwrap();
    assert_eq!(requests, TASKS * PER_TASK);
    assert!(
        executions < requests * 3 / 4,
        "{executions} backend calls for {requests} requests: little batching"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_expired_timeout_is_answered_504_and_not_computed() {
    let repo = repo_with_config("mlp", "");
    let server = start(repo.path()).await;
    let c = reqwest::Client::new();
    let req = |timeout_us: u64| {
        json!({"parameters": {"timeout": timeout_us},
               "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": vec![0.25f32; 64]}]})
    };
    let r = c
        .post(server.url("/v2/models/mlp/infer"))
        .json(&req(1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("deadline"),
        "{body}"
    );
    let ok = c
        .post(server.url("/v2/models/mlp/infer"))
        .json(&req(10_000_000))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200, "a generous timeout is met");
    let stats: Value = c
        .get(server.url("/v2/models/mlp/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats["model_stats"][0]["inference_count"], 1,
        "the expired request never reached the backend"
    );
    let text = server.metrics_text().await;
    assert!(
        text.contains(r#"{code="deadline_exceeded",model="mlp",protocol="http",version="1"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_grpc_deadline_that_passes_is_deadline_exceeded() {
    let repo = repo_with_config("mlp", "");
    let server = start(repo.path()).await;
    let mut client = GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let mut body = mlp_request(1, &[0.5; 64]);
    body.parameters = [(
        "timeout".to_string(),
        pb::InferParameter {
            parameter_choice: Some(pb::infer_parameter::ParameterChoice::Int64Param(1)),
        },
    )]
    .into();
    let mut req = tonic::Request::new(body);
    req.set_timeout(Duration::from_secs(5));
    let err = client.model_infer(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_and_resource_exhausted_at_once() {
    // `dense` takes milliseconds at 64 rows: one instance and a queue of 2 overflow quickly.
    let repo = repo_with_config("dense", "instance_count = 1\nmax_queue_size = 2");
    let server = start(repo.path()).await;
    let body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [64, 512], "data": vec![0.01f32; 64 * 512]}]});
    let body = serde_json::to_vec(&body).unwrap();
    let http = futures_util::future::join_all((0..24).map(|_| {
        let (c, u, b) = (
            reqwest::Client::new(),
            server.url("/v2/models/dense/infer"),
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
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    }))
    .await;
    let refused: Vec<_> = http.iter().filter(|(s, _)| *s == 429).collect();
    assert!(
        !refused.is_empty(),
        "no 429 among {:?}",
        http.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert!(refused[0].1.contains("overloaded"), "{}", refused[0].1);
    assert!(
        http.iter().all(|(s, _)| *s == 200 || *s == 429),
        "only successes and refusals"
    );
    assert!(
        http.iter().any(|(s, _)| *s == 200),
        "the queue still serves"
    );

    let grpc = futures_util::future::join_all((0..24).map(|_| {
        let url = server.grpc_url();
        async move {
            let mut c = GrpcInferenceServiceClient::connect(url).await.unwrap();
            let req = pb::ModelInferRequest {
                model_name: "dense".into(),
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
    assert!(
        grpc.contains(&Err(tonic::Code::ResourceExhausted)),
        "{grpc:?}"
    );
    assert!(
        grpc.iter()
            .all(|r| r.is_ok() || *r == Err(tonic::Code::ResourceExhausted)),
        "{grpc:?}"
    );
    let text = server.metrics_text().await;
    assert!(
        text.contains(r#"code="resource_exhausted",model="dense",protocol="grpc""#),
        "{text}"
    );
}

/// `[dynamic_batching] row_invariant = false` reaches the backend: a lone row then runs as itself
/// (tract's single-row kernel) instead of padded to two. On `mlp` the two kernels round
/// differently, so the served bits tell which one ran: by default the row's bits inside a batch,
/// with the knob off the bits of the row computed alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_invariant_false_runs_lone_rows_unpadded() {
    let row: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
    let file = bundled_models().join("mlp/1/model.onnx");
    let options = LoadOptions {
        max_batch_size: 64,
        ..LoadOptions::default()
    };
    let mut plain = backend::load(BackendKind::Tract, &file, &options).unwrap();
    let one = Tensor::from_values(vec![1, 64], &row).unwrap();
    let alone = plain.instances[0].infer(&[one]).unwrap()[0].data().clone();
    let pair: Vec<f32> = row.iter().chain(&row).copied().collect();
    let two = Tensor::from_values(vec![2, 64], &pair).unwrap();
    let batched = plain.instances[0].infer(&[two]).unwrap()[0]
        .data()
        .slice(0..40);
    assert_ne!(
        alone, batched,
        "precondition: tract's single-row kernel rounds mlp differently from a batch"
    );

    for (knob, want) in [("", &batched), ("row_invariant = false", &alone)] {
        let repo = repo_with_config("mlp", &format!("[dynamic_batching]\n{knob}"));
        let server = start(repo.path()).await;
        let mut client = GrpcInferenceServiceClient::connect(server.grpc_url())
            .await
            .unwrap();
        let resp = client
            .model_infer(mlp_request(1, &row))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            &resp.raw_output_contents[0], want,
            "[dynamic_batching] {knob:?}: a lone row's bits"
        );
        server.stop().await.unwrap();
    }
}
