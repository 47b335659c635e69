//! Helpers of the tests over the tiny ONNX files of tests/data/dim_forms/ (dim_forms.rs,
//! warmup.rs): a one-model repository `m`, its index row, its config, `y = x + 1` checked.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::TestServer;

pub const ENGINES: [&str; 2] = ["tract", "onnxruntime"];

pub fn data(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/dim_forms")
        .join(file)
}

/// A repository of one model `m`: version 1 is `file`, with `config` as config.toml (none
/// when `None`).
pub fn repo(file: &str, config: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    std::fs::create_dir_all(m.join("1")).unwrap();
    std::fs::copy(data(file), m.join("1/model.onnx")).unwrap();
    if let Some(cfg) = config {
        std::fs::write(m.join("config.toml"), cfg).unwrap();
    }
    dir
}

/// A server on `root` that starts whatever its model's fate (the index says it).
pub async fn serve(root: &Path) -> TestServer {
    TestServer::builder()
        .repo(root)
        .strict(false)
        .wait_ready(false)
        .start()
        .await
}

/// The index row of version 1 of `m`.
pub async fn row(server: &TestServer) -> Value {
    let r = reqwest::Client::new()
        .post(server.url("/v2/repository/index"))
        .send()
        .await
        .unwrap();
    let rows: Value = r.json().await.unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "m" && r["version"] == "1")
        .cloned()
        .unwrap_or_else(|| panic!("no row for m/1 in {rows}"))
}

pub async fn infer(server: &TestServer, shape: &[usize], data: &[f32]) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(server.url("/v2/models/m/infer"))
        .json(&json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "data": data}]}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// `y = x + 1` answers exactly, and the server is still healthy.
pub async fn assert_adds_one(server: &TestServer, shape: &[usize]) {
    let n: usize = shape.iter().product();
    let x: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
    let (status, body) = infer(server, shape, &x).await;
    assert_eq!(status, 200, "{body}");
    let y: Vec<f32> = body["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(y, x.iter().map(|v| v + 1.0).collect::<Vec<_>>());
    assert_eq!(
        body["outputs"][0]["shape"],
        json!(shape),
        "output shape of {body}"
    );
    assert_eq!(server.get("/v2/health/ready").await.0, 200);
}

pub async fn config_of(server: &TestServer) -> Value {
    let (status, config) = server.get("/v2/models/m/config").await;
    assert_eq!(status, 200, "{config}");
    config
}

pub async fn assert_ready(server: &TestServer) -> Value {
    let row = row(server).await;
    assert_eq!(row["state"], "READY", "{row}");
    row
}
