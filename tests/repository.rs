//! The model repository at start-up: a model that fails to load is reported with its file and
//! reason, the others serve, and readiness reflects it.

mod common;

use std::path::Path;

use common::{copy_model, TestServer};
use serde_json::json;

/// A repository with the bundled `mlp`, plus `broken` models written by `extra`.
fn repo_with(extra: impl Fn(&Path)) -> tempfile::TempDir {
    let dir = common::repo([copy_model("mlp")]);
    extra(dir.path());
    dir
}

/// A strict server on `mlp` and `broken`, whose model file is not a protobuf.
async fn corrupt_model_server() -> (tempfile::TempDir, TestServer) {
    let repo = repo_with(|root| {
        std::fs::create_dir_all(root.join("broken/1")).unwrap();
        std::fs::write(root.join("broken/config.toml"), "max_batch_size = 8\n").unwrap();
        std::fs::write(root.join("broken/1/model.onnx"), b"this is not a protobuf").unwrap();
    });
    let server = TestServer::builder()
        .repo(repo.path())
        .strict(true)
        .wait_ready(false)
        .start()
        .await;
    (repo, server)
}

#[tokio::test]
async fn a_corrupt_model_file_makes_only_its_model_and_a_strict_server_unready() {
    let (_repo, server) = corrupt_model_server().await;
    assert_eq!(
        server.get("/v2/health/ready").await.0,
        503,
        "strict readiness: one model is down"
    );
    assert_eq!(server.get("/v2/models/broken/ready").await.0, 503);
    assert_eq!(server.get("/v2/models/mlp/ready").await.0, 200);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_corrupt_model_file_is_named_in_the_models_error() {
    let (_repo, server) = corrupt_model_server().await;
    let (status, body) = server.get("/v2/models/broken").await;
    assert_eq!(
        status, 404,
        "Triton's code for a model with no available version"
    );
    let msg = body["error"].as_str().unwrap();
    assert!(msg.contains("broken/1/model.onnx"), "names the file: {msg}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_healthy_model_keeps_serving_beside_a_corrupt_one() {
    let (_repo, server) = corrupt_model_server().await;
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
    let server = TestServer::builder()
        .repo(repo.path())
        .strict(false)
        .wait_ready(false)
        .start()
        .await;
    assert_eq!(server.get("/v2/health/ready").await.0, 200);
    let (status, body) = server.get("/v2/models/broken").await;
    assert_eq!(
        status, 404,
        "Triton's code for a model with no available version"
    );
    assert!(
        body["error"].as_str().unwrap().contains("does not exist"),
        "{body}"
    );
}

#[tokio::test]
async fn config_that_disagrees_with_the_graph_is_refused_with_the_reason() {
    let repo = repo_with(|root| {
        copy_model("iris").to(root);
        let cfg =
            "max_batch_size = 8\n[[input]]\nname = \"input\"\ndatatype = \"FP32\"\ndims = [5]\n";
        std::fs::write(root.join("iris/config.toml"), cfg).unwrap();
    });
    let server = TestServer::builder()
        .repo(repo.path())
        .strict(true)
        .wait_ready(false)
        .start()
        .await;
    let (status, body) = server.get("/v2/models/iris").await;
    assert_eq!(status, 404);
    let msg = body["error"].as_str().unwrap();
    assert!(msg.contains("dims [5]") && msg.contains("[4]"), "{msg}");
    assert_eq!(server.get("/v2/health/ready").await.0, 503);
    assert_eq!(server.get("/v2/models/mlp/ready").await.0, 200);
}

#[tokio::test]
async fn an_invalid_config_file_names_the_field() {
    let repo = repo_with(|root| {
        std::fs::create_dir_all(root.join("typo/1")).unwrap();
        std::fs::write(root.join("typo/config.toml"), "max_batch = 8\n").unwrap();
    });
    let server = TestServer::builder()
        .repo(repo.path())
        .strict(false)
        .wait_ready(false)
        .start()
        .await;
    let (status, body) = server.get("/v2/models/typo").await;
    assert_eq!(status, 404);
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("config.toml") && msg.contains("max_batch"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_missing_repository_is_a_start_up_error() {
    let err = TestServer::builder()
        .repo(Path::new("/nonexistent/ferroserve-models"))
        .start_fails()
        .await;
    assert!(
        format!("{err:#}").contains("/nonexistent/ferroserve-models"),
        "{err:#}"
    );
}
