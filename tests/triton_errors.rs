//! Issue 15, item 2: the errors clients match on carry Triton's words and codes, on both
//! transports (the input validation's texts are in bad_input.rs and hostile_tensors.rs).

mod common;

use common::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use common::pb::model_infer_request::InferInputTensor;
use common::pb::{InferTensorContents, RepositoryModelLoadRequest};
use common::probe::{assert_still_serves, mlp_grpc, mlp_json};
use common::{copy_model, TestServer};
use ferroserve::config::ModelControlMode;
use serde_json::Value;
use tonic::Code;

async fn http_post(
    server: &TestServer,
    path: &str,
    body: &Value,
    token: Option<&str>,
) -> (u16, String) {
    let mut req = reqwest::Client::new().post(server.url(path)).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn grpc(server: &TestServer) -> GrpcInferenceServiceClient<tonic::transport::Channel> {
    GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_version_that_is_not_a_number_is_invalid_argument_in_tritons_words() {
    let server = TestServer::start().await;
    let mut client = grpc(&server).await;
    let word = "failed to get model version from specified version string 'abc' (details: stol), version should be an integral value > 0";
    let negative = "invalid model version specified '-1' , version should be an integral value > 0";
    for (version, want) in [("abc", word), ("-1", negative)] {
        let path = format!("/v2/models/mlp/versions/{version}/infer");
        let (status, msg) = http_post(&server, &path, &mlp_json(), None).await;
        assert_eq!(
            (status, msg.as_str()),
            (400, want),
            "HTTP version {version}"
        );
        let mut req = mlp_grpc();
        req.model_version = version.into();
        let err = client.model_infer(req).await.unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (Code::InvalidArgument, want),
            "gRPC version {version}"
        );
    }
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_models_and_versions_are_not_found_in_tritons_words_on_readiness_and_metadata_too()
{
    let server = TestServer::start().await;
    let mut client = grpc(&server).await;
    for path in ["/v2/models/nope", "/v2/models/nope/ready"] {
        let (status, body) = server.get(path).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let (status, body) = server.get("/v2/models/nope").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("Request for unknown model: 'nope' is not found"))
    );
    let (status, body) = server.get("/v2/models/mlp/versions/9").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (
            404,
            Some("Request for unknown model: 'mlp' version 9 is not found")
        )
    );
    let err = client
        .model_metadata(common::pb::ModelMetadataRequest {
            name: "nope".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            Code::NotFound,
            "Request for unknown model: 'nope' is not found"
        )
    );
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn contents_mixed_with_raw_input_contents_is_refused_in_tritons_words() {
    let server = TestServer::start().await;
    let mut client = grpc(&server).await;
    let mut req = mlp_grpc();
    req.inputs.push(InferInputTensor {
        name: "INPUT0".into(),
        datatype: "INT32".into(),
        shape: vec![1, 16],
        contents: Some(InferTensorContents {
            int_contents: vec![1; 16],
            ..Default::default()
        }),
        ..Default::default()
    });
    let err = client.model_infer(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "contents field must not be specified when using raw_input_contents for 'INPUT0' for model 'mlp'"
    );
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn loading_a_model_the_repository_lacks_is_internal_failed_to_poll() {
    let token = "triton-errors-test-token";
    let dir = common::repo([copy_model("mlp")]);
    let server = TestServer::builder()
        .repo(dir.path())
        .control(ModelControlMode::Explicit)
        .load(&["mlp"])
        .admin_token(token)
        .start()
        .await;
    let want = "failed to load 'nope', failed to poll from model repository";
    let (status, msg) = http_post(
        &server,
        "/v2/repository/models/nope/load",
        &Value::Null,
        Some(token),
    )
    .await;
    assert_eq!((status, msg.as_str()), (500, want));
    let mut req = tonic::Request::new(RepositoryModelLoadRequest {
        model_name: "nope".into(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let err = grpc(&server)
        .await
        .repository_model_load(req)
        .await
        .unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::Internal, want));
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}
