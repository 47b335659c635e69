//! Traffic policy end to end: weighted splits, pinning, sticky keys, blue/green switches, shadow
//! traffic, progressive rollouts with automatic rollback, over HTTP, gRPC and the CLI.
//!
//! The repositories hold `mlp` twice: version 1 is the bundled graph, version 2 the same graph
//! with perturbed weights (so an answer shows which version computed it), or the `iris` graph
//! (a candidate that fails every `mlp` request).

mod common;

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use admin_pb::traffic_admin_client::TrafficAdminClient;
use common::{bundled_models, test_config, TestServer};
use ferroserve::config::{ModelControlMode, ServerConfig};
use ferroserve::proto::admin as admin_pb;
use ferroserve::proto::inference as pb;
use ferroserve::routing::traffic;
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use serde_json::{json, Value};

const TOKEN: &str = "test-admin-token-0123456789";

/// What version 2 holds.
#[derive(Clone, Copy)]
enum V2 {
    /// mlp with perturbed weights: same signature, different answers.
    Perturbed,
    /// the iris graph: 4 inputs instead of 64, so every mlp request fails on it.
    Failing,
    /// mlp's signature, ~200 M multiply-adds a row: two orders of magnitude slower than mlp
    /// (about 10 ms against 0.1 ms). The model's batch size is 1, so warm-up runs one row.
    Slow,
}

/// `mlp` versions 1 and 2, both served (`version_policy = "all"`), plus `extra` config lines.
fn repo(v2: V2, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mlp = dir.path().join("mlp");
    for v in ["1", "2"] {
        std::fs::create_dir_all(mlp.join(v)).unwrap();
    }
    let original = std::fs::read(bundled_models().join("mlp/1/model.onnx")).unwrap();
    std::fs::write(mlp.join("1/model.onnx"), &original).unwrap();
    match v2 {
        V2::Perturbed => std::fs::write(mlp.join("2/model.onnx"), perturbed(original)).unwrap(),
        V2::Failing => {
            std::fs::copy(
                bundled_models().join("iris/1/model.onnx"),
                mlp.join("2/model.onnx"),
            )
            .unwrap();
        }
        V2::Slow => std::fs::write(mlp.join("2/model.onnx"), slow_mlp()).unwrap(),
    }
    let max_batch = if matches!(v2, V2::Slow) { 1 } else { 64 };
    std::fs::write(
        mlp.join("config.toml"),
        format!("max_batch_size = {max_batch}\nversion_policy = \"all\"\n{extra}"),
    )
    .unwrap();
    dir
}

/// An ONNX graph with mlp's signature (`input` FP32 [N,64] -> `output` FP32 [N,10]) that runs
/// 200 MatMuls of width 1024 in a chain: input -> 1024 -> (1024x1024, shared) x 200 -> 10.
fn slow_mlp() -> Vec<u8> {
    use pb::tensor_shape_proto::{dimension::Value as Dim, Dimension};
    use prost::Message;
    use tract_onnx::pb;
    const WIDTH: i64 = 1024;
    const LAYERS: usize = 200;
    let value_info = |name: &str, last: i64| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: 1, // FLOAT
                shape: Some(pb::TensorShapeProto {
                    dim: [Dim::DimParam("N".into()), Dim::DimValue(last)]
                        .into_iter()
                        .map(|v| Dimension {
                            value: Some(v),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    // Varied, bounded weights (rows sum to about 0.5): activations stay finite.
    let weight = |name: &str, rows: i64, cols: i64| pb::TensorProto {
        name: name.into(),
        dims: vec![rows, cols],
        data_type: 1,
        raw_data: (0..rows * cols)
            .flat_map(|i| {
                (((i * 31 + i / cols * 17) % 13) as f32 / (6.0 * 13.0 * rows as f32) * 6.0)
                    .to_le_bytes()
            })
            .collect(),
        ..Default::default()
    };
    let matmul = |a: &str, b: &str, out: &str| pb::NodeProto {
        input: vec![a.into(), b.into()],
        output: vec![out.into()],
        op_type: "MatMul".into(),
        ..Default::default()
    };
    let mut node = vec![matmul("input", "w_in", "h0")];
    for i in 1..=LAYERS {
        node.push(matmul(&format!("h{}", i - 1), "w", &format!("h{i}")));
    }
    node.push(matmul(&format!("h{LAYERS}"), "w_out", "output"));
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 15,
        }],
        graph: Some(pb::GraphProto {
            name: "slow".into(),
            node,
            initializer: vec![
                weight("w_in", 64, WIDTH),
                weight("w", WIDTH, WIDTH),
                weight("w_out", WIDTH, 10),
            ],
            input: vec![value_info("input", 64)],
            output: vec![value_info("output", 10)],
            ..Default::default()
        }),
        ..Default::default()
    };
    model.encode_to_vec()
}

/// Flips one low exponent bit in the bytes of `fc1.weight`'s data (64 KiB of floats in the
/// middle of the file): weights scale by 4 or 1/4, stay finite, and the graph still parses.
fn perturbed(mut model: Vec<u8>) -> Vec<u8> {
    let name = b"fc1.weight";
    let at = model
        .windows(name.len())
        .rposition(|w| w == name)
        .expect("fc1.weight in the graph");
    for b in &mut model[at + 2_000..at + 40_000] {
        *b ^= 0x01;
    }
    model
}

async fn start(root: &Path, mode: ModelControlMode) -> TestServer {
    let config = ServerConfig {
        model_repository: root.to_path_buf(),
        model_control_mode: mode,
        load_models: vec!["mlp".into()],
        admin_token: Some(TOKEN.into()),
        repository_poll_secs: 0.2,
        ..test_config()
    };
    TestServer::start_with(config, true).await
}

fn input_row() -> Vec<f32> {
    common::reference("mlp").inputs[0].f32s()[..64].to_vec()
}

fn body() -> Value {
    json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": input_row()}]})
}

/// (served version, logits) or (status, error body).
async fn infer(
    c: &reqwest::Client,
    server: &TestServer,
    version: Option<&str>,
    key: Option<&str>,
) -> Result<(String, Vec<f64>), (u16, String)> {
    let path = match version {
        Some(v) => format!("/v2/models/mlp/versions/{v}/infer"),
        None => "/v2/models/mlp/infer".into(),
    };
    let mut req = c.post(server.url(&path)).json(&body());
    if let Some(k) = key {
        req = req.header("x-route-key", k);
    }
    let r = req.send().await.map_err(|e| (0, e.to_string()))?;
    let status = r.status().as_u16();
    if status != 200 {
        return Err((status, r.text().await.unwrap_or_default()));
    }
    let v: Value = r.json().await.unwrap();
    let logits = v["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    Ok((v["model_version"].as_str().unwrap().to_owned(), logits))
}

fn grpc_request(key: Option<&str>) -> tonic::Request<pb::ModelInferRequest> {
    let raw: Vec<u8> = input_row().iter().flat_map(|f| f.to_le_bytes()).collect();
    let mut req = tonic::Request::new(pb::ModelInferRequest {
        model_name: "mlp".into(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 64],
            ..Default::default()
        }],
        raw_input_contents: vec![raw.into()],
        ..Default::default()
    });
    if let Some(k) = key {
        req.metadata_mut().insert("x-route-key", k.parse().unwrap());
    }
    req
}

fn grpc_logits(resp: &pb::ModelInferResponse) -> Vec<f64> {
    resp.raw_output_contents[0]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
        .collect()
}

async fn send(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, server.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn put_traffic(server: &TestServer, policy: Value) -> (u16, Value) {
    put_traffic_as(server, policy, Some(TOKEN)).await
}

/// PUT a policy with `token` (or none) as the bearer.
async fn put_traffic_as(server: &TestServer, policy: Value, token: Option<&str>) -> (u16, Value) {
    send(
        server,
        reqwest::Method::PUT,
        "/v2/models/mlp/traffic",
        Some(policy),
        token,
    )
    .await
}

/// mlp's traffic policy as GET /v2/models/mlp/traffic answers it.
async fn traffic_policy(server: &TestServer) -> Value {
    send(
        server,
        reqwest::Method::GET,
        "/v2/models/mlp/traffic",
        None,
        None,
    )
    .await
    .1
}

/// POST a rollout of mlp with the admin token.
async fn start_rollout(server: &TestServer, spec: Value) -> (u16, Value) {
    send(
        server,
        reqwest::Method::POST,
        "/v2/models/mlp/rollout",
        Some(spec),
        Some(TOKEN),
    )
    .await
}

/// `method` on `path`, without a body, with the admin token.
async fn as_admin(server: &TestServer, method: reqwest::Method, path: &str) -> (u16, Value) {
    send(server, method, path, None, Some(TOKEN)).await
}

/// GET mlp's rollout status.
async fn rollout_status(server: &TestServer) -> (u16, Value) {
    send(
        server,
        reqwest::Method::GET,
        "/v2/models/mlp/rollout",
        None,
        None,
    )
    .await
}

/// Calls `probe` every 50 ms until `done` holds for what it returns, and returns that; fails
/// with "{failure}: {last value}" once `limit` has passed (a bound against hanging, not a
/// speed requirement).
async fn poll_until<T: Display, F: Future<Output = T>>(
    limit: Duration,
    failure: &str,
    mut probe: impl FnMut() -> F,
    mut done: impl FnMut(&T) -> bool,
) -> T {
    let t0 = Instant::now();
    loop {
        let value = probe().await;
        if done(&value) {
            return value;
        }
        assert!(t0.elapsed() < limit, "{failure}: {value}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `n` unpinned, unkeyed requests and asserts that `version` serves each of them.
async fn assert_only_version_serves(
    c: &reqwest::Client,
    server: &TestServer,
    version: &str,
    n: usize,
) {
    for i in 0..n {
        assert_eq!(
            infer(c, server, None, None).await.unwrap().0,
            version,
            "request {i} of {n}"
        );
    }
}

/// The logits each version answers for `input_row()`, asked by pinning.
async fn answers_by_version(
    c: &reqwest::Client,
    server: &TestServer,
) -> BTreeMap<String, Vec<f64>> {
    let mut m = BTreeMap::new();
    for v in ["1", "2"] {
        let (served, logits) = infer(c, server, Some(v), None).await.unwrap();
        assert_eq!(served, v, "a pinned request is served by its version");
        m.insert(v.to_owned(), logits);
    }
    assert_ne!(m["1"], m["2"], "the two versions must answer differently");
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_90_10_split_holds_within_five_sigma_and_pinned_requests_ignore_it() {
    let dir = repo(V2::Perturbed, "");
    let server = Arc::new(start(dir.path(), ModelControlMode::None).await);
    let c = reqwest::Client::new();
    let answers = Arc::new(answers_by_version(&c, &server).await);
    let (status, body) = put_traffic(&server, json!({"weights": {"1": 90, "2": 10}})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["weights"], json!({"1": 90, "2": 10}));

    const N: usize = 20_000;
    const CLIENTS: usize = 8;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (server, answers) = (server.clone(), answers.clone());
            tokio::spawn(async move {
                let c = reqwest::Client::new();
                let mut canary = 0usize;
                for _ in 0..N / CLIENTS {
                    let (v, logits) = infer(&c, &server, None, None).await.unwrap();
                    // model_version names the version whose answer this is.
                    assert_eq!(logits, answers[&v], "response labelled {v}");
                    canary += usize::from(v == "2");
                }
                canary
            })
        })
        .collect();
    let mut canary = 0;
    for t in tasks {
        canary += t.await.unwrap();
    }
    // Binomial(20000, 0.1): mean 2000, sd 42.4.
    let sd = (N as f64 * 0.1 * 0.9).sqrt();
    assert!(
        (canary as f64 - 2000.0).abs() <= 5.0 * sd,
        "{canary} of {N} requests went to the 10% version"
    );
    for v in ["1", "2"] {
        for _ in 0..100 {
            let (served, logits) = infer(&c, &server, Some(v), None).await.unwrap();
            assert_eq!((served.as_str(), &logits), (v, &answers[v]));
        }
    }
    // gRPC: the same split applies and model_version names the version that answered.
    let mut grpc = GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let mut seen = BTreeMap::new();
    for _ in 0..400 {
        let resp = grpc
            .model_infer(grpc_request(None))
            .await
            .unwrap()
            .into_inner();
        let logits = grpc_logits(&resp);
        for (a, b) in logits.iter().zip(&answers[&resp.model_version]) {
            assert!(
                (a - b).abs() < 1e-6,
                "gRPC response labelled {}",
                resp.model_version
            );
        }
        *seen.entry(resp.model_version).or_insert(0) += 1;
    }
    assert!(seen.get("2").is_some_and(|&n| n > 0 && n < 100), "{seen:?}");
    let text = server.metrics_text().await;
    for reason in ["weighted", "pinned"] {
        assert!(
            text.contains(&format!(
                "ferroserve_routed_requests_total{{model=\"mlp\",reason=\"{reason}\",version=\"2\"}}"
            )),
            "{reason}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_keys_stay_put_and_a_growing_canary_only_takes_keys() {
    let dir = repo(V2::Perturbed, "");
    let server = start(dir.path(), ModelControlMode::None).await;
    let c = reqwest::Client::new();
    let keys: Vec<String> = (0..300).map(|i| format!("customer-{i}")).collect();
    let expected = |weights: &[(u64, u32)], key: &str| {
        traffic::pick(weights.iter().copied(), Some(key.as_bytes()))
            .unwrap()
            .to_string()
    };
    put_traffic(&server, json!({"weights": {"1": 90, "2": 10}})).await;
    let mut grpc = GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let mut before = BTreeMap::new();
    for k in &keys {
        let (v, _) = infer(&c, &server, None, Some(k)).await.unwrap();
        let (again, _) = infer(&c, &server, None, Some(k)).await.unwrap();
        let over_grpc = grpc
            .model_infer(grpc_request(Some(k)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(v, again, "key {k} moved while the weights stayed");
        assert_eq!(v, over_grpc.model_version, "key {k}: HTTP and gRPC agree");
        assert_eq!(
            v,
            expected(&[(1, 90), (2, 10)], k),
            "key {k}: the documented hash"
        );
        before.insert(k.clone(), v);
    }
    put_traffic(&server, json!({"weights": {"1": 70, "2": 30}})).await;
    let mut moved = 0;
    for k in &keys {
        let (v, _) = infer(&c, &server, None, Some(k)).await.unwrap();
        assert!(
            !(before[k] == "2" && v == "1"),
            "key {k} moved from the canary back to stable"
        );
        assert_eq!(v, expected(&[(1, 70), (2, 30)], k));
        moved += usize::from(before[k] != v);
    }
    // About 20% of 300 keys move from 1 to 2; none is astronomically unlikely.
    assert!(moved > 0, "growing the canary moved no key");
    let text = server.metrics_text().await;
    assert!(text.contains("reason=\"sticky\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blue_green_switch_under_load_fails_nothing_and_then_only_green_serves() {
    let dir = repo(
        V2::Perturbed,
        "[traffic]\nweights = { \"1\" = 100, \"2\" = 0 }\n",
    );
    let server = Arc::new(start(dir.path(), ModelControlMode::None).await);
    let policy = traffic_policy(&server).await;
    assert_eq!(
        policy,
        json!({"weights": {"1": 100, "2": 0}, "shadow": null, "rollout": null}),
        "the config's [traffic] applies at load"
    );
    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (server, done) = (server.clone(), done.clone());
            tokio::spawn(async move {
                let c = reqwest::Client::new();
                let mut seen = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    seen.push((sent, infer(&c, &server, None, None).await));
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (status, body) = send(
        &server,
        reqwest::Method::POST,
        "/v2/models/mlp/traffic/promote",
        Some(json!({"version": "2"})),
        Some(TOKEN),
    )
    .await;
    let switched = Instant::now();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["weights"], json!({"1": 0, "2": 100}));
    tokio::time::sleep(Duration::from_millis(700)).await;
    done.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for c in clients {
        all.extend(c.await.unwrap());
    }
    let failed: Vec<_> = all.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    let version = |r: &Result<(String, Vec<f64>), (u16, String)>| r.as_ref().unwrap().0.clone();
    assert!(
        all.iter().any(|(_, r)| version(r) == "1"),
        "blue served before the switch"
    );
    let after: Vec<String> = all
        .iter()
        .filter(|(sent, _)| *sent > switched)
        .map(|(_, r)| version(r))
        .collect();
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|v| v == "2"),
        "after the switch only green serves"
    );
}

#[tokio::test]
async fn bad_policies_are_refused_with_the_reason() {
    let dir = repo(V2::Perturbed, "");
    let server = start(dir.path(), ModelControlMode::None).await;
    for (policy, want) in [
        (json!({"weights": {"3": 10}}), "not loaded"),
        (json!({"weights": {"1": -5}}), "weight -5"),
        (json!({"weights": {"1": 0, "2": 0}}), "all weights are zero"),
        (json!({"weights": {"1": 1.5}}), "non-negative integers"),
        (json!({"weights": {"one": 1}}), "not a positive integer"),
        (
            json!({"weights": {"1": 1}, "shadow": {"version": "2", "percent": 150}}),
            "outside 0..=100",
        ),
        (json!({"weights": {"1": 1}, "split": 3}), "unknown field"),
        (json!({"shadow": null}), "weights is required"),
    ] {
        let (status, body) = put_traffic(&server, policy.clone()).await;
        assert_eq!(status, 400, "{policy}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(want),
            "{policy}: {body}"
        );
    }
    let r = reqwest::Client::new()
        .put(server.url("/v2/models/mlp/traffic"))
        .bearer_auth(TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("malformed"));
    for token in [None, Some("wrong-token-0123456789")] {
        let (status, body) = put_traffic_as(&server, json!({"weights": {"1": 1}}), token).await;
        assert_eq!(status, 401, "token {token:?}: {body}");
    }
    let (status, _) = send(
        &server,
        reqwest::Method::GET,
        "/v2/models/nope/traffic",
        None,
        None,
    )
    .await;
    assert_eq!(status, 404);
    // Nothing was applied: no policy, the highest version serves.
    let policy = traffic_policy(&server).await;
    assert_eq!(
        policy,
        json!({"weights": {}, "shadow": null, "rollout": null})
    );
    let c = reqwest::Client::new();
    assert_eq!(infer(&c, &server, None, None).await.unwrap().0, "2");

    // gRPC: the same checks, the same codes.
    let mut admin = TrafficAdminClient::connect(server.grpc_url())
        .await
        .unwrap();
    let set = |weights: &[(&str, i64)], token: Option<&str>| {
        let mut req = tonic::Request::new(admin_pb::SetTrafficRequest {
            model: "mlp".into(),
            weights: weights.iter().map(|(v, w)| (v.to_string(), *w)).collect(),
            shadow: None,
        });
        if let Some(t) = token {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        req
    };
    let err = admin
        .set_traffic(set(&[("1", -1)], Some(TOKEN)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("weight -1"), "{err:?}");
    let err = admin.set_traffic(set(&[("1", 1)], None)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let ok = admin
        .set_traffic(set(&[("1", 3), ("2", 1)], Some(TOKEN)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.weights.get("1"), Some(&3));
    let got = admin
        .get_traffic(admin_pb::GetTrafficRequest {
            model: "mlp".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.weights, ok.weights);
    let err = admin
        .get_rollout(admin_pb::GetRolloutRequest {
            model: "mlp".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unloaded_weighted_version_hands_its_share_to_the_others() {
    let dir = repo(V2::Perturbed, "");
    let server = start(dir.path(), ModelControlMode::Poll).await;
    put_traffic(&server, json!({"weights": {"1": 50, "2": 50}})).await;
    let c = reqwest::Client::new();
    std::fs::remove_dir_all(dir.path().join("mlp/2")).unwrap();
    // Requests keep succeeding while the poller unloads version 2; then only 1 serves (50 in a
    // row at 50/50 would otherwise happen with probability 2^-50).
    let mut only_one = 0;
    let t0 = Instant::now();
    while only_one < 50 {
        let (v, _) = infer(&c, &server, None, None)
            .await
            .expect("no request fails");
        only_one = if v == "1" { only_one + 1 } else { 0 };
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "version 2 never left"
        );
    }
    assert_only_version_serves(&c, &server, "1", 100).await;
    // The policy is kept as set: version 2 serves its share again if it comes back.
    let policy = traffic_policy(&server).await;
    assert_eq!(policy["weights"], json!({"1": 50, "2": 50}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_traffic_section_applies_without_reloading_versions() {
    let dir = repo(V2::Perturbed, "");
    let server = start(dir.path(), ModelControlMode::Poll).await;
    let c = reqwest::Client::new();
    for _ in 0..5 {
        infer(&c, &server, Some("1"), None).await.unwrap();
    }
    let config = dir.path().join("mlp/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}[traffic]\nweights = {{ \"1\" = 0, \"2\" = 100 }}\n"),
    )
    .unwrap();
    poll_until(
        Duration::from_secs(30),
        "the poller never applied it",
        || traffic_policy(&server),
        |policy| policy["weights"] == json!({"1": 0, "2": 100}),
    )
    .await;
    assert_only_version_serves(&c, &server, "2", 20).await;
    // Version 1 kept its statistics: it was not reloaded for a policy change.
    let stats: Value = c
        .get(server.url("/v2/models/mlp/versions/1/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["model_stats"][0]["inference_count"], 5, "{stats}");
}

async fn rollout_until_done(server: &TestServer) -> Value {
    poll_until(
        Duration::from_secs(60),
        "rollout still running",
        || async {
            let (status, r) = rollout_status(server).await;
            assert_eq!(status, 200, "{r}");
            r
        },
        |r| r["state"] != "running",
    )
    .await
}

/// Load from 4 clients until stopped.
struct Load {
    done: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<Vec<(String, bool)>>>,
}

impl Load {
    fn start(server: &Arc<TestServer>) -> Load {
        let done = Arc::new(AtomicBool::new(false));
        let clients = (0..4)
            .map(|_| {
                let (server, done) = (server.clone(), done.clone());
                tokio::spawn(async move {
                    let c = reqwest::Client::new();
                    let mut seen = Vec::new();
                    while !done.load(Ordering::Relaxed) {
                        match infer(&c, &server, None, None).await {
                            Ok((v, _)) => seen.push((v, true)),
                            Err((status, _)) => seen.push((status.to_string(), false)),
                        }
                    }
                    seen
                })
            })
            .collect();
        Load { done, clients }
    }

    /// Stops the clients; returns (version, ok) per response.
    async fn stop(self) -> Vec<(String, bool)> {
        self.done.store(true, Ordering::Relaxed);
        let mut responses = Vec::new();
        for c in self.clients {
            responses.extend(c.await.unwrap());
        }
        responses
    }
}

/// The rollout ended rolled back at its first step, for `reason`.
#[track_caller]
fn assert_rolled_back_at_first_step(end: &Value, reason: &str) {
    assert_eq!(end["state"], "rolled_back", "{end}");
    assert_eq!(end["step"], 1, "caught at the first step: {end}");
    assert!(end["reason"].as_str().unwrap().contains(reason), "{end}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_candidate_is_rolled_back_within_one_step() {
    let dir = repo(V2::Failing, "");
    let server = Arc::new(start(dir.path(), ModelControlMode::None).await);
    put_traffic(&server, json!({"weights": {"1": 100}})).await;
    let load = Load::start(&server);
    let (status, started) = start_rollout(
        &server,
        json!({"candidate": "2", "steps": [10, 50, 100], "step_duration_s": 1,
                "max_error_rate_increase": 0.01, "max_p99_ratio": 1.5, "min_requests": 20}),
    )
    .await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(
        (started["state"].as_str(), started["stable"].as_str()),
        (Some("running"), Some("1"))
    );
    let end = rollout_until_done(&server).await;
    load.stop().await;
    assert_rolled_back_at_first_step(&end, "error rate");
    assert!(
        end["window"]["candidate"]["errors"].as_u64().unwrap() >= 1,
        "{end}"
    );
    let policy = traffic_policy(&server).await;
    assert_eq!(policy["weights"], json!({"1": 100, "2": 0}));
    assert_eq!(policy["rollout"]["state"], "rolled_back");
    let c = reqwest::Client::new();
    assert_only_version_serves(&c, &server, "1", 50).await;
    let text = server.metrics_text().await;
    assert!(
        text.contains(r#"ferroserve_rollout_state{model="mlp",state="rolled_back"} 1"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_much_slower_candidate_is_rolled_back_within_one_step() {
    let dir = repo(V2::Slow, "[traffic]\nweights = { \"1\" = 100 }\n");
    let server = Arc::new(start(dir.path(), ModelControlMode::None).await);
    let c = reqwest::Client::new();
    assert_eq!(
        infer(&c, &server, Some("2"), None).await.unwrap().0,
        "2",
        "the slow graph serves"
    );
    let load = Load::start(&server);
    let (status, started) = start_rollout(
        &server,
        json!({"candidate": "2", "steps": [10, 50, 100], "step_duration_s": 2,
                "max_p99_ratio": 1.5, "min_requests": 10}),
    )
    .await;
    assert_eq!(status, 200, "{started}");
    let end = rollout_until_done(&server).await;
    let responses = load.stop().await;
    assert!(responses.iter().all(|(_, ok)| *ok), "slow, not failing");
    assert_rolled_back_at_first_step(&end, "p99 latency");
    let w = &end["window"];
    assert!(
        w["candidate"]["p99_ms"].as_f64().unwrap() > 1.5 * w["stable"]["p99_ms"].as_f64().unwrap(),
        "{end}"
    );
    let policy = traffic_policy(&server).await;
    assert_eq!(policy["weights"], json!({"1": 100, "2": 0}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_candidate_is_promoted_after_its_last_step() {
    let dir = repo(V2::Perturbed, "");
    let server = Arc::new(start(dir.path(), ModelControlMode::Explicit).await);
    let load = Load::start(&server);
    // A loose latency bound: both versions are the same graph, and this machine is shared.
    let (status, started) = start_rollout(
        &server,
        json!({"candidate": 2, "stable": 1, "steps": [25, 100], "step_duration_s": 0.5,
                "max_p99_ratio": 50, "min_requests": 20}),
    )
    .await;
    assert_eq!(status, 200, "{started}");
    let (status, conflict) = put_traffic(&server, json!({"weights": {"1": 1}})).await;
    assert_eq!(
        status, 409,
        "a running rollout owns the weights: {conflict}"
    );
    let end = rollout_until_done(&server).await;
    let responses = load.stop().await;
    assert!(responses.iter().all(|(_, ok)| *ok), "no request failed");
    assert_eq!(end["state"], "promoted", "{end}");
    assert_eq!(
        (end["step"].as_u64(), end["percent"].as_u64()),
        (Some(2), Some(100))
    );
    let policy = traffic_policy(&server).await;
    assert_eq!(policy["weights"], json!({"1": 0, "2": 100}));
    let c = reqwest::Client::new();
    assert_only_version_serves(&c, &server, "2", 50).await;
}

#[tokio::test]
async fn a_step_without_enough_requests_is_extended_not_passed_and_can_be_aborted() {
    let dir = repo(V2::Perturbed, "");
    let server = start(dir.path(), ModelControlMode::None).await;
    let (status, _) = start_rollout(
        &server,
        json!({"candidate": "2", "steps": [50], "step_duration_s": 0.1, "min_requests": 1000}),
    )
    .await;
    assert_eq!(status, 200);
    let status = poll_until(
        Duration::from_secs(30),
        "never reported extended",
        || async { rollout_status(&server).await.1 },
        |r| r["reason"].as_str().is_some_and(|s| s.contains("extended")),
    )
    .await;
    assert_eq!(status["state"], "running", "{status}");
    assert!(
        status["reason"].as_str().unwrap().contains("0 of 1000"),
        "{status}"
    );
    for (method, path, want) in [
        (reqwest::Method::DELETE, "/v2/models/mlp/rollout", 401),
        (reqwest::Method::POST, "/v2/models/mlp/rollout/abort", 401),
    ] {
        assert_eq!(send(&server, method, path, None, None).await.0, want);
    }
    let (status, aborted) =
        as_admin(&server, reqwest::Method::DELETE, "/v2/models/mlp/rollout").await;
    assert_eq!(status, 200, "{aborted}");
    assert_eq!(aborted["state"], "aborted");
    let (status, _) = as_admin(
        &server,
        reqwest::Method::POST,
        "/v2/models/mlp/rollout/abort",
    )
    .await;
    assert_eq!(status, 409, "aborting a finished rollout");
    let policy = traffic_policy(&server).await;
    assert_eq!(
        policy["weights"],
        json!({"1": 100, "2": 0}),
        "traffic back on stable"
    );
    for (bad, want) in [
        (
            json!({"candidate": "9", "steps": [50], "step_duration_s": 1}),
            "not loaded",
        ),
        (
            json!({"candidate": "2", "steps": [50, 10], "step_duration_s": 1}),
            "increase strictly",
        ),
        (
            json!({"candidate": "2", "steps": [50], "step_duration_s": 1, "typo": 1}),
            "unknown field",
        ),
    ] {
        let (status, body) = start_rollout(&server, bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(want),
            "{bad}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadowing_leaves_answers_unchanged_and_exports_divergence() {
    let dir = repo(V2::Perturbed, "");
    let server = start(dir.path(), ModelControlMode::None).await;
    put_traffic(&server, json!({"weights": {"1": 100}})).await;
    let c = reqwest::Client::new();
    let request = serde_json::to_vec(&json!({"id": "same",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [8, 64],
                    "data": common::reference("mlp").inputs[0].f32s()}]}))
    .unwrap();
    let raw = |c: &reqwest::Client| {
        c.post(server.url("/v2/models/mlp/infer"))
            .header("content-type", "application/json")
            .body(request.clone())
            .send()
    };
    let plain = raw(&c).await.unwrap().bytes().await.unwrap();
    let (status, body) = put_traffic(
        &server,
        json!({"weights": {"1": 100}, "shadow": {"version": "2", "percent": 100}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["shadow"], json!({"version": "2", "percent": 100}));
    for _ in 0..20 {
        let shadowed = raw(&c).await.unwrap().bytes().await.unwrap();
        assert_eq!(
            shadowed, plain,
            "the client's answer does not change with a shadow"
        );
    }
    let compared =
        r#"ferroserve_shadow_requests_total{model="mlp",outcome="compared",version="2"}"#;
    let text = poll_until(
        Duration::from_secs(30),
        "no shadow comparison",
        || server.metrics_text(),
        |text| text.contains(compared),
    )
    .await;
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing: {text}"))
    };
    assert!(value(compared) >= 1.0);
    let labels = r#"{model="mlp",output="output",version="2"}"#;
    assert!(
        value(&format!("ferroserve_shadow_max_abs_diff_sum{labels}")) > 0.0,
        "a perturbed model diverges"
    );
    assert!(value(&format!("ferroserve_shadow_compared_total{labels}")) >= 8.0);
    assert!(text
        .contains(r#"ferroserve_routed_requests_total{model="mlp",reason="shadow",version="2"}"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sets_gets_and_promotes() {
    let dir = repo(V2::Perturbed, "");
    let server = start(dir.path(), ModelControlMode::None).await;
    let url = server.grpc_url();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferroserve"))
            .args(args)
            .args(["--url", &url])
            .env("FERROSERVE_ADMIN_TOKEN", TOKEN)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = cli(&[
        "traffic", "set", "mlp", "--weight", "1=80", "--weight", "2=20", "--shadow", "2=5",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("weights  1=80 2=20"), "{out}");
    let (ok, out) = cli(&["traffic", "get", "mlp"]);
    assert!(ok && out.contains("shadow   version 2 at 5%"), "{out}");
    let (ok, out) = cli(&["traffic", "set", "mlp", "--weight", "3=1"]);
    assert!(!ok && out.contains("not loaded"), "{out}");
    let (ok, out) = cli(&["traffic", "promote", "mlp", "1"]);
    assert!(ok && out.contains("weights  1=100 2=0"), "{out}");
    let (ok, out) = cli(&[
        "rollout",
        "start",
        "mlp",
        "--candidate",
        "2",
        "--steps",
        "50",
        "--step-duration",
        "60",
    ]);
    assert!(
        ok && out.contains("running of version 2 against 1"),
        "{out}"
    );
    let (ok, out) = cli(&["rollout", "status", "mlp"]);
    assert!(ok && out.contains("step 1/1 at 50%"), "{out}");
    let (ok, out) = cli(&["rollout", "abort", "mlp"]);
    assert!(ok && out.contains("aborted"), "{out}");
}
