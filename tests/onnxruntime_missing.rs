//! A server whose ONNX Runtime library is missing or is not ONNX Runtime: its tract models serve,
//! its ONNX Runtime models are unavailable with the reason and the fix, and readiness follows
//! the repository rules (strict: not ready; otherwise ready).
//!
//! Its own test binary because the library is process-global (`ort` keeps the first one it
//! loads, and `onnxruntime.library` is a process-wide setting): a binary that has loaded the real
//! library could not show what happens without it. Within this binary the tests take turns
//! (`SERIAL`), so `cargo test` running them on threads of one process sees the same as nextest.
#![cfg(feature = "onnxruntime")]

mod common;

use std::path::{Path, PathBuf};

use common::{copy_model, onnxruntime_models, reference, TestServer};
use ferroserve::config::OnnxRuntimeConfig;
use serde_json::{json, Value};

/// What every "ONNX Runtime unavailable" message must point to.
const FIX: &str = "scripts/fetch-onnxruntime.sh";

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The bundled `mlp` (tract) and `scaler` (onnxruntime: its graph uses an op tract lacks).
fn repo() -> tempfile::TempDir {
    let dir = common::repo([
        copy_model("mlp"),
        copy_model("scaler").from(&onnxruntime_models()),
    ]);
    let cfg = std::fs::read_to_string(dir.path().join("scaler/config.toml")).unwrap();
    assert!(cfg.contains("backend = \"onnxruntime\""), "{cfg}");
    dir
}

/// A server with ONNX Runtime at `library` (missing, or not ONNX Runtime), once both models have
/// finished loading one way or the other.
async fn start_with_library(repo: &Path, library: PathBuf, strict: bool) -> TestServer {
    TestServer::builder()
        .repo(repo)
        .strict(strict)
        .configure(|c| {
            c.onnxruntime = OnnxRuntimeConfig {
                library: Some(library),
            }
        })
        .wait_ready(false)
        .start()
        .await
}

async fn post(server: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(server.url(path))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The tract model answers its reference rows exactly as it would with the library present.
async fn assert_tract_model_serves(server: &TestServer) {
    let r = reference("mlp");
    let body = json!({"inputs": r.inputs.iter().map(|t| t.json()).collect::<Vec<_>>()});
    let (status, answer) = post(server, "/v2/models/mlp/infer", &body).await;
    assert_eq!(status, 200, "{answer}");
    let got = &answer["outputs"][0]["data"];
    let want = &r.outputs[0].data;
    let got = got.as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
        assert!((g - w).abs() <= 1e-5, "mlp output[{i}]: {g} vs {w}");
    }
    assert_eq!(server.get("/v2/models/mlp/ready").await.0, 200);
}

/// The ONNX Runtime model is unavailable everywhere it is asked about, with `reason` and the fix.
async fn assert_onnxruntime_model_unavailable(server: &TestServer, reason: &str) {
    let (status, body) = server.get("/v2/models/scaler").await;
    assert_eq!(
        status, 404,
        "metadata (Triton's NOT_FOUND: no available version): {body}"
    );
    let msg = body["error"].as_str().unwrap();
    assert!(msg.contains(reason), "says why ({reason}): {msg}");
    assert!(msg.contains(FIX), "names the fix: {msg}");
    assert!(
        msg.contains("scaler/1/model.onnx"),
        "names the model file: {msg}"
    );

    assert_eq!(server.get("/v2/models/scaler/ready").await.0, 503);

    let r = reference("scaler");
    let req = json!({"inputs": r.inputs.iter().map(|t| t.json()).collect::<Vec<_>>()});
    let (status, body) = post(server, "/v2/models/scaler/infer", &req).await;
    assert_eq!(status, 404, "infer: {body}");

    let (status, index) = post(server, "/v2/repository/index", &json!({})).await;
    assert_eq!(status, 200, "{index}");
    let row = index
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["name"] == "scaler" && row["version"] == "1")
        .unwrap_or_else(|| panic!("no scaler version 1 in {index}"));
    assert_eq!(row["state"], "UNAVAILABLE", "{row}");
    assert!(row["reason"].as_str().unwrap().contains(FIX), "{row}");
}

/// A strict server whose library path does not exist, and this test's turn (held while the
/// server lives).
async fn without_the_library() -> (
    tokio::sync::MutexGuard<'static, ()>,
    tempfile::TempDir,
    TestServer,
) {
    let turn = SERIAL.lock().await;
    let repo = repo();
    let missing = repo.path().join("no-such-dir/libonnxruntime.so");
    let server = start_with_library(repo.path(), missing, true).await;
    (turn, repo, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_library_tract_models_serve() {
    let (_turn, _repo, server) = without_the_library().await;
    assert_tract_model_serves(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_library_onnxruntime_models_are_unavailable_naming_the_fix() {
    let (_turn, _repo, server) = without_the_library().await;
    assert_onnxruntime_model_unavailable(&server, "no-such-dir/libonnxruntime.so").await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_library_a_strict_server_is_live_but_not_ready() {
    let (_turn, _repo, server) = without_the_library().await;
    assert_eq!(
        server.get("/v2/health/ready").await.0,
        503,
        "strict readiness: a model of the repository is not loaded"
    );
    assert_eq!(server.get("/v2/health/live").await.0, 200);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_library_the_load_failure_is_counted() {
    let (_turn, _repo, server) = without_the_library().await;
    let metrics = server.metrics_text().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("model_load_failures_total") && l.contains("scaler")),
        "the failure is counted:\n{metrics}"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_strict_readiness_the_server_is_ready_without_the_library() {
    let _turn = SERIAL.lock().await;
    let repo = repo();
    let missing = repo.path().join("no-such-dir/libonnxruntime.so");
    let server = start_with_library(repo.path(), missing, false).await;

    assert_eq!(server.get("/v2/health/ready").await.0, 200);
    assert_tract_model_serves(&server).await;
    assert_onnxruntime_model_unavailable(&server, "not found").await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_onnxruntime_fails_the_same_way_without_a_panic() {
    let _turn = SERIAL.lock().await;
    let repo = repo();
    let elsewhere = tempfile::tempdir().unwrap();
    let bogus = elsewhere.path().join("libonnxruntime.so");
    std::fs::write(&bogus, b"not a shared library").unwrap();
    let server = start_with_library(repo.path(), bogus, true).await;

    assert_tract_model_serves(&server).await;
    assert_onnxruntime_model_unavailable(&server, "cannot load ONNX Runtime").await;
    assert_eq!(server.get("/v2/health/ready").await.0, 503);
    server.stop().await.unwrap();
}
