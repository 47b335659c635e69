//! Issue 15 items 3 and 4: the KServe v2 health bodies (`{"live": true}`, `{"ready": bool}`,
//! statuses unchanged) and the name server metadata reports (`server_name`, both transports).

mod common;

use common::{pb, TestServer};
use ferroserve::config::ServerConfig;
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use serde_json::json;

#[tokio::test]
async fn live_answers_200_with_live_true() {
    let server = TestServer::start().await;
    assert_eq!(
        server.get("/v2/health/live").await,
        (200, json!({"live": true}))
    );
}

#[tokio::test]
async fn ready_answers_200_with_ready_true() {
    let server = TestServer::start().await;
    assert_eq!(
        server.get("/v2/health/ready").await,
        (200, json!({"ready": true}))
    );
}

#[tokio::test]
async fn not_ready_answers_503_with_ready_false() {
    // Strict readiness and a model that cannot load: once it has failed, the server stays
    // not ready (start waits until no model is loading).
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(repo.path().join("broken/1")).unwrap();
    std::fs::write(repo.path().join("broken/1/model.onnx"), b"not onnx").unwrap();
    let server = TestServer::builder()
        .repo(repo.path())
        .strict(true)
        .wait_ready(false)
        .start()
        .await;
    assert_eq!(
        server.get("/v2/health/ready").await,
        (503, json!({"ready": false}))
    );
    assert_eq!(
        server.get("/v2/health/live").await,
        (200, json!({"live": true}))
    );
}

#[tokio::test]
async fn model_ready_answers_with_its_name_and_ready_true() {
    let server = TestServer::start().await;
    let want = (200, json!({"name": "mlp", "ready": true}));
    assert_eq!(server.get("/v2/models/mlp/ready").await, want);
    assert_eq!(server.get("/v2/models/mlp/versions/1/ready").await, want);
}

#[tokio::test]
async fn unknown_model_ready_is_still_an_error() {
    let server = TestServer::start().await;
    let (status, body) = server.get("/v2/models/nope/ready").await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("nope"), "{body}");
}

#[tokio::test]
async fn server_name_defaults_to_ferroserve() {
    let server = TestServer::start().await;
    assert_eq!(server.get("/v2").await.1["name"], "ferroserve");
}

#[tokio::test]
async fn server_name_setting_is_reported_over_both_transports() {
    let server = TestServer::builder()
        .configure(|c| c.server_name = "triton".into())
        .start()
        .await;
    let (status, meta) = server.get("/v2").await;
    assert_eq!(status, 200);
    assert_eq!(meta["name"], "triton");
    let mut client = GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let meta = client
        .server_metadata(pb::ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.name, "triton");
    assert_eq!(meta.version, env!("CARGO_PKG_VERSION"));
}

#[test]
fn blank_server_name_is_refused_by_the_configuration() {
    let err = ServerConfig::load(None, &[("server_name", " ".into())]).unwrap_err();
    assert!(err.to_string().contains("server_name must be"), "{err}");
    let ok = ServerConfig::load(None, &[("server_name", "triton".into())]).unwrap();
    assert_eq!(ok.server_name, "triton");
}
