//! Graceful shutdown: readiness turns false at once, serving goes on through the drain delay,
//! requests in flight finish, and `run` returns.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::json;

/// What one client request came to, and when it was started. The strings are only read through
/// `Debug` in assertion messages.
#[derive(Debug)]
#[allow(dead_code)]
enum Outcome {
    Ok,
    /// No HTTP answer at all: refused, or reset/closed before any response byte.
    NoConnection(String),
    Failed(String),
}

const DRAIN: Duration = Duration::from_millis(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_turns_unready_at_once_and_fails_no_request() {
    let mut server = TestServer::builder()
        .configure(|c| c.shutdown.drain_delay = DRAIN.as_secs_f64())
        .start()
        .await;
    let http = server.http;
    let url = |p: &str| format!("http://{http}{p}");
    let client = reqwest::Client::new();

    let log: Arc<Mutex<Vec<(Instant, Outcome)>>> = Arc::default();
    let signalled: Arc<Mutex<Option<Instant>>> = Arc::default();
    let body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": vec![0.5f32; 64]}]});
    let mut clients = Vec::new();
    for _ in 0..6 {
        let (log, signalled, body, u) = (
            log.clone(),
            signalled.clone(),
            body.clone(),
            url("/v2/models/mlp/infer"),
        );
        clients.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            loop {
                let started = Instant::now();
                let outcome = match c.post(&u).json(&body).send().await {
                    Ok(r) if r.status() == 200 => Outcome::Ok,
                    Ok(r) => Outcome::Failed(format!("HTTP {}", r.status())),
                    Err(e) if e.is_connect() || e.is_request() => {
                        Outcome::NoConnection(format!("{e:?}"))
                    }
                    Err(e) => Outcome::Failed(format!("{e:?}")),
                };
                let no_connection = matches!(outcome, Outcome::NoConnection(_));
                log.lock().unwrap().push((started, outcome));
                let stopping = signalled
                    .lock()
                    .unwrap()
                    .is_some_and(|s| s.elapsed() > DRAIN);
                if no_connection && stopping {
                    break;
                }
            }
        }));
    }
    // The load is under way once every client has been answered a few times.
    common::wait_until(
        Duration::from_secs(30),
        "the clients were served before the signal",
        || async {
            let log = log.lock().unwrap();
            log.iter().filter(|(_, o)| matches!(o, Outcome::Ok)).count() >= 60
        },
    )
    .await;

    let t_signal = Instant::now();
    *signalled.lock().unwrap() = Some(t_signal);
    server.signal_stop();
    // "At once": before the drain delay ends, while requests are still being served.
    common::wait_until(DRAIN, "readiness is false at once", || async {
        let r = client.get(url("/v2/health/ready")).send().await;
        r.is_ok_and(|r| r.status() == 503)
    })
    .await;

    server
        .stopped_within(Duration::from_secs(12))
        .await
        .expect("run returns within drain + timeout");
    assert!(
        t_signal.elapsed() >= DRAIN,
        "served through the drain delay"
    );
    for c in clients {
        c.await.unwrap();
    }

    // The listener closes DRAIN after the signal. A connection the kernel completes in the last
    // moment before that is reset without reaching us (as with any server; the drain delay is
    // what keeps clients away by then), so only requests started 2 ms or more before count.
    let closed = t_signal + DRAIN - Duration::from_millis(2);
    let log = log.lock().unwrap();
    let before: Vec<&(Instant, Outcome)> = log.iter().filter(|(t, _)| *t < closed).collect();
    let during_drain = before
        .iter()
        .filter(|(t, o)| *t > t_signal && matches!(o, Outcome::Ok))
        .count();
    let failed: Vec<_> = before
        .iter()
        .filter(|(_, o)| !matches!(o, Outcome::Ok))
        .collect();
    assert!(
        during_drain > 0,
        "requests were served during the drain delay"
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests sent before the listener closed failed: {failed:?}",
        failed.len(),
        before.len()
    );
    let after_failed: Vec<_> = log
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Failed(_)))
        .collect();
    assert!(
        after_failed.is_empty(),
        "after the close only connection errors are allowed: {after_failed:?}"
    );
}
