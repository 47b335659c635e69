//! Issue 15, item 5: Triton's model control with load parameters. `load_model(config=<JSON>)`
//! overrides a repository model's configuration and `load_model(config=..., files={"file:...":
//! bytes})` uploads a model, over HTTP (base64 `file:` strings) and gRPC (`bytes_param`), only
//! with `allow_model_upload` and only from an admitted admin caller; the files land inside the
//! repository or nowhere. `unload_dependents` is accepted (no model here has dependents).

mod common;

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use common::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use common::pb::model_repository_parameter::ParameterChoice;
use common::pb::{
    ModelRepositoryParameter, RepositoryModelLoadRequest, RepositoryModelUnloadRequest,
};
use common::probe::{assert_mlp_grpc, assert_mlp_http, assert_still_serves, mlp_grpc, mlp_json};
use common::{bundled_models, copy_model, TestServer};
use ferroserve::config::{ModelControlMode, ServerConfig};
use serde_json::{json, Value};
use tonic::Code;

const TOKEN: &str = "model-control-test-token";

/// mlp's configuration as Triton's JSON (what tritonclient's `load_model(config=...)` sends).
fn mlp_config(name: &str) -> String {
    json!({
        "name": name,
        "max_batch_size": 64,
        "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [64]}],
        "output": [{"name": "output", "data_type": "TYPE_FP32", "dims": [10]}],
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
    })
    .to_string()
}

fn mlp_onnx() -> Vec<u8> {
    std::fs::read(bundled_models().join("mlp/1/model.onnx")).unwrap()
}

/// Explicit mode over a repository holding mlp (loaded), upload as `allow` says.
async fn server(
    allow: bool,
    edit: impl FnOnce(&mut ServerConfig),
) -> (TestServer, tempfile::TempDir) {
    let dir = common::repo([copy_model("mlp")]);
    let server = TestServer::builder()
        .repo(dir.path())
        .control(ModelControlMode::Explicit)
        .load(&["mlp"])
        .admin_token(TOKEN)
        .configure(|c| {
            c.allow_model_upload = allow;
            edit(c);
        })
        .start()
        .await;
    (server, dir)
}

async fn http_load(
    server: &TestServer,
    model: &str,
    body: &Value,
    token: Option<&str>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(server.url(&format!("/v2/repository/models/{model}/load")))
        .json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn http_upload_body(name: &str, files: &[(&str, &[u8])]) -> Value {
    let mut params = serde_json::Map::new();
    params.insert("config".into(), json!(mlp_config(name)));
    for (path, bytes) in files {
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        params.insert(format!("file:{path}"), json!(text));
    }
    json!({ "parameters": params })
}

fn grpc_param(choice: ParameterChoice) -> ModelRepositoryParameter {
    ModelRepositoryParameter {
        parameter_choice: Some(choice),
    }
}

async fn grpc_load(
    server: &TestServer,
    model: &str,
    params: HashMap<String, ModelRepositoryParameter>,
) -> Result<(), tonic::Status> {
    let mut client = GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let mut req = tonic::Request::new(RepositoryModelLoadRequest {
        model_name: model.into(),
        parameters: params,
        ..Default::default()
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    client.repository_model_load(req).await.map(|_| ())
}

fn grpc_upload_params(
    name: &str,
    files: Vec<(&str, Vec<u8>)>,
) -> HashMap<String, ModelRepositoryParameter> {
    let mut params = HashMap::new();
    params.insert(
        "config".into(),
        grpc_param(ParameterChoice::StringParam(mlp_config(name))),
    );
    for (path, bytes) in files {
        params.insert(
            format!("file:{path}"),
            grpc_param(ParameterChoice::BytesParam(bytes.into())),
        );
    }
    params
}

/// The reference mlp request sent to `model` is answered with the reference output, on both
/// transports.
async fn assert_serves_as_mlp(server: &TestServer, model: &str) {
    let resp = reqwest::Client::new()
        .post(server.url(&format!("/v2/models/{model}/infer")))
        .json(&mlp_json())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{model} over HTTP");
    assert_mlp_http(&resp.json().await.unwrap());
    let mut client = GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let mut req = mlp_grpc();
    req.model_name = model.into();
    assert_mlp_grpc(&client.model_infer(req).await.unwrap().into_inner());
}

/// Nothing but the model directories and no hidden leftovers in the repository.
fn assert_repository_holds(repo: &Path, names: &[&str]) {
    let mut found: Vec<String> = std::fs::read_dir(repo)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(found, names, "repository entries");
}

#[tokio::test]
async fn an_http_upload_with_files_and_config_is_served_exactly() {
    let (server, dir) = server(true, |_| {}).await;
    let body = http_upload_body("uploaded", &[("1/model.onnx", &mlp_onnx())]);
    let (status, answer) = http_load(&server, "uploaded", &body, Some(TOKEN)).await;
    assert_eq!(status, 200, "{answer}");
    assert_serves_as_mlp(&server, "uploaded").await;
    assert!(dir.path().join("uploaded/1/model.onnx").is_file());
    assert!(dir.path().join("uploaded/config.toml").is_file());
    assert_repository_holds(dir.path(), &["mlp", "uploaded"]);
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_grpc_upload_with_files_and_config_is_served_exactly() {
    let (server, dir) = server(true, |_| {}).await;
    let params = grpc_upload_params("uploaded", vec![("1/model.onnx", mlp_onnx())]);
    grpc_load(&server, "uploaded", params).await.unwrap();
    assert_serves_as_mlp(&server, "uploaded").await;
    assert_repository_holds(dir.path(), &["mlp", "uploaded"]);
    // A second upload replaces the model whole, and serves again.
    let params = grpc_upload_params("uploaded", vec![("2/model.onnx", mlp_onnx())]);
    grpc_load(&server, "uploaded", params).await.unwrap();
    assert!(
        !dir.path().join("uploaded/1").exists(),
        "the old directory is replaced"
    );
    assert_serves_as_mlp(&server, "uploaded").await;
    assert_repository_holds(dir.path(), &["mlp", "uploaded"]);
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_config_override_applies_to_a_repository_model() {
    let (server, _dir) = server(true, |_| {}).await;
    let config = json!({"max_batch_size": 4}).to_string();
    let (status, answer) = http_load(
        &server,
        "mlp",
        &json!({"parameters": {"config": config}}),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let mut body = mlp_json();
    body["inputs"][0]["shape"] = json!([8, 64]);
    body["inputs"][0]["data"] = json!(common::probe::mlp_values(8));
    let resp = reqwest::Client::new()
        .post(server.url("/v2/models/mlp/infer"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(
        answer["error"],
        "inference request batch-size must be <= 4 for 'mlp'"
    );
    // Overridden again, back to the repository's batching: the override is what serves.
    let config = json!({"max_batch_size": 64}).to_string();
    let (status, answer) = http_load(
        &server,
        "mlp",
        &json!({"parameters": {"config": config}}),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn uploads_are_refused_403_when_the_operator_has_not_enabled_them() {
    let (server, dir) = server(false, |_| {}).await;
    // Small files: with uploads off, admin bodies stay within 64 KiB (a 413 before this).
    let onnx = b"not read: refused first".to_vec();
    let body = http_upload_body("uploaded", &[("1/model.onnx", &onnx)]);
    let (status, answer) = http_load(&server, "uploaded", &body, Some(TOKEN)).await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("allow_model_upload"),
        "{answer}"
    );
    let err = grpc_load(
        &server,
        "uploaded",
        grpc_upload_params("uploaded", vec![("1/model.onnx", onnx.clone())]),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(
        err.message().contains("allow_model_upload"),
        "{}",
        err.message()
    );
    assert_repository_holds(dir.path(), &["mlp"]);
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn uploads_without_the_admin_token_are_refused_401() {
    let (server, dir) = server(true, |_| {}).await;
    let body = http_upload_body("uploaded", &[("1/model.onnx", &mlp_onnx())]);
    let (status, answer) = http_load(&server, "uploaded", &body, None).await;
    assert_eq!(status, 401, "{answer}");
    let (status, answer) =
        http_load(&server, "uploaded", &body, Some("wrong-token-wrong-token")).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"], "invalid admin token");
    assert_repository_holds(dir.path(), &["mlp"]);
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn upload_paths_that_escape_the_model_directory_are_refused_and_nothing_is_written() {
    let (server, dir) = server(true, |_| {}).await;
    let onnx = mlp_onnx();
    for path in [
        "../escaped.onnx",
        "1/../../escaped.onnx",
        "/tmp/escaped.onnx",
        "1/.hidden",
        "config.toml",
    ] {
        let body = http_upload_body("uploaded", &[(path, &onnx)]);
        let (status, answer) = http_load(&server, "uploaded", &body, Some(TOKEN)).await;
        assert_eq!(status, 400, "{path}: {answer}");
        let msg = answer["error"].as_str().unwrap();
        assert!(
            msg.starts_with(&format!("Invalid file parameter 'file:{path}'")),
            "{path}: {msg}"
        );
        let err = grpc_load(
            &server,
            "uploaded",
            grpc_upload_params("uploaded", vec![(path, onnx.clone())]),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{path}: {}",
            err.message()
        );
        assert_eq!(err.message(), msg, "{path}: same words on both transports");
    }
    assert!(!dir.path().join("../escaped.onnx").exists());
    assert!(!Path::new("/tmp/escaped.onnx").exists());
    assert_repository_holds(dir.path(), &["mlp"]);
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_upload_over_max_request_bytes_is_413_and_resource_exhausted() {
    let (server, dir) = server(true, |c| c.max_request_bytes = 1 << 20).await;
    let big = vec![7u8; 2 << 20];
    let body = http_upload_body("uploaded", &[("1/model.onnx", &big)]);
    let (status, answer) = http_load(&server, "uploaded", &body, Some(TOKEN)).await;
    assert_eq!(status, 413, "{answer}");
    let err = grpc_load(
        &server,
        "uploaded",
        grpc_upload_params("uploaded", vec![("1/model.onnx", big)]),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert_repository_holds(dir.path(), &["mlp"]);
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_upload_of_more_than_64_files_is_413() {
    let (server, dir) = server(true, |_| {}).await;
    let names: Vec<String> = (0..65).map(|i| format!("1/f{i}")).collect();
    let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    let (status, answer) = http_load(
        &server,
        "uploaded",
        &http_upload_body("uploaded", &files),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(
        answer["error"],
        "65 files uploaded; at most 64 are accepted"
    );
    assert_repository_holds(dir.path(), &["mlp"]);
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn files_without_a_config_are_refused_with_tritons_words() {
    let (server, dir) = server(true, |_| {}).await;
    let text = base64::engine::general_purpose::STANDARD.encode(mlp_onnx());
    let body = json!({"parameters": {"file:1/model.onnx": text}});
    let (status, answer) = http_load(&server, "uploaded", &body, Some(TOKEN)).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["error"],
        "Load parameter 'config' must be specified for model file override"
    );
    assert_repository_holds(dir.path(), &["mlp"]);
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_unsupported_config_field_is_refused_by_name() {
    let (server, dir) = server(true, |_| {}).await;
    let config =
        json!({"max_batch_size": 8, "sequence_batching": {"max_sequence_idle_microseconds": 100}});
    let body = json!({"parameters": {"config": config.to_string()}});
    let (status, answer) = http_load(&server, "mlp", &body, Some(TOKEN)).await;
    assert_eq!(status, 400, "{answer}");
    let msg = answer["error"].as_str().unwrap();
    assert!(
        msg.starts_with("failed to load 'mlp', failed to poll from model repository: Invalid config override: field 'sequence_batching' is not supported"),
        "{msg}"
    );
    let mut params = HashMap::new();
    params.insert(
        "config".into(),
        grpc_param(ParameterChoice::BytesParam(b"{}".to_vec().into())),
    );
    let err = grpc_load(&server, "mlp", params).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "invalid value type for load parameter 'config', expected string_param."
    );
    assert_repository_holds(dir.path(), &["mlp"]);
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn unload_dependents_is_accepted_and_changes_nothing() {
    let (server, _dir) = server(true, |_| {}).await;
    let resp = reqwest::Client::new()
        .post(server.url("/v2/repository/models/mlp/unload"))
        .bearer_auth(TOKEN)
        .json(&json!({"parameters": {"unload_dependents": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(server.get("/v2/models/mlp/ready").await.0, 404);
    let (status, answer) = http_load(&server, "mlp", &json!({}), Some(TOKEN)).await;
    assert_eq!(status, 200, "{answer}");
    let mut client = GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let unload = |choice| {
        let mut req = tonic::Request::new(RepositoryModelUnloadRequest {
            model_name: "mlp".into(),
            parameters: HashMap::from([("unload_dependents".to_string(), grpc_param(choice))]),
            ..Default::default()
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        req
    };
    let err = client
        .repository_model_unload(unload(ParameterChoice::StringParam("yes".into())))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "invalid value type for 'unload_dependents' parameter, expected bool_param."
    );
    assert_still_serves(&server).await;
    client
        .repository_model_unload(unload(ParameterChoice::BoolParam(true)))
        .await
        .unwrap();
    assert_eq!(server.get("/v2/models/mlp/ready").await.0, 404);
    server.stop().await.unwrap();
}

/// Triton's answer: a model that is not loaded has nothing to unload, so the unload succeeds,
/// whether the model was unloaded before or was never in the repository.
#[tokio::test]
async fn unloading_a_model_not_loaded_succeeds_as_in_triton() {
    let (server, dir) = server(false, |_| {}).await;
    let unload = |model: &'static str| {
        reqwest::Client::new()
            .post(server.url(&format!("/v2/repository/models/{model}/unload")))
            .bearer_auth(TOKEN)
            .send()
    };
    for (model, why) in [
        ("mlp", "first unload"),
        ("mlp", "already unloaded"),
        ("never_there", "not in the repository"),
    ] {
        let resp = unload(model).await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{why}");
    }
    assert_eq!(server.get("/v2/models/mlp/ready").await.0, 404);
    let mut client = GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let mut req = tonic::Request::new(RepositoryModelUnloadRequest {
        model_name: "never_there".into(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    client.repository_model_unload(req).await.unwrap();
    assert_repository_holds(dir.path(), &["mlp"]);
    server.stop().await.unwrap();
}
