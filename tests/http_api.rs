//! The HTTP/REST front end against a real server: JSON and binary tensors, metadata, config,
//! readiness, statistics and metrics.

mod common;

use common::{assert_matches_reference, reference, TestServer, BUNDLED};
use serde_json::{json, Value};

fn json_request(model: &str) -> Value {
    let r = reference(model);
    json!({"id": "req-1", "inputs": r.inputs.iter().map(|t| t.json()).collect::<Vec<_>>()})
}

fn values(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn shape(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn json_inference_matches_references_for_every_bundled_model() {
    let server = TestServer::start().await;
    let client = reqwest::Client::new();
    for model in BUNDLED {
        let resp = client
            .post(server.url(&format!("/v2/models/{model}/infer")))
            .json(&json_request(model))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{model}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["model_name"], model);
        assert_eq!(body["model_version"], "1");
        assert_eq!(body["id"], "req-1");
        let r = reference(model);
        assert_eq!(body["outputs"].as_array().unwrap().len(), r.outputs.len());
        for want in &r.outputs {
            let out = body["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["name"] == want.name.as_str())
                .unwrap();
            assert_matches_reference(
                model,
                &want.name,
                out["datatype"].as_str().unwrap(),
                &shape(&out["shape"]),
                &values(&out["data"]),
                want,
            );
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn nested_json_data_is_accepted() {
    let server = TestServer::start().await;
    let r = reference("iris");
    let flat = r.inputs[0].f32s();
    let nested: Vec<Vec<f32>> = flat.chunks(4).map(|c| c.to_vec()).collect();
    let req = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": r.inputs[0].shape, "data": nested}],
                     "outputs": [{"name": "label"}]});
    let body: Value = reqwest::Client::new()
        .post(server.url("/v2/models/iris/infer"))
        .json(&req)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["outputs"].as_array().unwrap().len(),
        1,
        "only the requested output"
    );
    let labels: Vec<i64> = body["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(
        labels,
        r.outputs.iter().find(|o| o.name == "label").unwrap().i64s()
    );
}

/// Builds a binary-extension request: JSON header, then the raw little-endian inputs.
fn binary_request(model: &str, binary_outputs: bool) -> (Vec<u8>, usize) {
    let r = reference(model);
    let mut blobs = Vec::new();
    let inputs: Vec<Value> = r
        .inputs
        .iter()
        .map(|t| {
            let bytes: Vec<u8> = t.f32s().iter().flat_map(|f| f.to_le_bytes()).collect();
            let size = bytes.len();
            blobs.extend(bytes);
            json!({"name": t.name, "datatype": t.datatype, "shape": t.shape, "parameters": {"binary_data_size": size}})
        })
        .collect();
    let outputs: Vec<Value> = r
        .outputs
        .iter()
        .map(|o| json!({"name": o.name, "parameters": {"binary_data": binary_outputs}}))
        .collect();
    let mut body = serde_json::to_vec(&json!({"inputs": inputs, "outputs": outputs})).unwrap();
    let header_len = body.len();
    body.extend(blobs);
    (body, header_len)
}

#[tokio::test]
async fn binary_tensor_extension_round_trips_for_every_bundled_model() {
    let server = TestServer::start().await;
    let client = reqwest::Client::new();
    for model in BUNDLED {
        let (body, header_len) = binary_request(model, true);
        let resp = client
            .post(server.url(&format!("/v2/models/{model}/infer")))
            .header("Inference-Header-Content-Length", header_len)
            .header("Content-Type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{model}");
        let json_len: usize = resp.headers()["inference-header-content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let bytes = resp.bytes().await.unwrap();
        let header: Value = serde_json::from_slice(&bytes[..json_len]).unwrap();
        let mut offset = json_len;
        let r = reference(model);
        for out in header["outputs"].as_array().unwrap() {
            let size = out["parameters"]["binary_data_size"].as_u64().unwrap() as usize;
            let raw = &bytes[offset..offset + size];
            offset += size;
            let dt = out["datatype"].as_str().unwrap();
            let vals: Vec<f64> = match dt {
                "FP32" => raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                "INT64" => raw
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                other => panic!("unexpected datatype {other}"),
            };
            let want = r
                .outputs
                .iter()
                .find(|o| out["name"] == o.name.as_str())
                .unwrap();
            assert_matches_reference(model, &want.name, dt, &shape(&out["shape"]), &vals, want);
        }
        assert_eq!(offset, bytes.len(), "{model}: every binary byte is claimed");
    }
}

#[tokio::test]
async fn binary_inputs_can_get_json_outputs() {
    let server = TestServer::start().await;
    let (body, header_len) = binary_request("mlp", false);
    let resp = reqwest::Client::new()
        .post(server.url("/v2/models/mlp/infer"))
        .header("Inference-Header-Content-Length", header_len)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp
        .headers()
        .get("inference-header-content-length")
        .is_none());
    let body: Value = resp.json().await.unwrap();
    let want = &reference("mlp").outputs[0];
    assert_matches_reference(
        "mlp",
        "output",
        "FP32",
        &shape(&body["outputs"][0]["shape"]),
        &values(&body["outputs"][0]["data"]),
        want,
    );
}

#[tokio::test]
async fn health_metadata_and_config_describe_the_models() {
    let server = TestServer::start().await;
    let c = reqwest::Client::new();
    assert_eq!(
        c.get(server.url("/v2/health/live"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(server.url("/v2/health/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let meta: Value = c
        .get(server.url("/v2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["name"], "ferroserve");
    assert!(meta["extensions"]
        .as_array()
        .unwrap()
        .contains(&json!("binary_tensor_data")));

    let m: Value = c
        .get(server.url("/v2/models/iris"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["name"], "iris");
    assert_eq!(m["versions"], json!(["1"]));
    assert_eq!(
        m["inputs"],
        json!([{"name": "input", "datatype": "FP32", "shape": [-1, 4]}])
    );
    assert_eq!(
        m["outputs"][0],
        json!({"name": "label", "datatype": "INT64", "shape": [-1]})
    );
    let v: Value = c
        .get(server.url("/v2/models/iris/versions/1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v, m);

    // mlp declares no tensors in config.toml: they come from the graph.
    let cfg: Value = c
        .get(server.url("/v2/models/mlp/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cfg["max_batch_size"], 64);
    assert_eq!(cfg["input"][0]["data_type"], "TYPE_FP32");
    assert_eq!(cfg["input"][0]["dims"], json!([64]));
    assert_eq!(cfg["output"][0]["dims"], json!([10]));

    assert_eq!(
        c.get(server.url("/v2/models/mlp/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(server.url("/v2/models/mlp/versions/1/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(server.url("/v2/models/mlp/versions/2/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        c.get(server.url("/v2/models/nope/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn metrics_and_statistics_count_requests_by_code() {
    let server = TestServer::start().await;
    let c = reqwest::Client::new();
    for _ in 0..3 {
        let r = c
            .post(server.url("/v2/models/mlp/infer"))
            .json(&json_request("mlp"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let bad = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]});
    assert_eq!(
        c.post(server.url("/v2/models/mlp/infer"))
            .json(&bad)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );

    let text = server.metrics_text().await;
    assert!(
        text.contains(
            r#"ferroserve_requests_total{code="ok",model="mlp",protocol="http",version="1"} 3"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"ferroserve_requests_total{code="invalid_argument",model="mlp",protocol="http",version="1"} 1"#), "{text}");
    assert!(text.contains(r#"ferroserve_request_duration_seconds_count{model="mlp",protocol="http",version="1"} 4"#), "{text}");

    let stats: Value = c
        .get(server.url("/v2/models/mlp/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let s = &stats["model_stats"][0];
    assert_eq!(s["name"], "mlp");
    assert_eq!(s["inference_stats"]["success"]["count"], 3);
    assert_eq!(s["inference_stats"]["fail"]["count"], 1);
    assert_eq!(s["inference_count"], 24, "3 requests of 8 rows");
    assert!(
        s["inference_stats"]["compute_infer"]["ns"]
            .as_u64()
            .unwrap()
            > 0
    );
}
