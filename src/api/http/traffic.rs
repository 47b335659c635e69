//! HTTP routes of the traffic control plane: `/v2/models/{m}/traffic` (GET, PUT, `/promote`) and
//! `/v2/models/{m}/rollout` (POST to start, GET, DELETE or `/abort`). JSON ⇄ domain only; reads
//! need no token, mutations the admin token.

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::reject::Mutation;
use super::AppState;
use crate::api::admin::{Authorized, TrafficView};
use crate::api::error::ApiError;
use crate::rollout::judge::RolloutRequest;
use crate::rollout::{RolloutStatus, WindowSummary};

fn bad(msg: String) -> ApiError {
    ApiError::BadRequest(msg)
}

pub async fn get_traffic(
    State(s): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(traffic_json(s.admin.traffic(&model)?)))
}

/// `PUT` with the shape `GET` returns; `rollout` is read-only and ignored.
pub async fn put_traffic(
    State(s): State<AppState>,
    Mutation { model, auth, body }: Mutation,
) -> Result<Json<Value>, ApiError> {
    let (weights, shadow) = parse_policy(&body)?;
    let view = s.admin.set_traffic(auth, &model, &weights, shadow)?;
    Ok(Json(traffic_json(view)))
}

/// `{"version": "2"}`: all traffic to that version in one switch.
pub async fn promote(
    State(s): State<AppState>,
    Mutation { model, auth, body }: Mutation,
) -> Result<Json<Value>, ApiError> {
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("malformed promote request: {e}")))?;
    let version = v
        .get("version")
        .and_then(version_text)
        .ok_or_else(|| bad("promote: give {\"version\": \"N\"}".into()))?;
    let view = s.admin.promote(auth, &model, &version)?;
    Ok(Json(traffic_json(view)))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum VersionField {
    Text(String),
    Number(u64),
}

impl VersionField {
    fn text(self) -> String {
        match self {
            VersionField::Text(t) => t,
            VersionField::Number(n) => n.to_string(),
        }
    }
}

/// `POST .../rollout` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolloutBody {
    candidate: VersionField,
    stable: Option<VersionField>,
    steps: Vec<i64>,
    step_duration_s: f64,
    max_error_rate_increase: Option<f64>,
    max_p99_ratio: Option<f64>,
    min_requests: Option<i64>,
    max_prediction_drift: Option<f64>,
}

pub async fn start_rollout(
    State(s): State<AppState>,
    Mutation { model, auth, body }: Mutation,
) -> Result<Json<Value>, ApiError> {
    let b: RolloutBody = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("malformed rollout request: {e}")))?;
    let request = RolloutRequest {
        candidate: b.candidate.text(),
        stable: b.stable.map(VersionField::text),
        steps: b.steps,
        step_duration_s: b.step_duration_s,
        max_error_rate_increase: b.max_error_rate_increase,
        max_p99_ratio: b.max_p99_ratio,
        min_requests: b.min_requests,
        max_prediction_drift: b.max_prediction_drift,
    };
    let status = s.admin.start_rollout(auth, &model, &request)?;
    Ok(Json(rollout_json(&status)))
}

pub async fn get_rollout(
    State(s): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(rollout_json(&s.admin.rollout(&model)?)))
}

pub async fn abort_rollout(
    State(s): State<AppState>,
    Path(model): Path<String>,
    auth: Authorized,
) -> Result<Json<Value>, ApiError> {
    let status = s.admin.abort_rollout(auth, &model)?;
    Ok(Json(rollout_json(&status)))
}

fn version_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => n.as_u64().map(|n| n.to_string()),
        _ => None,
    }
}

type Weights = Vec<(String, i64)>;

/// `{"weights": {"1": 90, "2": 10}, "shadow": null | {"version": "3", "percent": 5}}`.
fn parse_policy(body: &[u8]) -> Result<(Weights, Option<(String, f64)>), ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("malformed traffic policy JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("traffic policy: expected a JSON object".into()))?;
    if let Some(k) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "weights" | "shadow" | "rollout"))
    {
        return Err(bad(format!(
            "traffic policy: unknown field {k:?} (expected weights, shadow)"
        )));
    }
    let weights = obj
        .get("weights")
        .ok_or_else(|| bad("traffic policy: weights is required ({} for none)".into()))?
        .as_object()
        .ok_or_else(|| bad("weights: expected an object {\"version\": weight}".into()))?
        .iter()
        .map(|(version, w)| {
            w.as_i64()
                .map(|w| (version.clone(), w))
                .ok_or_else(|| {
                    bad(format!(
                        "weights: version {version:?} has weight {w}; weights are non-negative integers"
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let shadow = match obj.get("shadow") {
        None | Some(Value::Null) => None,
        Some(Value::Object(s)) => {
            if let Some(k) = s
                .keys()
                .find(|k| !matches!(k.as_str(), "version" | "percent"))
            {
                return Err(bad(format!(
                    "shadow: unknown field {k:?} (expected version, percent)"
                )));
            }
            let version = s
                .get("version")
                .and_then(version_text)
                .ok_or_else(|| bad("shadow: version is required (\"N\")".into()))?;
            let percent = s
                .get("percent")
                .and_then(Value::as_f64)
                .ok_or_else(|| bad("shadow: percent is required (a number 0..=100)".into()))?;
            Some((version, percent))
        }
        Some(other) => {
            return Err(bad(format!(
                "shadow: expected null or {{\"version\", \"percent\"}}, got {other}"
            )))
        }
    };
    Ok((weights, shadow))
}

fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

pub fn traffic_json((policy, rollout): TrafficView) -> Value {
    let mut weights = Map::new();
    let mut shadow = Value::Null;
    if let Some(p) = &policy {
        for (v, w) in &p.weights {
            weights.insert(v.to_string(), json!(w));
        }
        if let Some(s) = &p.shadow {
            shadow = json!({"version": s.version.to_string(), "percent": number(s.percent)});
        }
    }
    json!({
        "weights": weights,
        "shadow": shadow,
        "rollout": rollout.as_ref().map(rollout_json),
    })
}

fn window_json(w: &Option<WindowSummary>) -> Value {
    match w {
        None => Value::Null,
        Some(w) => json!({
            "requests": w.requests,
            "errors": w.errors,
            "error_rate": w.error_rate,
            "p99_ms": w.p99.map(|d| d.as_secs_f64() * 1e3),
        }),
    }
}

pub fn rollout_json(s: &RolloutStatus) -> Value {
    json!({
        "candidate": s.spec.candidate.to_string(),
        "stable": s.stable.to_string(),
        "state": s.state.as_str(),
        "step": s.step,
        "percent": s.percent,
        "steps": s.spec.steps,
        "step_duration_s": s.spec.step_duration.as_secs_f64(),
        "max_error_rate_increase": s.spec.max_error_rate_increase,
        "max_p99_ratio": s.spec.max_p99_ratio,
        "min_requests": s.spec.min_requests,
        "max_prediction_drift": s.spec.max_prediction_drift,
        // A rollout the source declared: the wall-clock start of its schedule.
        "start_unix_s": s.spec.start
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64()),
        "reason": s.reason,
        "window": {
            "candidate": window_json(&s.candidate_window),
            "stable": window_json(&s.stable_window),
        },
    })
}
