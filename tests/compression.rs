//! Issue 15 item 1: gzip and deflate on both transports. Request bodies (HTTP
//! `Content-Encoding`, gRPC `grpc-encoding`) are decoded under `max_request_bytes`, a
//! compression bomb is refused at the limit with bounded memory, and answers are compressed when
//! the client asks (`Accept-Encoding`; gRPC `grpc-accept-encoding` from a client that asks, not
//! one that only advertises). The bomb tests measure their process's peak RSS, so nextest runs
//! them one at a time (.config/nextest.toml).

mod common;

use std::io::{Read, Write};

use bytes::Bytes;
use common::probe::{assert_mlp_grpc, assert_mlp_http, assert_still_serves, mlp_grpc, mlp_json};
use common::{assert_alone_in_this_process, pb, TestServer};
use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use flate2::Compression;
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use prost::Message;
use serde_json::Value;
use tonic::codec::CompressionEncoding;

const MIB: u64 = 1 << 20;
/// The bomb tests' limit: small, so decoding 1 GiB would be far past any bound on memory.
const LIMIT: usize = 16 << 20;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn raw_deflate(bytes: &[u8]) -> Vec<u8> {
    let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A gzip stream of `gib` GiB of zeros in about `gib` MiB, made without holding the zeros: one
/// sync-flushed deflate segment of 1 MiB of zeros repeated (each decodes the same after
/// zeros), then the final block. Its trailer is left zero: a server that decoded that far has
/// already failed the test.
fn gzip_bomb(gib: usize) -> Vec<u8> {
    let mut seg = DeflateEncoder::new(Vec::new(), Compression::best());
    seg.write_all(&vec![0; 1 << 20]).unwrap();
    seg.flush().unwrap();
    let seg = seg.get_ref().clone();
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    for _ in 0..gib * 1024 {
        out.extend_from_slice(&seg);
    }
    out.extend_from_slice(&[0x03, 0x00]);
    out.extend_from_slice(&[0; 8]);
    out
}

fn json_body() -> Vec<u8> {
    serde_json::to_vec(&mlp_json()).unwrap()
}

async fn post_encoded(server: &TestServer, encoding: &str, body: Vec<u8>) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(server.url("/v2/models/mlp/infer"))
        .header("content-type", "application/json")
        .header("content-encoding", encoding)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn status_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Resets the peak-RSS mark; returns the RSS it starts from, in bytes.
fn peak_start() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    status_kib("VmRSS:") * 1024
}

/// The peak grew by at most 6x the limit plus 64 MiB (the bomb's own bytes included): far
/// below the 1 GiB the bomb decodes to.
fn assert_peak_bounded(what: &str, start: u64) {
    let growth = (status_kib("VmHWM:") * 1024).saturating_sub(start);
    let bound = 6 * LIMIT as u64 + 64 * MIB;
    eprintln!("{what}: peak RSS grew {} KiB", growth / 1024);
    assert!(
        growth <= bound,
        "{what}: peak RSS grew {} MiB (bound {} MiB)",
        growth / MIB,
        bound / MIB
    );
}

#[tokio::test]
async fn gzip_request_body_is_decoded_over_http() {
    let server = TestServer::start().await;
    let (status, body) = post_encoded(&server, "gzip", gzip(&json_body())).await;
    assert_eq!(status, 200, "{body}");
    assert_mlp_http(&body);
}

#[tokio::test]
async fn deflate_request_body_is_decoded_over_http() {
    let server = TestServer::start().await;
    let (status, body) = post_encoded(&server, "deflate", zlib(&json_body())).await;
    assert_eq!(status, 200, "{body}");
    assert_mlp_http(&body);
}

#[tokio::test]
async fn raw_deflate_request_body_is_decoded_over_http() {
    let server = TestServer::start().await;
    let (status, body) = post_encoded(&server, "deflate", raw_deflate(&json_body())).await;
    assert_eq!(status, 200, "{body}");
    assert_mlp_http(&body);
}

#[tokio::test]
async fn binary_header_length_counts_the_decoded_body() {
    let server = TestServer::start().await;
    let values = common::probe::mlp_values(8);
    let header = serde_json::json!({"inputs": [{"name": "input", "datatype": "FP32",
        "shape": [8, 64], "parameters": {"binary_data_size": 8 * 64 * 4}}]});
    let mut plain = serde_json::to_vec(&header).unwrap();
    let json_len = plain.len();
    plain.extend_from_slice(&common::probe::le_bytes(&values));
    let r = reqwest::Client::new()
        .post(server.url("/v2/models/mlp/infer"))
        .header("content-encoding", "gzip")
        .header("inference-header-content-length", json_len)
        .body(gzip(&plain))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_mlp_http(&body);
}

#[tokio::test]
async fn gzip_bomb_over_http_gets_413_with_bounded_memory() {
    assert_alone_in_this_process("gzip_bomb_over_http_gets_413_with_bounded_memory");
    let server = TestServer::builder()
        .configure(|c| c.max_request_bytes = LIMIT)
        .start()
        .await;
    let bomb = gzip_bomb(1);
    assert!(bomb.len() < 4 << 20, "the bomb is {} bytes", bomb.len());
    let start = peak_start();
    let (status, body) = post_encoded(&server, "gzip", bomb).await;
    assert_eq!(status, 413, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains(&format!(
            "exceeds the server's max_request_bytes ({LIMIT} bytes)"
        )),
        "{msg}"
    );
    assert_peak_bounded("an HTTP gzip bomb", start);
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn decoded_bytes_count_against_the_inflight_budget() {
    // 8 MiB decoded from a body of a few KiB: the budget of 4 MiB refuses it as it decodes.
    let server = TestServer::builder()
        .configure(|c| c.max_inflight_bytes = 4 << 20)
        .start()
        .await;
    let packed = gzip(&vec![b' '; 8 << 20]);
    assert!(packed.len() < 64 << 10, "{} bytes", packed.len());
    let (status, body) = post_encoded(&server, "gzip", packed).await;
    assert_eq!(status, 429, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(msg.contains("max_inflight_bytes (4194304)"), "{msg}");
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn body_that_is_not_gzip_gets_400() {
    let server = TestServer::start().await;
    let (status, body) = post_encoded(&server, "gzip", json_body()).await;
    assert_eq!(status, 400, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(msg.starts_with("request body is not valid gzip"), "{msg}");
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn unsupported_content_encoding_gets_400_naming_it() {
    let server = TestServer::start().await;
    let (status, body) = post_encoded(&server, "br", json_body()).await;
    assert_eq!(status, 400, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(msg.contains("unsupported Content-Encoding \"br\""), "{msg}");
    assert!(msg.contains("gzip, deflate"), "{msg}");
}

/// The answer to the reference request with `accept`: its Content-Encoding and decoded JSON.
async fn infer_accepting(server: &TestServer, accept: &str) -> (Option<String>, Value) {
    let r = reqwest::Client::new()
        .post(server.url("/v2/models/mlp/infer"))
        .header("accept-encoding", accept)
        .json(&mlp_json())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let enc = r
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_owned());
    let raw = r.bytes().await.unwrap();
    let mut plain = Vec::new();
    match enc.as_deref() {
        Some("gzip") => flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut plain),
        Some("deflate") => flate2::read::ZlibDecoder::new(&raw[..]).read_to_end(&mut plain),
        _ => {
            plain.extend_from_slice(&raw);
            Ok(raw.len())
        }
    }
    .unwrap();
    (enc, serde_json::from_slice(&plain).unwrap())
}

#[tokio::test]
async fn accept_encoding_gzip_gets_a_gzip_answer() {
    let server = TestServer::start().await;
    let (enc, body) = infer_accepting(&server, "gzip").await;
    assert_eq!(enc.as_deref(), Some("gzip"));
    assert_mlp_http(&body);
}

#[tokio::test]
async fn accept_encoding_deflate_gets_a_zlib_answer() {
    let server = TestServer::start().await;
    let (enc, body) = infer_accepting(&server, "deflate").await;
    assert_eq!(enc.as_deref(), Some("deflate"));
    assert_mlp_http(&body);
}

#[tokio::test]
async fn accept_encoding_identity_gets_a_plain_answer() {
    let server = TestServer::start().await;
    let (enc, body) = infer_accepting(&server, "identity, gzip;q=0").await;
    assert_eq!(enc, None);
    assert_mlp_http(&body);
}

async fn grpc_client(
    server: &TestServer,
    enc: CompressionEncoding,
) -> GrpcInferenceServiceClient<tonic::transport::Channel> {
    GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap()
        .send_compressed(enc)
        .accept_compressed(enc)
}

#[tokio::test]
async fn grpc_gzip_both_ways() {
    let server = TestServer::start().await;
    let mut client = grpc_client(&server, CompressionEncoding::Gzip).await;
    let resp = client.model_infer(mlp_grpc()).await.unwrap();
    assert_eq!(resp.metadata().get("grpc-encoding").unwrap(), "gzip");
    assert_mlp_grpc(resp.get_ref());
}

#[tokio::test]
async fn grpc_deflate_both_ways() {
    let server = TestServer::start().await;
    let mut client = grpc_client(&server, CompressionEncoding::Deflate).await;
    let resp = client.model_infer(mlp_grpc()).await.unwrap();
    assert_eq!(resp.metadata().get("grpc-encoding").unwrap(), "deflate");
    assert_mlp_grpc(resp.get_ref());
}

/// One ModelInfer call over raw HTTP/2: the answer's headers, and grpc-status and grpc-message.
async fn raw_grpc_call(
    server: &TestServer,
    headers: &[(&str, &str)],
    frame: Vec<u8>,
) -> (http::HeaderMap, String, String) {
    let tcp = tokio::net::TcpStream::connect(server.grpc).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let mut req = http::Request::post(format!(
        "http://{}/inference.GRPCInferenceService/ModelInfer",
        server.grpc
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (resp, mut send) = client.send_request(req.body(()).unwrap(), false).unwrap();
    send.reserve_capacity(frame.len());
    send.send_data(Bytes::from(frame), true).unwrap();
    let resp = resp.await.unwrap();
    let head = resp.headers().clone();
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
    }
    let trailers = body.trailers().await.unwrap().unwrap_or_default();
    let get = |k: &str| {
        let v = trailers.get(k).or(head.get(k));
        v.map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    (head.clone(), get("grpc-status"), get("grpc-message"))
}

fn framed(flag: u8, msg: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

#[tokio::test]
async fn grpc_gzip_bomb_gets_resource_exhausted_with_bounded_memory() {
    assert_alone_in_this_process("grpc_gzip_bomb_gets_resource_exhausted_with_bounded_memory");
    let server = TestServer::builder()
        .configure(|c| c.max_request_bytes = LIMIT)
        .start()
        .await;
    let frame = framed(1, &gzip_bomb(1));
    let start = peak_start();
    let (_, status, message) = raw_grpc_call(&server, &[("grpc-encoding", "gzip")], frame).await;
    assert_eq!(status, "8", "RESOURCE_EXHAUSTED: {message}");
    assert!(message.contains("max_request_bytes"), "{message}");
    assert_peak_bounded("a gRPC gzip bomb", start);
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn grpc_client_that_only_advertises_encodings_gets_a_plain_answer() {
    let server = TestServer::start().await;
    let frame = framed(0, &mlp_grpc().encode_to_vec());
    let accept = [("grpc-accept-encoding", "identity,deflate,gzip")];
    let (head, status, message) = raw_grpc_call(&server, &accept, frame).await;
    assert_eq!(status, "0", "{message}");
    assert_eq!(head.get("grpc-encoding"), None, "{head:?}");
}

#[tokio::test]
async fn grpc_compressed_request_is_answered_in_its_own_encoding() {
    let server = TestServer::start().await;
    let frame = framed(1, &gzip(&mlp_grpc().encode_to_vec()));
    let headers = [
        ("grpc-encoding", "gzip"),
        ("grpc-accept-encoding", "identity,deflate,gzip"),
    ];
    let (head, status, message) = raw_grpc_call(&server, &headers, frame).await;
    assert_eq!(status, "0", "{message}");
    assert_eq!(head.get("grpc-encoding").unwrap(), "gzip");
}
