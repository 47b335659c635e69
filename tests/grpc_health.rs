//! `grpc.health.v1.Health` (Kubernetes `grpc:` probes) and server reflection, with tonic's own
//! clients of both: SERVING when ready, NOT_SERVING through the drain (a Watch stream sees the
//! flip), per-service names, NOT_FOUND for an unknown one; reflection v1 and v1alpha list our
//! services and serve their files. No admin token is needed (every test server has one).

mod common;

use std::time::Duration;

use common::probe::assert_grpc_serves;
use common::probe::assert_still_serves;
use common::TestServer;
use prost::Message;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_reflection::pb::{v1, v1alpha};

const LIMIT: Duration = Duration::from_secs(10);

async fn channel(server: &TestServer) -> Channel {
    Channel::from_shared(server.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn health(server: &TestServer) -> HealthClient<Channel> {
    HealthClient::new(channel(server).await)
}

/// The next Watch message, waited for at most [`LIMIT`].
async fn next(
    stream: &mut tonic::Streaming<HealthCheckResponse>,
) -> Option<Result<HealthCheckResponse, tonic::Status>> {
    tokio::time::timeout(LIMIT, stream.next())
        .await
        .expect("a Watch message or the end")
}

async fn check(server: &TestServer, service: &str) -> Result<ServingStatus, tonic::Status> {
    let req = HealthCheckRequest {
        service: service.into(),
    };
    let resp = health(server).await.check(req).await?.into_inner();
    Ok(resp.status())
}

#[tokio::test]
async fn check_answers_serving_for_the_whole_server_when_ready() {
    let server = TestServer::start().await;
    assert_eq!(check(&server, "").await.unwrap(), ServingStatus::Serving);
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn check_answers_serving_for_the_inference_service_and_a_ready_model() {
    let server = TestServer::start().await;
    for service in [
        "inference.GRPCInferenceService",
        "mlp",
        "grpc.health.v1.Health",
    ] {
        let status = check(&server, service).await;
        assert_eq!(status.unwrap(), ServingStatus::Serving, "{service}");
    }
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn a_model_that_failed_to_load_is_not_serving_nor_is_the_strict_server() {
    let repo = tempfile::tempdir().unwrap();
    common::copy_model("mlp").to(repo.path());
    let broken = repo.path().join("broken");
    std::fs::create_dir_all(broken.join("1")).unwrap();
    std::fs::write(broken.join("1/model.onnx"), b"this is not a protobuf").unwrap();
    let server = TestServer::builder()
        .repo(repo.path())
        .wait_ready(false)
        .start()
        .await;
    for (service, want) in [
        ("", ServingStatus::NotServing),
        ("inference.GRPCInferenceService", ServingStatus::NotServing),
        ("broken", ServingStatus::NotServing),
        ("mlp", ServingStatus::Serving),
        // The admin API works without any model.
        ("ferroserve.admin.v1.TrafficAdmin", ServingStatus::Serving),
    ] {
        assert_eq!(check(&server, service).await.unwrap(), want, "{service:?}");
    }
    assert_grpc_serves(&server).await;
}

#[tokio::test]
async fn check_of_an_unknown_service_is_not_found() {
    let server = TestServer::start().await;
    let err = check(&server, "no.such.Service").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert_eq!(err.message(), "unknown service 'no.such.Service'");
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn check_of_a_huge_unknown_service_name_answers_a_bounded_message() {
    let server = TestServer::start().await;
    let name = "x".repeat(1 << 20);
    let err = check(&server, &name).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{:?}", err.code());
    assert!(err.message().starts_with("unknown service 'xxx"));
    assert!(err.message().len() < 4096, "{} bytes", err.message().len());
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn watch_of_an_unknown_service_reads_service_unknown() {
    let server = TestServer::start().await;
    let req = HealthCheckRequest {
        service: "no.such.Service".into(),
    };
    let mut stream = health(&server).await.watch(req).await.unwrap().into_inner();
    let first = next(&mut stream).await;
    assert_eq!(
        first.unwrap().unwrap().status(),
        ServingStatus::ServiceUnknown
    );
    assert_still_serves(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_serving_turn_not_serving_when_the_drain_begins_and_ends_at_the_close() {
    // Long enough for the checks below; the watch and `run` end right after it.
    let drain = Duration::from_secs(3);
    let mut server = TestServer::builder()
        .configure(|c| c.shutdown.drain_delay = drain.as_secs_f64())
        .start()
        .await;
    let req = HealthCheckRequest {
        service: String::new(),
    };
    let mut stream = health(&server).await.watch(req).await.unwrap().into_inner();
    let first = next(&mut stream).await;
    assert_eq!(first.unwrap().unwrap().status(), ServingStatus::Serving);

    server.signal_stop();
    let flipped = next(&mut stream).await.unwrap().unwrap();
    assert_eq!(flipped.status(), ServingStatus::NotServing);
    // A probe's Check agrees, HTTP readiness too, and requests are still served.
    assert_eq!(check(&server, "").await.unwrap(), ServingStatus::NotServing);
    assert_eq!(
        check(&server, "mlp").await.unwrap(),
        ServingStatus::NotServing
    );
    assert_eq!(server.get("/v2/health/ready").await.0, 503);
    assert_grpc_serves(&server).await;

    // The close ends the stream, so the graceful shutdown does not wait on it.
    let end = next(&mut stream).await;
    assert!(
        !matches!(end, Some(Ok(_))),
        "no other status after NOT_SERVING: {end:?}"
    );
    server
        .stopped_within(drain + LIMIT)
        .await
        .expect("run ends cleanly");
}

fn v1_list() -> v1::ServerReflectionRequest {
    v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    }
}

/// The one answer to one reflection request, over v1.
async fn reflect_v1(
    server: &TestServer,
    req: v1::ServerReflectionRequest,
) -> v1::server_reflection_response::MessageResponse {
    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(channel(server).await);
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.next().await.expect("one answer").unwrap();
    answer.message_response.expect("a message")
}

const OURS: [&str; 5] = [
    "inference.GRPCInferenceService",
    "ferroserve.admin.v1.TrafficAdmin",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

#[tokio::test]
async fn reflection_v1_lists_our_services() {
    let server = TestServer::start().await;
    let v1::server_reflection_response::MessageResponse::ListServicesResponse(list) =
        reflect_v1(&server, v1_list()).await
    else {
        panic!("a service list");
    };
    let mut names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    let mut want: Vec<_> = OURS.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(names, want);
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn reflection_v1alpha_lists_our_services() {
    let server = TestServer::start().await;
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(channel(&server).await);
    let req = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.next().await.expect("one answer").unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("a service list");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for name in OURS {
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn reflection_serves_the_file_declaring_the_inference_service() {
    let server = TestServer::start().await;
    let req = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                "inference.GRPCInferenceService".into(),
            ),
        ),
    };
    let v1::server_reflection_response::MessageResponse::FileDescriptorResponse(files) =
        reflect_v1(&server, req).await
    else {
        panic!("a file descriptor answer");
    };
    let file = files
        .file_descriptor_proto
        .iter()
        .map(|b| prost_types::FileDescriptorProto::decode(b.as_slice()).unwrap())
        .find(|f| f.package() == "inference")
        .expect("the inference package's file");
    let service = file
        .service
        .iter()
        .find(|s| s.name() == "GRPCInferenceService")
        .expect("the service");
    let methods: Vec<_> = service.method.iter().map(|m| m.name()).collect();
    for m in ["ServerLive", "ServerReady", "ModelInfer", "ModelMetadata"] {
        assert!(methods.contains(&m), "{m} in {methods:?}");
    }
    assert_still_serves(&server).await;
}
