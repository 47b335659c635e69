//! Triton's system shared memory extension: regions made in /dev/shm by the test, registered
//! over HTTP and gRPC, inputs read from them and outputs written into them (read back exact),
//! and every refusal (bounds, unregistered, truncated, bad keys, disabled, unauthenticated) a
//! clear error after which the server still serves.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::probe::{assert_still_serves, le_bytes};
use common::{assert_matches_reference, pb, reference, TestServer};
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use pb::infer_parameter::ParameterChoice;
use serde_json::{json, Value};

const TOKEN: &str = "shared-memory-test-token";

/// A file of /dev/shm, removed when dropped.
struct Shm {
    key: String,
}

impl Shm {
    fn new(bytes: &[u8]) -> Shm {
        static N: AtomicUsize = AtomicUsize::new(0);
        let key = format!(
            "/ferroserve-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let shm = Shm { key };
        std::fs::write(shm.path(), bytes).unwrap();
        shm
    }
    fn path(&self) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("/dev/shm{}", self.key))
    }
    fn read(&self) -> Vec<u8> {
        std::fs::read(self.path()).unwrap()
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path());
    }
}

async fn server(enabled: bool) -> TestServer {
    TestServer::builder()
        .admin_token(TOKEN)
        .configure(|c| c.allow_shared_memory = enabled)
        .start()
        .await
}

async fn post(server: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(server.url(path))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn register(
    server: &TestServer,
    name: &str,
    key: &str,
    offset: u64,
    size: u64,
) -> (u16, Value) {
    let path = format!("/v2/systemsharedmemory/region/{name}/register");
    post(
        server,
        &path,
        json!({"key": key, "offset": offset, "byte_size": size}),
    )
    .await
}

fn assert_error(what: &str, (status, body): (u16, Value), want: u16, needle: &str) {
    assert_eq!(status, want, "{what}: {body}");
    let msg = body["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains(needle),
        "{what}: {msg:?} should contain {needle:?}"
    );
}

/// The reference mlp input and room for its output.
fn mlp_input() -> (Vec<u8>, Vec<i64>) {
    let input = &reference("mlp").inputs[0];
    (le_bytes(&input.f32s()), input.shape.clone())
}

fn assert_mlp_output(bytes: &[u8]) {
    let want = &reference("mlp").outputs[0];
    let values: Vec<f64> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
        .collect();
    assert_matches_reference("mlp", "output", "FP32", &want.shape, &values, want);
}

fn infer_body(shape: &[i64], in_size: usize, out_offset: u64, out_size: usize) -> Value {
    json!({
        "inputs": [{"name": "input", "datatype": "FP32", "shape": shape, "parameters": {
            "shared_memory_region": "in", "shared_memory_byte_size": in_size}}],
        "outputs": [{"name": "output", "parameters": {"shared_memory_region": "out",
            "shared_memory_offset": out_offset, "shared_memory_byte_size": out_size}}]
    })
}

#[tokio::test]
async fn http_inputs_and_outputs_by_region_read_back_exact() {
    let server = server(true).await;
    let (input, shape) = mlp_input();
    let out_len = reference("mlp").outputs[0].data.len() * 4;
    let (a, b) = (Shm::new(&input), Shm::new(&vec![0; 16 + out_len]));
    assert_eq!(
        register(&server, "in", &a.key, 0, input.len() as u64)
            .await
            .0,
        200
    );
    assert_eq!(
        register(&server, "out", &b.key, 8, (8 + out_len) as u64)
            .await
            .0,
        200
    );
    let body = infer_body(&shape, input.len(), 8, out_len);
    let (status, resp) = post(&server, "/v2/models/mlp/infer", body).await;
    assert_eq!(status, 200, "{resp}");
    let out = &resp["outputs"][0];
    assert!(out.get("data").is_none(), "{out}");
    assert_eq!(out["parameters"]["shared_memory_region"], "out");
    assert_eq!(out["parameters"]["shared_memory_byte_size"], out_len);
    assert_mlp_output(&b.read()[16..16 + out_len]);
    assert_still_serves(&server).await;
}

fn param(c: ParameterChoice) -> pb::InferParameter {
    pb::InferParameter {
        parameter_choice: Some(c),
    }
}

#[tokio::test]
async fn grpc_inputs_and_outputs_by_region_read_back_exact() {
    let server = server(true).await;
    let (input, shape) = mlp_input();
    let out_len = reference("mlp").outputs[0].data.len() * 4;
    let (a, b) = (Shm::new(&input), Shm::new(&vec![0; out_len]));
    let mut client = GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    for (name, key, size) in [("in", &a.key, input.len()), ("out", &b.key, out_len)] {
        let mut req = tonic::Request::new(pb::SystemSharedMemoryRegisterRequest {
            name: name.into(),
            key: key.clone(),
            offset: 0,
            byte_size: size as u64,
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        client.system_shared_memory_register(req).await.unwrap();
    }
    let shm_params = |region: &str, size: usize| {
        [
            (
                "shared_memory_region".to_string(),
                param(ParameterChoice::StringParam(region.into())),
            ),
            (
                "shared_memory_byte_size".into(),
                param(ParameterChoice::Int64Param(size as i64)),
            ),
        ]
        .into_iter()
        .collect()
    };
    let req = pb::ModelInferRequest {
        model_name: "mlp".into(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape,
            parameters: shm_params("in", input.len()),
            ..Default::default()
        }],
        outputs: vec![pb::model_infer_request::InferRequestedOutputTensor {
            name: "output".into(),
            parameters: shm_params("out", out_len),
        }],
        ..Default::default()
    };
    let resp = client.model_infer(req).await.unwrap().into_inner();
    let p = &resp.outputs[0].parameters;
    assert_eq!(
        p["shared_memory_byte_size"].parameter_choice,
        Some(ParameterChoice::Int64Param(out_len as i64))
    );
    assert!(resp.raw_output_contents.iter().all(|r| r.is_empty()));
    assert_mlp_output(&b.read());
    let status = client
        .system_shared_memory_status(pb::SystemSharedMemoryStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.regions.len(), 2);
    assert_eq!(status.regions["in"].key, a.key);
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn out_of_bounds_offsets_and_sizes_are_refused_naming_the_region() {
    let server = server(true).await;
    let (input, shape) = mlp_input();
    let a = Shm::new(&input);
    let n = input.len() as u64;
    assert_error(
        "register past the file",
        register(&server, "big", &a.key, 4, n).await,
        400,
        "failed to register shared memory region 'big': invalid args",
    );
    assert_error(
        "register with an overflowing offset",
        register(&server, "big", &a.key, u64::MAX, 2).await,
        400,
        "invalid args",
    );
    assert_eq!(register(&server, "in", &a.key, 0, n).await.0, 200);
    let mut body = infer_body(&shape, input.len(), 0, 4);
    body["outputs"] = json!([]);
    body["inputs"][0]["parameters"]["shared_memory_offset"] = json!(4);
    assert_error(
        "input past the region",
        post(&server, "/v2/models/mlp/infer", body.clone()).await,
        400,
        "shared memory region: 'in'",
    );
    body["inputs"][0]["parameters"]["shared_memory_offset"] = json!(u64::MAX);
    assert_error(
        "input offset that overflows",
        post(&server, "/v2/models/mlp/infer", body).await,
        400,
        "shared memory region: 'in'",
    );
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn an_unregistered_region_is_not_found_in_tritons_words_and_code() {
    let server = server(true).await;
    let (input, shape) = mlp_input();
    let body = infer_body(&shape, input.len(), 0, 40);
    assert_error(
        "infer",
        post(&server, "/v2/models/mlp/infer", body).await,
        404,
        "Unable to find shared memory region: 'in'",
    );
    assert_error(
        "status",
        server
            .get("/v2/systemsharedmemory/region/nope/status")
            .await,
        404,
        "Unable to find system shared memory region: 'nope'",
    );
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn a_region_truncated_after_register_is_a_clear_400() {
    let server = server(true).await;
    let (input, shape) = mlp_input();
    let a = Shm::new(&input);
    assert_eq!(
        register(&server, "in", &a.key, 0, input.len() as u64)
            .await
            .0,
        200
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(a.path())
        .unwrap()
        .set_len(8)
        .unwrap();
    let mut body = infer_body(&shape, input.len(), 0, 4);
    body["outputs"] = json!([]);
    assert_error(
        "infer from a truncated region",
        post(&server, "/v2/models/mlp/infer", body).await,
        400,
        "shared memory region 'in' was truncated to 8 bytes",
    );
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn keys_outside_dev_shm_or_through_symlinks_are_refused_naming_them() {
    let server = server(true).await;
    for key in ["/../etc/passwd", "/a/b", "/..", "relative/x"] {
        assert_error(
            key,
            register(&server, "r", key, 0, 1).await,
            400,
            "is not a POSIX shm name",
        );
    }
    let target = Shm::new(&[0; 64]);
    let link = format!("/ferroserve-test-link-{}", std::process::id());
    let link_path = format!("/dev/shm{link}");
    let _ = std::fs::remove_file(&link_path);
    std::os::unix::fs::symlink(target.path(), &link_path).unwrap();
    let got = register(&server, "r", &link, 0, 1).await;
    let _ = std::fs::remove_file(&link_path);
    assert_error("a symlink", got, 400, &format!("'{link}': it is a symlink"));
    assert_error(
        "a missing key",
        register(&server, "r", "/ferroserve-test-missing", 0, 1).await,
        400,
        "Unable to open shared memory region: '/ferroserve-test-missing'",
    );
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn disabled_shared_memory_is_refused_with_the_setting_named() {
    let server = server(false).await;
    let a = Shm::new(&[0; 64]);
    assert_error(
        "register",
        register(&server, "r", &a.key, 0, 64).await,
        403,
        "allow_shared_memory",
    );
    assert_error(
        "status",
        server.get("/v2/systemsharedmemory/status").await,
        403,
        "allow_shared_memory",
    );
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn register_without_the_admin_token_is_unauthenticated() {
    let server = server(true).await;
    let a = Shm::new(&[0; 64]);
    let r = reqwest::Client::new()
        .post(server.url("/v2/systemsharedmemory/region/r/register"))
        .json(&json!({"key": a.key, "offset": 0, "byte_size": 64}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(
        server.get("/v2/systemsharedmemory/status").await,
        (200, json!([]))
    );
}

#[tokio::test]
async fn status_lists_registered_regions_and_unregister_removes_them() {
    let server = server(true).await;
    let (a, b) = (Shm::new(&[0; 64]), Shm::new(&[0; 32]));
    assert_eq!(register(&server, "a", &a.key, 0, 64).await.0, 200);
    assert_eq!(register(&server, "b", &b.key, 16, 16).await.0, 200);
    assert_error(
        "twice",
        register(&server, "a", &b.key, 0, 8).await,
        400,
        "already in manager",
    );
    let (status, list) = server.get("/v2/systemsharedmemory/status").await;
    assert_eq!(status, 200);
    assert_eq!(
        list,
        json!([{"name": "a", "key": a.key, "offset": 0, "byte_size": 64},
               {"name": "b", "key": b.key, "offset": 16, "byte_size": 16}])
    );
    assert_eq!(
        post(
            &server,
            "/v2/systemsharedmemory/region/a/unregister",
            json!({})
        )
        .await
        .0,
        200
    );
    let (_, list) = server.get("/v2/systemsharedmemory/status").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        post(&server, "/v2/systemsharedmemory/unregister", json!({}))
            .await
            .0,
        200
    );
    assert_eq!(
        server.get("/v2/systemsharedmemory/status").await,
        (200, json!([]))
    );
}

#[tokio::test]
async fn unregister_all_with_none_registered_succeeds_on_both_transports() {
    let server = server(true).await;
    assert_eq!(
        post(&server, "/v2/systemsharedmemory/unregister", json!({})).await,
        (200, json!({}))
    );
    let mut client = GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let mut req = tonic::Request::new(pb::SystemSharedMemoryUnregisterRequest::default());
    req.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    client.system_shared_memory_unregister(req).await.unwrap();
}

#[tokio::test]
async fn cuda_shared_memory_register_is_unimplemented_with_a_message() {
    let server = server(true).await;
    let body = json!({"raw_handle": {"b64": ""}, "device_id": 0, "byte_size": 64});
    assert_error(
        "http",
        post(&server, "/v2/cudasharedmemory/region/r/register", body).await,
        501,
        "CUDA shared memory is not supported",
    );
    let mut client = GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let err = client
        .cuda_shared_memory_register(pb::CudaSharedMemoryRegisterRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(
        err.message().contains("CUDA shared memory"),
        "{}",
        err.message()
    );
}

/// Triton's CPU-only answers, which tritonclient's shm examples rely on (they unregister all
/// CUDA regions first): nothing to unregister, an empty status, a named region not found.
#[tokio::test]
async fn cuda_shared_memory_has_no_regions_to_unregister_or_list() {
    let server = server(true).await;
    let (status, body) = post(&server, "/v2/cudasharedmemory/unregister", json!({})).await;
    assert_eq!((status, body), (200, json!({})));
    let (status, body) = post(
        &server,
        "/v2/cudasharedmemory/region/r/unregister",
        json!({}),
    )
    .await;
    assert_eq!((status, body), (200, json!({})));
    assert_eq!(
        server.get("/v2/cudasharedmemory/status").await,
        (200, json!([]))
    );
    assert_error(
        "status of one",
        server.get("/v2/cudasharedmemory/region/r/status").await,
        404,
        "Unable to find cuda shared memory region: 'r'",
    );
    let mut client = GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    client
        .cuda_shared_memory_unregister(pb::CudaSharedMemoryUnregisterRequest::default())
        .await
        .unwrap();
    let all = client
        .cuda_shared_memory_status(pb::CudaSharedMemoryStatusRequest::default())
        .await
        .unwrap();
    assert!(all.into_inner().regions.is_empty());
    let err = client
        .cuda_shared_memory_status(pb::CudaSharedMemoryStatusRequest { name: "r".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(
        err.message(),
        "Unable to find cuda shared memory region: 'r'"
    );
}

#[tokio::test]
async fn an_output_region_too_small_for_the_result_is_refused_naming_the_output() {
    let server = server(true).await;
    let (input, shape) = mlp_input();
    let (a, b) = (Shm::new(&input), Shm::new(&[0; 8]));
    assert_eq!(
        register(&server, "in", &a.key, 0, input.len() as u64)
            .await
            .0,
        200
    );
    assert_eq!(register(&server, "out", &b.key, 0, 8).await.0, 200);
    assert_error(
        "output region of 8 bytes",
        post(
            &server,
            "/v2/models/mlp/infer",
            infer_body(&shape, input.len(), 0, 8),
        )
        .await,
        400,
        "for output 'output' (8 bytes) should be at least",
    );
    assert_eq!(b.read(), vec![0; 8], "nothing was written");
    assert_still_serves(&server).await;
}

/// tritonclient sends gRPC `raw_input_contents` only for the inputs not in shared memory, and
/// Triton reads them in that order: one input by region beside one raw (Triton's `simple`).
#[tokio::test]
async fn grpc_an_input_by_region_beside_a_raw_one_takes_the_raw_entry() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/triton");
    let repo = common::repo([common::copy_model("simple").from(&data)]);
    let server = TestServer::builder()
        .repo(repo.path())
        .admin_token(TOKEN)
        .configure(|c| c.allow_shared_memory = true)
        .start()
        .await;
    let le = |v: &[i32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (in0, in1): (Vec<i32>, Vec<i32>) = ((0..16).collect(), vec![1; 16]);
    let a = Shm::new(&le(&in0));
    assert_eq!(register(&server, "in0", &a.key, 0, 64).await.0, 200);
    let by_region = [
        (
            "shared_memory_region".to_string(),
            param(ParameterChoice::StringParam("in0".into())),
        ),
        (
            "shared_memory_byte_size".into(),
            param(ParameterChoice::Int64Param(64)),
        ),
    ];
    let input = |name: &str| pb::model_infer_request::InferInputTensor {
        name: name.into(),
        datatype: "INT32".into(),
        shape: vec![1, 16],
        ..Default::default()
    };
    let req = pb::ModelInferRequest {
        model_name: "simple".into(),
        inputs: vec![
            pb::model_infer_request::InferInputTensor {
                parameters: by_region.into_iter().collect(),
                ..input("INPUT0")
            },
            input("INPUT1"),
        ],
        raw_input_contents: vec![le(&in1).into()],
        ..Default::default()
    };
    let mut client = GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let resp = client.model_infer(req).await.unwrap().into_inner();
    let names: Vec<&str> = resp.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["OUTPUT0", "OUTPUT1"]);
    let sum: Vec<i32> = in0.iter().zip(&in1).map(|(a, b)| a + b).collect();
    let diff: Vec<i32> = in0.iter().zip(&in1).map(|(a, b)| a - b).collect();
    assert_eq!(resp.raw_output_contents[0].as_ref(), le(&sum).as_slice());
    assert_eq!(resp.raw_output_contents[1].as_ref(), le(&diff).as_slice());
}
