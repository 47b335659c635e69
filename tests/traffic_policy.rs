//! Traffic policy end to end: weighted splits, pinning, sticky keys, blue/green switches, shadow
//! traffic, policy changes from the repository, over HTTP, gRPC and the CLI. The repositories are
//! described in tests/common/traffic.rs.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use admin_pb::traffic_admin_client::TrafficAdminClient;
use common::traffic::*;
use common::{admin_pb, pb, poll_until, wait_until, TestServer};
use ferroserve::config::ModelControlMode;
use ferroserve::policy::traffic;
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use serde_json::{json, Value};

/// A server on versions 1 and 2 with a 90/10 split set, and what each version answers.
async fn split_90_10() -> (
    tempfile::TempDir,
    Arc<TestServer>,
    Arc<BTreeMap<String, Vec<f64>>>,
) {
    let dir = repo(V2::Perturbed, "");
    let server = Arc::new(start(dir.path(), ModelControlMode::None).await);
    let c = reqwest::Client::new();
    let answers = Arc::new(answers_by_version(&c, &server).await);
    let (status, body) = put_traffic(&server, json!({"weights": {"1": 90, "2": 10}})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["weights"], json!({"1": 90, "2": 10}));
    (dir, server, answers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_90_10_split_holds_within_five_sigma() {
    let (_dir, server, answers) = split_90_10().await;
    const N: usize = 20_000;
    const CLIENTS: usize = 8;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (server, answers) = (server.clone(), answers.clone());
            tokio::spawn(async move {
                let c = reqwest::Client::new();
                let mut canary = 0usize;
                for _ in 0..N / CLIENTS {
                    let (v, logits) = infer(&c, &server, None, None).await.unwrap();
                    // model_version names the version whose answer this is.
                    assert_eq!(logits, answers[&v], "response labelled {v}");
                    canary += usize::from(v == "2");
                }
                canary
            })
        })
        .collect();
    let mut canary = 0;
    for t in tasks {
        canary += t.await.unwrap();
    }
    // Binomial(20000, 0.1): mean 2000, sd 42.4.
    let sd = (N as f64 * 0.1 * 0.9).sqrt();
    assert!(
        (canary as f64 - 2000.0).abs() <= 5.0 * sd,
        "{canary} of {N} requests went to the 10% version"
    );
    let reason = "weighted";
    let text = server.metrics_text().await;
    assert!(
        text.contains(&format!(
            "ferroserve_routed_requests_total{{model=\"mlp\",reason=\"{reason}\",version=\"2\"}}"
        )),
        "{reason}: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_requests_ignore_the_split() {
    let (_dir, server, answers) = split_90_10().await;
    let c = reqwest::Client::new();
    for v in ["1", "2"] {
        for _ in 0..100 {
            let (served, logits) = infer(&c, &server, Some(v), None).await.unwrap();
            assert_eq!((served.as_str(), &logits), (v, &answers[v]));
        }
    }
    let reason = "pinned";
    let text = server.metrics_text().await;
    assert!(
        text.contains(&format!(
            "ferroserve_routed_requests_total{{model=\"mlp\",reason=\"{reason}\",version=\"2\"}}"
        )),
        "{reason}: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_requests_follow_the_split_and_name_the_version_that_answered() {
    let (_dir, server, answers) = split_90_10().await;
    // gRPC: the same split applies and model_version names the version that answered.
    let mut grpc = GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let mut seen = BTreeMap::new();
    for _ in 0..400 {
        let resp = grpc
            .model_infer(grpc_request(None))
            .await
            .unwrap()
            .into_inner();
        let logits = grpc_logits(&resp);
        for (a, b) in logits.iter().zip(&answers[&resp.model_version]) {
            assert!(
                (a - b).abs() < 1e-6,
                "gRPC response labelled {}",
                resp.model_version
            );
        }
        *seen.entry(resp.model_version).or_insert(0) += 1;
    }
    assert!(seen.get("2").is_some_and(|&n| n > 0 && n < 100), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_keys_stay_put_and_a_growing_canary_only_takes_keys() {
    let dir = repo(V2::Perturbed, "");
    let server = start(dir.path(), ModelControlMode::None).await;
    let c = reqwest::Client::new();
    let keys: Vec<String> = (0..300).map(|i| format!("customer-{i}")).collect();
    let expected = |weights: &[(u64, u32)], key: &str| {
        traffic::pick(weights.iter().copied(), Some(key.as_bytes()))
            .unwrap()
            .to_string()
    };
    put_traffic(&server, json!({"weights": {"1": 90, "2": 10}})).await;
    let mut grpc = GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let mut before = BTreeMap::new();
    for k in &keys {
        let (v, _) = infer(&c, &server, None, Some(k)).await.unwrap();
        let (again, _) = infer(&c, &server, None, Some(k)).await.unwrap();
        let over_grpc = grpc
            .model_infer(grpc_request(Some(k)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(v, again, "key {k} moved while the weights stayed");
        assert_eq!(v, over_grpc.model_version, "key {k}: HTTP and gRPC agree");
        assert_eq!(
            v,
            expected(&[(1, 90), (2, 10)], k),
            "key {k}: the documented hash"
        );
        before.insert(k.clone(), v);
    }
    put_traffic(&server, json!({"weights": {"1": 70, "2": 30}})).await;
    let mut moved = 0;
    for k in &keys {
        let (v, _) = infer(&c, &server, None, Some(k)).await.unwrap();
        assert!(
            !(before[k] == "2" && v == "1"),
            "key {k} moved from the canary back to stable"
        );
        assert_eq!(v, expected(&[(1, 70), (2, 30)], k));
        moved += usize::from(before[k] != v);
    }
    // About 20% of 300 keys move from 1 to 2; none is astronomically unlikely.
    assert!(moved > 0, "growing the canary moved no key");
    let text = server.metrics_text().await;
    assert!(text.contains("reason=\"sticky\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blue_green_switch_under_load_fails_nothing_and_then_only_green_serves() {
    let dir = repo(
        V2::Perturbed,
        "[traffic]\nweights = { \"1\" = 100, \"2\" = 0 }\n",
    );
    let server = Arc::new(start(dir.path(), ModelControlMode::None).await);
    let policy = traffic_policy(&server).await;
    assert_eq!(
        policy,
        json!({"weights": {"1": 100, "2": 0}, "shadow": null, "rollout": null}),
        "the config's [traffic] applies at load"
    );
    let done = Arc::new(AtomicBool::new(false));
    type Answer = Result<(String, Vec<f64>), (u16, String)>;
    let log: Arc<Mutex<Vec<(Instant, Answer)>>> = Arc::default();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (server, done, log) = (server.clone(), done.clone(), log.clone());
            tokio::spawn(async move {
                let c = reqwest::Client::new();
                while !done.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let answer = infer(&c, &server, None, None).await;
                    log.lock().unwrap().push((sent, answer));
                }
            })
        })
        .collect();
    // Wait for traffic, not for a guessed time: blue must have served before the switch.
    let answered = |after: Instant| {
        let log = log.clone();
        move || {
            let n = log
                .lock()
                .unwrap()
                .iter()
                .filter(|(t, _)| *t > after)
                .count();
            std::future::ready(n >= 100)
        }
    };
    wait_until(
        Duration::from_secs(30),
        "100 requests answered before the switch",
        answered(Instant::now() - Duration::from_secs(3600)),
    )
    .await;
    let (status, body) = send(
        &server,
        reqwest::Method::POST,
        "/v2/models/mlp/traffic/promote",
        Some(json!({"version": "2"})),
        Some(TOKEN),
    )
    .await;
    let switched = Instant::now();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["weights"], json!({"1": 0, "2": 100}));
    wait_until(
        Duration::from_secs(30),
        "100 requests sent after the switch answered",
        answered(switched),
    )
    .await;
    done.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let all = std::mem::take(&mut *log.lock().unwrap());
    let failed: Vec<_> = all.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    let version = |r: &Result<(String, Vec<f64>), (u16, String)>| r.as_ref().unwrap().0.clone();
    assert!(
        all.iter().any(|(_, r)| version(r) == "1"),
        "blue served before the switch"
    );
    let after: Vec<String> = all
        .iter()
        .filter(|(sent, _)| *sent > switched)
        .map(|(_, r)| version(r))
        .collect();
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|v| v == "2"),
        "after the switch only green serves"
    );
}

/// PUTs policies that must be refused, each with the reason, and a body that is not JSON.
async fn put_bad_policies(server: &TestServer) {
    for (policy, want) in [
        (json!({"weights": {"3": 10}}), "not loaded"),
        (json!({"weights": {"1": -5}}), "weight -5"),
        (json!({"weights": {"1": 0, "2": 0}}), "all weights are zero"),
        (json!({"weights": {"1": 1.5}}), "non-negative integers"),
        (json!({"weights": {"one": 1}}), "not a positive integer"),
        (
            json!({"weights": {"1": 1}, "shadow": {"version": "2", "percent": 150}}),
            "outside 0..=100",
        ),
        (json!({"weights": {"1": 1}, "split": 3}), "unknown field"),
        (json!({"shadow": null}), "weights is required"),
    ] {
        let (status, body) = put_traffic(server, policy.clone()).await;
        assert_eq!(status, 400, "{policy}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(want),
            "{policy}: {body}"
        );
    }
    let r = reqwest::Client::new()
        .put(server.url("/v2/models/mlp/traffic"))
        .bearer_auth(TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("malformed"));
}

#[tokio::test]
async fn bad_policies_are_refused_with_the_reason() {
    let dir = repo(V2::Perturbed, "");
    let server = start(dir.path(), ModelControlMode::None).await;
    put_bad_policies(&server).await;
}

#[tokio::test]
async fn setting_traffic_needs_the_admin_token() {
    let dir = repo(V2::Perturbed, "");
    let server = start(dir.path(), ModelControlMode::None).await;
    for token in [None, Some("wrong-token-0123456789")] {
        let (status, body) = put_traffic_as(&server, json!({"weights": {"1": 1}}), token).await;
        assert_eq!(status, 401, "token {token:?}: {body}");
    }
}

#[tokio::test]
async fn the_traffic_of_an_unknown_model_is_not_found() {
    let dir = repo(V2::Perturbed, "");
    let server = start(dir.path(), ModelControlMode::None).await;
    let (status, _) = send(
        &server,
        reqwest::Method::GET,
        "/v2/models/nope/traffic",
        None,
        None,
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn refused_policies_change_nothing() {
    let dir = repo(V2::Perturbed, "");
    let server = start(dir.path(), ModelControlMode::None).await;
    put_bad_policies(&server).await;
    for token in [None, Some("wrong-token-0123456789")] {
        let (status, body) = put_traffic_as(&server, json!({"weights": {"1": 1}}), token).await;
        assert_eq!(status, 401, "token {token:?}: {body}");
    }
    // Nothing was applied: no policy, the highest version serves.
    let policy = traffic_policy(&server).await;
    assert_eq!(
        policy,
        json!({"weights": {}, "shadow": null, "rollout": null})
    );
    let c = reqwest::Client::new();
    assert_eq!(infer(&c, &server, None, None).await.unwrap().0, "2");
}

#[tokio::test]
async fn grpc_traffic_admin_checks_like_http_and_reads_back_what_it_set() {
    let dir = repo(V2::Perturbed, "");
    let server = start(dir.path(), ModelControlMode::None).await;
    // gRPC: the same checks, the same codes.
    let mut admin = TrafficAdminClient::connect(server.grpc_url())
        .await
        .unwrap();
    let set = |weights: &[(&str, i64)], token: Option<&str>| {
        let mut req = tonic::Request::new(admin_pb::SetTrafficRequest {
            model: "mlp".into(),
            weights: weights.iter().map(|(v, w)| (v.to_string(), *w)).collect(),
            shadow: None,
        });
        if let Some(t) = token {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        req
    };
    let err = admin
        .set_traffic(set(&[("1", -1)], Some(TOKEN)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("weight -1"), "{err:?}");
    let err = admin.set_traffic(set(&[("1", 1)], None)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let ok = admin
        .set_traffic(set(&[("1", 3), ("2", 1)], Some(TOKEN)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.weights.get("1"), Some(&3));
    let got = admin
        .get_traffic(admin_pb::GetTrafficRequest {
            model: "mlp".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.weights, ok.weights);
    let err = admin
        .get_rollout(admin_pb::GetRolloutRequest {
            model: "mlp".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unloaded_weighted_version_hands_its_share_to_the_others() {
    let dir = repo(V2::Perturbed, "");
    let server = start(dir.path(), ModelControlMode::Poll).await;
    put_traffic(&server, json!({"weights": {"1": 50, "2": 50}})).await;
    let c = reqwest::Client::new();
    std::fs::remove_dir_all(dir.path().join("mlp/2")).unwrap();
    // Requests keep succeeding while the poller unloads version 2; then only 1 serves (50 in a
    // row at 50/50 would otherwise happen with probability 2^-50).
    let mut only_one = 0;
    let t0 = Instant::now();
    while only_one < 50 {
        let (v, _) = infer(&c, &server, None, None)
            .await
            .expect("no request fails");
        only_one = if v == "1" { only_one + 1 } else { 0 };
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "version 2 never left"
        );
    }
    assert_only_version_serves(&c, &server, "1", 100).await;
    // The policy is kept as set: version 2 serves its share again if it comes back.
    let policy = traffic_policy(&server).await;
    assert_eq!(policy["weights"], json!({"1": 50, "2": 50}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_traffic_section_applies_without_reloading_versions() {
    let dir = repo(V2::Perturbed, "");
    let server = start(dir.path(), ModelControlMode::Poll).await;
    let c = reqwest::Client::new();
    for _ in 0..5 {
        infer(&c, &server, Some("1"), None).await.unwrap();
    }
    let config = dir.path().join("mlp/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}[traffic]\nweights = {{ \"1\" = 0, \"2\" = 100 }}\n"),
    )
    .unwrap();
    poll_until(
        Duration::from_secs(30),
        "the poller never applied it",
        || traffic_policy(&server),
        |policy| policy["weights"] == json!({"1": 0, "2": 100}),
    )
    .await;
    assert_only_version_serves(&c, &server, "2", 20).await;
    // Version 1 kept its statistics: it was not reloaded for a policy change.
    let stats: Value = c
        .get(server.url("/v2/models/mlp/versions/1/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["model_stats"][0]["inference_count"], 5, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadowing_leaves_answers_unchanged_and_exports_divergence() {
    let dir = repo(V2::Perturbed, "");
    let server = start(dir.path(), ModelControlMode::None).await;
    put_traffic(&server, json!({"weights": {"1": 100}})).await;
    let c = reqwest::Client::new();
    let request = serde_json::to_vec(&json!({"id": "same",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [8, 64],
                    "data": common::reference("mlp").inputs[0].f32s()}]}))
    .unwrap();
    let raw = |c: &reqwest::Client| {
        c.post(server.url("/v2/models/mlp/infer"))
            .header("content-type", "application/json")
            .body(request.clone())
            .send()
    };
    let plain = raw(&c).await.unwrap().bytes().await.unwrap();
    let (status, body) = put_traffic(
        &server,
        json!({"weights": {"1": 100}, "shadow": {"version": "2", "percent": 100}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["shadow"], json!({"version": "2", "percent": 100}));
    for _ in 0..20 {
        let shadowed = raw(&c).await.unwrap().bytes().await.unwrap();
        assert_eq!(
            shadowed, plain,
            "the client's answer does not change with a shadow"
        );
    }
    let compared =
        r#"ferroserve_shadow_requests_total{model="mlp",outcome="compared",version="2"}"#;
    let text = poll_until(
        Duration::from_secs(30),
        "no shadow comparison",
        || server.metrics_text(),
        |text| text.contains(compared),
    )
    .await;
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing: {text}"))
    };
    assert!(value(compared) >= 1.0);
    let labels = r#"{model="mlp",output="output",version="2"}"#;
    assert!(
        value(&format!("ferroserve_shadow_max_abs_diff_sum{labels}")) > 0.0,
        "a perturbed model diverges"
    );
    assert!(value(&format!("ferroserve_shadow_compared_total{labels}")) >= 8.0);
    assert!(text
        .contains(r#"ferroserve_routed_requests_total{model="mlp",reason="shadow",version="2"}"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sets_gets_and_promotes() {
    let dir = repo(V2::Perturbed, "");
    let server = start(dir.path(), ModelControlMode::None).await;
    let url = server.grpc_url();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferroserve"))
            .args(args)
            .args(["--url", &url])
            .env("FERROSERVE_ADMIN_TOKEN", TOKEN)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = cli(&[
        "traffic", "set", "mlp", "--weight", "1=80", "--weight", "2=20", "--shadow", "2=5",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("weights  1=80 2=20"), "{out}");
    let (ok, out) = cli(&["traffic", "get", "mlp"]);
    assert!(ok && out.contains("shadow   version 2 at 5%"), "{out}");
    let (ok, out) = cli(&["traffic", "set", "mlp", "--weight", "3=1"]);
    assert!(!ok && out.contains("not loaded"), "{out}");
    let (ok, out) = cli(&["traffic", "promote", "mlp", "1"]);
    assert!(ok && out.contains("weights  1=100 2=0"), "{out}");
    let (ok, out) = cli(&[
        "rollout",
        "start",
        "mlp",
        "--candidate",
        "2",
        "--steps",
        "50",
        "--step-duration",
        "60",
    ]);
    assert!(
        ok && out.contains("running of version 2 against 1"),
        "{out}"
    );
    let (ok, out) = cli(&["rollout", "status", "mlp"]);
    assert!(ok && out.contains("step 1/1 at 50%"), "{out}");
    let (ok, out) = cli(&["rollout", "abort", "mlp"]);
    assert!(ok && out.contains("aborted"), "{out}");
}
