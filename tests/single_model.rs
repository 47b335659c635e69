//! `model_name` (`--model-name`, `FERROSERVE_MODEL_NAME`): the repository root is one model's
//! directory, served under that name, as KServe mounts a model at `/mnt/models` and routes
//! `/v2/models/{InferenceService name}/infer`: a bare `model.onnx` (version 1, no config.toml)
//! or version directories.

mod common;

use std::path::Path;

use common::probe::le_bytes;
use common::{assert_matches_reference, bundled_models, pb, reference, RefTensor, TestServer};
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use pb::model_infer_request::InferInputTensor;
use serde_json::{json, Value};

const NAME: &str = "sklearn-mlp";

/// `<dir>/model.onnx`, the bundled mlp's file, nothing else.
fn bare_model(dir: &Path) {
    let file = bundled_models().join("mlp/1/model.onnx");
    std::fs::copy(file, dir.join("model.onnx")).unwrap();
}

async fn single(dir: &Path, name: &str) -> TestServer {
    let name = name.to_owned();
    TestServer::builder()
        .repo(dir)
        .configure(move |c| c.model_name = Some(name))
        .start()
        .await
}

/// The first `ROWS` rows of the mlp reference: a model with no config.toml batches up to 4
/// (the batching derived from its graph).
const ROWS: usize = 4;

fn first_rows(t: &RefTensor) -> RefTensor {
    let per_row = t.data.len() / t.shape[0] as usize;
    RefTensor {
        shape: [ROWS as i64]
            .into_iter()
            .chain(t.shape[1..].iter().copied())
            .collect(),
        data: t.data[..ROWS * per_row].to_vec(),
        ..t.clone()
    }
}

/// The reference rows over HTTP and gRPC to `name` are answered exactly.
async fn assert_serves_as(server: &TestServer, name: &str) {
    let r = reference("mlp");
    let (input, want) = (first_rows(&r.inputs[0]), first_rows(&r.outputs[0]));
    let resp = reqwest::Client::new()
        .post(server.url(&format!("/v2/models/{name}/infer")))
        .json(&json!({"inputs": [input.json()]}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    let out = &body["outputs"][0];
    let shape: Vec<i64> = serde_json::from_value(out["shape"].clone()).unwrap();
    let values: Vec<f64> = serde_json::from_value(out["data"].clone()).unwrap();
    assert_matches_reference(name, "output", "FP32", &shape, &values, &want);

    let mut client = GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let req = pb::ModelInferRequest {
        model_name: name.into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: input.shape.clone(),
            ..Default::default()
        }],
        raw_input_contents: vec![le_bytes(&input.f32s()).into()],
        ..Default::default()
    };
    let resp = client.model_infer(req).await.unwrap().into_inner();
    let values: Vec<f64> = resp.raw_output_contents[0]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
        .collect();
    assert_matches_reference(
        name,
        "output",
        "FP32",
        &resp.outputs[0].shape,
        &values,
        &want,
    );
}

#[tokio::test]
async fn a_bare_model_onnx_is_served_as_the_named_model_version_1() {
    let dir = tempfile::tempdir().unwrap();
    bare_model(dir.path());
    let server = single(dir.path(), NAME).await;
    let (status, meta) = server.get(&format!("/v2/models/{NAME}")).await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["name"], NAME);
    assert_eq!(meta["versions"], json!(["1"]));
    let (status, _) = server
        .get(&format!("/v2/models/{NAME}/versions/1/ready"))
        .await;
    assert_eq!(status, 200);
    assert_serves_as(&server, NAME).await;
}

#[tokio::test]
async fn a_single_model_dir_with_version_dirs_serves_them_under_the_name() {
    let dir = tempfile::tempdir().unwrap();
    for v in ["1", "2"] {
        std::fs::create_dir(dir.path().join(v)).unwrap();
        bare_model(&dir.path().join(v));
    }
    std::fs::write(dir.path().join("config.toml"), "max_batch_size = 8\n").unwrap();
    let server = single(dir.path(), NAME).await;
    let (status, meta) = server.get(&format!("/v2/models/{NAME}")).await;
    assert_eq!(status, 200, "{meta}");
    // The default version policy serves the latest.
    assert_eq!(meta["versions"], json!(["2"]));
    let (status, config) = server.get(&format!("/v2/models/{NAME}/config")).await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["max_batch_size"], 8, "config.toml read: {config}");
    assert_serves_as(&server, NAME).await;
}

#[tokio::test]
async fn a_single_model_server_serves_no_other_name() {
    let dir = tempfile::tempdir().unwrap();
    bare_model(dir.path());
    let server = single(dir.path(), NAME).await;
    let (status, body) = server.get("/v2/models/mlp").await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("mlp"), "{body}");
    let index: Value = reqwest::Client::new()
        .post(server.url("/v2/repository/index"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<_> = index
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["name"])
        .collect();
    assert_eq!(names, [NAME], "{index}");
    assert_serves_as(&server, NAME).await;
}

#[tokio::test]
async fn a_bare_model_next_to_version_dirs_is_unavailable_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    bare_model(dir.path());
    std::fs::create_dir(dir.path().join("1")).unwrap();
    bare_model(&dir.path().join("1"));
    let name = NAME.to_owned();
    let server = TestServer::builder()
        .repo(dir.path())
        .configure(move |c| c.model_name = Some(name))
        .wait_ready(false)
        .start()
        .await;
    let index: Value = reqwest::Client::new()
        .post(server.url("/v2/repository/index"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row = &index[0];
    assert_eq!(row["name"], NAME, "{index}");
    assert_eq!(row["state"], "UNAVAILABLE", "{index}");
    let reason = row["reason"].as_str().unwrap();
    assert!(
        reason.contains("both model.onnx and version directories"),
        "{reason}"
    );
    assert_eq!(server.get("/v2/health/ready").await.0, 503);
    assert_eq!(server.get("/v2/health/live").await.0, 200);
}

#[tokio::test]
async fn an_invalid_model_name_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    bare_model(dir.path());
    let err = TestServer::builder()
        .repo(dir.path())
        .configure(|c| c.model_name = Some("a/b".into()))
        .start_fails()
        .await;
    let msg = format!("{err:#}");
    assert!(msg.contains("model_name \"a/b\""), "{msg}");
}
