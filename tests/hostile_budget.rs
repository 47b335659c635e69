//! Issue 13, the adversarial suite: the server-wide `max_inflight_bytes` budget under many
//! concurrent gRPC clients (tests/hostile_memory.rs has the HTTP side and the RSS bounds). Every
//! call is answered, OK and exact or RESOURCE_EXHAUSTED naming the budget, and the budget is
//! whole again afterwards.

mod common;

use std::time::Duration;

use common::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use common::probe::assert_still_serves;
use common::TestServer;
use tonic::Code;

/// The reference gRPC request padded with a string parameter to about `bytes` bytes: large, yet
/// valid and answered exactly.
fn padded_grpc(bytes: usize) -> common::pb::ModelInferRequest {
    use common::pb::infer_parameter::ParameterChoice;
    let mut req = common::probe::mlp_grpc();
    let pad = ParameterChoice::StringParam("p".repeat(bytes));
    req.parameters.insert(
        "padding".into(),
        common::pb::InferParameter {
            parameter_choice: Some(pad),
        },
    );
    req
}

/// 64 gRPC clients at once, each with a 6 MiB ModelInfer, against a 32 MiB budget: every call is
/// answered OK and exactly, or RESOURCE_EXHAUSTED naming the budget; none hangs and no other
/// status comes back. Afterwards the whole budget is free again: a request of nearly the
/// budget's size succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_grpc_clients_get_ok_or_resource_exhausted_and_the_budget_returns() {
    let test = "many_concurrent_grpc_clients_get_ok_or_resource_exhausted_and_the_budget_returns";
    const BUDGET: usize = 32 << 20;
    let server = TestServer::builder()
        .configure(|c| c.max_inflight_bytes = BUDGET)
        .start()
        .await;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(64));
    let calls: Vec<_> = (0..64)
        .map(|_| {
            let (url, barrier) = (server.grpc_url(), barrier.clone());
            tokio::spawn(async move {
                let mut client = GrpcInferenceServiceClient::connect(url).await.unwrap();
                let req = padded_grpc(6 << 20);
                barrier.wait().await;
                tokio::time::timeout(Duration::from_secs(120), client.model_infer(req))
                    .await
                    .expect("answered, not hung")
            })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(resp) => {
                common::probe::assert_mlp_grpc(&resp.into_inner());
                ok += 1;
            }
            Err(status) => {
                assert_eq!(
                    status.code(),
                    Code::ResourceExhausted,
                    "{}",
                    status.message()
                );
                let budget = format!("max_inflight_bytes ({BUDGET})");
                assert!(status.message().contains(&budget), "{}", status.message());
                refused += 1;
            }
        }
    }
    eprintln!("{test}: {ok} OK, {refused} RESOURCE_EXHAUSTED");
    assert!(
        ok >= 1,
        "the budget holds several 6 MiB requests: some must be answered"
    );
    assert!(
        refused >= 1,
        "64 x 6 MiB do not fit 32 MiB at once: some must be refused"
    );
    let mut client = GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let resp = client
        .model_infer(padded_grpc(BUDGET - (64 << 10)))
        .await
        .expect("the whole budget is free again");
    common::probe::assert_mlp_grpc(&resp.into_inner());
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}
