//! Helpers of the traffic-policy and rollout tests (tests/traffic_policy.rs, tests/rollout.rs).
//!
//! Their repositories hold `mlp` twice: version 1 is the bundled graph, version 2 the same graph
//! with perturbed weights (so an answer shows which version computed it), or the `iris` graph
//! (a candidate that fails every `mlp` request), or a much slower graph of the same signature.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferroserve::config::ModelControlMode;
use serde_json::{json, Value};

use super::{bundled_models, pb, poll_until, TestServer};

pub const TOKEN: &str = "test-admin-token-0123456789";

/// What version 2 holds.
#[derive(Clone, Copy)]
pub enum V2 {
    /// mlp with perturbed weights: same signature, different answers.
    Perturbed,
    /// the iris graph: 4 inputs instead of 64, so every mlp request fails on it.
    Failing,
    /// mlp's signature, ~200 M multiply-adds a row: two orders of magnitude slower than mlp
    /// (about 10 ms against 0.1 ms). The model's batch size is 1, so warm-up runs one row.
    Slow,
}

/// `mlp` versions 1 and 2, both served (`version_policy = "all"`), plus `extra` config lines.
pub fn repo(v2: V2, extra: &str) -> tempfile::TempDir {
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
pub fn slow_mlp() -> Vec<u8> {
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
pub fn perturbed(mut model: Vec<u8>) -> Vec<u8> {
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

/// A server on `root` in `mode`, `mlp` loaded, the admin token set, polling every 0.2 s.
pub async fn start(root: &Path, mode: ModelControlMode) -> TestServer {
    TestServer::builder()
        .repo(root)
        .control(mode)
        .load(&["mlp"])
        .admin_token(TOKEN)
        .poll_secs(0.2)
        .start()
        .await
}

pub fn input_row() -> Vec<f32> {
    super::reference("mlp").inputs[0].f32s()[..64].to_vec()
}

pub fn body() -> Value {
    json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": input_row()}]})
}

/// (served version, logits) or (status, error body).
pub async fn infer(
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

pub fn grpc_request(key: Option<&str>) -> tonic::Request<pb::ModelInferRequest> {
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

pub fn grpc_logits(resp: &pb::ModelInferResponse) -> Vec<f64> {
    resp.raw_output_contents[0]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
        .collect()
}

pub async fn send(
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

pub async fn put_traffic(server: &TestServer, policy: Value) -> (u16, Value) {
    put_traffic_as(server, policy, Some(TOKEN)).await
}

/// PUT a policy with `token` (or none) as the bearer.
pub async fn put_traffic_as(
    server: &TestServer,
    policy: Value,
    token: Option<&str>,
) -> (u16, Value) {
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
pub async fn traffic_policy(server: &TestServer) -> Value {
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
pub async fn start_rollout(server: &TestServer, spec: Value) -> (u16, Value) {
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
pub async fn as_admin(server: &TestServer, method: reqwest::Method, path: &str) -> (u16, Value) {
    send(server, method, path, None, Some(TOKEN)).await
}

/// GET mlp's rollout status.
pub async fn rollout_status(server: &TestServer) -> (u16, Value) {
    send(
        server,
        reqwest::Method::GET,
        "/v2/models/mlp/rollout",
        None,
        None,
    )
    .await
}

/// Sends `n` unpinned, unkeyed requests and asserts that `version` serves each of them.
pub async fn assert_only_version_serves(
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
pub async fn answers_by_version(
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

pub async fn rollout_until_done(server: &TestServer) -> Value {
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
pub struct Load {
    done: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<Vec<(String, bool)>>>,
}

impl Load {
    pub fn start(server: &Arc<TestServer>) -> Load {
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
    pub async fn stop(self) -> Vec<(String, bool)> {
        self.done.store(true, Ordering::Relaxed);
        let mut responses = Vec::new();
        for c in self.clients {
            responses.extend(c.await.unwrap());
        }
        responses
    }
}
