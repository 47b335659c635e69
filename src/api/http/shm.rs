//! HTTP routes of Triton's system shared memory extension (`/v2/systemsharedmemory/...`) →
//! [`crate::api::shm`]; the CUDA shared memory routes answer that this server has none.

use axum::extract::{Path, State};
use axum::http::Method;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::reject::Body;
use super::AppState;
use crate::api::admin::Authorized;
use crate::api::error::ApiError;
use crate::api::shm::RegionStatus;

#[derive(Deserialize)]
struct RegisterBody {
    key: String,
    #[serde(default)]
    offset: u64,
    byte_size: u64,
}

fn status_json(regions: Vec<RegionStatus>) -> Json<Value> {
    Json(Value::Array(
        regions
            .into_iter()
            .map(|r| json!({"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size}))
            .collect(),
    ))
}

pub(super) async fn status_all(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(status_json(s.shm.status(None)?))
}

pub(super) async fn status_one(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(status_json(s.shm.status(Some(&name))?))
}

pub(super) async fn register(
    State(s): State<AppState>,
    Path(name): Path<String>,
    auth: Authorized,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let b: RegisterBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "malformed shared memory register request (want {{\"key\", \"offset\", \"byte_size\"}}): {e}"
        ))
    })?;
    s.shm.register(
        auth,
        RegionStatus {
            name,
            key: b.key,
            offset: b.offset,
            byte_size: b.byte_size,
        },
    )?;
    Ok(Json(json!({})))
}

pub(super) async fn unregister_all(
    State(s): State<AppState>,
    auth: Authorized,
) -> Result<Json<Value>, ApiError> {
    s.shm.unregister(auth, None)?;
    Ok(Json(json!({})))
}

pub(super) async fn unregister_one(
    State(s): State<AppState>,
    Path(name): Path<String>,
    auth: Authorized,
) -> Result<Json<Value>, ApiError> {
    s.shm.unregister(auth, Some(&name))?;
    Ok(Json(json!({})))
}

/// `/v2/cudasharedmemory/...` as Triton's CPU-only build answers it: there are never CUDA
/// regions, so unregistering (all or one) succeeds, the status is empty and a named region is
/// not found; registering is not offered.
pub(super) async fn cuda(
    method: Method,
    Path(rest): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let parts: Vec<&str> = rest.split('/').collect();
    match (method, parts.as_slice()) {
        (Method::POST, ["unregister"] | ["region", _, "unregister"]) => Ok(Json(json!({}))),
        (Method::GET, ["status"]) => Ok(Json(json!([]))),
        (Method::GET, ["region", name, "status"]) => Err(crate::api::shm::cuda_not_found(name)),
        _ => Err(ApiError::Unimplemented(
            "CUDA shared memory is not supported by this server (system shared memory is, when enabled)"
                .into(),
        )),
    }
}
