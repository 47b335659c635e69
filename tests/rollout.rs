//! Progressive rollouts end to end: a failing or much slower candidate is rolled back within one
//! step, a healthy one promoted after its last; steps without enough requests are extended; a
//! rollout can be aborted. The repositories are described in tests/common/traffic.rs.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::traffic::*;
use common::{poll_until, TestServer};
use ferroserve::config::ModelControlMode;
use serde_json::{json, Value};

/// The rollout ended rolled back at its first step, for `reason`.
#[track_caller]
fn assert_rolled_back_at_first_step(end: &Value, reason: &str) {
    assert_eq!(end["state"], "rolled_back", "{end}");
    assert_eq!(end["step"], 1, "caught at the first step: {end}");
    assert!(end["reason"].as_str().unwrap().contains(reason), "{end}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_candidate_is_rolled_back_within_one_step() {
    let dir = repo(V2::Failing, "");
    let server = Arc::new(start(dir.path(), ModelControlMode::None).await);
    put_traffic(&server, json!({"weights": {"1": 100}})).await;
    let load = Load::start(&server);
    let (status, started) = start_rollout(
        &server,
        json!({"candidate": "2", "steps": [10, 50, 100], "step_duration_s": 1,
                "max_error_rate_increase": 0.01, "max_p99_ratio": 1.5, "min_requests": 20}),
    )
    .await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(
        (started["state"].as_str(), started["stable"].as_str()),
        (Some("running"), Some("1"))
    );
    let end = rollout_until_done(&server).await;
    load.stop().await;
    assert_rolled_back_at_first_step(&end, "error rate");
    assert!(
        end["window"]["candidate"]["errors"].as_u64().unwrap() >= 1,
        "{end}"
    );
    let policy = traffic_policy(&server).await;
    assert_eq!(policy["weights"], json!({"1": 100, "2": 0}));
    assert_eq!(policy["rollout"]["state"], "rolled_back");
    let c = reqwest::Client::new();
    assert_only_version_serves(&c, &server, "1", 50).await;
    let text = server.metrics_text().await;
    assert!(
        text.contains(r#"ferroserve_rollout_state{model="mlp",state="rolled_back"} 1"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_much_slower_candidate_is_rolled_back_within_one_step() {
    let dir = repo(V2::Slow, "[traffic]\nweights = { \"1\" = 100 }\n");
    let server = Arc::new(start(dir.path(), ModelControlMode::None).await);
    let c = reqwest::Client::new();
    assert_eq!(
        infer(&c, &server, Some("2"), None).await.unwrap().0,
        "2",
        "the slow graph serves"
    );
    let load = Load::start(&server);
    let (status, started) = start_rollout(
        &server,
        json!({"candidate": "2", "steps": [10, 50, 100], "step_duration_s": 2,
                "max_p99_ratio": 1.5, "min_requests": 10}),
    )
    .await;
    assert_eq!(status, 200, "{started}");
    let end = rollout_until_done(&server).await;
    let responses = load.stop().await;
    assert!(responses.iter().all(|(_, ok)| *ok), "slow, not failing");
    assert_rolled_back_at_first_step(&end, "p99 latency");
    let w = &end["window"];
    assert!(
        w["candidate"]["p99_ms"].as_f64().unwrap() > 1.5 * w["stable"]["p99_ms"].as_f64().unwrap(),
        "{end}"
    );
    let policy = traffic_policy(&server).await;
    assert_eq!(policy["weights"], json!({"1": 100, "2": 0}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_candidate_is_promoted_after_its_last_step() {
    let dir = repo(V2::Perturbed, "");
    let server = Arc::new(start(dir.path(), ModelControlMode::Explicit).await);
    let load = Load::start(&server);
    // A loose latency bound: both versions are the same graph, and this machine is shared.
    let (status, started) = start_rollout(
        &server,
        json!({"candidate": 2, "stable": 1, "steps": [25, 100], "step_duration_s": 0.5,
                "max_p99_ratio": 50, "min_requests": 20}),
    )
    .await;
    assert_eq!(status, 200, "{started}");
    let (status, conflict) = put_traffic(&server, json!({"weights": {"1": 1}})).await;
    assert_eq!(
        status, 409,
        "a running rollout owns the weights: {conflict}"
    );
    let end = rollout_until_done(&server).await;
    let responses = load.stop().await;
    assert!(responses.iter().all(|(_, ok)| *ok), "no request failed");
    assert_eq!(end["state"], "promoted", "{end}");
    assert_eq!(
        (end["step"].as_u64(), end["percent"].as_u64()),
        (Some(2), Some(100))
    );
    let policy = traffic_policy(&server).await;
    assert_eq!(policy["weights"], json!({"1": 0, "2": 100}));
    let c = reqwest::Client::new();
    assert_only_version_serves(&c, &server, "2", 50).await;
}

/// A server with a rollout of version 2 running that cannot pass its step (it wants 1000
/// requests and gets none).
async fn stuck_rollout() -> (tempfile::TempDir, TestServer) {
    let dir = repo(V2::Perturbed, "");
    let server = start(dir.path(), ModelControlMode::None).await;
    let (status, _) = start_rollout(
        &server,
        json!({"candidate": "2", "steps": [50], "step_duration_s": 0.1, "min_requests": 1000}),
    )
    .await;
    assert_eq!(status, 200);
    (dir, server)
}

#[tokio::test]
async fn a_step_without_enough_requests_is_extended_not_passed() {
    let (_dir, server) = stuck_rollout().await;
    let status = poll_until(
        Duration::from_secs(30),
        "never reported extended",
        || async { rollout_status(&server).await.1 },
        |r| r["reason"].as_str().is_some_and(|s| s.contains("extended")),
    )
    .await;
    assert_eq!(status["state"], "running", "{status}");
    assert!(
        status["reason"].as_str().unwrap().contains("0 of 1000"),
        "{status}"
    );
}

#[tokio::test]
async fn only_the_admin_aborts_a_rollout_and_traffic_returns_to_stable() {
    let (_dir, server) = stuck_rollout().await;
    for (method, path, want) in [
        (reqwest::Method::DELETE, "/v2/models/mlp/rollout", 401),
        (reqwest::Method::POST, "/v2/models/mlp/rollout/abort", 401),
    ] {
        assert_eq!(send(&server, method, path, None, None).await.0, want);
    }
    let (status, aborted) =
        as_admin(&server, reqwest::Method::DELETE, "/v2/models/mlp/rollout").await;
    assert_eq!(status, 200, "{aborted}");
    assert_eq!(aborted["state"], "aborted");
    let (status, _) = as_admin(
        &server,
        reqwest::Method::POST,
        "/v2/models/mlp/rollout/abort",
    )
    .await;
    assert_eq!(status, 409, "aborting a finished rollout");
    let policy = traffic_policy(&server).await;
    assert_eq!(
        policy["weights"],
        json!({"1": 100, "2": 0}),
        "traffic back on stable"
    );
}

#[tokio::test]
async fn bad_rollouts_are_refused_with_the_reason() {
    let dir = repo(V2::Perturbed, "");
    let server = start(dir.path(), ModelControlMode::None).await;
    for (bad, want) in [
        (
            json!({"candidate": "9", "steps": [50], "step_duration_s": 1}),
            "not loaded",
        ),
        (
            json!({"candidate": "2", "steps": [50, 10], "step_duration_s": 1}),
            "increase strictly",
        ),
        (
            json!({"candidate": "2", "steps": [50], "step_duration_s": 1, "typo": 1}),
            "unknown field",
        ),
    ] {
        let (status, body) = start_rollout(&server, bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(want),
            "{bad}: {body}"
        );
    }
}
