//! Hot swap and model management: versions load, replace and unload at runtime with no failed
//! request; failures leave what serves unchanged; the control plane is authenticated.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    add_version, assert_alone_in_this_process, bundled_models, copy_model, pb, rss_kib, threads,
    Builder, TestServer,
};
use ferroserve::config::ModelControlMode;
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use serde_json::{json, Value};

const TOKEN: &str = "test-admin-token-0123456789";

/// A server on `repo` with the admin token and a 0.3 s poll period; the mode and the models
/// loaded at start come from each test.
fn server_on(repo: &Path) -> Builder {
    TestServer::builder()
        .repo(repo)
        .admin_token(TOKEN)
        .poll_secs(0.3)
}

async fn post(server: &TestServer, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(server.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn index(server: &TestServer) -> Vec<Value> {
    post(server, "/v2/repository/index", None)
        .await
        .1
        .as_array()
        .unwrap()
        .clone()
}

fn mlp_request() -> Value {
    json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": vec![0.5f32; 64]}]})
}

async fn infer_version(
    c: &reqwest::Client,
    server: &TestServer,
    model: &str,
) -> Result<String, (u16, String)> {
    let r = c
        .post(server.url(&format!("/v2/models/{model}/infer")))
        .json(&mlp_request())
        .send()
        .await
        .unwrap();
    if r.status() != 200 {
        return Err((r.status().as_u16(), r.text().await.unwrap_or_default()));
    }
    let body: Value = r.json().await.unwrap();
    Ok(body["model_version"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_versions_under_load_fails_no_request() {
    let dir = common::repo([copy_model("mlp")]);
    let server = Arc::new(
        server_on(dir.path())
            .control(ModelControlMode::Explicit)
            .load(&["mlp"])
            .start()
            .await,
    );
    const LOADS: u64 = 100;
    let test_time = Duration::from_secs(30);
    let t0 = Instant::now();
    // (version, load call started, load call returned), version 1 loaded before t0.
    let windows: Arc<Mutex<Vec<(u64, Instant, Instant)>>> = Arc::new(Mutex::new(vec![(1, t0, t0)]));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (server, done) = (server.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            let mut seen = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let sent = Instant::now();
                let v = infer_version(&c, &server, "mlp").await;
                seen.push((sent, Instant::now(), v));
            }
            seen
        }));
    }
    for v in 2..=LOADS + 1 {
        add_version(dir.path(), "mlp", v);
        let started = Instant::now();
        let (status, body) = post(&server, "/v2/repository/models/mlp/load", Some(TOKEN)).await;
        assert_eq!(status, 200, "load of version {v}: {body}");
        windows.lock().unwrap().push((v, started, Instant::now()));
        let pace = test_time.mul_f64((v - 1) as f64 / LOADS as f64);
        tokio::time::sleep_until((t0 + pace).into()).await;
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut responses = Vec::new();
    for c in clients {
        responses.extend(c.await.unwrap());
    }
    let windows = windows.lock().unwrap().clone();
    let failed: Vec<_> = responses.iter().filter(|r| r.2.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        responses.len(),
        &failed[..failed.len().min(5)]
    );
    // Version v is published during its load call and retired during the next one: a response
    // naming v must have been received after v's load began and sent before v+1's load returned.
    for (sent, received, v) in &responses {
        let v: u64 = v.as_ref().unwrap().parse().unwrap();
        let (_, started, _) = windows
            .iter()
            .find(|w| w.0 == v)
            .expect("a version that was loaded");
        assert!(
            started <= received,
            "version {v} answered before it was loaded"
        );
        if let Some((_, _, next_done)) = windows.iter().find(|w| w.0 == v + 1) {
            assert!(
                sent <= next_done,
                "version {v} answered a request sent after version {} replaced it",
                v + 1
            );
        }
    }
    let versions: std::collections::BTreeSet<&String> =
        responses.iter().filter_map(|r| r.2.as_ref().ok()).collect();
    assert!(
        versions.len() > 50,
        "traffic saw many versions: {}",
        versions.len()
    );
    assert!(
        responses.len() > 1000,
        "sustained load: {} requests",
        responses.len()
    );
    let rows = index(&server).await;
    let ready: Vec<&Value> = rows.iter().filter(|r| r["state"] == "READY").collect();
    assert_eq!(
        ready.len(),
        1,
        "latest-1 policy: one version serves: {rows:?}"
    );
    assert_eq!(ready[0]["version"], (LOADS + 1).to_string());
}

#[tokio::test]
async fn a_corrupt_newest_version_fails_and_the_previous_keeps_serving() {
    let dir = common::repo([copy_model("mlp")]);
    let server = server_on(dir.path())
        .control(ModelControlMode::Explicit)
        .load(&["mlp"])
        .start()
        .await;
    std::fs::create_dir_all(dir.path().join("mlp/2")).unwrap();
    std::fs::write(dir.path().join("mlp/2/model.onnx"), b"not an onnx file").unwrap();
    let (status, body) = post(&server, "/v2/repository/models/mlp/load", Some(TOKEN)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("mlp/2/model.onnx"),
        "{body}"
    );
    let c = reqwest::Client::new();
    assert_eq!(infer_version(&c, &server, "mlp").await, Ok("1".into()));
    let rows = index(&server).await;
    let v2 = rows
        .iter()
        .find(|r| r["version"] == "2")
        .expect("version 2 in the index");
    assert_eq!(v2["state"], "UNAVAILABLE");
    assert!(
        v2["reason"].as_str().unwrap().contains("model.onnx"),
        "{v2}"
    );
    assert!(
        rows.iter()
            .any(|r| r["version"] == "1" && r["state"] == "READY"),
        "{rows:?}"
    );
    assert_eq!(
        reqwest::get(server.url("/v2/health/ready"))
            .await
            .unwrap()
            .status(),
        200
    );
    let text = server.metrics_text().await;
    assert!(
        text.contains(r#"ferroserve_model_load_failures_total{model="mlp"} 1"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unloading_finishes_requests_in_flight_and_refuses_new_ones() {
    let dir = common::repo([copy_model("dense")]);
    let server = Arc::new(
        server_on(dir.path())
            .control(ModelControlMode::Explicit)
            .load(&["dense"])
            .start()
            .await,
    );
    let body = serde_json::to_vec(
        &json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [64, 512],
        "data": vec![0.01f32; 64 * 512]}]}),
    )
    .unwrap();
    let in_flight: Vec<_> = (0..12)
        .map(|_| {
            let (server, body) = (server.clone(), body.clone());
            tokio::spawn(async move {
                let r = reqwest::Client::new()
                    .post(server.url("/v2/models/dense/infer"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                r.status().as_u16()
            })
        })
        .collect();
    // Unload only once requests are really queued in the server (a fixed sleep would race the
    // clients on a loaded machine): each 64-row request is its own batch of several ms.
    let queued = |text: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(r#"ferroserve_queue_depth{model="dense",version="1"} "#))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let waiting = common::poll_until_every(
        Duration::from_millis(1),
        Duration::from_secs(30),
        "requests never queued up",
        || async { queued(&server.metrics_text().await) },
        |&waiting| waiting >= 4,
    )
    .await;
    let (status, reply) = post(&server, "/v2/repository/models/dense/unload", Some(TOKEN)).await;
    assert_eq!(status, 200, "{reply}");
    let mut codes = Vec::new();
    for r in in_flight {
        codes.push(r.await.unwrap());
    }
    // Every request queued when the unload began is answered 200; requests that reached the
    // server only after it may be refused as unknown (404), never failed half-way (503/500).
    let ok = codes.iter().filter(|&&c| c == 200).count() as u64;
    assert!(
        ok >= waiting,
        "{waiting} requests were queued at the unload, only {ok} answered 200: {codes:?}"
    );
    assert!(
        codes.iter().all(|&c| c == 200 || c == 404),
        "a request in flight when unloading completes: {codes:?}"
    );
    let after = reqwest::Client::new()
        .post(server.url("/v2/models/dense/infer"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 404, "a new request after the unload");
    let mut grpc = GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let ready = grpc
        .model_ready(pb::ModelReadyRequest {
            name: "dense".into(),
            version: String::new(),
        })
        .await
        .unwrap();
    assert!(
        !ready.into_inner().ready,
        "an unloaded model is not ready (Triton: OK, false)"
    );
    let rows = index(&server).await;
    assert_eq!(
        rows,
        vec![json!({"name": "dense", "state": "UNAVAILABLE", "reason": "unloaded"})]
    );
}

/// Each cycle loads `mlp` (one instance thread, ~150 KiB of weights and plan), answers one
/// request and unloads it. A leaked version would keep its thread and its weights: 190 of them
/// would add 190 threads and well over 16 MiB: far beyond the 10% of RSS allowed.
#[tokio::test]
async fn memory_stays_flat_over_200_load_unload_cycles() {
    assert_alone_in_this_process("memory_stays_flat_over_200_load_unload_cycles");
    let dir = common::repo([copy_model("mlp")]);
    let server = server_on(dir.path())
        .control(ModelControlMode::Explicit)
        .start()
        .await;
    let c = reqwest::Client::new();
    let (mut rss_10, mut threads_10) = (0, 0);
    for cycle in 1..=200 {
        let (status, body) = post(&server, "/v2/repository/models/mlp/load", Some(TOKEN)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(infer_version(&c, &server, "mlp").await, Ok("1".into()));
        let (status, body) = post(&server, "/v2/repository/models/mlp/unload", Some(TOKEN)).await;
        assert_eq!(status, 200, "{body}");
        if cycle == 10 {
            (rss_10, threads_10) = (rss_kib(), threads());
        }
    }
    let (rss_200, threads_200) = (rss_kib(), threads());
    eprintln!(
        "after 10 cycles: {rss_10} KiB, {threads_10} threads; after 200: {rss_200} KiB, {threads_200} threads"
    );
    // tokio's blocking pool may keep a few idle threads for a while.
    assert!(
        threads_200 <= threads_10 + 4,
        "threads grew from {threads_10} to {threads_200}: unloaded versions keep their instances"
    );
    assert!(
        rss_200 as f64 <= rss_10 as f64 * 1.10,
        "RSS grew from {rss_10} KiB to {rss_200} KiB over 190 load/unload cycles"
    );
}

/// An explicit-mode server with `mlp` loaded, for the control-plane checks.
async fn control_plane_server(dir: &Path) -> TestServer {
    server_on(dir)
        .control(ModelControlMode::Explicit)
        .load(&["mlp"])
        .start()
        .await
}

/// A gRPC load request for `model`, with `token` as the bearer (or none).
fn grpc_load(model: &str, token: Option<&str>) -> tonic::Request<pb::RepositoryModelLoadRequest> {
    let mut req = tonic::Request::new(pb::RepositoryModelLoadRequest {
        model_name: model.into(),
        ..Default::default()
    });
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    req
}

#[tokio::test]
async fn http_load_and_unload_need_the_admin_token() {
    let dir = common::repo([copy_model("mlp")]);
    let server = control_plane_server(dir.path()).await;
    assert_eq!(
        post(&server, "/v2/repository/models/mlp/load", None)
            .await
            .0,
        401
    );
    assert_eq!(
        post(
            &server,
            "/v2/repository/models/mlp/load",
            Some("wrong-token-0123456789")
        )
        .await
        .0,
        401
    );
    assert_eq!(
        post(&server, "/v2/repository/models/mlp/unload", None)
            .await
            .0,
        401
    );
    assert_eq!(
        post(&server, "/v2/repository/models/mlp/load", Some(TOKEN))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn model_names_that_leave_the_repository_are_invalid() {
    let dir = common::repo([copy_model("mlp")]);
    let server = control_plane_server(dir.path()).await;
    // (HTTP clients resolve a literal `..` segment before sending: gRPC below sends it as is.)
    for bad in ["..%2F..%2Fetc", "a%2Fb", ".hidden", "%2E%2E%2F"] {
        let (status, body) = post(
            &server,
            &format!("/v2/repository/models/{bad}/load"),
            Some(TOKEN),
        )
        .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let mut grpc = GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    for bad in ["..", "../mlp", "/etc", ""] {
        let err = grpc
            .repository_model_load(grpc_load(bad, Some(TOKEN)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad:?}: {err:?}");
    }
}

#[tokio::test]
async fn a_symlink_out_of_the_repository_is_refused() {
    let dir = common::repo([copy_model("mlp")]);
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(outside.path().join("evil/1")).unwrap();
    std::fs::copy(
        bundled_models().join("mlp/1/model.onnx"),
        outside.path().join("evil/1/model.onnx"),
    )
    .unwrap();
    std::fs::write(
        outside.path().join("evil/config.toml"),
        "max_batch_size = 64",
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path().join("evil"), dir.path().join("evil")).unwrap();
    let server = control_plane_server(dir.path()).await;
    let (status, body) = post(&server, "/v2/repository/models/evil/load", Some(TOKEN)).await;
    assert_eq!(status, 400, "a symlink out of the repository: {body}");
    assert!(
        body["error"].as_str().unwrap().contains("outside"),
        "{body}"
    );
}

#[tokio::test]
async fn loading_a_model_absent_from_the_repository_is_internal_in_tritons_words() {
    let dir = common::repo([copy_model("mlp")]);
    let server = control_plane_server(dir.path()).await;
    let (status, body) = post(&server, "/v2/repository/models/nope/load", Some(TOKEN)).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        body["error"],
        "failed to load 'nope', failed to poll from model repository"
    );
}

#[tokio::test]
async fn grpc_load_needs_the_admin_token() {
    let dir = common::repo([copy_model("mlp")]);
    let server = control_plane_server(dir.path()).await;
    let mut grpc = GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    assert_eq!(
        grpc.repository_model_load(grpc_load("mlp", None))
            .await
            .unwrap_err()
            .code(),
        tonic::Code::Unauthenticated
    );
    assert_eq!(
        grpc.repository_model_load(grpc_load("mlp", Some("nope-nope-nope-nope")))
            .await
            .unwrap_err()
            .code(),
        tonic::Code::Unauthenticated
    );
    grpc.repository_model_load(grpc_load("mlp", Some(TOKEN)))
        .await
        .unwrap();
    let idx = grpc
        .repository_index(pb::RepositoryIndexRequest {
            ready: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        idx.models
            .iter()
            .map(|m| (m.name.as_str(), m.state.as_str()))
            .collect::<Vec<_>>(),
        [("mlp", "READY")]
    );
}

#[tokio::test]
async fn load_and_unload_need_explicit_mode() {
    let dir = common::repo([copy_model("mlp")]);
    let server = server_on(dir.path())
        .control(ModelControlMode::None)
        .start()
        .await;
    let (status, body) = post(&server, "/v2/repository/models/mlp/load", Some(TOKEN)).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("explicit"),
        "{body}"
    );
    assert_eq!(
        post(&server, "/v2/repository/models/mlp/unload", Some(TOKEN))
            .await
            .0,
        409
    );
}

#[tokio::test]
async fn poll_mode_picks_up_new_and_removed_versions_within_two_periods() {
    let dir = common::repo([copy_model("mlp")]);
    let server = server_on(dir.path())
        .control(ModelControlMode::Poll)
        .start()
        .await;
    let c = reqwest::Client::new();
    assert_eq!(infer_version(&c, &server, "mlp").await, Ok("1".into()));
    let period = Duration::from_secs_f64(0.3);

    add_version(dir.path(), "mlp", 2);
    let added = Instant::now();
    while infer_version(&c, &server, "mlp").await != Ok("2".into()) {
        assert!(
            added.elapsed() < period * 2,
            "version 2 not served within two poll periods"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    std::fs::remove_dir_all(dir.path().join("mlp/2")).unwrap();
    let removed = Instant::now();
    while infer_version(&c, &server, "mlp").await != Ok("1".into()) {
        assert!(
            removed.elapsed() < period * 2,
            "version 1 not back within two poll periods"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
