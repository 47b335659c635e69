//! The status page for people: `GET /` and `/status` (one HTML page, its script and style
//! compiled in with `include_str!`, nothing fetched from elsewhere) and `/status/data`, the JSON
//! it polls: models, versions with state, engine, load time and batching, traffic and rollout,
//! and each version's cumulative success count and time (the page turns two polls into a rate
//! and a mean latency). Read-only: it calls no mutation, so it works with the admin API closed.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Json, Router as AxumRouter};
use serde_json::{json, Value};

use super::traffic::traffic_json;
use super::AppState;
use crate::registry::{ModelVersion, VersionState};

const PAGE: &str = include_str!("status/index.html");
const SCRIPT: &str = include_str!("status/status.js");
const STYLE: &str = include_str!("status/status.css");

/// The metrics listener's port, for the page's link (an extension the server adds).
#[derive(Clone, Copy)]
pub struct MetricsPort(pub u16);

pub fn routes() -> AxumRouter<AppState> {
    AxumRouter::new()
        .route("/", get(page))
        .route("/status", get(page))
        .route("/status/status.js", get(script))
        .route("/status/status.css", get(style))
        .route("/status/data", get(data))
}

/// The page allows its own script and style only (no inline code, nothing from elsewhere).
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                      frame-ancestors 'none'";

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
        ],
        PAGE,
    )
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
}

async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}

async fn data(
    State(s): State<AppState>,
    metrics_port: Option<Extension<MetricsPort>>,
) -> Json<Value> {
    let table = s.router.registry().snapshot();
    let models: Vec<Value> = table
        .models
        .values()
        .map(|entry| {
            let versions: Vec<Value> = entry
                .versions
                .iter()
                .map(|(v, state)| match state {
                    VersionState::Ready(mv) => version_json(mv),
                    VersionState::Loading => json!({"version": v.to_string(), "state": "LOADING"}),
                    VersionState::Unavailable(reason) => json!({
                        "version": v.to_string(),
                        "state": "UNAVAILABLE",
                        "reason": reason,
                    }),
                })
                .collect();
            let traffic = s.admin.traffic(&entry.name).ok().map(traffic_json);
            json!({
                "name": entry.name,
                "error": entry.error.as_deref().or(entry.last_failure.as_deref()),
                "versions": versions,
                "traffic": traffic,
            })
        })
        .collect();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Json(json!({
        "server": {
            "name": &*s.server_name,
            "version": env!("CARGO_PKG_VERSION"),
            "metrics_port": metrics_port.map(|Extension(MetricsPort(p))| p),
        },
        "time_ms": now_ms,
        "models": models,
    }))
}

fn version_json(mv: &ModelVersion) -> Value {
    let c = &mv.config;
    let (ok, ok_ns) = mv.stats.success.get();
    let (failed, _) = mv.stats.fail.get();
    let batching = c.dynamic_batching.as_ref().map(|b| {
        json!({
            "preferred_batch_sizes": b.preferred_batch_sizes,
            "max_queue_delay_us": u64::try_from(b.max_queue_delay.as_micros()).unwrap_or(u64::MAX),
        })
    });
    json!({
        "version": mv.version_label,
        "state": "READY",
        "engine": c.backend.as_str(),
        "load_ms": mv.load_time.as_secs_f64() * 1e3,
        "max_batch_size": c.max_batch_size,
        "instances": c.instance_count,
        "max_queue_size": c.queue.max_queue_size,
        "dynamic_batching": batching,
        "queued": mv.batcher.queued(),
        "success": {"count": ok, "ns": ok_ns},
        "failed": failed,
    })
}
