//! The load-time warm-up: invented shapes that fail only warn, declared `[[warmup]]` shapes
//! replace them and must run. The model is tests/data/dim_forms/reshape8.onnx: a Reshape to
//! [-1, 2, 4] that runs only with 8 values a row (tract cannot type it over symbols, so `auto`
//! picks ONNX Runtime).
//!
//! Needs ONNX Runtime (ORT_DYLIB_PATH, as tests/onnxruntime.rs).
#![cfg(feature = "onnxruntime")]

mod common;

use common::forms::{assert_ready, config_of, infer, repo, row, serve};
use common::TestServer;
use serde_json::json;

async fn reshape8(server: &TestServer) {
    let x: Vec<f32> = (0..16).map(|i| i as f32).collect();
    let (status, body) = infer(server, &[2, 8], &x).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["shape"], json!([2, 2, 4]), "{body}");
    assert_eq!(body["outputs"][0]["data"], json!(x), "{body}");
}

/// reshape8 runs only with 8 values a row; the invented warm-up sends 1.
#[tokio::test]
async fn invented_warmup_that_fails_is_a_warning_not_a_refusal() {
    let dir = repo("reshape8.onnx", None);
    let server = serve(dir.path()).await;
    let row = assert_ready(&server).await;
    let reason = row["reason"].as_str().unwrap();
    assert!(
        reason.contains("warm-up at batch size 1 on invented shapes")
            && reason.contains("[[warmup]]"),
        "{reason}"
    );
    let notes = config_of(&server).await["parameters"]["load_notes"]["string_value"].clone();
    assert!(
        notes.as_str().unwrap().contains("invented shapes"),
        "{notes}"
    );
    reshape8(&server).await;
}

#[tokio::test]
async fn declared_warmup_shapes_replace_the_invented_ones() {
    let cfg = "[[warmup]]\nbatch_size = 2\n[warmup.inputs.x]\ndims = [8]";
    let dir = repo("reshape8.onnx", Some(cfg));
    let server = serve(dir.path()).await;
    let row = assert_ready(&server).await;
    assert!(
        !row["reason"].as_str().unwrap().contains("warm-up"),
        "{row}"
    );
    reshape8(&server).await;
}

#[tokio::test]
async fn declared_warmup_that_fails_refuses_the_version() {
    // tract cannot type this Reshape over symbols, so ONNX Runtime: its warm-up is what fails.
    let cfg = "backend = \"onnxruntime\"\n[[warmup]]\n[warmup.inputs.x]\ndims = [3]";
    let dir = repo("reshape8.onnx", Some(cfg));
    let server = serve(dir.path()).await;
    let row = row(&server).await;
    assert_eq!(row["state"], "UNAVAILABLE", "{row}");
    assert!(
        row["reason"]
            .as_str()
            .unwrap()
            .contains("declared warm-up 0 (batch size 1) failed"),
        "{row}"
    );
}

#[tokio::test]
async fn declared_warmup_with_random_data_runs() {
    let cfg = "[[warmup]]\nbatch_size = 3\n[warmup.inputs.x]\ndims = [8]\n\
               data_type = \"TYPE_FP32\"\nrandom_data = true";
    let dir = repo("reshape8.onnx", Some(cfg));
    let server = serve(dir.path()).await;
    let row = assert_ready(&server).await;
    assert!(
        !row["reason"].as_str().unwrap().contains("warm-up"),
        "{row}"
    );
    reshape8(&server).await;
}

#[tokio::test]
async fn declared_warmup_datatype_is_checked_against_the_input() {
    let cfg = "[[warmup]]\n[warmup.inputs.x]\ndims = [8]\ndata_type = \"TYPE_INT64\"";
    let dir = repo("reshape8.onnx", Some(cfg));
    let server = serve(dir.path()).await;
    let row = row(&server).await;
    assert_eq!(row["state"], "UNAVAILABLE", "{row}");
    let reason = row["reason"].as_str().unwrap();
    assert!(
        reason.contains("declared warm-up 0 (batch size 1) failed: input \"x\" is FP32, the warm-up declares INT64"),
        "{reason}"
    );
    assert_eq!(server.get("/v2/health/live").await.0, 200);
}

#[tokio::test]
async fn declared_warmup_of_an_unknown_input_is_refused() {
    let cfg = "[[warmup]]\n[warmup.inputs.ids]\ndims = [8]";
    let dir = repo("reshape8.onnx", Some(cfg));
    let server = serve(dir.path()).await;
    let row = row(&server).await;
    assert_eq!(row["state"], "UNAVAILABLE", "{row}");
    let reason = row["reason"].as_str().unwrap();
    assert!(
        reason.contains("it names input \"ids\"; the model's inputs are [\"x\"]"),
        "{reason}"
    );
}
