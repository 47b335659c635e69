//! Drift monitoring end to end on the bundled iris: a profile built from the iris data by
//! `ferroserve profile`, requests drawn from that data, and requests with one feature shifted,
//! read back from `/metrics` and the drift endpoint.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{copy_model, poll_until, repo, TestServer};
use serde_json::{json, Value};

const FEATURES: [&str; 4] = ["sepal_length", "sepal_width", "petal_length", "petal_width"];
const DRIFT: &str = r#"
[drift]
features = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
window_seconds = 0.05
min_count = 300
p_value_threshold = 0.01
"#;

/// The iris rows of tests/data/iris.csv (four features).
fn iris_rows() -> Vec<[f32; 4]> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/iris.csv"))
        .unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let v: Vec<f32> = l.split(',').take(4).map(|x| x.parse().unwrap()).collect();
            [v[0], v[1], v[2], v[3]]
        })
        .collect()
}

/// A repository with iris monitored, its profile written by `ferroserve profile`.
fn monitored_iris() -> tempfile::TempDir {
    let dir = repo([copy_model("iris").config(DRIFT)]);
    profile(&dir.path().join("iris"));
    dir
}

fn profile(model_dir: &Path) {
    // The library call `ferroserve profile` makes (the shared target's binary may be another build's).
    let data = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/iris.csv"));
    let built = std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(ferroserve::registry::profile::build_profile(
                model_dir, data, None,
            ))
        })
        .join()
        .unwrap()
    })
    .unwrap();
    assert_eq!(built.rows, 150);
    let features: usize = built.profile.tensors.iter().map(|t| t.features.len()).sum();
    assert_eq!(features, 8, "4 inputs, the label, 3 probabilities");
    std::fs::write(&built.path, built.profile.to_json()).unwrap();
}

/// Sends every iris row twice (300 rows, one window), `shift` added to feature `shifted`.
async fn serve_iris(s: &TestServer, shifted: Option<(usize, f32)>) {
    let client = reqwest::Client::new();
    let mut rows = iris_rows();
    rows.extend(iris_rows());
    for chunk in rows.chunks(20) {
        let data: Vec<f32> = chunk
            .iter()
            .flat_map(|r| {
                let mut r = *r;
                if let Some((i, d)) = shifted {
                    r[i] += d;
                }
                r
            })
            .collect();
        let body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [chunk.len(), 4], "data": data}]});
        let r = client
            .post(s.url("/v2/models/iris/infer"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
}

/// The drift report once its first window has closed.
async fn closed_report(s: &TestServer) -> Value {
    poll_until(
        Duration::from_secs(20),
        "a drift window closed",
        || async { s.get("/v2/models/iris/drift").await.1 },
        |r| r["closed_window"]["index"].as_u64() >= Some(1),
    )
    .await
}

fn input_psi(report: &Value) -> Vec<(String, f64)> {
    report["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["role"] == "input")
        .map(|f| {
            (
                f["feature"].as_str().unwrap().to_owned(),
                f["closed_window"]["psi"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// `ferroserve_drift_psi` of iris' input features in the exposition.
fn metric_psi(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| {
            l.starts_with("ferroserve_drift_psi{")
                && l.contains("model=\"iris\"")
                && l.contains("tensor=\"input\"")
        })
        .map(|l| {
            let feature = l
                .split("feature=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_owned();
            (feature, l.rsplit(' ').next().unwrap().parse().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn requests_drawn_from_the_reference_raise_no_drift() {
    let dir = monitored_iris();
    let s = TestServer::builder().repo(dir.path()).start().await;
    serve_iris(&s, None).await;
    let report = closed_report(&s).await;
    assert_eq!(report["state"], "monitoring");
    assert_eq!(report["closed_window"]["rows"], 300);
    assert_eq!(report["drifting_share"], 0.0, "{report:#}");
    let psi = input_psi(&report);
    assert_eq!(
        psi.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
        FEATURES
    );
    for (f, v) in &psi {
        assert!(*v < 0.01, "{f}: psi {v} of the reference's own rows");
    }
    let text = s.metrics_text().await;
    let exported = metric_psi(&text);
    assert_eq!(exported.len(), 4, "{text}");
    assert!(exported.iter().all(|(_, v)| *v < 0.01), "{exported:?}");
    assert!(
        text.contains("ferroserve_drift_drifting_features_share{model=\"iris\",version=\"1\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("ferroserve_drift_samples{model=\"iris\",version=\"1\"} 300"),
        "{text}"
    );
}

#[tokio::test]
async fn one_shifted_feature_shows_psi_over_a_quarter_for_that_feature_only() {
    let dir = monitored_iris();
    let s = TestServer::builder().repo(dir.path()).start().await;
    serve_iris(&s, Some((1, 1.0))).await;
    let report = closed_report(&s).await;
    for (f, v) in input_psi(&report) {
        if f == "sepal_width" {
            assert!(v > 0.25, "the shifted feature: psi {v}");
        } else {
            assert!(v < 0.25, "{f} was not shifted: psi {v}");
        }
    }
    let sw = &report["features"][1];
    assert_eq!(sw["feature"], "sepal_width");
    assert_eq!(sw["closed_window"]["drifting"], true);
    assert_eq!(
        sw["reference"].as_array().unwrap().len(),
        sw["closed_window"]["proportions"].as_array().unwrap().len()
    );
    let exported = metric_psi(&s.metrics_text().await);
    let over: Vec<&str> = exported
        .iter()
        .filter(|(_, v)| *v > 0.25)
        .map(|(f, _)| f.as_str())
        .collect();
    assert_eq!(over, ["sepal_width"], "{exported:?}");
}

#[tokio::test]
async fn drift_endpoint_of_an_unmonitored_model_is_refused() {
    let dir = repo([copy_model("iris")]);
    let s = TestServer::builder().repo(dir.path()).start().await;
    let (status, body) = s.get("/v2/models/iris/versions/1/drift").await;
    assert_eq!(status, 400);
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("drift monitoring is off for model 'iris' version 1"),
        "{msg}"
    );
    let (status, _) = s.get("/v2/models/nope/drift").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn drift_without_a_profile_refuses_the_version_with_the_reason() {
    let dir = repo([copy_model("iris").config(DRIFT)]);
    let s = TestServer::builder()
        .repo(dir.path())
        .wait_ready(false)
        .start()
        .await;
    let report = poll_until(
        Duration::from_secs(20),
        "iris failed to load",
        || async { s.get("/v2/models/iris/ready").await.0 },
        |status| *status == 503 || *status == 400,
    )
    .await;
    assert_ne!(report, 200);
    let index = reqwest::Client::new()
        .post(s.url("/v2/repository/index"))
        .send()
        .await
        .unwrap();
    let rows: Value = index.json().await.unwrap();
    let reason = rows[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("needs profile.json"), "{rows:#}");
}

#[tokio::test]
async fn first_rows_served_become_the_baseline() {
    let config = DRIFT.replace(
        "p_value_threshold",
        "baseline = \"first: 300\"\np_value_threshold",
    );
    let dir = repo([copy_model("iris").config(&config)]);
    let s = TestServer::builder().repo(dir.path()).start().await;
    let (_, before) = s.get("/v2/models/iris/drift").await;
    assert_eq!(before["state"], "collecting_baseline");
    assert_eq!(before["baseline"]["needed"], 300);
    serve_iris(&s, None).await;
    // The last rows are binned just after their answer: a bounded wait, not a sleep.
    poll_until(
        Duration::from_secs(20),
        "the baseline was built",
        || async { s.get("/v2/models/iris/drift").await.1 },
        |r| r["state"] == "monitoring",
    )
    .await;
    // The same rows again: the window matches its baseline.
    serve_iris(&s, None).await;
    let report = closed_report(&s).await;
    assert_eq!(report["drifting_share"], 0.0, "{report:#}");
}

#[tokio::test]
async fn admin_grpc_reports_the_same_drift_as_http() {
    use common::admin_pb::{traffic_admin_client::TrafficAdminClient, GetDriftRequest};
    let dir = monitored_iris();
    let s = TestServer::builder().repo(dir.path()).start().await;
    serve_iris(&s, Some((1, 1.0))).await;
    let http = closed_report(&s).await;
    let mut client = TrafficAdminClient::connect(s.grpc_url()).await.unwrap();
    let r = client
        .get_drift(GetDriftRequest {
            model: "iris".into(),
            version: "1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.model.as_str(), r.version.as_str(), r.state.as_str()),
        ("iris", "1", "monitoring")
    );
    assert_eq!(r.window_rows, 300);
    let sw = r
        .features
        .iter()
        .find(|f| f.feature == "sepal_width")
        .unwrap();
    assert!(sw.drifting && sw.window_closed);
    assert_eq!(
        sw.psi,
        http["features"][1]["closed_window"]["psi"]
            .as_f64()
            .unwrap()
    );
    let doc: Value = serde_json::from_str(&r.json).unwrap();
    assert_eq!(
        doc["features"][1]["reference"],
        http["features"][1]["reference"]
    );
    let missing = client
        .get_drift(GetDriftRequest {
            model: "nope".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

/// mlp versions 1 and 2 (2: perturbed weights), both monitored on the same profile (built from
/// version 1 on a deterministic sample), so their predictions are binned alike.
fn monitored_mlp_pair() -> tempfile::TempDir {
    use common::traffic::{repo as traffic_repo, V2};
    let drift = "[drift]\nfeatures = [0, 1]\nwindow_seconds = 60\nmin_count = 100000\n";
    let dir = traffic_repo(V2::Perturbed, drift);
    let mut csv: String = (0..64)
        .map(|i| format!("p{i}"))
        .collect::<Vec<_>>()
        .join(",")
        + "\n";
    for r in 0..400u32 {
        let row: Vec<String> = (0..64u32)
            .map(|c| ((r * 7 + c * 13) % 17).to_string())
            .collect();
        csv += &(row.join(",") + "\n");
    }
    let data = dir.path().join("sample.csv");
    std::fs::write(&data, csv).unwrap();
    let model_dir = dir.path().join("mlp");
    let built = std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(ferroserve::registry::profile::build_profile(
                &model_dir,
                &data,
                Some(1),
            ))
        })
        .join()
        .unwrap()
    })
    .unwrap();
    for v in ["1", "2"] {
        std::fs::write(
            model_dir.join(v).join("profile.json"),
            built.profile.to_json(),
        )
        .unwrap();
    }
    std::fs::remove_file(&data).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_whose_candidate_predicts_differently_is_rolled_back_on_its_drift_limit() {
    use common::traffic::{put_traffic, rollout_until_done, start, start_rollout, Load};
    let dir = monitored_mlp_pair();
    let server =
        std::sync::Arc::new(start(dir.path(), ferroserve::config::ModelControlMode::None).await);
    put_traffic(&server, json!({"weights": {"1": 100}})).await;
    let load = Load::start(&server);
    let (status, started) = start_rollout(
        &server,
        json!({"candidate": "2", "steps": [50, 100], "step_duration_s": 1, "max_p99_ratio": 50,
               "min_requests": 20, "max_prediction_drift": 0.25}),
    )
    .await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["max_prediction_drift"], 0.25);
    let end = rollout_until_done(&server).await;
    load.stop().await;
    assert_eq!(end["state"], "rolled_back", "{end}");
    assert_eq!(end["step"], 1, "{end}");
    assert!(
        end["reason"]
            .as_str()
            .unwrap()
            .contains("candidate predictions drift from stable's: PSI"),
        "{end}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drift_limit_without_drift_monitoring_aborts_the_rollout_with_the_reason() {
    use common::traffic::{
        put_traffic, repo as traffic_repo, rollout_until_done, start, start_rollout, V2,
    };
    let dir = traffic_repo(V2::Perturbed, "");
    let server = start(dir.path(), ferroserve::config::ModelControlMode::None).await;
    put_traffic(&server, json!({"weights": {"1": 100}})).await;
    let (status, started) = start_rollout(
        &server,
        json!({"candidate": "2", "steps": [50, 100], "step_duration_s": 1, "max_prediction_drift": 0.25}),
    )
    .await;
    assert_eq!(status, 200, "{started}");
    let end = rollout_until_done(&server).await;
    assert_eq!(end["state"], "aborted", "{end}");
    assert!(
        end["reason"]
            .as_str()
            .unwrap()
            .contains("needs [drift] monitoring on both versions"),
        "{end}"
    );
}

#[tokio::test]
async fn an_invalid_profile_refuses_the_version_with_the_reason() {
    let dir = repo([copy_model("iris").config(DRIFT)]);
    let bad = r#"{"format": "ferroserve-drift-profile/1", "rows": 1, "tensors": [{"tensor": "input",
        "role": "input", "features": [{"name": "sepal_length", "column": 0, "kind": "numeric",
        "edges": [2.0, 1.0], "proportions": [0, 1, 0]}]}]}"#;
    std::fs::write(dir.path().join("iris/1/profile.json"), bad).unwrap();
    let s = TestServer::builder()
        .repo(dir.path())
        .wait_ready(false)
        .start()
        .await;
    let rows = poll_until(
        Duration::from_secs(20),
        "iris failed to load",
        || async {
            let r = reqwest::Client::new()
                .post(s.url("/v2/repository/index"))
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        },
        |rows| rows[0]["state"] == "UNAVAILABLE",
    )
    .await;
    let reason = rows[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("profile.json") && reason.contains("strictly increasing"),
        "{reason}"
    );
}
