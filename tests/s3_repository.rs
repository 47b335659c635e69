//! A model repository on S3-compatible object storage, against a real SeaweedFS (`weed mini`,
//! tests/common/seaweed.rs): served from the bucket, versions added under load, half-uploaded
//! versions never loaded, the cache serving while the bucket is down, replicas converging.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::seaweed::{Seaweed, ACCESS_KEY, SECRET_KEY};
use common::traffic::{infer, perturbed, traffic_policy, TOKEN};
use common::{bundled_models, poll_until, Builder, TestServer};
use ferroserve::config::ModelControlMode;
use serde_json::Value;

const POLL_SECS: f64 = 0.3;
const LIMIT: Duration = Duration::from_secs(60);
/// What a version's download and load may take on top of one poll interval, on a loaded
/// (shared, debug-build) machine: "serves within one poll" is asserted as poll + this.
const LOAD_ALLOWANCE: Duration = Duration::from_secs(10);

fn mlp_bytes() -> Vec<u8> {
    std::fs::read(bundled_models().join("mlp/1/model.onnx")).unwrap()
}

/// mlp's config (every listed version served) plus `extra`, and version 1 with its marker.
async fn seed(weed: &Seaweed, extra: &str) {
    let config = format!("max_batch_size = 64\nversion_policy = \"all\"\n{extra}\n");
    weed.put("mlp/config.toml", config.into_bytes()).await;
    weed.put("mlp/1/model.onnx", mlp_bytes()).await;
    weed.put("mlp/1/ready", Vec::new()).await;
}

/// Version `v` of mlp with perturbed weights (answers differ from version 1).
async fn put_version(weed: &Seaweed, v: u64, ready: bool) {
    weed.put(&format!("mlp/{v}/model.onnx"), perturbed(mlp_bytes()))
        .await;
    if ready {
        weed.put(&format!("mlp/{v}/ready"), Vec::new()).await;
    }
}

fn server_on(weed: &Seaweed, cache: &Path) -> Builder {
    let options = weed.options();
    let cache = cache.to_path_buf();
    TestServer::builder()
        .admin_token(TOKEN)
        .control(ModelControlMode::Poll)
        .poll_secs(POLL_SECS)
        .configure(move |c| {
            c.model_repository = "s3://models".into();
            c.model_repository_options = options;
            c.model_cache_dir = Some(cache);
        })
}

async fn index(server: &TestServer) -> Vec<Value> {
    let r = reqwest::Client::new()
        .post(server.url("/v2/repository/index"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Vec<Value>>().await.unwrap()
}

/// "version:state" of mlp's rows, in order.
async fn versions(server: &TestServer) -> String {
    let rows = index(server).await;
    rows.iter()
        .filter(|r| r["name"] == "mlp")
        .map(|r| {
            format!(
                "{}:{}",
                r["version"].as_str().unwrap_or(""),
                r["state"].as_str().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The metric line's value, 0 when absent.
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until the server has completed `n` more listings than when called.
async fn syncs(server: &TestServer, n: usize) {
    let key = "ferroserve_model_source_last_sync_timestamp_seconds{source=\"s3\"}";
    for _ in 0..n {
        let before = metric(&server.metrics_text().await, key);
        poll_until(
            LIMIT,
            "no further listing",
            || async { metric(&server.metrics_text().await, key) },
            |t| *t > before,
        )
        .await;
    }
}

macro_rules! weed_or_skip {
    () => {
        match Seaweed::start().await {
            Some(w) => w,
            None => return,
        }
    };
}

#[tokio::test]
async fn a_model_in_a_bucket_is_served_and_cached_by_etag() {
    let weed = weed_or_skip!();
    seed(&weed, "").await;
    let cache = tempfile::tempdir().unwrap();
    let server = server_on(&weed, cache.path()).start().await;
    let c = reqwest::Client::new();
    assert_eq!(infer(&c, &server, None, None).await.unwrap().0, "1");
    assert_eq!(versions(&server).await, "1:READY");
    let cached = std::fs::read(cache.path().join("repo/mlp/1/model.onnx")).unwrap();
    assert_eq!(cached, mlp_bytes());
    let blobs: Vec<_> = std::fs::read_dir(cache.path().join("blobs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(blobs.len(), 2, "config and model, once each: {blobs:?}");
}

#[tokio::test]
async fn an_unchanged_bucket_reloads_nothing() {
    let weed = weed_or_skip!();
    seed(&weed, "").await;
    let cache = tempfile::tempdir().unwrap();
    let server = server_on(&weed, cache.path()).start().await;
    let c = reqwest::Client::new();
    for _ in 0..3 {
        infer(&c, &server, None, None).await.unwrap();
    }
    let file = cache.path().join("repo/mlp/1/model.onnx");
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&file).unwrap());
    syncs(&server, 3).await;
    // A reload would start the version's statistics again from zero.
    let (status, stats) = server.get("/v2/models/mlp/versions/1/stats").await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(
        stats["model_stats"][0]["inference_stats"]["success"]["count"],
        3
    );
    let now = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&file).unwrap());
    assert_eq!(inode, now, "the cached file was rewritten");
}

#[tokio::test]
async fn a_version_added_under_load_serves_with_no_failed_request() {
    let weed = weed_or_skip!();
    seed(&weed, "").await;
    let cache = tempfile::tempdir().unwrap();
    let server = Arc::new(server_on(&weed, cache.path()).start().await);
    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (server, done) = (server.clone(), done.clone());
            tokio::spawn(async move {
                let c = reqwest::Client::new();
                let (mut ok, mut failed, mut v2) = (0, Vec::new(), 0);
                while !done.load(Ordering::Relaxed) {
                    match infer(&c, &server, None, None).await {
                        Ok((v, _)) => {
                            ok += 1;
                            v2 += usize::from(v == "2");
                        }
                        Err(e) => failed.push(e),
                    }
                }
                (ok, failed, v2)
            })
        })
        .collect();
    put_version(&weed, 2, false).await;
    // The version is complete from the moment its marker is up: from then on it must answer
    // within one poll interval plus the time a load takes.
    let deadline = Instant::now() + Duration::from_secs_f64(POLL_SECS) + LOAD_ALLOWANCE;
    weed.put("mlp/2/ready", Vec::new()).await;
    let c = reqwest::Client::new();
    poll_until(
        deadline.saturating_duration_since(Instant::now()),
        "version 2 did not answer within one poll (+ load allowance) of its ready marker",
        || async {
            infer(&c, &server, None, None)
                .await
                .map(|r| r.0)
                .unwrap_or_default()
        },
        |v| v == "2",
    )
    .await;
    done.store(true, Ordering::Relaxed);
    let (mut ok, mut v2) = (0, 0);
    for client in clients {
        let (o, failed, v) = client.await.unwrap();
        assert!(failed.is_empty(), "failed requests: {failed:?}");
        ok += o;
        v2 += v;
    }
    assert!(ok > 0 && v2 > 0, "{ok} answers, {v2} from version 2");
    assert_eq!(versions(&server).await, "1:READY,2:READY");
}

#[tokio::test]
async fn a_half_uploaded_version_never_loads() {
    let weed = weed_or_skip!();
    seed(&weed, "").await;
    let cache = tempfile::tempdir().unwrap();
    let server = server_on(&weed, cache.path()).start().await;
    put_version(&weed, 2, false).await;
    syncs(&server, 3).await;
    assert_eq!(versions(&server).await, "1:READY");
    assert!(!cache.path().join("repo/mlp/2").exists());
    weed.put("mlp/2/ready", Vec::new()).await;
    poll_until(
        LIMIT,
        "version 2 never loaded",
        || versions(&server),
        |v| v == "1:READY,2:READY",
    )
    .await;
}

#[tokio::test]
async fn a_restarted_server_serves_its_cache_while_the_bucket_is_down() {
    let mut weed = weed_or_skip!();
    seed(&weed, "").await;
    let cache = tempfile::tempdir().unwrap();
    let first = server_on(&weed, cache.path()).start().await;
    first.stop().await.unwrap();
    weed.pause();
    let server = server_on(&weed, cache.path()).start().await;
    let c = reqwest::Client::new();
    assert_eq!(infer(&c, &server, None, None).await.unwrap().0, "1");
    let rows = index(&server).await;
    let reason = rows[0]["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("serving the cached versions"), "{reason}");
    let metrics = server.metrics_text().await;
    let errors = metric(
        &metrics,
        "ferroserve_model_source_errors_total{kind=\"unreachable\",source=\"s3\"}",
    );
    assert!(errors >= 1.0, "{metrics}");
    for text in [&reason, &metrics] {
        assert!(!text.contains(SECRET_KEY) && !text.contains(ACCESS_KEY));
    }
    weed.resume().await;
    put_version(&weed, 2, true).await;
    poll_until(
        LIMIT,
        "version 2 never loaded",
        || versions(&server),
        |v| v == "1:READY,2:READY",
    )
    .await;
    let rows = index(&server).await;
    assert!(
        !rows[0]["reason"].as_str().unwrap().contains("cached"),
        "{rows:?}"
    );
}

#[tokio::test]
async fn forbidden_credentials_are_reported_without_them() {
    let weed = weed_or_skip!();
    seed(&weed, "").await;
    let cache = tempfile::tempdir().unwrap();
    server_on(&weed, cache.path())
        .start()
        .await
        .stop()
        .await
        .unwrap();
    let wrong = "wrong-secret-access-key-987654321";
    let server = server_on(&weed, cache.path())
        .configure(|c| {
            c.model_repository_options
                .insert("aws_secret_access_key".into(), wrong.into());
        })
        .start()
        .await;
    let rows = index(&server).await;
    let reason = rows[0]["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("serving the cached versions"), "{reason}");
    assert_eq!(rows[0]["state"], "READY");
    let metrics = server.metrics_text().await;
    let forbidden = metric(
        &metrics,
        "ferroserve_model_source_errors_total{kind=\"forbidden\",source=\"s3\"}",
    );
    assert!(forbidden >= 1.0, "{reason}\n{metrics}");
    for text in [&reason, &metrics] {
        assert!(
            !text.contains(wrong) && !text.contains(ACCESS_KEY),
            "{text}"
        );
    }
}

#[tokio::test]
async fn two_servers_on_one_bucket_converge_to_the_same_versions_and_weights() {
    let weed = weed_or_skip!();
    seed(&weed, "").await;
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = server_on(&weed, ca.path()).start().await;
    let b = server_on(&weed, cb.path()).start().await;
    put_version(&weed, 2, true).await;
    let config = "max_batch_size = 64\nversion_policy = \"all\"\n[traffic]\nweights = { \"1\" = 70, \"2\" = 30 }\n";
    weed.put("mlp/config.toml", config.as_bytes().to_vec())
        .await;
    for server in [&a, &b] {
        poll_until(
            LIMIT,
            "version 2 never loaded",
            || versions(server),
            |v| v == "1:READY,2:READY",
        )
        .await;
        poll_until(
            LIMIT,
            "the weights never arrived",
            || traffic_policy(server),
            |p| p["weights"]["2"] == 30,
        )
        .await;
    }
    assert_eq!(traffic_policy(&a).await, traffic_policy(&b).await);
    let c = reqwest::Client::new();
    let (va, vb) = (
        infer(&c, &a, Some("2"), None).await.unwrap(),
        infer(&c, &b, Some("2"), None).await.unwrap(),
    );
    assert_eq!(va.1, vb.1, "both serve the same version 2");
}

/// `ferroserve predict` on `s3://`: endpoint and keys from the standard AWS variables.
fn predict_from(repository: &str, cache: &Path, input: &Path, output: &Path, weed: &Seaweed) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferroserve"))
        .args([
            "predict",
            "--model-repository",
            repository,
            "--model",
            "iris",
        ])
        .arg("--model-cache-dir")
        .arg(cache)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(["--keep", "id"])
        .env("AWS_ENDPOINT_URL", weed.endpoint())
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .output()
        .expect("ferroserve runs");
    assert!(
        out.status.success(),
        "predict from {repository}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn predict_scores_a_model_in_the_bucket_as_the_same_model_on_disk() {
    let weed = weed_or_skip!();
    let iris = bundled_models().join("iris");
    weed.put(
        "iris/config.toml",
        std::fs::read(iris.join("config.toml")).unwrap(),
    )
    .await;
    weed.upload_version("iris", 1, &iris.join("1"), true).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    let rows: String = (0..300)
        .map(|i| {
            let f = |k: u32| f64::from((i * 7 + k * 13) % 80) / 10.0;
            format!("r{i},{},{},{},{}\n", f(0), f(1), f(2), f(3))
        })
        .collect();
    std::fs::write(&input, format!("id,a,b,c,d\n{rows}")).unwrap();
    let (from_bucket, from_disk) = (dir.path().join("s3.csv"), dir.path().join("disk.csv"));
    predict_from(
        "s3://models",
        &dir.path().join("cache"),
        &input,
        &from_bucket,
        &weed,
    );
    predict_from(
        bundled_models().to_str().unwrap(),
        &dir.path().join("unused"),
        &input,
        &from_disk,
        &weed,
    );
    let (a, b) = (
        std::fs::read_to_string(&from_bucket).unwrap(),
        std::fs::read_to_string(&from_disk).unwrap(),
    );
    assert_eq!(a.lines().count(), 301, "a header and 300 rows: {a:.200}");
    assert_eq!(a, b, "the bucket's iris scores as the directory's");
}

/// mlp's rollout step as `traffic` reports it (0: none yet).
async fn rollout_step(server: &TestServer) -> u64 {
    traffic_policy(server).await["rollout"]["step"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_declared_rollout_is_at_the_same_step_on_two_replicas_started_apart() {
    let weed = weed_or_skip!();
    seed(&weed, "").await;
    put_version(&weed, 2, true).await;
    let (ca, cb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = server_on(&weed, ca.path()).start().await;
    poll_until(
        LIMIT,
        "version 2 never loaded",
        || versions(&a),
        |v| v == "1:READY,2:READY",
    )
    .await;
    // Too few requests to judge: the steps end on the clock alone.
    let config = "max_batch_size = 64\nversion_policy = \"all\"\n[rollout]\ncandidate = 2\nstable = 1\nsteps = [5, 10, 20, 40, 60, 80]\nstep_duration_s = 3\nmin_requests = 1000000\n";
    weed.put("mlp/config.toml", config.as_bytes().to_vec())
        .await;
    poll_until(
        LIMIT,
        "a never reached step 2",
        || rollout_step(&a),
        |s| *s >= 2,
    )
    .await;
    // b starts seconds after a began: on its own clock it would be at step 1.
    let b = server_on(&weed, cb.path()).start().await;
    let first = poll_until(
        LIMIT,
        "b never started the rollout",
        || rollout_step(&b),
        |s| *s > 0,
    )
    .await;
    assert!(
        first >= 2,
        "b started at step {first}, not at the schedule's"
    );
    let p = traffic_policy(&b).await;
    assert_eq!(p["rollout"]["state"], "running", "{p}");
    assert_eq!(
        p["rollout"]["start_unix_s"],
        traffic_policy(&a).await["rollout"]["start_unix_s"]
    );
    // The same step at the same moment: b read between two equal readings of a.
    let mut agreed = 0;
    for _ in 0..200 {
        let (a1, sb, a2) = (
            rollout_step(&a).await,
            rollout_step(&b).await,
            rollout_step(&a).await,
        );
        if a1 == a2 {
            assert_eq!(sb, a1, "a at step {a1}, b at step {sb}");
            agreed += 1;
            if agreed >= 5 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        agreed >= 5,
        "a's step never held still across a reading of b"
    );
}
