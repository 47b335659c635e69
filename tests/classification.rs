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
    let cfg = dir.path().join("iris/config.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text.replace(
        "name = \"probabilities\"",
        "name = \"probabilities\"\nlabel_filename = \"labels.txt\"",
    );
    std::fs::write(&cfg, text).unwrap();
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
