//! Issue 13, the adversarial suite: clients cannot create time series. Ten thousand requests to
//! random unknown model names and versions (both transports), to random HTTP paths and to
//! unknown gRPC methods leave `/metrics` with no series naming any of them and within a small
//! bound of its size before; each request got its error, and the server still serves.

mod common;

use std::sync::Arc;

use common::probe::{assert_still_serves, mlp_grpc, mlp_json};
use common::{pb, TestServer};
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use tonic::transport::Channel;
use tonic::Code;

/// Requests per test, spread over `WORKERS` concurrent clients.
const REQUESTS: usize = 10_000;
const WORKERS: usize = 16;
/// Every hostile name starts with this, so one search of `/metrics` finds any of them.
const MARK: &str = "zqhostile";
/// `/metrics` may grow by this much: a few fixed series (per error code and protocol) and
/// larger counter values, never a series per name.
const GROWTH_BYTES: usize = 16 * 1024;
const GROWTH_LINES: usize = 64;

/// A name unique to request `i`, not guessable from its neighbours.
fn hostile(i: usize) -> String {
    let h = (i as u64 ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xff51_afd7_ed55_8ccd);
    format!("{MARK}{h:016x}")
}

/// `/metrics` before and after: no series names a hostile string; the size grew by little.
fn assert_metrics_bounded(before: &str, after: &str) {
    let named: Vec<&str> = after.lines().filter(|l| l.contains(MARK)).take(3).collect();
    assert!(named.is_empty(), "series naming client strings: {named:?}");
    let (lines_before, lines_after) = (before.lines().count(), after.lines().count());
    assert!(
        after.len() <= before.len() + GROWTH_BYTES && lines_after <= lines_before + GROWTH_LINES,
        "/metrics grew from {} bytes / {lines_before} lines to {} bytes / {lines_after} lines",
        before.len(),
        after.len()
    );
}

/// Runs `one(i)` for every i < REQUESTS on `WORKERS` concurrent tasks.
async fn run_all<F, Fut>(one: F)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let one = Arc::new(one);
    let tasks: Vec<_> = (0..WORKERS)
        .map(|w| {
            let one = one.clone();
            tokio::spawn(async move {
                for i in (w..REQUESTS).step_by(WORKERS) {
                    one(i).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

async fn channel(server: &TestServer) -> Channel {
    Channel::from_shared(server.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_model_names_and_versions_create_no_series_on_either_transport() {
    let server = TestServer::start().await;
    assert_still_serves(&server).await;
    let before = server.metrics_text().await;
    let http = reqwest::Client::new();
    let base = server.url("");
    let grpc = GrpcInferenceServiceClient::new(channel(&server).await);
    run_all(move |i| {
        let (http, base, mut grpc) = (http.clone(), base.clone(), grpc.clone());
        async move {
            let name = hostile(i);
            // Unknown model (NOT_FOUND), then a known model at a version that is no number
            // (Triton: INVALID_ARGUMENT), on each transport.
            let (model, version) = match i % 2 {
                0 => (name.as_str(), None),
                _ => ("mlp", Some(name.as_str())),
            };
            if i % 4 < 2 {
                let path = match version {
                    None => format!("{base}/v2/models/{model}/infer"),
                    Some(v) => format!("{base}/v2/models/{model}/versions/{v}/infer"),
                };
                let resp = http.post(&path).json(&mlp_json()).send().await.unwrap();
                assert_eq!(resp.status(), version.map_or(404, |_| 400), "{path}");
                let body: serde_json::Value = resp.json().await.unwrap();
                assert!(body["error"].is_string(), "{path}: {body}");
                let ready = path.replace("/infer", "/ready");
                assert!(http.get(&ready).send().await.unwrap().status() != 200);
            } else {
                let mut req = mlp_grpc();
                req.model_name = model.into();
                req.model_version = version.unwrap_or_default().into();
                let status = grpc.model_infer(req).await.unwrap_err();
                let want = version.map_or(Code::NotFound, |_| Code::InvalidArgument);
                assert_eq!(status.code(), want, "{}", status.message());
                let meta = pb::ModelMetadataRequest {
                    name: model.into(),
                    version: version.unwrap_or_default().into(),
                };
                assert!(grpc.model_metadata(meta).await.is_err());
            }
        }
    })
    .await;
    assert_metrics_bounded(&before, &server.metrics_text().await);
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_http_paths_and_unknown_grpc_methods_create_no_series() {
    let server = TestServer::start().await;
    assert_still_serves(&server).await;
    let before = server.metrics_text().await;
    let http = reqwest::Client::new();
    let base = server.url("");
    let channel = channel(&server).await;
    run_all(move |i| {
        let (http, base, channel) = (http.clone(), base.clone(), channel.clone());
        async move {
            let name = hostile(i);
            if i % 2 == 0 {
                let path = match i % 6 {
                    0 => format!("{base}/{name}"),
                    2 => format!("{base}/v2/{name}/x?{name}=1"),
                    _ => format!("{base}/v2/models/mlp/{name}"),
                };
                let resp = http.get(&path).send().await.unwrap();
                assert_eq!(resp.status(), 404, "{path}");
            } else {
                let service = if i % 4 == 1 {
                    "inference.GRPCInferenceService"
                } else {
                    &name
                };
                let path = format!("/{service}/{name}");
                let mut grpc = tonic::client::Grpc::new(channel);
                grpc.ready().await.unwrap();
                let codec =
                    tonic_prost::ProstCodec::<pb::ServerLiveRequest, pb::ServerLiveResponse>::default();
                let status = grpc
                    .unary(
                        tonic::Request::new(pb::ServerLiveRequest {}),
                        path.parse().unwrap(),
                        codec,
                    )
                    .await
                    .unwrap_err();
                assert_eq!(status.code(), Code::Unimplemented, "{path}");
            }
        }
    })
    .await;
    assert_metrics_bounded(&before, &server.metrics_text().await);
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}
