//! `GET /v2/models/{m}[/versions/{v}]/drift`: a version's drift report as JSON, the reference
//! beside the last closed window and the open one.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use super::AppState;
use crate::api::error::ApiError;
use crate::drift::{kind_name, stats, Report};

pub(super) async fn model_drift(
    State(s): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(report_json(&s.router.drift(&model, None)?)))
}

pub(super) async fn version_drift(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(report_json(&s.router.drift(&model, Some(&version))?)))
}

/// The report as JSON (the gRPC admin answer carries this same document).
pub fn report_json(r: &Report) -> Value {
    let features: Vec<Value> = r
        .features
        .iter()
        .map(|f| {
            let p = &f.profile;
            let closed = f.closed.as_ref().map(|(counts, s)| {
                json!({
                    "counts": counts,
                    "proportions": stats::proportions(counts),
                    "psi": s.psi,
                    "js_distance": s.js_distance,
                    "p_value": s.p_value,
                    "drifting": s.drifting,
                })
            });
            json!({
                "tensor": f.tensor,
                "role": if f.role == crate::drift::profile::Role::Input { "input" } else { "output" },
                "feature": p.name,
                "kind": kind_name(p.kind),
                "edges": p.edges,
                "categories": p.categories,
                "reference": p.proportions,
                "closed_window": closed,
                "current_window": {
                    "counts": f.current,
                    "proportions": stats::proportions(&f.current),
                },
            })
        })
        .collect();
    json!({
        "model": r.model,
        "version": r.version,
        "state": if r.baseline.is_some() { "collecting_baseline" } else { "monitoring" },
        "baseline": r.baseline.map(|(rows, needed)| json!({"rows": rows, "needed": needed})),
        "window_seconds": r.window.as_secs_f64(),
        "min_count": r.min_count,
        "sample_rate": r.sample_rate,
        "closed_window": r.closed.map(|(index, rows, length)| json!({
            "index": index, "rows": rows, "seconds": length.as_secs_f64(),
        })),
        "current_window": {"rows": r.current_rows},
        "drifting_share": r.drifting_share,
        "features": features,
    })
}
