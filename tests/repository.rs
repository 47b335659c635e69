//! The model repository at start-up: a model that fails to load is reported with its file and
//! reason, the others serve, and readiness reflects it.

mod common;

use std::path::Path;

use common::{bundled_models, test_config, TestServer};
use ferroserve::config::ServerConfig;
use serde_json::{json, Value};

fn copy_model(from: &Path, to: &Path, name: &str) {
    let dst = to.join(name);
    std::fs::create_dir_all(dst.join("1")).unwrap();
    std::fs::copy(from.join(name).join("config.toml"), dst.join("config.toml")).unwrap();
    std::fs::copy(
        from.join(name).join("1/model.onnx"),
        dst.join("1/model.onnx"),
    )
    .unwrap();
}

/// A repository with the bundled `mlp`, plus `broken` models written by `extra`.
fn repo_with(extra: impl Fn(&Path)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_model(&bundled_models(), dir.path(), "mlp");
    extra(dir.path());
    dir
}

async fn start(repo: &Path, strict: bool) -> TestServer {
    let config = ServerConfig {
        model_repository: repo.to_path_buf(),
        strict_readiness: strict,
        ..test_config()
    };
    TestServer::start_with(config, false).await
}

async fn get(server: &TestServer, path: &str) -> (u16, Value) {
    let r = reqwest::get(server.url(path)).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_corrupt_model_file_fails_alone_and_readiness_shows_it() {
    let repo = repo_with(|root| {
        std::fs::create_dir_all(root.join("broken/1")).unwrap();
        std::fs::write(root.join("broken/config.toml"), "max_batch_size = 8\n").unwrap();
        std::fs::write(root.join("broken/1/model.onnx"), b"this is not a protobuf").unwrap();
    });
    let server = start(repo.path(), true).await;
    assert_eq!(
        get(&server, "/v2/health/ready").await.0,
        503,
        "strict readiness: one model is down"
    );
    assert_eq!(get(&server, "/v2/models/broken/ready").await.0, 503);
    assert_eq!(get(&server, "/v2/models/mlp/ready").await.0, 200);

    let (status, body) = get(&server, "/v2/models/broken").await;
    assert_eq!(status, 503);
    let msg = body["error"].as_str().unwrap();
    assert!(msg.contains("broken/1/model.onnx"), "names the file: {msg}");

    let req = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": vec![0.5f32; 64]}]});
    let r = reqwest::Client::new()
        .post(server.url("/v2/models/mlp/infer"))
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the healthy model keeps serving");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn without_strict_readiness_the_server_is_ready_despite_a_failed_model() {
    let repo = repo_with(|root| {
        std::fs::create_dir_all(root.join("broken/1")).unwrap();
        std::fs::write(root.join("broken/config.toml"), "max_batch_size = 8\n").unwrap();
    });
    let server = start(repo.path(), false).await;
    assert_eq!(get(&server, "/v2/health/ready").await.0, 200);
    let (status, body) = get(&server, "/v2/models/broken").await;
    assert_eq!(status, 503);
    assert!(
        body["error"].as_str().unwrap().contains("does not exist"),
        "{body}"
    );
}

#[tokio::test]
async fn config_that_disagrees_with_the_graph_is_refused_with_the_reason() {
    let repo = repo_with(|root| {
        copy_model(&bundled_models(), root, "iris");
        let cfg =
            "max_batch_size = 8\n[[input]]\nname = \"input\"\ndatatype = \"FP32\"\ndims = [5]\n";
        std::fs::write(root.join("iris/config.toml"), cfg).unwrap();
    });
    let server = start(repo.path(), true).await;
    let (status, body) = get(&server, "/v2/models/iris").await;
    assert_eq!(status, 503);
    let msg = body["error"].as_str().unwrap();
    assert!(msg.contains("dims [5]") && msg.contains("[4]"), "{msg}");
    assert_eq!(get(&server, "/v2/health/ready").await.0, 503);
    assert_eq!(get(&server, "/v2/models/mlp/ready").await.0, 200);
}

#[tokio::test]
async fn an_invalid_config_file_names_the_field() {
    let repo = repo_with(|root| {
        std::fs::create_dir_all(root.join("typo/1")).unwrap();
        std::fs::write(root.join("typo/config.toml"), "max_batch = 8\n").unwrap();
    });
    let server = start(repo.path(), false).await;
    let (status, body) = get(&server, "/v2/models/typo").await;
    assert_eq!(status, 503);
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("config.toml") && msg.contains("max_batch"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_missing_repository_is_a_start_up_error() {
    let config = ServerConfig {
        model_repository: "/nonexistent/ferroserve-models".into(),
        host: "127.0.0.1".into(),
        http_port: 0,
        grpc_port: 0,
        metrics_port: 0,
        ..test_config()
    };
    let listeners = ferroserve::server::Listeners::bind(&config).await.unwrap();
    let err = ferroserve::server::run(config, listeners, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("/nonexistent/ferroserve-models"),
        "{err:#}"
    );
}
