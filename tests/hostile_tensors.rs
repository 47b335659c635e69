//! Issue 13, the adversarial suite: malformed tensors a hostile client sends on purpose. Sizes
//! declared beyond what was sent, shapes that overflow or have absurd ranks, bogus BYTES length
//! prefixes, repeated names, FP16, deep nesting, NaN/Infinity. Each is refused with the status
//! or code and a message that says what is wrong (Triton's wording where Triton has one), or,
//! where the data is valid, answered with well-formed JSON; after each the server still serves.

mod common;

use common::hostile::{
    assert_grpc, assert_http, assert_refused_on_both, binary, binary_input, grpc, grpc_with,
    json_body, post, prefixed, Body, Needles,
};
use common::probe::{assert_still_serves, le_bytes, mlp_json, mlp_values};
use common::{pb, TestServer};
use pb::model_infer_request::InferRequestedOutputTensor;
use serde_json::{json, Value};
use tonic::Code;

/// One name case: its JSON edit, its gRPC edit, the message both must give.
type NameCase = (
    &'static str,
    fn(&mut Value),
    Box<dyn Fn(&mut pb::ModelInferRequest)>,
    Needles,
);

#[tokio::test]
async fn declared_sizes_beyond_the_body_are_400_over_http() {
    let server = TestServer::start().await;
    let blob = le_bytes(&mlp_values(8));
    let header = binary_input("FP32", json!([8, 64]), json!(2048));
    let (body, _) = binary(&header, &blob);
    #[rustfmt::skip]
    let cases: Vec<(&str, Body, Needles)> = vec![
        ("binary_data_size u64::MAX", binary(&binary_input("FP32", json!([8, 64]), json!(u64::MAX)), &blob),
            &["\"input\"", "binary_data_size 18446744073709551615", "2048 binary bytes left"]),
        ("binary_data_size one past the body", binary(&binary_input("FP32", json!([8, 64]), json!(2049)), &blob),
            &["\"input\"", "binary_data_size 2049", "2048 binary bytes left"]),
        ("header length u64::MAX", (body.clone(), Some(u64::MAX.to_string())),
            &["Inference-Header-Content-Length", "larger than the body"]),
        ("header length past u64", (body.clone(), Some("18446744073709551616".into())),
            &["Inference-Header-Content-Length", "byte count"]),
        ("two inputs sharing one blob", binary(&json!({"inputs": [
            {"name": "input", "datatype": "FP32", "shape": [8, 64], "parameters": {"binary_data_size": 2048}},
            {"name": "other", "datatype": "FP32", "shape": [8, 64], "parameters": {"binary_data_size": 2048}}]}), &blob),
            &["\"other\"", "binary_data_size 2048", "0 binary bytes left"]),
    ];
    for (what, (body, len), needles) in cases {
        assert_http(what, post(&server, body, len).await, 400, needles);
        assert_still_serves(&server).await;
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn grpc_raw_contents_shorter_or_longer_than_shape_times_dtype_are_invalid_argument() {
    let server = TestServer::start().await;
    let mut client = grpc(&server).await;
    let raw = le_bytes(&mlp_values(8));
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<u8>, Vec<i64>, Needles)> = vec![
        ("one byte short", raw[..2047].to_vec(), vec![8, 64], &["input byte size mismatch for input 'input' for model 'mlp'. Expected 2048, got 2047"]),
        ("one byte long", [&raw[..], &[0]].concat(), vec![8, 64], &["input byte size mismatch for input 'input' for model 'mlp'. Expected 2048, got 2049"]),
        ("a row long", [&raw[..], &raw[..256]].concat(), vec![8, 64], &["input byte size mismatch for input 'input' for model 'mlp'. Expected 2048, got 2304"]),
        ("empty for a full shape", Vec::new(), vec![8, 64], &["input byte size mismatch for input 'input' for model 'mlp'. Expected 2048, got 0"]),
        ("2^31 rows of nothing", Vec::new(), vec![1 << 31, 64], &["input byte size mismatch for input 'input' for model 'mlp'. Expected 549755813888, got 0"]),
    ];
    for (what, bytes, shape, needles) in cases {
        let req = grpc_with(|r| {
            r.inputs[0].shape = shape;
            r.raw_input_contents = vec![bytes.into()];
        });
        assert_grpc(
            what,
            client.model_infer(req).await,
            Code::InvalidArgument,
            needles,
        );
        assert_still_serves(&server).await;
    }
    server.stop().await.unwrap();
}

/// Shapes whose element count overflows u64, negative ones, and ranks far beyond any model, on
/// both transports; a rank of a million ones is refused without widening or echoing it.
#[tokio::test]
async fn overflowing_negative_and_huge_rank_shapes_are_refused_on_both_transports() {
    let server = TestServer::start().await;
    let million_ones = vec![1i64; 1 << 20];
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<i64>, &[&str])> = vec![
        ("2^32 x 2^32 overflows u64", vec![1 << 32, 1 << 32], &["\"input\"", "4294967296", "too"]),
        ("i64::MAX x 3", vec![i64::MAX, 3], &["\"input\"", "9223372036854775807", "too"]),
        ("i64::MIN", vec![i64::MIN, 64], &["\"input\"", "-9223372036854775808", "negative"]),
        ("-1 as a dim", vec![8, -1], &["\"input\"", "-1", "negative"]),
        ("a million dims of 1", million_ones, &["shape has more than 64 dimensions"]),
        ("65 dims of 1", vec![1; 65], &["shape has more than 64 dimensions"]),
    ];
    for (what, shape, needles) in cases {
        let mut body = mlp_json();
        body["inputs"][0]["shape"] = json!(shape);
        let req = grpc_with(|r| r.inputs[0].shape = shape.clone());
        assert_refused_on_both(&server, what, json_body(&body), req, needles).await;
    }
    server.stop().await.unwrap();
}

/// BYTES data whose length prefixes lie: refused naming the element (Triton's "incomplete
/// string ..." wording); zero-length elements are valid and reach the signature check.
#[tokio::test]
async fn bogus_bytes_length_prefixes_are_refused_on_http_binary_and_grpc_raw() {
    let server = TestServer::start().await;
    let two = prefixed(&[b"ab", b"cd"]);
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        ("a length past the end", [&u32::MAX.to_le_bytes()[..], b"abc"].concat(),
            &["\"input\"", "incomplete string data for element 0", "expecting 4294967295 bytes", "only 3 bytes"]),
        ("lengths summing past the buffer", [&two[..], &prefixed(&[b"ef"])[..6], &5u32.to_le_bytes()].concat(),
            &["\"input\"", "incomplete string data for element 3", "expecting 5 bytes", "only 0 bytes"]),
        ("a truncated length", [&two[..], &[1, 0]].concat(),
            &["\"input\"", "incomplete string length indicator for element 2", "expecting 4 bytes", "only 2 bytes"]),
        ("more elements than the shape", prefixed(&[b"a", b"b", b"c"]),
            &["\"input\"", "needs 2 elements, got 3"]),
        ("zero-length elements are data", prefixed(&[b"", b""]),
            &["inference input 'input' data-type is 'BYTES', but model 'mlp' expects 'FP32'"]),
    ];
    for (what, bytes, needles) in cases {
        let header = binary_input("BYTES", json!([2]), json!(bytes.len()));
        let req = grpc_with(|r| {
            r.inputs[0].datatype = "BYTES".into();
            r.inputs[0].shape = vec![2];
            r.raw_input_contents = vec![bytes.clone().into()];
        });
        assert_refused_on_both(&server, what, binary(&header, &bytes), req, needles).await;
    }
    server.stop().await.unwrap();
}

/// Triton: "input 'x' already exists in request", "output 'x' already exists in request",
/// "unexpected inference output 'x' for model 'm'": both transports answer the same.
#[tokio::test]
async fn repeated_inputs_repeated_outputs_and_unknown_outputs_are_named_alike_on_both_transports() {
    let server = TestServer::start().await;
    let output = |name: &str| InferRequestedOutputTensor {
        name: name.into(),
        ..Default::default()
    };
    #[rustfmt::skip]
    let cases: Vec<NameCase> = vec![
        ("input twice", |b| {
            let again = b["inputs"][0].clone();
            b["inputs"].as_array_mut().unwrap().push(again);
        }, Box::new(|r| {
            r.inputs.push(r.inputs[0].clone());
            r.raw_input_contents.push(r.raw_input_contents[0].clone());
        }), &["input 'input' already exists in request"]),
        ("output twice", |b| b["outputs"] = json!([{"name": "output"}, {"name": "output"}]),
            Box::new(move |r| r.outputs = vec![output("output"), output("output")]),
            &["output 'output' already exists in request"]),
        ("unknown output", |b| b["outputs"] = json!([{"name": "nope"}]),
            Box::new(move |r| r.outputs = vec![output("nope")]),
            &["unexpected inference output 'nope' for model 'mlp'"]),
    ];
    for (what, edit_json, edit_grpc, needles) in cases {
        let mut body = mlp_json();
        edit_json(&mut body);
        let req = grpc_with(|r| edit_grpc(r));
        assert_refused_on_both(&server, what, json_body(&body), req, needles).await;
    }
    server.stop().await.unwrap();
}

/// JSON FP16 is accepted as numbers (Triton refuses FP16 in JSON; we take it) but a number
/// that FP16 cannot hold is refused like an integer out of range, never sent on as infinity.
#[tokio::test]
async fn fp16_json_numbers_parse_and_out_of_range_ones_are_400() {
    let server = TestServer::start().await;
    #[rustfmt::skip]
    let cases: Vec<(&str, f64, &[&str])> = vec![
        ("in range", 0.5, &["inference input 'input' data-type is 'FP16', but model 'mlp' expects 'FP32'"]),
        ("the largest FP16", 65504.0, &["inference input 'input' data-type is 'FP16', but model 'mlp' expects 'FP32'"]),
        ("1e6", 1e6, &["\"input\"", "1000000.0 is not a valid FP16"]),
        ("-1e6", -1e6, &["\"input\"", "-1000000.0 is not a valid FP16"]),
    ];
    for (what, value, needles) in cases {
        let mut body = mlp_json();
        body["inputs"][0]["datatype"] = json!("FP16");
        body["inputs"][0]["data"][5] = json!(value);
        let reply = post(&server, serde_json::to_vec(&body).unwrap(), None).await;
        assert_http(what, reply, 400, needles);
        assert_still_serves(&server).await;
    }
    let mut body = mlp_json();
    body["inputs"][0]["data"][5] = json!(1e300);
    let reply = post(&server, serde_json::to_vec(&body).unwrap(), None).await;
    assert_http(
        "1e300 as FP32",
        reply,
        400,
        &["\"input\"", "is not a valid FP32"],
    );
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}

/// `[[[[...]]]]` 10,000 deep in `data`, in a parameter and as the whole body: 400, no stack
/// overflow (serde_json's recursion limit holds under our typed parser too).
#[tokio::test]
async fn json_nested_ten_thousand_levels_deep_is_400_without_overflowing_the_stack() {
    let server = TestServer::start().await;
    let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let good = serde_json::to_string(&mlp_json()).unwrap();
    let data_at = good.find("\"data\":").unwrap() + "\"data\":".len();
    let data_end = data_at + good[data_at..].find(']').unwrap() + 1;
    #[rustfmt::skip]
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("deep data", format!("{}{deep}{}", &good[..data_at], &good[data_end..]), &["\"input\""]),
        ("deep timeout parameter", good.replacen('{', &format!("{{\"parameters\": {{\"timeout\": {deep}}},"), 1), &["timeout"]),
        ("deep body", deep.clone(), &["malformed inference request JSON"]),
        ("deep shape", good.replace("\"shape\":[8,64]", &format!("\"shape\":{deep}")), &["\"input\"", "dimension (an array) in shape"]),
    ];
    for (what, body, needles) in cases {
        assert_http(
            what,
            post(&server, body.into_bytes(), None).await,
            400,
            needles,
        );
        assert_still_serves(&server).await;
    }
    server.stop().await.unwrap();
}

/// A parameter nobody reads is skipped, not parsed into a tree: a million levels of it cost
/// neither stack nor memory, and the request is answered exactly.
#[tokio::test]
async fn an_unread_parameter_nested_a_million_levels_is_skipped_and_answered() {
    let server = TestServer::start().await;
    let deep = format!("{}1{}", "[".repeat(1 << 20), "]".repeat(1 << 20));
    let good = serde_json::to_string(&mlp_json()).unwrap();
    let body = good.replacen('{', &format!("{{\"parameters\": {{\"p\": {deep}}},"), 1);
    let (status, answer) = post(&server, body.into_bytes(), None).await;
    assert_eq!(status, 200, "{answer}");
    common::probe::assert_mlp_http(&answer);
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}

/// JSON has no NaN or Infinity: those tokens, and numbers beyond f64, are malformed JSON.
#[tokio::test]
async fn nan_and_infinity_tokens_in_json_data_are_400() {
    let server = TestServer::start().await;
    let good = serde_json::to_string(&mlp_json()).unwrap();
    let data_at = good.find("\"data\":[").unwrap() + "\"data\":[".len();
    for token in ["NaN", "Infinity", "-Infinity", "nan", "1e400"] {
        let body = format!("{}{token},{}", &good[..data_at], &good[data_at..]);
        let reply = post(&server, body.into_bytes(), None).await;
        assert_http(token, reply, 400, &["malformed"]);
        assert_still_serves(&server).await;
    }
    server.stop().await.unwrap();
}

/// NaN and infinite floats sent in binary are data: they reach the model, and the answer is
/// well-formed JSON whose non-finite outputs are `null` (JSON has no NaN; README says so), and
/// over gRPC the raw output holds every float.
#[tokio::test]
async fn binary_nan_and_infinity_inputs_are_answered_with_well_formed_json() {
    let server = TestServer::start().await;
    let mut values = mlp_values(2);
    values[..64].fill(f32::NAN);
    values[64..].fill(f32::INFINITY);
    let blob = le_bytes(&values);
    let (body, len) = binary(
        &binary_input("FP32", json!([2, 64]), json!(blob.len())),
        &blob,
    );
    let (status, answer) = post(&server, body, len).await;
    assert_eq!(status, 200, "{answer}");
    let out = &answer["outputs"][0];
    assert_eq!(out["shape"], json!([2, 10]), "{answer}");
    let data = out["data"].as_array().expect("a data array");
    assert_eq!(data.len(), 20, "{answer}");
    assert!(data.iter().all(|v| v.is_f64() || v.is_null()), "{answer}");
    let req = grpc_with(|r| {
        r.inputs[0].shape = vec![2, 64];
        r.raw_input_contents = vec![blob.clone().into()];
    });
    let resp = grpc(&server)
        .await
        .model_infer(req)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.raw_output_contents[0].len(), 20 * 4);
    // The same answer both ways: `null` in JSON exactly where the raw float is not finite.
    let raw: Vec<f32> = resp.raw_output_contents[0]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    for (i, (json, raw)) in data.iter().zip(&raw).enumerate() {
        match json.as_f64() {
            Some(v) => assert_eq!(v as f32, *raw, "output {i}"),
            None => assert!(!raw.is_finite(), "output {i}: null for finite {raw}"),
        }
    }
    let nulls = data.iter().filter(|v| v.is_null()).count();
    eprintln!("{nulls} of 20 outputs are not finite (null in JSON)");
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}
