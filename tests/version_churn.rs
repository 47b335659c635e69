//! A server that swaps versions for months does not grow: an unloaded version's metric series
//! go once its last request is answered, and RSS stays flat across many swaps.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{
    add_version, assert_alone_in_this_process, assert_matches_reference, copy_model, reference,
    rss_kib, threads, TestServer,
};
use ferroserve::config::ModelControlMode;
use serde_json::{json, Value};

const TOKEN: &str = "test-admin-token-0123456789";

async fn mlp_server(repo: &Path) -> TestServer {
    TestServer::builder()
        .repo(repo)
        .admin_token(TOKEN)
        .control(ModelControlMode::Explicit)
        .load(&["mlp"])
        .start()
        .await
}

/// Adds version `to` of `mlp`, loads it (the latest-1 policy retires `to - 1`) and removes the
/// retired version's directory, as a deployment that rotates versions would.
async fn swap(server: &TestServer, repo: &Path, to: u64) {
    add_version(repo, "mlp", to);
    let r = reqwest::Client::new()
        .post(server.url("/v2/repository/models/mlp/load"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert_eq!(
        status,
        200,
        "load of version {to}: {}",
        r.text().await.unwrap()
    );
    std::fs::remove_dir_all(repo.join("mlp").join((to - 1).to_string())).unwrap();
}

/// The reference request; returns the version that answered, after checking the output.
async fn infer(c: &reqwest::Client, server: &TestServer) -> Result<String, String> {
    let r = c
        .post(server.url("/v2/models/mlp/infer"))
        .json(&json!({"inputs": [reference("mlp").inputs[0].json()]}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let body: Value = r.json().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status}: {body}"));
    }
    let out = &body["outputs"][0];
    let shape: Vec<i64> = serde_json::from_value(out["shape"].clone()).unwrap();
    let values: Vec<f64> = serde_json::from_value(out["data"].clone()).unwrap();
    assert_matches_reference(
        "mlp",
        "output",
        "FP32",
        &shape,
        &values,
        &reference("mlp").outputs[0],
    );
    Ok(body["model_version"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// The versions of `mlp` that have at least one series in `/metrics`.
fn versions_with_series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains(r#"model="mlp""#))
        .filter_map(|l| {
            let v = l.split(r#"version=""#).nth(1)?.split('"').next()?;
            (!v.is_empty()).then(|| v.to_owned())
        })
        .collect()
}

fn series_of(text: &str, version: &str) -> usize {
    let needle = format!(r#"version="{version}""#);
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains(r#"model="mlp""#) && l.contains(&needle))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unloaded_versions_lose_their_metric_series_once_drained() {
    const SWAPS: u64 = 8;
    let repo = common::repo([copy_model("mlp")]);
    let server = Arc::new(mlp_server(repo.path()).await);
    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (server, done) = (server.clone(), done.clone());
            tokio::spawn(async move {
                let c = reqwest::Client::new();
                let mut answers = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    answers.push(infer(&c, &server).await);
                }
                answers
            })
        })
        .collect();
    for to in 2..=SWAPS + 1 {
        // Each version takes traffic (and so has request series) before it is replaced.
        let from = (to - 1).to_string();
        common::poll_until(
            Duration::from_secs(30),
            "a version never answered a request",
            || server.metrics_text(),
            |text| {
                text.lines().any(|l| {
                    l.starts_with("ferroserve_requests_total{")
                        && l.contains(&format!(r#"version="{from}""#))
                })
            },
        )
        .await;
        swap(&server, repo.path(), to).await;
    }
    done.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for c in clients {
        answers.extend(c.await.unwrap());
    }
    let failed: Vec<_> = answers.iter().filter(|a| a.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        answers.len()
    );
    let serving = (SWAPS + 1).to_string();
    let text = common::poll_until(
        Duration::from_secs(30),
        "unloaded versions kept their series",
        || server.metrics_text(),
        |text| versions_with_series(text) == BTreeSet::from([serving.clone()]),
    )
    .await;
    // The serving version keeps all of its own: requests, durations, queue, batch, state.
    assert!(series_of(&text, &serving) > 20, "{text}");
    assert_eq!(infer(&reqwest::Client::new(), &server).await, Ok(serving));
    assert_eq!(server.get("/v2/health/live").await.0, 200);
}

#[tokio::test]
async fn an_unloaded_model_loses_its_series_and_a_reload_starts_them_afresh() {
    let repo = common::repo([copy_model("mlp")]);
    let server = mlp_server(repo.path()).await;
    let c = reqwest::Client::new();
    for _ in 0..3 {
        assert_eq!(infer(&c, &server).await, Ok("1".into()));
    }
    let ok_line = r#"ferroserve_requests_total{code="ok",model="mlp",protocol="http",version="1"}"#;
    assert!(server
        .metrics_text()
        .await
        .contains(&format!("{ok_line} 3")));
    let admin = |path: &'static str| c.post(server.url(path)).bearer_auth(TOKEN).send();
    let r = admin("/v2/repository/models/mlp/unload").await.unwrap();
    assert_eq!(r.status(), 200);
    common::poll_until(
        Duration::from_secs(30),
        "an unloaded model kept its version series",
        || server.metrics_text(),
        |text| versions_with_series(text).is_empty(),
    )
    .await;
    let r = admin("/v2/repository/models/mlp/load").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(infer(&c, &server).await, Ok("1".into()));
    let text = server.metrics_text().await;
    assert!(text.contains(&format!("{ok_line} 1")), "{text}");
    assert_eq!(server.get("/v2/health/live").await.0, 200);
}

/// 1,000 swaps, one request each: RSS after them stays within 10% of RSS after
/// the first 100, the thread count stays put, and `/metrics` is as long as it was. Before
/// unloaded versions lost their series, each swap left ~90 series (~20 KiB) behind: 900 swaps
/// would have added ~17 MiB. The release build takes ~10 s, a debug build ~40 s.
#[tokio::test]
async fn memory_stays_flat_over_1000_version_swaps() {
    assert_alone_in_this_process("memory_stays_flat_over_1000_version_swaps");
    const SWAPS: u64 = 1000;
    let repo = common::repo([copy_model("mlp")]);
    let server = mlp_server(repo.path()).await;
    let c = reqwest::Client::new();
    let (mut rss_100, mut threads_100, mut lines_100) = (0, 0, 0);
    for to in 2..=SWAPS + 1 {
        swap(&server, repo.path(), to).await;
        assert_eq!(infer(&c, &server).await, Ok(to.to_string()));
        if to == 101 {
            let text = server.metrics_text().await;
            (rss_100, threads_100, lines_100) = (rss_kib(), threads(), text.lines().count());
        }
    }
    let text = server.metrics_text().await;
    let (rss, threads_now, lines) = (rss_kib(), threads(), text.lines().count());
    eprintln!(
        "after 100 swaps: {rss_100} KiB, {threads_100} threads, {lines_100} metric lines; \
         after {SWAPS}: {rss} KiB, {threads_now} threads, {lines} lines"
    );
    assert_eq!(
        versions_with_series(&text),
        BTreeSet::from([(SWAPS + 1).to_string()])
    );
    assert!(
        lines <= lines_100,
        "/metrics grew from {lines_100} to {lines} lines"
    );
    assert!(
        threads_now <= threads_100 + 4,
        "threads grew from {threads_100} to {threads_now}"
    );
    assert!(
        rss as f64 <= rss_100 as f64 * 1.10,
        "RSS grew from {rss_100} KiB to {rss} KiB over {} swaps",
        SWAPS - 100
    );
}
