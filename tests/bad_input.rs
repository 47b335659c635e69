//! Spec point 7: bad input gets a clear error (status/code, the tensor's name and what was
//! expected), never a panic, and the next good request succeeds, over HTTP JSON, HTTP binary and
//! gRPC (`contents` and `raw_input_contents`).

mod common;

use common::probe::{self, assert_http_serves, le_bytes, mlp_values};
use common::{pb, TestServer};
use ferroserve::config::{ServerConfig, DEFAULT_MAX_REQUEST_BYTES};
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use pb::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use serde_json::{json, Value};
use tonic::{transport::Channel, Code};

type Grpc = GrpcInferenceServiceClient<Channel>;
const INFER: &str = "/v2/models/mlp/infer";
/// 2^62: two of them overflow any element count.
const HUGE: i64 = 1 << 62;

// ---- request builders ----

/// The reference mlp request as JSON, with `edit` applied.
fn mlp_json(edit: fn(&mut Value)) -> Vec<u8> {
    let mut req = probe::mlp_json();
    edit(&mut req);
    serde_json::to_vec(&req).unwrap()
}

fn set_rows_json(req: &mut Value, rows: usize) {
    req["inputs"][0]["shape"] = json!([rows, 64]);
    req["inputs"][0]["data"] = json!(mlp_values(rows));
}

/// A binary-extension body and its Inference-Header-Content-Length value.
type BinaryBody = (Vec<u8>, String);

/// `header` as JSON, then `blob`.
fn binary(header: Value, blob: &[u8]) -> BinaryBody {
    let mut body = serde_json::to_vec(&header).unwrap();
    let len = body.len().to_string();
    body.extend_from_slice(blob);
    (body, len)
}

fn binary_header(shape: Value, size: Value) -> Value {
    json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": shape,
                       "parameters": {"binary_data_size": size}}]})
}

/// The reference mlp request over gRPC, with `edit` applied.
fn mlp_grpc(raw: bool, edit: fn(&mut pb::ModelInferRequest)) -> pb::ModelInferRequest {
    let mut req = pb::ModelInferRequest {
        model_name: "mlp".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    set_rows_grpc(&mut req, raw, 8);
    edit(&mut req);
    req
}

fn set_rows_grpc(req: &mut pb::ModelInferRequest, raw: bool, rows: usize) {
    let values = mlp_values(rows);
    req.inputs[0].shape = vec![rows as i64, 64];
    if raw {
        req.raw_input_contents = vec![le_bytes(&values).into()];
    } else {
        req.inputs[0].contents = Some(pb::InferTensorContents {
            fp32_contents: values,
            ..Default::default()
        });
    }
}

// ---- senders and checks ----

async fn post(
    server: &TestServer,
    path: &str,
    body: Vec<u8>,
    header_len: Option<&str>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(server.url(path)).body(body);
    if let Some(len) = header_len {
        req = req.header("Inference-Header-Content-Length", len);
    }
    let resp = req
        .send()
        .await
        .expect("the server answers instead of dropping the connection");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {bytes:?}"));
    (status, body)
}

fn assert_message(what: &str, message: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            message.contains(needle),
            "{what}: {message:?} should contain {needle:?}"
        );
    }
}

fn assert_http_error(what: &str, (status, body): (u16, Value), want: u16, needles: &[&str]) {
    let message = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no \"error\" string in {body}"));
    assert_eq!(status, want, "{what}: {message}");
    assert_message(what, message, needles);
}

fn assert_grpc_error(
    what: &str,
    result: Result<tonic::Response<pb::ModelInferResponse>, tonic::Status>,
    want: Code,
    needles: &[&str],
) {
    let status = result.err().unwrap_or_else(|| panic!("{what}: succeeded"));
    assert_eq!(status.code(), want, "{what}: {}", status.message());
    assert_message(what, status.message(), needles);
}

/// The reference request over gRPC must succeed with the reference outputs.
async fn good_grpc(client: &mut Grpc, raw: bool) {
    let resp = client
        .model_infer(mlp_grpc(raw, |_| {}))
        .await
        .expect("good request after a bad one")
        .into_inner();
    probe::assert_mlp_grpc(&resp);
}

async fn grpc_client(server: &TestServer) -> Grpc {
    GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap()
}

// ---- the cases (tables stay one case a line) ----

type JsonCase = (&'static str, fn(&mut Value), &'static [&'static str]);

const INPUT: &str = "\"input\"";

/// Bad JSON requests to mlp; each must be a 400 whose message contains every needle.
#[rustfmt::skip]
const JSON_CASES: &[JsonCase] = &[
    ("wrong input name", |r| r["inputs"][0]["name"] = json!("x"), &["unexpected inference input 'x' for model 'mlp'"]),
    ("no inputs", |r| r["inputs"] = json!([]), &["expected 1 inputs but got 0 inputs for model 'mlp'. Got input(s) [], but missing required input(s) ['input']. Please provide all required input(s)."]),
    ("extra input", |r| {
        let mut extra = r["inputs"][0].clone();
        extra["name"] = json!("extra");
        r["inputs"].as_array_mut().unwrap().push(extra);
    }, &["expected 1 inputs but got 2 inputs for model 'mlp'. Got input(s) ['input','extra'], but missing required input(s) []. Please provide all required input(s)."]),
    ("same input twice", |r| {
        let again = r["inputs"][0].clone();
        r["inputs"].as_array_mut().unwrap().push(again);
    }, &["input 'input' already exists in request"]),
    ("INT32 for FP32", |r| {
        r["inputs"][0]["datatype"] = json!("INT32");
        r["inputs"][0]["data"] = json!(vec![1; 512]);
    }, &["inference input 'input' data-type is 'INT32', but model 'mlp' expects 'FP32'"]),
    ("BYTES for FP32", |r| {
        r["inputs"][0]["datatype"] = json!("BYTES");
        r["inputs"][0]["data"] = json!(vec!["a"; 512]);
    }, &["inference input 'input' data-type is 'BYTES', but model 'mlp' expects 'FP32'"]),
    ("unknown datatype", |r| r["inputs"][0]["datatype"] = json!("FP128"), &[INPUT, "unknown datatype", "FP128"]),
    ("config-style datatype", |r| r["inputs"][0]["datatype"] = json!("TYPE_FP32"), &[INPUT, "unknown datatype", "TYPE_FP32"]),
    ("wrong rank", |r| r["inputs"][0]["shape"] = json!([8, 8, 8]), &["unexpected shape for input 'input' for model 'mlp'. Expected [-1,64], got [8,8,8]. NOTE: Setting a non-zero max_batch_size"]),
    ("scalar", |r| {
        r["inputs"][0]["shape"] = json!([]);
        r["inputs"][0]["data"] = json!([1.0]);
    }, &["input 'input' has no shape but model requires batch dimension for 'mlp'"]),
    ("wrong non-batch dim", |r| r["inputs"][0]["shape"] = json!([16, 32]), &["unexpected shape for input 'input' for model 'mlp'. Expected [-1,64], got [16,32]. NOTE: Setting a non-zero max_batch_size"]),
    ("data too short", |r| {
        r["inputs"][0]["data"].as_array_mut().unwrap().pop();
    }, &[INPUT, "needs 512 elements", "511"]),
    ("no data", |r| {
        r["inputs"][0].as_object_mut().unwrap().remove("data");
    }, &[INPUT, "no data"]),
    ("negative dim", |r| r["inputs"][0]["shape"] = json!([-8, 64]), &[INPUT, "-8", "negative"]),
    ("overflowing dims", |r| r["inputs"][0]["shape"] = json!([HUGE, HUGE]), &[INPUT, "4611686018427387904", "too large"]),
    ("huge dim, short data", |r| r["inputs"][0]["shape"] = json!([1, HUGE]), &[INPUT, "needs 4611686018427387904 elements"]),
    ("string data", |r| r["inputs"][0]["data"][3] = json!("abc"), &[INPUT, "\"abc\"", "not a number"]),
    ("null data", |r| r["inputs"][0]["data"][0] = Value::Null, &[INPUT, "null", "not a number"]),
    ("object in data", |r| r["inputs"][0]["data"][0] = json!({"a": 1}), &[INPUT, "not a number"]),
    ("object as data", |r| r["inputs"][0]["data"] = json!({"a": [1.0]}), &[INPUT, "needs 512 elements"]),
    ("batch above max_batch_size", |r| set_rows_json(r, 65), &["inference request batch-size must be <= 64 for 'mlp'"]),
    ("batch 0", |r| set_rows_json(r, 0), &["input 'input': batch size 0 is outside 1..=64"]),
    ("unknown output", |r| r["outputs"] = json!([{"name": "nope"}]), &["unexpected inference output 'nope' for model 'mlp'"]),
    ("output twice", |r| r["outputs"] = json!([{"name": "output"}, {"name": "output"}]), &["output 'output' already exists in request"]),
    ("missing datatype", |r| {
        r["inputs"][0].as_object_mut().unwrap().remove("datatype");
    }, &["datatype"]),
];

#[tokio::test]
async fn http_json_bad_inputs_get_400_naming_the_tensor() {
    let server = TestServer::start().await;
    for &(what, edit, needles) in JSON_CASES {
        let reply = post(&server, INFER, mlp_json(edit), None).await;
        assert_http_error(what, reply, 400, needles);
        assert_http_serves(&server).await;
    }
    server.stop().await.unwrap();
}

/// Shape values beyond i64 are overflowing dims like any other: 400 naming the tensor.
#[tokio::test]
async fn http_json_shape_values_beyond_i64_get_400_naming_the_tensor() {
    let server = TestServer::start().await;
    let good = String::from_utf8(mlp_json(|_| {})).unwrap();
    assert!(good.contains("\"shape\":[8,64]"));
    for dim in ["1e30", "18446744073709551616", "9223372036854775808"] {
        let body = good.replace("\"shape\":[8,64]", &format!("\"shape\":[{dim},64]"));
        let reply = post(&server, INFER, body.into_bytes(), None).await;
        assert_http_error(&format!("shape value {dim}"), reply, 400, &[INPUT, "shape"]);
        assert_http_serves(&server).await;
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn http_malformed_json_gets_400() {
    let server = TestServer::start().await;
    #[rustfmt::skip]
    let cases: [(&str, &[u8]); 5] = [
        ("truncated", br#"{"inputs": [{"name": "input""#),
        ("not JSON", b"hello"),
        ("empty body", b""),
        ("inputs not a list", br#"{"inputs": 3}"#),
        ("shape a string", br#"{"inputs": [{"name": "input", "datatype": "FP32", "shape": "8x64", "data": []}]}"#),
    ];
    for (what, body) in cases {
        let reply = post(&server, INFER, body.to_vec(), None).await;
        assert_http_error(what, reply, 400, &["malformed inference request JSON"]);
        assert_http_serves(&server).await;
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn http_binary_bad_inputs_get_400_naming_the_tensor() {
    let server = TestServer::start().await;
    let blob = le_bytes(&mlp_values(8));
    let (good_body, good_len) = binary(binary_header(json!([8, 64]), json!(2048)), &blob);
    let with_len = |len: usize| (good_body.clone(), len.to_string());
    let with_text = |len: &str| (good_body.clone(), len.to_string());
    let json_len: usize = good_len.parse().unwrap();
    let header = |dtype: &str, extra: Value| {
        let mut h = binary_header(json!([8, 64]), json!(2048));
        h["inputs"][0]["datatype"] = json!(dtype);
        h["inputs"][0]
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        h
    };
    #[rustfmt::skip]
    let cases: Vec<(&str, BinaryBody, &[&str])> = vec![
        ("header length beyond the body", with_len(good_body.len() + 1), &["Inference-Header-Content-Length", "larger than the body"]),
        ("non-numeric header length", with_text("abc"), &["Inference-Header-Content-Length", "\"abc\"", "byte count"]),
        ("negative header length", with_text("-5"), &["Inference-Header-Content-Length", "byte count"]),
        ("header length cutting the JSON", with_len(json_len - 3), &["malformed inference request JSON"]),
        ("unclaimed binary bytes", binary(binary_header(json!([8, 64]), json!(2048)), &[&blob[..], &[0; 4]].concat()), &["4 bytes", "not claimed"]),
        ("binary_data_size beyond what is left", binary(binary_header(json!([8, 64]), json!(4096)), &blob), &[INPUT, "binary_data_size 4096", "2048"]),
        ("binary_data_size short of the shape", binary(binary_header(json!([8, 64]), json!(2044)), &blob[..2044]), &["input byte size mismatch for input 'input' for model 'mlp'. Expected 2048, got 2044"]),
        ("shape short of binary_data_size", binary(binary_header(json!([8, 32]), json!(2048)), &blob), &["input byte size mismatch for input 'input' for model 'mlp'. Expected 1024, got 2048"]),
        ("negative dim", binary(binary_header(json!([-8, 64]), json!(2048)), &blob), &[INPUT, "negative"]),
        ("overflowing dims", binary(binary_header(json!([HUGE, HUGE]), json!(0)), &[]), &[INPUT, "4611686018427387904", "too many elements"]),
        ("batch above max_batch_size", binary(binary_header(json!([65, 64]), json!(65 * 256)), &le_bytes(&mlp_values(65))), &["inference request batch-size must be <= 64 for 'mlp'"]),
        ("INT32 for FP32", binary(header("INT32", json!({})), &blob), &["inference input 'input' data-type is 'INT32', but model 'mlp' expects 'FP32'"]),
        ("both data and binary_data_size", binary(header("FP32", json!({"data": mlp_values(8)})), &blob), &[INPUT, "both"]),
    ];
    for (what, (body, len), needles) in cases {
        let reply = post(&server, INFER, body, Some(&len)).await;
        assert_http_error(what, reply, 400, needles);
        assert_http_serves(&server).await;
    }
    server.stop().await.unwrap();
}

/// A binary_data_size that is not a byte count is a bad input like the others: name the tensor.
#[tokio::test]
async fn http_binary_bad_binary_data_size_names_the_tensor() {
    let server = TestServer::start().await;
    let blob = le_bytes(&mlp_values(8));
    for size in [json!(-1), json!("2048"), json!(2048.5)] {
        let (body, len) = binary(binary_header(json!([8, 64]), size.clone()), &blob);
        let reply = post(&server, INFER, body, Some(&len)).await;
        let needles = [INPUT, "binary_data_size", "non-negative integer"];
        assert_http_error(&format!("binary_data_size {size}"), reply, 400, &needles);
        assert_http_serves(&server).await;
    }
    server.stop().await.unwrap();
}

type GrpcCase = (
    &'static str,
    &'static [bool],
    fn(&mut pb::ModelInferRequest),
    &'static [&'static str],
);
/// Which encodings a gRPC case is sent in (`raw` flags).
const BOTH: &[bool] = &[false, true];
const CONTENTS: &[bool] = &[false];
const RAW: &[bool] = &[true];

/// Bad gRPC requests to mlp, sent as `contents` and/or raw; each must be INVALID_ARGUMENT.
#[rustfmt::skip]
const GRPC_CASES: &[GrpcCase] = &[
    ("wrong input name", BOTH, |r| r.inputs[0].name = "x".into(), &["unexpected inference input 'x' for model 'mlp'"]),
    ("no inputs", BOTH, |r| {
        r.inputs.clear();
        r.raw_input_contents.clear();
    }, &["expected 1 inputs but got 0 inputs for model 'mlp'. Got input(s) [], but missing required input(s) ['input']. Please provide all required input(s)."]),
    ("extra input", BOTH, |r| {
        let mut extra = r.inputs[0].clone();
        extra.name = "extra".into();
        r.inputs.push(extra);
        if let Some(raw) = r.raw_input_contents.first().cloned() {
            r.raw_input_contents.push(raw);
        }
    }, &["expected 1 inputs but got 2 inputs for model 'mlp'. Got input(s) ['input','extra'], but missing required input(s) []. Please provide all required input(s)."]),
    ("INT32 for FP32", BOTH, |r| {
        r.inputs[0].datatype = "INT32".into();
        if let Some(c) = r.inputs[0].contents.as_mut() {
            c.int_contents = vec![1; 512];
            c.fp32_contents.clear();
        }
    }, &["inference input 'input' data-type is 'INT32', but model 'mlp' expects 'FP32'"]),
    ("FP32 data in the wrong contents field", CONTENTS, |r| {
        let c = r.inputs[0].contents.as_mut().unwrap();
        c.fp64_contents = c.fp32_contents.drain(..).map(f64::from).collect();
    }, &[INPUT, "needs 512 elements", "have 0"]),
    ("FP16 in contents", CONTENTS, |r| r.inputs[0].datatype = "FP16".into(), &[INPUT, "raw_input_contents"]),
    ("BYTES for FP32", RAW, |r| r.inputs[0].datatype = "BYTES".into(), &[INPUT, "BYTES"]),
    ("unknown datatype", BOTH, |r| r.inputs[0].datatype = "FP128".into(), &[INPUT, "unknown datatype", "FP128"]),
    ("wrong rank", BOTH, |r| r.inputs[0].shape = vec![8, 8, 8], &["unexpected shape for input 'input' for model 'mlp'. Expected [-1,64], got [8,8,8]. NOTE: Setting a non-zero max_batch_size"]),
    ("wrong non-batch dim", BOTH, |r| r.inputs[0].shape = vec![16, 32], &["unexpected shape for input 'input' for model 'mlp'. Expected [-1,64], got [16,32]. NOTE: Setting a non-zero max_batch_size"]),
    ("contents too short", CONTENTS, |r| {
        r.inputs[0].contents.as_mut().unwrap().fp32_contents.pop();
    }, &[INPUT, "needs 512 elements", "511"]),
    ("raw of the wrong length", RAW, |r| r.raw_input_contents[0] = r.raw_input_contents[0].slice(..2044), &["input byte size mismatch for input 'input' for model 'mlp'. Expected 2048, got 2044"]),
    ("raw count not matching inputs", RAW, |r| r.raw_input_contents.push(vec![0u8; 4].into()), &["raw_input_contents has 2 entries for 1 inputs"]),
    ("no data", CONTENTS, |r| r.inputs[0].contents = None, &[INPUT, "no data"]),
    ("negative dim", BOTH, |r| r.inputs[0].shape = vec![-8, 64], &[INPUT, "-8", "negative"]),
    ("overflowing dims", BOTH, |r| r.inputs[0].shape = vec![HUGE, HUGE], &[INPUT, "4611686018427387904", "too"]),
    ("batch above max_batch_size", CONTENTS, |r| set_rows_grpc(r, false, 65), &["inference request batch-size must be <= 64 for 'mlp'"]),
    ("raw batch above max_batch_size", RAW, |r| set_rows_grpc(r, true, 65), &["inference request batch-size must be <= 64 for 'mlp'"]),
    ("batch 0", CONTENTS, |r| set_rows_grpc(r, false, 0), &["input 'input': batch size 0 is outside 1..=64"]),
    ("raw batch 0", RAW, |r| set_rows_grpc(r, true, 0), &["input 'input': batch size 0 is outside 1..=64"]),
    ("unknown output", BOTH, |r| r.outputs.push(InferRequestedOutputTensor { name: "nope".into(), ..Default::default() }), &["unexpected inference output 'nope' for model 'mlp'"]),
];

#[tokio::test]
async fn grpc_bad_inputs_get_invalid_argument_naming_the_tensor() {
    let server = TestServer::start().await;
    let mut client = grpc_client(&server).await;
    for &(what, modes, edit, needles) in GRPC_CASES {
        for &raw in modes {
            let reply = client.model_infer(mlp_grpc(raw, edit)).await;
            assert_grpc_error(
                &format!("{what} (raw: {raw})"),
                reply,
                Code::InvalidArgument,
                needles,
            );
            good_grpc(&mut client, raw).await;
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_model_or_version_is_not_found() {
    let server = TestServer::start().await;
    let mut client = grpc_client(&server).await;
    #[rustfmt::skip]
    let cases = [
        ("nope", None, "Request for unknown model: 'nope' is not found"),
        ("mlp", Some("7"), "Request for unknown model: 'mlp' version 7 is not found"),
        ("nope", Some("1"), "Request for unknown model: 'nope' is not found"),
    ];
    for (model, version, needle) in cases {
        let what = format!("{model} version {version:?}");
        let path = match version {
            Some(v) => format!("/v2/models/{model}/versions/{v}/infer"),
            None => format!("/v2/models/{model}/infer"),
        };
        let reply = post(&server, &path, mlp_json(|_| {}), None).await;
        assert_http_error(&what, reply, 404, &[needle]);
        assert_http_serves(&server).await;
        let mut req = mlp_grpc(true, |_| {});
        req.model_name = model.into();
        req.model_version = version.unwrap_or_default().into();
        let reply = client.model_infer(req).await;
        assert_grpc_error(&what, reply, Code::NotFound, &[needle]);
        good_grpc(&mut client, true).await;
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn oversized_body_is_413_and_resource_exhausted() {
    assert_eq!(DEFAULT_MAX_REQUEST_BYTES, 64 << 20);
    assert_eq!(ServerConfig::default().max_request_bytes, 64 << 20);
    let server = TestServer::builder()
        .configure(|c| c.max_request_bytes = 1 << 20)
        .start()
        .await;
    let mut client = grpc_client(&server).await;

    let header = binary_header(json!([8192, 64]), json!(2 << 20));
    let (body, len) = binary(header, &vec![0; 2 << 20]);
    let reply = post(&server, INFER, body, Some(&len)).await;
    assert_http_error("2 MiB binary body", reply, 413, &["too large"]);
    assert_http_serves(&server).await;
    let big_json = mlp_json(|r| r["inputs"][0]["data"] = json!(vec![0.5f32; 300_000]));
    assert!(big_json.len() > 1 << 20);
    let reply = post(&server, INFER, big_json, None).await;
    assert_http_error("1.2 MiB JSON body", reply, 413, &["too large"]);
    assert_http_serves(&server).await;

    let mut req = mlp_grpc(true, |_| {});
    req.raw_input_contents[0] = vec![0u8; 2 << 20].into();
    let reply = client.model_infer(req).await;
    assert_grpc_error("2 MiB gRPC message", reply, Code::ResourceExhausted, &[]);
    good_grpc(&mut client, true).await;
    good_grpc(&mut client, false).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn good_requests_keep_succeeding_between_bad_ones() {
    // A bad request on one transport, then good ones on both, for each layer that can fail:
    // body decoding, tensor building, signature validation, routing.
    let server = TestServer::start().await;
    let mut client = grpc_client(&server).await;
    let short_raw = |r: &mut pb::ModelInferRequest| r.raw_input_contents[0].truncate(1);
    for round in 0..3 {
        let (status, _) = post(&server, INFER, b"{".to_vec(), None).await;
        assert_eq!(status, 400, "round {round}");
        good_grpc(&mut client, round % 2 == 0).await;
        let bad = client.model_infer(mlp_grpc(true, short_raw)).await;
        assert_eq!(bad.unwrap_err().code(), Code::InvalidArgument);
        assert_http_serves(&server).await;
        let (status, _) = post(&server, INFER, mlp_json(|r| set_rows_json(r, 65)), None).await;
        assert_eq!(status, 400);
        let path = "/v2/models/mlp/versions/9/infer";
        let (status, _) = post(&server, path, mlp_json(|_| {}), None).await;
        assert_eq!(status, 404);
        assert_http_serves(&server).await;
        good_grpc(&mut client, round % 2 == 1).await;
    }
    // The largest valid batch still works after all that, and the server is still ready.
    let (status, body) = post(&server, INFER, mlp_json(|r| set_rows_json(r, 64)), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["shape"], json!([64, 10]));
    let ready = reqwest::get(server.url("/v2/health/ready")).await.unwrap();
    assert_eq!(ready.status(), 200);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_bad_requests_do_not_disturb_good_ones() {
    let server = std::sync::Arc::new(TestServer::start().await);
    let mut tasks = Vec::new();
    for task in 0..8usize {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = grpc_client(&server).await;
            for i in 0..50usize {
                let n = task * 50 + i;
                if n % 2 == 0 {
                    let (what, edit, needles) = JSON_CASES[n / 2 % JSON_CASES.len()];
                    let reply = post(&server, INFER, mlp_json(edit), None).await;
                    assert_http_error(what, reply, 400, needles);
                    assert_http_serves(&server).await;
                } else {
                    let (what, modes, edit, needles) = GRPC_CASES[n / 2 % GRPC_CASES.len()];
                    let raw = modes[i % modes.len()];
                    let reply = client.model_infer(mlp_grpc(raw, edit)).await;
                    assert_grpc_error(what, reply, Code::InvalidArgument, needles);
                    good_grpc(&mut client, i % 3 == 0).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("a client task failed");
    }
    let server = std::sync::Arc::into_inner(server).unwrap();
    server.stop().await.unwrap();
}

/// Issue 13 item 5: nested `data` must follow the shape row by row; flattening would hide a
/// ragged row whose total happens to match.
#[tokio::test]
async fn http_json_ragged_nested_data_gets_400_naming_the_input_and_the_row() {
    let server = TestServer::start().await;
    let ragged: Vec<Vec<f32>> = vec![vec![0.5; 63], vec![0.5; 65]];
    let body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 64], "data": ragged}]});
    let reply = post(&server, INFER, serde_json::to_vec(&body).unwrap(), None).await;
    assert_http_error(
        "ragged rows",
        reply,
        400,
        &[
            INPUT,
            "data[0] has 63 elements where shape [2, 64] needs 64",
        ],
    );
    assert_http_serves(&server).await;
    server.stop().await.unwrap();
}
