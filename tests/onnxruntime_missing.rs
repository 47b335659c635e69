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

use common::{bundled_models, reference, test_config, TestServer};
use ferroserve::config::{OnnxRuntimeConfig, ServerConfig};
use serde_json::{json, Value};

/// What every "ONNX Runtime unavailable" message must point to.
const FIX: &str = "scripts/fetch-onnxruntime.sh";

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn copy_model(from: &Path, name: &str, to: &Path) {
    let dst = to.join(name);
    std::fs::create_dir_all(dst.join("1")).unwrap();
    std::fs::copy(from.join(name).join("config.toml"), dst.join("config.toml")).unwrap();
    std::fs::copy(
        from.join(name).join("1/model.onnx"),
        dst.join("1/model.onnx"),
    )
    .unwrap();
}

/// The bundled `mlp` (tract) and `scaler` (onnxruntime: its graph uses an op tract lacks).
fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_model(&bundled_models(), "mlp", dir.path());
    let ort_models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models-onnxruntime");
    copy_model(&ort_models, "scaler", dir.path());
    let cfg = std::fs::read_to_string(dir.path().join("scaler/config.toml")).unwrap();
    assert!(cfg.contains("backend = \"onnxruntime\""), "{cfg}");
    dir
}

async fn start(repo: &Path, library: PathBuf, strict: bool) -> TestServer {
    let config = ServerConfig {
        model_repository: repo.to_path_buf(),
        strict_readiness: strict,
        onnxruntime: OnnxRuntimeConfig {
            library: Some(library),
        },
        ..test_config()
    };
    let server = TestServer::start_with(config, false).await;
    settle(&server).await;
    server
}

/// Waits (at most 10 s) until both models have finished loading, one way or the other: the
/// server answers before then, and a loaded machine is slow.
async fn settle(server: &TestServer) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let (status, _) = get(server, "/v2/models/mlp/ready").await;
        let (scaler, body) = get(server, "/v2/models/scaler").await;
        let scaler_loading = scaler == 404
            || body["error"]
                .as_str()
                .is_some_and(|e| e.contains("is loading"));
        if status == 200 && !scaler_loading {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

async fn get(server: &TestServer, path: &str) -> (u16, Value) {
    let r = reqwest::get(server.url(path)).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
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
    assert_eq!(get(server, "/v2/models/mlp/ready").await.0, 200);
}

/// The ONNX Runtime model is unavailable everywhere it is asked about, with `reason` and the fix.
async fn assert_onnxruntime_model_unavailable(server: &TestServer, reason: &str) {
    let (status, body) = get(server, "/v2/models/scaler").await;
    assert_eq!(status, 503, "metadata: {body}");
    let msg = body["error"].as_str().unwrap();
    assert!(msg.contains(reason), "says why ({reason}): {msg}");
    assert!(msg.contains(FIX), "names the fix: {msg}");
    assert!(
        msg.contains("scaler/1/model.onnx"),
        "names the model file: {msg}"
    );

    assert_eq!(get(server, "/v2/models/scaler/ready").await.0, 503);

    let r = reference("scaler");
    let req = json!({"inputs": r.inputs.iter().map(|t| t.json()).collect::<Vec<_>>()});
    let (status, body) = post(server, "/v2/models/scaler/infer", &req).await;
    assert_eq!(status, 503, "infer: {body}");

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_library_tract_models_serve_and_onnxruntime_models_name_the_fix() {
    let _turn = SERIAL.lock().await;
    let repo = repo();
    let missing = repo.path().join("no-such-dir/libonnxruntime.so");
    let server = start(repo.path(), missing, true).await;

    assert_tract_model_serves(&server).await;
    assert_onnxruntime_model_unavailable(&server, "no-such-dir/libonnxruntime.so").await;
    assert_eq!(
        get(&server, "/v2/health/ready").await.0,
        503,
        "strict readiness: a model of the repository is not loaded"
    );
    assert_eq!(get(&server, "/v2/health/live").await.0, 200);
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
    let server = start(repo.path(), missing, false).await;

    assert_eq!(get(&server, "/v2/health/ready").await.0, 200);
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
    let server = start(repo.path(), bogus, true).await;

    assert_tract_model_serves(&server).await;
    assert_onnxruntime_model_unavailable(&server, "cannot load ONNX Runtime").await;
    assert_eq!(get(&server, "/v2/health/ready").await.0, 503);
    server.stop().await.unwrap();
}
