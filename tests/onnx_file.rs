//! The model file as the engines get it (`registry::onnx_file`): a classifier's ZipMap output
//! serves as its `[N, C]` probability tensor with the class labels in the config, on tract and
//! ONNX Runtime; external data is inlined from inside the version directory, and external
//! data that leaves it (`..`, an absolute path, a symlink out) or lies beyond its file is
//! refused with a message naming it, while the other models keep serving; ai.onnx.ml Scaler
//! and Imputer, lowered to standard operators, serve on both engines.
//!
//! The files are tests/data/onnx_file/*.onnx, written by tests/data/onnx_file/build.py.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_matches_reference, copy_model, pb, reference, TestServer};
use ferroserve::config::ModelControlMode;
use prost::Message;
use serde_json::{json, Value};
use tract_onnx::pb as onnx;

const TOKEN: &str = "test-admin-token-0123456789";

fn data(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/onnx_file")
        .join(file)
}

/// Writes `repo/name/1/model.onnx` (the bytes given) and a config for `backend`; returns the
/// version directory.
fn add_model(repo: &Path, name: &str, model: &[u8], backend: &str) -> PathBuf {
    let dir = repo.join(name).join("1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.onnx"), model).unwrap();
    let config = format!("backend = \"{backend}\"\nmax_batch_size = 8\n");
    std::fs::write(repo.join(name).join("config.toml"), config).unwrap();
    dir
}

/// A repository with `mlp` (to check the server still serves exactly) and an empty rest.
fn repo() -> tempfile::TempDir {
    common::repo([copy_model("mlp")])
}

async fn server_on(root: &Path) -> TestServer {
    TestServer::builder()
        .repo(root)
        .admin_token(TOKEN)
        .control(ModelControlMode::Explicit)
        .load(&["mlp"])
        .start()
        .await
}

async fn load(server: &TestServer, model: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(server.url(&format!("/v2/repository/models/{model}/load")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn infer(server: &TestServer, model: &str, rows: &[[f32; 3]], width: usize) -> Value {
    let flat: Vec<f32> = rows.iter().flat_map(|r| r[..width].to_vec()).collect();
    let body = json!({"inputs": [{"name": "X", "datatype": "FP32",
        "shape": [rows.len(), width], "data": flat}]});
    let r = reqwest::Client::new()
        .post(server.url(&format!("/v2/models/{model}/infer")))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{model}: {body}");
    body
}

fn output<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no output {name} in {body}"))
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// `mlp` answers its reference exactly and health is live.
async fn still_serves(server: &TestServer) {
    assert_eq!(server.get("/v2/health/live").await.0, 200);
    let r = reqwest::Client::new()
        .post(server.url("/v2/models/mlp/infer"))
        .json(&json!({"inputs": [reference("mlp").inputs[0].json()]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let out = &body["outputs"][0];
    let shape: Vec<i64> = out["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_i64().unwrap())
        .collect();
    let want = &reference("mlp").outputs[0];
    assert_matches_reference("mlp", "output", "FP32", &shape, &floats(&out["data"]), want);
}

fn softmax(row: &[f64]) -> Vec<f64> {
    let e: Vec<f64> = row.iter().map(|x| x.exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|x| x / sum).collect()
}

/// The ZipMap classifier on `backend`: the probability tensor under the ZipMap's output name,
/// the labels in the config, the ArgMax label beside it.
async fn zipmap_serves_the_tensor(backend: &str) {
    let root = repo();
    add_model(
        root.path(),
        "clf",
        &std::fs::read(data("zipmap_strings.onnx")).unwrap(),
        backend,
    );
    let server = server_on(root.path()).await;
    let (status, body) = load(&server, "clf").await;
    assert_eq!(status, 200, "{body}");
    let rows = [[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]];
    let answer = infer(&server, "clf", &rows, 3).await;
    let probs = output(&answer, "output_probability");
    assert_eq!(probs["datatype"], "FP32", "{answer}");
    assert_eq!(probs["shape"], json!([2, 3]), "{answer}");
    let want: Vec<f64> = rows
        .iter()
        .flat_map(|r| softmax(&r.map(f64::from)))
        .collect();
    for (got, want) in floats(&probs["data"]).iter().zip(&want) {
        assert!((got - want).abs() <= 1e-5 * want.abs(), "{got} vs {want}");
    }
    assert_eq!(output(&answer, "output_label")["data"], json!([2, 0]));
    let (status, config) = server.get("/v2/models/clf/config").await;
    assert_eq!(status, 200);
    let out = config["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "output_probability")
        .unwrap();
    assert_eq!(out["data_type"], "TYPE_FP32", "{config}");
    assert_eq!(out["dims"], json!([3]), "{config}");
    assert_eq!(
        out["labels"],
        json!(["setosa", "versicolor", "virginica"]),
        "{config}"
    );
    still_serves(&server).await;
}

#[tokio::test]
async fn zipmap_output_serves_as_the_probability_tensor_on_tract() {
    zipmap_serves_the_tensor("tract").await;
}

#[cfg(feature = "onnxruntime")]
#[tokio::test]
async fn zipmap_output_serves_as_the_probability_tensor_on_onnxruntime() {
    zipmap_serves_the_tensor("onnxruntime").await;
}

#[tokio::test]
async fn zipmap_int64_labels_are_in_the_grpc_config() {
    let root = repo();
    add_model(
        root.path(),
        "clf",
        &std::fs::read(data("zipmap_ints.onnx")).unwrap(),
        "tract",
    );
    let server = server_on(root.path()).await;
    assert_eq!(load(&server, "clf").await.0, 200);
    let mut client =
        pb::grpc_inference_service_client::GrpcInferenceServiceClient::connect(server.grpc_url())
            .await
            .unwrap();
    let config = client
        .model_config(pb::ModelConfigRequest {
            name: "clf".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(
        config.parameters["labels.output_probability"].string_value,
        "10\n20"
    );
    let answer = infer(&server, "clf", &[[0.0, 1.0, 0.0]], 2).await;
    assert_eq!(
        output(&answer, "output_probability")["shape"],
        json!([1, 2])
    );
    still_serves(&server).await;
}

/// external.onnx with its initializers' external data edited by `edit` (location, offset, length).
fn external_model(edit: impl Fn(&mut Vec<onnx::StringStringEntryProto>)) -> Vec<u8> {
    let mut model =
        onnx::ModelProto::decode(&std::fs::read(data("external.onnx")).unwrap()[..]).unwrap();
    for t in &mut model.graph.as_mut().unwrap().initializer {
        edit(&mut t.external_data);
    }
    model.encode_to_vec()
}

fn set(entries: &mut [onnx::StringStringEntryProto], key: &str, value: &str) {
    entries.iter_mut().find(|e| e.key == key).unwrap().value = value.into();
}

/// Y = X @ [[1, 2], [3, 4]] + [0.5, -0.5], the weights read from weights.bin.
async fn external_data_serves(backend: &str) {
    let root = repo();
    let dir = add_model(
        root.path(),
        "ext",
        &std::fs::read(data("external.onnx")).unwrap(),
        backend,
    );
    std::fs::copy(data("weights.bin"), dir.join("weights.bin")).unwrap();
    let server = server_on(root.path()).await;
    let (status, body) = load(&server, "ext").await;
    assert_eq!(status, 200, "{body}");
    let answer = infer(&server, "ext", &[[1.0, 1.0, 0.0], [2.0, 0.0, 0.0]], 2).await;
    assert_eq!(
        output(&answer, "Y")["data"],
        json!([4.5, 5.5, 2.5, 3.5]),
        "{answer}"
    );
    still_serves(&server).await;
}

#[tokio::test]
async fn external_data_is_inlined_on_tract() {
    external_data_serves("tract").await;
}

#[cfg(feature = "onnxruntime")]
#[tokio::test]
async fn external_data_is_inlined_on_onnxruntime() {
    external_data_serves("onnxruntime").await;
}

/// The `ext` model with `model` bytes and weights.bin in place is refused with 400, the message
/// containing every one of `words`; the model does not serve and `mlp` still does.
async fn external_refused(model: Vec<u8>, prepare: impl Fn(&Path), words: &[&str]) {
    let root = repo();
    let dir = add_model(root.path(), "ext", &model, "tract");
    std::fs::copy(data("weights.bin"), dir.join("weights.bin")).unwrap();
    prepare(&dir);
    let server = server_on(root.path()).await;
    let (status, body) = load(&server, "ext").await;
    let message = body["error"].as_str().unwrap_or_default();
    assert_eq!(status, 400, "{body}");
    for word in words {
        assert!(message.contains(word), "{word:?} not in {message}");
    }
    let r = reqwest::Client::new()
        .post(server.url("/v2/models/ext/infer"))
        .json(&json!({"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 2], "data": [1, 1]}]}))
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 200, "a refused model serves");
    still_serves(&server).await;
}

#[tokio::test]
async fn external_data_up_the_tree_is_refused() {
    let model = external_model(|e| set(e, "location", "../weights.bin"));
    let copy_up = |dir: &Path| {
        std::fs::copy(data("weights.bin"), dir.join("../weights.bin")).unwrap();
    };
    external_refused(
        model,
        copy_up,
        &[
            "\"../weights.bin\"",
            "not a relative path inside the version directory",
        ],
    )
    .await;
}

#[tokio::test]
async fn external_data_at_an_absolute_path_is_refused() {
    let absolute = data("weights.bin").display().to_string();
    let model = external_model(|e| set(e, "location", &absolute));
    external_refused(
        model,
        |_| {},
        &[
            &absolute,
            "not a relative path inside the version directory",
        ],
    )
    .await;
}

#[cfg(unix)]
#[tokio::test]
async fn external_data_through_a_symlink_out_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::copy(data("weights.bin"), outside.path().join("w.bin")).unwrap();
    let model = external_model(|e| set(e, "location", "link.bin"));
    let link = |dir: &Path| {
        std::os::unix::fs::symlink(outside.path().join("w.bin"), dir.join("link.bin")).unwrap()
    };
    external_refused(
        model,
        link,
        &["\"link.bin\"", "resolves outside the version directory"],
    )
    .await;
}

#[tokio::test]
async fn external_data_beyond_its_file_is_refused() {
    // B's 8 bytes at offset 70 of the 72-byte file.
    let model = external_model(|e| {
        if e.iter().any(|x| x.key == "offset" && x.value == "64") {
            set(e, "offset", "70");
        }
    });
    external_refused(
        model,
        |_| {},
        &[
            "tensor \"B\"",
            "offset 70 + length 8 is beyond the end of weights.bin (72 bytes)",
        ],
    )
    .await;
}

#[tokio::test]
async fn external_data_in_a_missing_file_is_refused_naming_it() {
    let model = external_model(|e| set(e, "location", "gone.bin"));
    external_refused(model, |_| {}, &["tensor \"W\"", "gone.bin does not exist"]).await;
}

/// `X` of `rows` × 2 FP32 over gRPC (raw contents, so NaN travels); `Y` as f32s.
async fn grpc_y(server: &TestServer, model: &str, x: &[f32]) -> Vec<f32> {
    let mut client =
        pb::grpc_inference_service_client::GrpcInferenceServiceClient::connect(server.grpc_url())
            .await
            .unwrap();
    let request = pb::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "X".into(),
            datatype: "FP32".into(),
            shape: vec![(x.len() / 2) as i64, 2],
            ..Default::default()
        }],
        raw_input_contents: vec![x.iter().flat_map(|v| v.to_le_bytes()).collect()],
        ..Default::default()
    };
    let answer = client.model_infer(request).await.unwrap().into_inner();
    assert_eq!(answer.outputs[0].name, "Y");
    answer.raw_output_contents[0]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// `file` on `backend` answers `x` with `want`, bit for bit (the lowered graph does the float
/// operations ONNX Runtime's own kernel does).
async fn ml_op_serves(file: &str, backend: &str, x: &[f32], want: &[f32]) {
    let root = repo();
    add_model(
        root.path(),
        "op",
        &std::fs::read(data(file)).unwrap(),
        backend,
    );
    let server = server_on(root.path()).await;
    let (status, body) = load(&server, "op").await;
    assert_eq!(status, 200, "{body}");
    let got = grpc_y(&server, "op", x).await;
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&got), bits(want), "{got:?} vs {want:?}");
    still_serves(&server).await;
}

const SCALER_X: [f32; 4] = [3.0, 5.0, -1.5, 0.25];
/// (x - [1, -1]) * [2, 0.5]
const SCALER_Y: [f32; 4] = [4.0, 3.0, -5.0, 0.625];
const IMPUTER_X: [f32; 4] = [f32::NAN, 5.0, 1.5, f32::NAN];
const IMPUTER_Y: [f32; 4] = [10.0, 5.0, 1.5, 20.0];

#[tokio::test]
async fn ml_scaler_is_lowered_and_serves_on_tract() {
    ml_op_serves("scaler.onnx", "tract", &SCALER_X, &SCALER_Y).await;
}

#[cfg(feature = "onnxruntime")]
#[tokio::test]
async fn ml_scaler_is_lowered_and_serves_on_onnxruntime() {
    ml_op_serves("scaler.onnx", "onnxruntime", &SCALER_X, &SCALER_Y).await;
}

#[tokio::test]
async fn ml_imputer_is_lowered_and_serves_on_tract() {
    ml_op_serves("imputer.onnx", "tract", &IMPUTER_X, &IMPUTER_Y).await;
}

#[cfg(feature = "onnxruntime")]
#[tokio::test]
async fn ml_imputer_is_lowered_and_serves_on_onnxruntime() {
    ml_op_serves("imputer.onnx", "onnxruntime", &IMPUTER_X, &IMPUTER_Y).await;
}

/// `file` with its IR version replaced by `ir`.
fn with_ir_version(file: &str, ir: i64) -> Vec<u8> {
    let mut model = onnx::ModelProto::decode(&std::fs::read(data(file)).unwrap()[..]).unwrap();
    model.ir_version = ir;
    model.encode_to_vec()
}

#[cfg(feature = "onnxruntime")]
#[tokio::test]
async fn an_ir_version_onnxruntime_is_too_old_for_is_refused_saying_so() {
    let root = repo();
    add_model(
        root.path(),
        "future",
        &with_ir_version("scaler.onnx", 99),
        "onnxruntime",
    );
    let server = server_on(root.path()).await;
    let (status, body) = load(&server, "future").await;
    let message = body["error"].as_str().unwrap_or_default();
    assert_eq!(status, 400, "{body}");
    assert!(
        message.contains("Unsupported model IR version: 99, max supported IR version:"),
        "{message}"
    );
    assert!(!message.contains("/onnxruntime_src/"), "{message}");
    still_serves(&server).await;
}

#[tokio::test]
async fn external_data_over_the_protobuf_limit_is_refused_before_it_is_read() {
    // A sparse 2 GiB file: W claims all of it, over the limit with the model's own bytes.
    let model = external_model(|e| {
        set(e, "location", "huge.bin");
        set(e, "offset", "0");
        set(e, "length", &(1u64 << 31).to_string());
    });
    let sparse = |dir: &Path| {
        let file = std::fs::File::create(dir.join("huge.bin")).unwrap();
        file.set_len(1 << 31).unwrap();
    };
    let before = common::rss_kib();
    external_refused(model, sparse, &["over protobuf's 2 GiB limit"]).await;
    // Refused from the sizes alone: nothing near 2 GiB was read into memory.
    assert!(
        common::rss_kib() < before + 512 * 1024,
        "RSS grew from {before} KiB to {} KiB",
        common::rss_kib()
    );
}
