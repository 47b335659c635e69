//! A request body that does not arrive within `body_read_timeout_secs` is answered with the
//! reason, on both transports: HTTP 408 `{"error": "request body not received within N s"}`,
//! gRPC DEADLINE_EXCEEDED with the same message (gRPC has no request-timeout code; the nearest
//! is a time bound that passed before the answer). The server serves on afterwards.

mod common;

use std::time::Duration;

use common::{assert_matches_reference, copy_model, reference, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The body read timeout of the server under test, seconds.
const TIMEOUT: f64 = 1.0;
const MESSAGE: &str = "request body not received within 1 s";
/// The answer must come within the timeout plus this.
const SLACK: Duration = Duration::from_secs(5);

async fn server() -> (TestServer, tempfile::TempDir) {
    let repo = common::repo([copy_model("mlp")]);
    let server = TestServer::builder()
        .repo(repo.path())
        .configure(|c| c.body_read_timeout_secs = TIMEOUT)
        .start()
        .await;
    (server, repo)
}

/// Health answers, and the reference request gets the reference output.
async fn assert_still_serving(server: &TestServer) {
    let (status, _) = server.get("/v2/health/live").await;
    assert_eq!(status, 200);
    let r = reference("mlp");
    let body = serde_json::json!({"inputs": [r.inputs[0].json()]});
    let resp = reqwest::Client::new()
        .post(server.url("/v2/models/mlp/infer"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    let out = &v["outputs"][0];
    let shape: Vec<i64> = serde_json::from_value(out["shape"].clone()).unwrap();
    let values: Vec<f64> = serde_json::from_value(out["data"].clone()).unwrap();
    assert_matches_reference("mlp", "output", "FP32", &shape, &values, &r.outputs[0]);
}

#[tokio::test]
async fn an_http_body_not_received_in_time_is_answered_408_with_the_limit() {
    let (server, _repo) = server().await;
    let mut tcp = TcpStream::connect(server.http).await.unwrap();
    // 10 of the 100 bytes declared, then nothing.
    tcp.write_all(
        b"POST /v2/models/mlp/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
          content-length: 100\r\n\r\n{\"inputs\":",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let limit = Duration::from_secs_f64(TIMEOUT) + SLACK;
    tokio::time::timeout(limit, tcp.read_to_end(&mut answer))
        .await
        .expect("answered and closed within the body read timeout")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{answer}"));
    assert_eq!(v["error"], MESSAGE, "{answer}");
    assert_still_serving(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_grpc_body_not_received_in_time_is_answered_deadline_exceeded() {
    let (server, _repo) = server().await;
    let tcp = TcpStream::connect(server.grpc).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::post("/inference.GRPCInferenceService/ModelInfer")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut body) = client.send_request(request, false).unwrap();
    // A gRPC frame header declaring 100 bytes, 5 of them sent, the stream left open.
    body.send_data(
        bytes::Bytes::from_static(&[0, 0, 0, 0, 100, 0x0a, 3, b'm', b'l', b'p']),
        false,
    )
    .unwrap();
    let limit = Duration::from_secs_f64(TIMEOUT) + SLACK;
    let (status, message) = tokio::time::timeout(limit, async {
        let mut response = response.await.unwrap();
        let headers = response.headers().clone();
        let trailers = if headers.contains_key("grpc-status") {
            headers
        } else {
            response
                .body_mut()
                .trailers()
                .await
                .unwrap()
                .unwrap_or_default()
        };
        let get = |k: &str| {
            trailers
                .get(k)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        (get("grpc-status"), get("grpc-message"))
    })
    .await
    .expect("answered within the body read timeout");
    assert_eq!(status, (tonic::Code::DeadlineExceeded as i32).to_string());
    assert_eq!(message.replace("%20", " "), MESSAGE);
    assert_still_serving(&server).await;
    server.stop().await.unwrap();
}
