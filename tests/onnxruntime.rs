//! The ONNX Runtime backend: the same answers as tract on every bundled model, over a real
//! server and in process; rows independent of their batch; the scaler model (an ai.onnx.ml Scaler,
//! which tract runs once the server has lowered it) on both;
//! strict CUDA; the provider in model config; the MiniLM embedding model against its reference.
//!
//! Needs the library: `scripts/fetch-onnxruntime.sh` (scripts/test.sh runs it and exports
//! ORT_DYLIB_PATH). Without a library at all see `tests/onnxruntime_missing.rs`.
#![cfg(feature = "onnxruntime")]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{copy_model, onnxruntime_models, poll_until, reference, Reference, TestServer};
use ferroserve::backend::{self, LoadOptions};
use ferroserve::config::BackendKind;
use ferroserve::tensor::{DataType, Tensor};
use serde_json::{json, Value};

/// Every model under `models/`, all served by tract there.
const MODELS: [&str; 4] = ["iris", "digits", "mlp", "dense"];

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `GET path` until `settled` accepts the answer (at most 10 s): without strict readiness the
/// server answers before every model has finished loading, and a loaded machine is slow.
async fn get_settled(
    server: &TestServer,
    path: &str,
    settled: impl Fn(u16, &Value) -> bool,
) -> (u16, Value) {
    let (status, body) = poll_until(
        Duration::from_secs(10),
        &format!("GET {path} never settled"),
        || async {
            let (status, body) = server.get(path).await;
            Answer(status, body)
        },
        |Answer(status, body)| settled(*status, body),
    )
    .await
    .into();
    (status, body)
}

/// An HTTP answer, printable in a timeout message.
struct Answer(u16, Value);

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0, self.1)
    }
}

impl From<Answer> for (u16, Value) {
    fn from(a: Answer) -> Self {
        (a.0, a.1)
    }
}

/// The metadata of a model that must fail to load, once it has.
async fn failed_model(server: &TestServer, model: &str) -> (u16, Value) {
    get_settled(server, &format!("/v2/models/{model}"), |_, body| {
        let loading = body["error"]
            .as_str()
            .is_some_and(|e| e.contains("loading"));
        // Not registered yet, or still loading (both 404, as Triton: no available version).
        let unknown = body["error"]
            .as_str()
            .is_some_and(|e| e.ends_with("is not found"));
        !unknown && !loading
    })
    .await
}

async fn ready_status(server: &TestServer, model: &str) -> u16 {
    get_settled(server, &format!("/v2/models/{model}/ready"), |s, _| {
        s == 200
    })
    .await
    .0
}

async fn infer(server: &TestServer, model: &str, body: &Value) -> Value {
    let r = reqwest::Client::new()
        .post(server.url(&format!("/v2/models/{model}/infer")))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{model}: {body}");
    body
}

fn request(r: &Reference) -> Value {
    json!({"inputs": r.inputs.iter().map(|t| t.json()).collect::<Vec<_>>()})
}

fn output<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no output {name} in {body}"))
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Labels exact, floats within 1e-5.
fn assert_close(what: &str, datatype: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: element count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if datatype.starts_with("INT") {
            assert_eq!(g, w, "{what}[{i}]");
        } else {
            assert!((g - w).abs() <= 1e-5, "{what}[{i}]: {g} vs {w}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bundled_model_answers_on_onnxruntime_as_on_tract() {
    let repo = tempfile::tempdir().unwrap();
    for m in MODELS {
        copy_model(m).backend("tract").to(repo.path());
        copy_model(m)
            .named(&format!("{m}_ort"))
            .backend("onnxruntime")
            .to(repo.path());
    }
    let server = TestServer::builder()
        .repo(repo.path())
        .strict(true)
        .start()
        .await;
    for m in MODELS {
        let r = reference(m);
        let tract = infer(&server, m, &request(&r)).await;
        let ort = infer(&server, &format!("{m}_ort"), &request(&r)).await;
        for want in &r.outputs {
            let (t, o) = (output(&tract, &want.name), output(&ort, &want.name));
            assert_eq!(o["datatype"], want.datatype.as_str(), "{m}/{}", want.name);
            assert_eq!(o["shape"], t["shape"], "{m}/{}", want.name);
            let what = format!("{m}/{} onnxruntime vs tract", want.name);
            assert_close(
                &what,
                &want.datatype,
                &numbers(&o["data"]),
                &numbers(&t["data"]),
            );
            let what = format!("{m}/{} onnxruntime vs reference", want.name);
            let reference: Vec<f64> = want.data.iter().map(|v| v.as_f64().unwrap()).collect();
            assert_close(&what, &want.datatype, &numbers(&o["data"]), &reference);
        }
    }
    server.stop().await.unwrap();
}

/// The reference rows of `model` as tensors, in graph input order.
fn reference_inputs(model: &str) -> Vec<Tensor> {
    reference(model)
        .inputs
        .iter()
        .map(|t| {
            let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
            match t.datatype.as_str() {
                "FP32" => Tensor::from_values(shape, &t.f32s()).unwrap(),
                "INT64" => Tensor::from_values(shape, &t.i64s()).unwrap(),
                other => panic!("{model}: reference datatype {other}"),
            }
        })
        .collect()
}

fn load(kind: BackendKind, file: &Path, max_batch_size: usize) -> Box<dyn backend::Backend> {
    let options = LoadOptions {
        max_batch_size,
        row_invariant: true,
        ..LoadOptions::default()
    };
    let mut loaded =
        backend::load(kind, file, &options).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    loaded.instances.remove(0)
}

#[test]
fn onnxruntime_rows_do_not_depend_on_their_batch() {
    // Requests share batches under dynamic batching, so every sub-batch of the reference rows
    // (single rows included: the backend runs them as two) must give the bits of the same rows
    // inside the whole batch.
    for m in MODELS {
        let mut ort = load(
            BackendKind::OnnxRuntime,
            &common::bundled_models().join(m).join("1/model.onnx"),
            64,
        );
        let inputs = reference_inputs(m);
        let rows = inputs[0].rows();
        let whole = ort.infer(&inputs).unwrap();
        for n in 1..rows {
            for start in 0..=rows - n {
                let parts = [start, n, rows - start - n];
                let part: Vec<Tensor> = inputs
                    .iter()
                    .map(|t| t.split(&parts).unwrap().remove(1))
                    .collect();
                let got = ort.infer(&part).unwrap();
                for (out, batch_out) in got.iter().zip(&whole) {
                    let want = batch_out.split(&parts).unwrap().remove(1);
                    assert_eq!(
                        out.data(),
                        want.data(),
                        "{m}: rows {start}..{} alone vs in a batch of {rows}",
                        start + n
                    );
                }
            }
        }
    }
}

#[test]
fn inputs_at_any_alignment_give_the_same_answer() {
    // Aligned inputs are passed to ONNX Runtime in place, others are copied: both must agree.
    let mut ort = load(
        BackendKind::OnnxRuntime,
        &common::bundled_models().join("mlp/1/model.onnx"),
        64,
    );
    let input = reference_inputs("mlp").remove(0);
    let want = ort.infer(std::slice::from_ref(&input)).unwrap();
    let mut shifted = vec![0u8];
    shifted.extend_from_slice(input.data());
    let unaligned = bytes::Bytes::from(shifted).slice(1..);
    let input = Tensor::new(DataType::F32, input.shape().to_vec(), unaligned).unwrap();
    assert_eq!(ort.infer(&[input]).unwrap()[0].data(), want[0].data());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_config_reports_the_execution_provider() {
    let repo = tempfile::tempdir().unwrap();
    copy_model("mlp")
        .named("mlp_ort")
        .backend("onnxruntime")
        .to(repo.path());
    copy_model("mlp").backend("tract").to(repo.path());
    let server = TestServer::builder()
        .repo(repo.path())
        .strict(true)
        .start()
        .await;
    let (_, meta) = server.get("/v2/models/mlp_ort").await;
    assert_eq!(meta["platform"], "onnxruntime_onnx");
    let (_, cfg) = server.get("/v2/models/mlp_ort/config").await;
    assert_eq!(cfg["platform"], "onnxruntime_onnx");
    assert_eq!(cfg["backend"], "onnxruntime");
    assert_eq!(cfg["instance_group"][0]["kind"], "KIND_CPU");
    assert_eq!(
        cfg["parameters"]["execution_provider"]["string_value"],
        "CPUExecutionProvider"
    );
    let (_, cfg) = server.get("/v2/models/mlp/config").await;
    assert_eq!(cfg["platform"], "tract_onnx");
    assert_eq!(
        cfg["parameters"]["execution_provider"]["string_value"],
        "tract"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cuda_model_fails_to_load_instead_of_running_on_the_cpu() {
    // The CPU library has no CUDA provider (and this machine may have no GPU): the model must be
    // unavailable with the reason, not quietly served from the CPU.
    let repo = tempfile::tempdir().unwrap();
    copy_model("mlp")
        .named("mlp_cuda")
        .backend("onnxruntime")
        .config("device = \"cuda:0\"")
        .to(repo.path());
    copy_model("mlp")
        .named("mlp_ort")
        .backend("onnxruntime")
        .to(repo.path());
    let server = TestServer::builder()
        .repo(repo.path())
        .strict(false)
        .wait_ready(false)
        .start()
        .await;
    let (status, body) = failed_model(&server, "mlp_cuda").await;
    assert_eq!(status, 404, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(msg.contains("CUDA"), "names CUDA: {msg}");
    assert_eq!(ready_status(&server, "mlp_ort").await, 200);
    server.stop().await.unwrap();
}

/// `scaler` on ONNX Runtime, and as `scaler_tract` on tract (which has no Scaler kernel: the
/// server lowers it to standard operators, `registry::onnx_ml`).
async fn scaler_server() -> (tempfile::TempDir, TestServer) {
    let repo = common::repo([
        copy_model("scaler")
            .from(&onnxruntime_models())
            .backend("onnxruntime"),
        copy_model("scaler")
            .from(&onnxruntime_models())
            .named("scaler_tract")
            .backend("tract"),
    ]);
    let server = TestServer::builder()
        .repo(repo.path())
        .strict(false)
        .wait_ready(false)
        .start()
        .await;
    (repo, server)
}

/// `model` of `server` answers the scaler reference.
async fn scaler_matches_its_reference(server: &TestServer, model: &str) {
    assert_eq!(ready_status(server, model).await, 200);
    let r = reference("scaler");
    let body = infer(server, model, &request(&r)).await;
    for want in &r.outputs {
        let got = output(&body, &want.name);
        assert_eq!(got["datatype"], want.datatype.as_str());
        let reference: Vec<f64> = want.data.iter().map(|v| v.as_f64().unwrap()).collect();
        assert_close(
            &format!("{model}/{}", want.name),
            &want.datatype,
            &numbers(&got["data"]),
            &reference,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaler_runs_on_onnxruntime_and_matches_its_reference() {
    let (_repo, server) = scaler_server().await;
    scaler_matches_its_reference(&server, "scaler").await;
    server.stop().await.unwrap();
}

/// Once refused by tract (`Unimplemented(Scaler)`); its Scaler is now lowered at load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaler_runs_on_tract_with_its_scaler_lowered_and_matches_its_reference() {
    let (_repo, server) = scaler_server().await;
    scaler_matches_its_reference(&server, "scaler_tract").await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minilm_embeddings_are_unit_length_and_match_the_reference() {
    // The heavy model is built at set-up (scripts/build-heavy-model.sh), not committed.
    let heavy = repo_root().join("models-heavy");
    let file = heavy.join("minilm/1/model.onnx");
    if !file.is_file() {
        // scripts/test.sh builds it and sets this, so CI cannot skip the test by accident.
        assert!(
            std::env::var_os("FERROSERVE_REQUIRE_HEAVY_MODEL").is_none(),
            "{} is absent but FERROSERVE_REQUIRE_HEAVY_MODEL is set",
            file.display()
        );
        eprintln!(
            "skipped: {} is absent (scripts/build-heavy-model.sh builds it)",
            file.display()
        );
        return;
    }
    let server = TestServer::builder()
        .repo(&heavy)
        .strict(true)
        .start()
        .await;
    let r = reference("minilm");
    let body = infer(&server, "minilm", &request(&r)).await;
    let want = &r.outputs[0];
    let got = output(&body, &want.name);
    assert_eq!(got["datatype"], "FP32");
    assert_eq!(got["shape"], json!(want.shape));
    let values = numbers(&got["data"]);
    for (row, embedding) in values.chunks(384).enumerate() {
        let norm = embedding.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() <= 1e-5, "row {row}: norm {norm}");
    }
    let reference: Vec<f64> = want.data.iter().map(|v| v.as_f64().unwrap()).collect();
    assert_close("minilm/embedding", "FP32", &values, &reference);
    server.stop().await.unwrap();
}
