//! The reference mlp request on every wire format and the check that a server "still serves":
//! live, and the reference request answered exactly over HTTP and gRPC. Hostile tests call
//! `assert_still_serves` after each attack.

use serde_json::{json, Value};

use super::{assert_matches_reference, pb, reference, TestServer};
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use pb::model_infer_request::InferInputTensor;

/// `rows` rows of the reference mlp input (cycled), 64 FP32 values each.
pub fn mlp_values(rows: usize) -> Vec<f32> {
    reference("mlp").inputs[0]
        .f32s()
        .into_iter()
        .cycle()
        .take(rows * 64)
        .collect()
}

pub fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|f| f.to_le_bytes()).collect()
}

/// The reference mlp request as JSON.
pub fn mlp_json() -> Value {
    json!({"inputs": [reference("mlp").inputs[0].json()]})
}

/// The reference mlp request over gRPC, its tensor in `raw_input_contents`.
pub fn mlp_grpc() -> pb::ModelInferRequest {
    let input = &reference("mlp").inputs[0];
    pb::ModelInferRequest {
        model_name: "mlp".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: input.shape.clone(),
            ..Default::default()
        }],
        raw_input_contents: vec![le_bytes(&input.f32s()).into()],
        ..Default::default()
    }
}

/// `outputs[0]` of an HTTP JSON answer is the reference mlp output.
pub fn assert_mlp_http(body: &Value) {
    let out = &body["outputs"][0];
    let shape: Vec<i64> = serde_json::from_value(out["shape"].clone()).unwrap();
    let values: Vec<f64> = serde_json::from_value(out["data"].clone()).unwrap();
    let want = &reference("mlp").outputs[0];
    assert_matches_reference("mlp", "output", "FP32", &shape, &values, want);
}

/// The first raw output of a gRPC answer is the reference mlp output.
pub fn assert_mlp_grpc(resp: &pb::ModelInferResponse) {
    let values: Vec<f64> = resp.raw_output_contents[0]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
        .collect();
    let want = &reference("mlp").outputs[0];
    let shape = &resp.outputs[0].shape;
    assert_matches_reference("mlp", "output", "FP32", shape, &values, want);
}

/// The reference request over HTTP JSON is answered 200 with the reference output.
pub async fn assert_http_serves(server: &TestServer) {
    let resp = reqwest::Client::new()
        .post(server.url("/v2/models/mlp/infer"))
        .json(&mlp_json())
        .send()
        .await
        .expect("the server answers the reference request");
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "the reference request: {body}");
    assert_mlp_http(&body);
}

/// The reference request over gRPC (a fresh connection) is answered OK with the reference output.
pub async fn assert_grpc_serves(server: &TestServer) {
    let mut client = GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let resp = client
        .model_infer(mlp_grpc())
        .await
        .expect("the reference request over gRPC")
        .into_inner();
    assert_mlp_grpc(&resp);
}

/// Live, and the reference request answered exactly over HTTP and over gRPC.
pub async fn assert_still_serves(server: &TestServer) {
    let (status, _) = server.get("/v2/health/live").await;
    assert_eq!(status, 200, "GET /v2/health/live");
    assert_http_serves(server).await;
    assert_grpc_serves(server).await;
}
