//! Triton's classification extension: an output requested with `classification: K` comes back
//! as its top K `"score:index[:label]"` BYTES strings per row (scores as C's `%f`), labels from
//! the config's `label_filename`, on both transports.

mod common;

use common::{copy_model, pb, reference, repo, TestServer};
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use pb::infer_parameter::ParameterChoice;
use serde_json::{json, Value};

/// Rows 0 and 2 of the iris reference input (one setosa, one versicolor).
fn iris_rows() -> Vec<f32> {
    let x = reference("iris").inputs[0].f32s();
    x[0..4].iter().chain(&x[8..12]).copied().collect()
}

/// onnxruntime's probabilities for those rows printed with C's "%f" (Python's `%` operator).
const TOP2: [&str; 4] = ["0.981557:0", "0.018443:1", "0.874012:1", "0.123864:2"];

async fn classify_http(server: &TestServer, k: Value) -> (u16, Value) {
    let body = json!({
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4], "data": iris_rows()}],
        "outputs": [{"name": "probabilities", "parameters": {"classification": k}}]
    });
    let r = reqwest::Client::new()
        .post(server.url("/v2/models/iris/infer"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn http_classification_returns_the_top_k_as_score_index_strings() {
    let server = TestServer::start().await;
    let (status, body) = classify_http(&server, json!(2)).await;
    assert_eq!(status, 200, "{body}");
    let out = &body["outputs"][0];
    assert_eq!(out["datatype"], "BYTES");
    assert_eq!(out["shape"], json!([2, 2]));
    assert_eq!(out["data"], json!(TOP2));
}

#[tokio::test]
async fn classification_labels_come_from_the_configs_label_filename() {
    let dir = repo([copy_model("iris")]);
    with_label_file(dir.path(), "labels.txt");
    std::fs::write(
        dir.path().join("iris/labels.txt"),
        "setosa\nversicolor\nvirginica\n",
    )
    .unwrap();
    let server = TestServer::builder().repo(dir.path()).start().await;
    let (status, body) = classify_http(&server, json!(1)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["shape"], json!([2, 1]));
    assert_eq!(
        body["outputs"][0]["data"],
        json!(["0.981557:0:setosa", "0.874012:1:versicolor"])
    );
}

/// The iris copy of `dir` with `label_filename = name` on its probabilities.
fn with_label_file(dir: &std::path::Path, name: &str) {
    let cfg = dir.join("iris/config.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "name = \"probabilities\"",
        &format!("name = \"probabilities\"\nlabel_filename = \"{name}\""),
    );
    std::fs::write(&cfg, text).unwrap();
}

#[tokio::test]
async fn a_label_file_that_is_a_symlink_out_of_the_repository_fails_the_load_naming_it() {
    let dir = repo([copy_model("iris")]);
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "a\nb\nc\n").unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        dir.path().join("iris/labels.txt"),
    )
    .unwrap();
    with_label_file(dir.path(), "labels.txt");
    let server = TestServer::builder()
        .repo(dir.path())
        .wait_ready(false)
        .start()
        .await;
    let row = common::poll_until(
        std::time::Duration::from_secs(60),
        "iris failed to load",
        || async {
            let r = reqwest::Client::new()
                .post(server.url("/v2/repository/index"))
                .send()
                .await
                .unwrap();
            let rows: Value = r.json().await.unwrap();
            rows[0].clone()
        },
        |row| row["state"] == "UNAVAILABLE",
    )
    .await;
    let reason = row["reason"].as_str().unwrap();
    assert!(
        reason.contains("labels.txt") && reason.contains("outside the model repository"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_label_filename_that_climbs_out_is_refused() {
    let dir = repo([copy_model("iris")]);
    with_label_file(dir.path(), "../labels.txt");
    let server = TestServer::builder()
        .repo(dir.path())
        .wait_ready(false)
        .start()
        .await;
    let row = common::poll_until(
        std::time::Duration::from_secs(60),
        "iris was refused",
        || async {
            let r = reqwest::Client::new()
                .post(server.url("/v2/repository/index"))
                .send()
                .await
                .unwrap();
            let rows: Value = r.json().await.unwrap();
            rows[0].clone()
        },
        |row| row["state"] == "UNAVAILABLE",
    )
    .await;
    let reason = row["reason"].as_str().unwrap();
    assert!(reason.contains("label_filename"), "{reason}");
}

#[tokio::test]
async fn grpc_classification_returns_the_same_strings() {
    let server = TestServer::start().await;
    let mut client = GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let raw: Vec<u8> = iris_rows().iter().flat_map(|f| f.to_le_bytes()).collect();
    let req = pb::ModelInferRequest {
        model_name: "iris".into(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![2, 4],
            ..Default::default()
        }],
        outputs: vec![pb::model_infer_request::InferRequestedOutputTensor {
            name: "probabilities".into(),
            parameters: [(
                "classification".to_string(),
                pb::InferParameter {
                    parameter_choice: Some(ParameterChoice::Int64Param(2)),
                },
            )]
            .into_iter()
            .collect(),
        }],
        raw_input_contents: vec![raw.into()],
        ..Default::default()
    };
    let resp = client.model_infer(req).await.unwrap().into_inner();
    assert_eq!(resp.outputs[0].datatype, "BYTES");
    assert_eq!(resp.outputs[0].shape, vec![2, 2]);
    // BYTES raw: each string after its 4-byte little-endian length.
    let mut raw = &resp.raw_output_contents[0][..];
    let mut got = Vec::new();
    while raw.len() >= 4 {
        let n = u32::from_le_bytes(raw[..4].try_into().unwrap()) as usize;
        got.push(String::from_utf8(raw[4..4 + n].to_vec()).unwrap());
        raw = &raw[4 + n..];
    }
    assert_eq!(got, TOP2);
}

#[tokio::test]
async fn a_zero_classification_count_is_refused() {
    let server = TestServer::start().await;
    let (status, body) = classify_http(&server, json!(0)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("classification count"),
        "{body}"
    );
    let (status, _) = classify_http(&server, json!(1)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn classification_labels_come_from_a_classifiers_zipmap() {
    let dir = tempfile::tempdir().unwrap();
    let version = dir.path().join("clf/1");
    std::fs::create_dir_all(&version).unwrap();
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/onnx_file/zipmap_strings.onnx");
    std::fs::copy(model, version.join("model.onnx")).unwrap();
    std::fs::write(
        dir.path().join("clf/config.toml"),
        "backend = \"tract\"\nmax_batch_size = 8\n",
    )
    .unwrap();
    let server = TestServer::builder().repo(dir.path()).start().await;
    let body = json!({
        "inputs": [{"name": "X", "datatype": "FP32", "shape": [2, 3],
                    "data": [1.0, 2.0, 3.0, 0.5, -1.0, 0.0]}],
        "outputs": [{"name": "output_probability", "parameters": {"classification": 2}}]
    });
    let r = reqwest::Client::new()
        .post(server.url("/v2/models/clf/infer"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    // onnxruntime's ZipMap probabilities of these rows, printed with C's "%f".
    assert_eq!(
        body["outputs"][0]["data"],
        json!([
            "0.665241:2:virginica",
            "0.244728:1:versicolor",
            "0.546549:0:setosa",
            "0.331499:2:virginica"
        ])
    );
}
