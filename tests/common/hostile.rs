//! Hostile requests to `mlp` and the checks on their refusals: a body posted with or without
//! Inference-Header-Content-Length, binary-extension bodies, BYTES elements, and one case sent
//! over both transports (400 / INVALID_ARGUMENT with every needle, then still serving).

use serde_json::{json, Value};
use tonic::Code;

use super::probe::{assert_still_serves, mlp_grpc};
use super::{pb, TestServer};
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;

pub const INFER: &str = "/v2/models/mlp/infer";

/// A body and its Inference-Header-Content-Length, if any.
pub type Body = (Vec<u8>, Option<String>);
/// What a refusal's message must contain.
pub type Needles = &'static [&'static str];
/// A body and its optional Inference-Header-Content-Length, posted to mlp: status and JSON body.
pub async fn post(server: &TestServer, body: Vec<u8>, header_len: Option<String>) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(server.url(INFER)).body(body);
    if let Some(len) = header_len {
        req = req.header("Inference-Header-Content-Length", len);
    }
    let resp = req.send().await.expect("answered, not dropped");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{status}: not JSON ({e}): {:?}",
            &text[..text.len().min(300)]
        )
    });
    (status, body)
}

/// A binary-extension body: `header` as JSON, then `blob`.
pub fn binary(header: &Value, blob: &[u8]) -> Body {
    let mut body = serde_json::to_vec(header).unwrap();
    let len = body.len().to_string();
    body.extend_from_slice(blob);
    (body, Some(len))
}

/// One input `input` of `datatype` and `shape` whose data follows the JSON header.
pub fn binary_input(datatype: &str, shape: Value, size: Value) -> Value {
    json!({"inputs": [{"name": "input", "datatype": datatype, "shape": shape,
                       "parameters": {"binary_data_size": size}}]})
}

pub fn assert_http(what: &str, (status, body): (u16, Value), want: u16, needles: &[&str]) {
    let message = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: {status} without an error: {body}"));
    assert_eq!(status, want, "{what}: {message}");
    assert!(
        message.len() < 3000,
        "{what}: a {} byte message",
        message.len()
    );
    for n in needles {
        assert!(message.contains(n), "{what}: {message:?} lacks {n:?}");
    }
}

pub fn assert_grpc<T: std::fmt::Debug>(
    what: &str,
    reply: Result<T, tonic::Status>,
    want: Code,
    needles: &[&str],
) {
    let status = reply.expect_err(what);
    assert_eq!(status.code(), want, "{what}: {}", status.message());
    assert!(status.message().len() < 3000, "{what}: a long message");
    for n in needles {
        assert!(
            status.message().contains(n),
            "{what}: {:?} lacks {n:?}",
            status.message()
        );
    }
}

pub async fn grpc(server: &TestServer) -> GrpcInferenceServiceClient<tonic::transport::Channel> {
    GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap()
}

/// The reference gRPC request with `edit` applied.
pub fn grpc_with(edit: impl FnOnce(&mut pb::ModelInferRequest)) -> pb::ModelInferRequest {
    let mut req = mlp_grpc();
    edit(&mut req);
    req
}

/// One case on both transports: the HTTP body is a 400 and the gRPC request INVALID_ARGUMENT,
/// each message holding every needle; then the server still serves.
pub async fn assert_refused_on_both(
    server: &TestServer,
    what: &str,
    (body, len): Body,
    req: pb::ModelInferRequest,
    needles: Needles,
) {
    let reply = post(server, body, len).await;
    assert_http(&format!("{what} (HTTP)"), reply, 400, needles);
    let reply = grpc(server).await.model_infer(req).await;
    assert_grpc(
        &format!("{what} (gRPC)"),
        reply,
        Code::InvalidArgument,
        needles,
    );
    assert_still_serves(server).await;
}

pub fn json_body(body: &Value) -> Body {
    (serde_json::to_vec(body).unwrap(), None)
}

/// Length-prefixed BYTES elements, as the binary extension and raw_input_contents carry them.
pub fn prefixed(items: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        out.extend_from_slice(&(item.len() as u32).to_le_bytes());
        out.extend_from_slice(item);
    }
    out
}
