//! Issue 13 item 2: one request must not take gigabytes. Each hostile shape that used to
//! amplify (empty repeated gRPC entries, JSON `data` of zeros, a large body on a small admin
//! route) is refused or decoded within a bound proportional to its body, and many large bodies
//! at once are refused at the server's `max_inflight_bytes` budget. Each test measures the
//! peak RSS of its process (the server runs in it), so nextest runs them one at a time, one
//! process each (.config/nextest.toml `process-wide-measurements`).

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::probe::{assert_mlp_http, assert_still_serves, mlp_json};
use common::raw_grpc::send_raw_grpc;
use common::{assert_alone_in_this_process, TestServer};
use serde_json::Value;
use tonic::Code;

const MIB: u64 = 1 << 20;
/// Hostile bodies are this large: big enough that 16x amplification is far past the bound.
const BODY: usize = 8 << 20;

fn status_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Peak RSS from here on: resets the high-water mark, returns the RSS it starts from.
struct Peak(u64);

impl Peak {
    fn start() -> Peak {
        std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
        Peak(status_kib("VmRSS:") * 1024)
    }

    /// Asserts the peak grew by at most 6x the body plus 64 MiB (the client's copy included).
    fn assert_bounded(&self, what: &str, body: usize) {
        let growth = (status_kib("VmHWM:") * 1024).saturating_sub(self.0);
        let bound = 6 * body as u64 + 64 * MIB;
        eprintln!("{what}: peak RSS grew {} KiB", growth / 1024);
        assert!(
            growth <= bound,
            "{what}: peak RSS grew {} MiB for a {} MiB body (bound {} MiB)",
            growth / MIB,
            body as u64 / MIB,
            bound / MIB
        );
    }
}

/// `model_name: "mlp"` then `entry` repeated to fill about [`BODY`] bytes.
fn repeated(entry: &[u8]) -> Bytes {
    let mut msg = vec![0x0a, 3, b'm', b'l', b'p'];
    while msg.len() < BODY {
        msg.extend_from_slice(entry);
    }
    msg.into()
}

async fn grpc_case(test: &str, msg: Bytes, code: Code, needle: &str) {
    assert_alone_in_this_process(test);
    let server = TestServer::start().await;
    let len = msg.len();
    let peak = Peak::start();
    let status = send_raw_grpc(&server, msg).await;
    assert_eq!(status.code(), code, "{test}: {}", status.message());
    assert!(
        status.message().contains(needle),
        "{test}: {:?} should contain {needle:?}",
        status.message()
    );
    peak.assert_bounded(test, len);
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn grpc_empty_inputs_are_refused_before_decoding() {
    let msg = repeated(&[0x2a, 0]);
    grpc_case(
        "grpc_empty_inputs_are_refused_before_decoding",
        msg,
        Code::InvalidArgument,
        "too many inputs in one request: the limit is 1024",
    )
    .await;
}

#[tokio::test]
async fn grpc_empty_outputs_are_refused_before_decoding() {
    let msg = repeated(&[0x32, 0]);
    grpc_case(
        "grpc_empty_outputs_are_refused_before_decoding",
        msg,
        Code::InvalidArgument,
        "too many outputs in one request: the limit is 1024",
    )
    .await;
}

#[tokio::test]
async fn grpc_empty_raw_input_contents_are_refused_before_decoding() {
    let msg = repeated(&[0x3a, 0]);
    grpc_case(
        "grpc_empty_raw_input_contents_are_refused_before_decoding",
        msg,
        Code::InvalidArgument,
        "too many raw_input_contents in one request: the limit is 1024",
    )
    .await;
}

#[tokio::test]
async fn grpc_empty_bytes_contents_are_refused_before_decoding() {
    // One BYTES input whose contents are 4M empty strings, its shape saying so.
    let strings = BODY / 2;
    let mut contents = Vec::with_capacity(BODY);
    for _ in 0..strings {
        contents.extend_from_slice(&[0x42, 0]);
    }
    let mut input = vec![0x0a, 5];
    input.extend_from_slice(b"input");
    input.extend_from_slice(&[0x12, 5]);
    input.extend_from_slice(b"BYTES");
    let mut shape = Vec::new();
    prost::encoding::encode_varint(strings as u64, &mut shape);
    input.push(0x1a);
    prost::encoding::encode_varint(shape.len() as u64, &mut input);
    input.extend_from_slice(&shape);
    input.push(0x2a);
    prost::encoding::encode_varint(contents.len() as u64, &mut input);
    input.extend_from_slice(&contents);
    let mut msg = vec![0x0a, 3, b'm', b'l', b'p', 0x2a];
    prost::encoding::encode_varint(input.len() as u64, &mut msg);
    msg.extend_from_slice(&input);
    drop((contents, input));
    grpc_case(
        "grpc_empty_bytes_contents_are_refused_before_decoding",
        msg.into(),
        Code::ResourceExhausted,
        "over the server's max_request_bytes",
    )
    .await;
}

#[tokio::test]
async fn http_json_data_of_zeros_decodes_within_a_bound_of_its_body() {
    let test = "http_json_data_of_zeros_decodes_within_a_bound_of_its_body";
    assert_alone_in_this_process(test);
    let server = TestServer::start().await;
    let rows = BODY / (2 * 64);
    let mut body =
        format!(r#"{{"inputs":[{{"name":"input","datatype":"FP32","shape":[{rows},64],"data":["#)
            .into_bytes();
    for i in 0..rows * 64 {
        body.extend_from_slice(if i == 0 { b"0" } else { b",0" });
    }
    body.extend_from_slice(b"]}]}");
    let len = body.len();
    let peak = Peak::start();
    let resp = reqwest::Client::new()
        .post(server.url("/v2/models/mlp/infer"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    let message = err["error"].as_str().unwrap();
    // Triton's words: the rows are refused as a batch beyond the model's maximum.
    assert!(
        message.contains("inference request batch-size must be <= 64 for 'mlp'"),
        "{message}"
    );
    assert!(
        rows > 64,
        "the body must hold more rows than mlp's maximum batch"
    );
    peak.assert_bounded(test, len);
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn repository_index_with_a_large_body_is_413_naming_its_limit() {
    let test = "repository_index_with_a_large_body_is_413_naming_its_limit";
    assert_alone_in_this_process(test);
    let server = TestServer::start().await;
    let body = vec![b' '; 16 << 20];
    let peak = Peak::start();
    let resp = reqwest::Client::new()
        .post(server.url("/v2/repository/index"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let err: Value = resp.json().await.unwrap();
    let message = err["error"].as_str().unwrap();
    assert!(message.contains("at most 65536 bytes"), "{message}");
    peak.assert_bounded(test, 64 << 10);
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}

/// One raw HTTP/1.1 answer: status and body.
fn read_answer(conn: &mut std::net::TcpStream) -> (u16, Value) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        conn.read_exact(&mut byte).unwrap();
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let status = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap();
    let mut body = vec![0; len];
    conn.read_exact(&mut body).unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

/// Eight clients each declare an 8 MiB body under a 20 MiB budget: two fit and are answered
/// exactly once their bodies arrive; the other six are refused at once, before sending it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bodies_beyond_max_inflight_bytes_are_refused_at_once_and_the_rest_answered() {
    let test = "bodies_beyond_max_inflight_bytes_are_refused_at_once_and_the_rest_answered";
    assert_alone_in_this_process(test);
    let server = TestServer::builder()
        .configure(|c| c.max_inflight_bytes = 20 << 20)
        .start()
        .await;
    // A valid request padded with whitespace to 8 MiB: large, and its answer exact.
    let mut body = serde_json::to_vec(&mlp_json()).unwrap();
    body.resize(BODY, b' ');
    let addr = server.url("").trim_start_matches("http://").to_owned();
    let peak = Peak::start();
    let answers = tokio::task::spawn_blocking(move || {
        let head = format!(
            "POST /v2/models/mlp/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n",
            body.len()
        );
        let mut conns: Vec<std::net::TcpStream> = (0..8)
            .map(|_| {
                let mut c = std::net::TcpStream::connect(&addr).unwrap();
                c.write_all(head.as_bytes()).unwrap();
                c.write_all(&body[..1024]).unwrap();
                c.set_nonblocking(true).unwrap();
                c
            })
            .collect();
        // The refusals come without the body: wait (bounded) until six have answered.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut refused = vec![false; conns.len()];
        while refused.iter().filter(|r| **r).count() < 6 {
            assert!(Instant::now() < deadline, "six refusals within 20 s");
            for (c, r) in conns.iter_mut().zip(refused.iter_mut()) {
                let mut b = [0u8; 1];
                if !*r && c.peek(&mut b).is_ok_and(|n| n > 0) {
                    *r = true;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut answers = Vec::new();
        for (c, r) in conns.iter_mut().zip(&refused) {
            c.set_nonblocking(false).unwrap();
            if !r {
                c.write_all(&body[1024..]).unwrap();
            }
            answers.push((*r, read_answer(c)));
        }
        answers
    })
    .await
    .unwrap();
    for (refused, (status, body)) in &answers {
        if *refused {
            assert_eq!(*status, 429, "{body}");
            let message = body["error"].as_str().unwrap();
            assert!(
                message.contains("max_inflight_bytes (20971520)"),
                "{message}"
            );
        } else {
            assert_eq!(*status, 200, "{body}");
            assert_mlp_http(body);
        }
    }
    peak.assert_bounded(test, 2 * BODY);
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}

/// A gRPC message larger than the whole budget is refused from its frame header, before its
/// bytes are buffered or decoded.
#[tokio::test]
async fn grpc_message_beyond_max_inflight_bytes_is_resource_exhausted_at_once() {
    let test = "grpc_message_beyond_max_inflight_bytes_is_resource_exhausted_at_once";
    assert_alone_in_this_process(test);
    let server = TestServer::builder()
        .configure(|c| c.max_inflight_bytes = 1 << 20)
        .start()
        .await;
    let mut msg = vec![0x0a, 3, b'm', b'l', b'p', 0x3a];
    prost::encoding::encode_varint(2 << 20, &mut msg);
    msg.resize(msg.len() + (2 << 20), 0);
    let len = msg.len();
    let peak = Peak::start();
    let status = send_raw_grpc(&server, msg.into()).await;
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("max_inflight_bytes (1048576)"),
        "{}",
        status.message()
    );
    peak.assert_bounded(test, len);
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}
