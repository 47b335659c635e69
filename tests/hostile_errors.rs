//! Issue 13, items 1 and 6: durations from client input saturate or are refused, never panic;
//! every error is short, in the error table's shape (`{"error": ...}` JSON, the right gRPC code
//! with a message), whatever the client sent; afterwards the server still answers exactly.

mod common;

use common::probe::{assert_mlp_grpc, assert_mlp_http, assert_still_serves, mlp_grpc, mlp_json};
use common::{pb, TestServer};
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use serde_json::{json, Value};
use tonic::transport::Channel;
use tonic::Code;

type Grpc = GrpcInferenceServiceClient<Channel>;

/// Longest error body or gRPC message any hostile request here may get back.
const SHORT: usize = 3000;

async fn grpc(server: &TestServer) -> Grpc {
    GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap()
}

async fn post_json(server: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    send(reqwest::Client::new().post(server.url(path)).json(body)).await
}

/// Status and body of a request whose answer must be `{"error": "..."}` JSON when it fails.
async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = resp.text().await.unwrap();
    if status >= 400 {
        assert_eq!(
            ctype.as_deref(),
            Some("application/json"),
            "{status}: {text}"
        );
        assert!(text.len() < SHORT, "{status}: a {} byte error", text.len());
    }
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status >= 400 {
        assert!(body["error"].is_string(), "{status}: {text}");
    }
    (status, body)
}

fn error(body: &Value) -> &str {
    body["error"].as_str().unwrap()
}

/// Inference with `grpc-timeout: value` is answered OK and exactly, counted ok, not cancelled.
async fn huge_grpc_timeout_is_answered(value: &str) {
    let server = TestServer::start().await;
    let mut req = tonic::Request::new(mlp_grpc());
    req.metadata_mut()
        .insert("grpc-timeout", value.parse().unwrap());
    let resp = grpc(&server).await.model_infer(req).await;
    assert_mlp_grpc(&resp.expect("answered, not reset").into_inner());
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains(
            r#"ferroserve_requests_total{code="ok",model="mlp",protocol="grpc",version="1"} 1"#
        ),
        "{metrics}"
    );
    assert!(!metrics.contains(r#"code="cancelled""#), "{metrics}");
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn grpc_timeout_of_u64_max_seconds_means_no_deadline() {
    huge_grpc_timeout_is_answered("18446744073709551615S").await;
}

#[tokio::test]
async fn grpc_timeout_in_hours_past_u64_seconds_means_no_deadline() {
    huge_grpc_timeout_is_answered("5124095576030432H").await;
}

#[tokio::test]
async fn malformed_grpc_timeout_is_invalid_argument() {
    let server = TestServer::start().await;
    let mut req = tonic::Request::new(mlp_grpc());
    req.metadata_mut()
        .insert("grpc-timeout", "1.5S".parse().unwrap());
    let err = grpc(&server).await.model_infer(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("grpc-timeout"), "{err:?}");
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn negative_grpc_timeout_parameter_is_invalid_argument() {
    let server = TestServer::start().await;
    let mut req = mlp_grpc();
    req.parameters.insert(
        "timeout".into(),
        pb::InferParameter {
            parameter_choice: Some(pb::infer_parameter::ParameterChoice::Int64Param(-1)),
        },
    );
    let err = grpc(&server).await.model_infer(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(
        err.message(),
        "parameter \"timeout\" must be a non-negative integer, got -1"
    );
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn http_timeout_of_u64_max_micros_means_no_deadline() {
    let server = TestServer::start().await;
    let mut body = mlp_json();
    body["parameters"] = json!({"timeout": u64::MAX});
    let (status, answer) = post_json(&server, "/v2/models/mlp/infer", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_mlp_http(&answer);
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn a_4_mib_input_name_gets_a_short_400() {
    let server = TestServer::start().await;
    let mut body = mlp_json();
    body["inputs"][0]["name"] = json!("n".repeat(4 << 20));
    let (status, answer) = post_json(&server, "/v2/models/mlp/infer", &body).await;
    assert_eq!(status, 400);
    assert!(
        error(&answer).contains("unexpected inference input 'nnnn"),
        "{answer}"
    );
    assert!(error(&answer).contains("(4194304 bytes)"), "{answer}");
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn a_grpc_model_name_over_16_kib_is_not_found_with_a_short_message() {
    let server = TestServer::start().await;
    let mut req = mlp_grpc();
    req.model_name = "m".repeat(20 * 1024);
    let err = grpc(&server).await.model_infer(req).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    assert!(err.message().len() < SHORT, "{} bytes", err.message().len());
    assert!(
        err.message().starts_with("Request for unknown model: 'mmm")
            && err.message().ends_with("(20480 bytes) is not found"),
        "{}",
        err.message()
    );
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn get_on_infer_is_405_with_a_json_error() {
    let server = TestServer::start().await;
    let (status, body) = send(reqwest::Client::new().get(server.url("/v2/models/mlp/infer"))).await;
    assert_eq!(status, 405);
    assert_eq!(
        error(&body),
        "method GET is not allowed on \"/v2/models/mlp/infer\""
    );
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn an_unknown_route_is_404_with_a_json_error() {
    let server = TestServer::start().await;
    let (status, body) = send(reqwest::Client::new().get(server.url("/v3/nothing"))).await;
    assert_eq!(status, 404);
    assert_eq!(error(&body), "no route GET \"/v3/nothing\"");
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn a_model_path_that_is_not_utf8_is_400_with_a_json_error() {
    let server = TestServer::start().await;
    let (status, body) = send(reqwest::Client::new().get(server.url("/v2/models/%FF%FE"))).await;
    assert_eq!(status, 400);
    assert!(error(&body).to_lowercase().contains("utf-8"), "{body}");
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn admin_bodies_over_the_limit_are_413_naming_it() {
    const TOKEN: &str = "hostile-errors-token";
    let server = TestServer::builder().admin_token(TOKEN).start().await;
    let c = reqwest::Client::new();
    let big = vec![b' '; 128 * 1024];
    for req in [
        c.post(server.url("/v2/repository/index")),
        c.put(server.url("/v2/models/mlp/traffic")),
        c.post(server.url("/v2/repository/models/mlp/load")),
    ] {
        let req = req.bearer_auth(TOKEN).body(big.clone());
        let (status, body) = send(req).await;
        assert_eq!(status, 413, "{body}");
        assert!(
            error(&body).contains("admin requests take at most 65536 bytes"),
            "{body}"
        );
    }
    assert_still_serves(&server).await;
}

/// A unary call of `path` (no service answers it) with an empty message.
async fn call_unknown(server: &TestServer, path: &'static str) -> tonic::Status {
    let channel = Channel::from_shared(server.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<pb::ServerLiveRequest, pb::ServerLiveResponse>::default();
    client
        .unary(
            tonic::Request::new(pb::ServerLiveRequest {}),
            http::uri::PathAndQuery::from_static(path),
            codec,
        )
        .await
        .unwrap_err()
}

#[tokio::test]
async fn an_unknown_grpc_method_is_unimplemented_naming_it() {
    let server = TestServer::start().await;
    let err = call_unknown(&server, "/inference.GRPCInferenceService/NoSuchMethod").await;
    assert_eq!(err.code(), Code::Unimplemented);
    assert_eq!(
        err.message(),
        "unknown method \"NoSuchMethod\" for service \"inference.GRPCInferenceService\""
    );
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn an_unknown_grpc_service_is_unimplemented_naming_it() {
    let server = TestServer::start().await;
    let err = call_unknown(&server, "/no.Such/Method").await;
    assert_eq!(err.code(), Code::Unimplemented);
    assert_eq!(
        err.message(),
        "unknown method \"Method\" for service \"no.Such\""
    );
    assert_still_serves(&server).await;
}
