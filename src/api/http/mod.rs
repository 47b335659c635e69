//! HTTP/REST front end (axum): the Open Inference Protocol routes plus Triton's model
//! configuration and statistics routes. Handlers translate and call `Router`; nothing more. The
//! inference body is [`codec`], the metadata/config/statistics JSON [`views`], the traffic
//! control plane [`traffic`].
//! Long because the one route table holds every handler of the OIP and Triton's extensions
//! (inference with compression, shared memory and classification, model control with load
//! parameters); splitting the infer and repository handlers into files of their own is next.

mod budget;
pub(super) mod codec;
pub(super) mod data;
pub(crate) mod drift;
mod params;
mod reject;
mod shm;
mod status;
mod traffic;
mod views;
mod wire;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router as AxumRouter};
use serde_json::{json, Value};
use tracing::Instrument;

use super::admin::{Admin, Authorized};
use super::compression::Encoding;
use super::error::ApiError;
use super::load_params::{self, Param};
use super::server_extensions;
use super::shm::SharedMemory;
use crate::metrics::Protocol;
use crate::registry::upload::Upload;
use crate::routing::request::{route_key, ROUTE_KEY};
use crate::routing::Router;
use crate::telemetry;
use reject::{Body, Mutation};
pub use status::MetricsPort;

pub const HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";

/// Body limit of the admin routes (index, load, traffic, rollouts), whose bodies are a little
/// JSON: far below `max_request_bytes`, so a large body costs no memory there.
pub const ADMIN_BODY_BYTES: usize = 64 * 1024;

#[derive(Clone)]
struct AppState {
    router: Arc<Router>,
    admin: Arc<Admin>,
    shm: Arc<SharedMemory>,
    max_request_bytes: usize,
    server_name: Arc<str>,
}

/// The axum app for the inference port; `server_name` is what server metadata reports.
pub fn app(
    router: Arc<Router>,
    admin: Arc<Admin>,
    shm: Arc<SharedMemory>,
    max_request_bytes: usize,
    server_name: &str,
) -> AxumRouter {
    let state = AppState {
        router: router.clone(),
        admin,
        shm,
        max_request_bytes,
        server_name: server_name.into(),
    };
    let budget = || axum::middleware::from_fn_with_state(state.clone(), budget::within_budget);
    AxumRouter::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/stats", get(all_stats))
        .route("/v2/models/{model}", get(model_metadata))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(version_metadata),
        )
        .route("/v2/models/{model}/ready", get(model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(version_ready),
        )
        .route("/v2/models/{model}/config", get(model_config))
        .route(
            "/v2/models/{model}/versions/{version}/config",
            get(version_config),
        )
        .route("/v2/models/{model}/drift", get(drift::model_drift))
        .route(
            "/v2/models/{model}/versions/{version}/drift",
            get(drift::version_drift),
        )
        .route("/v2/models/{model}/stats", get(model_stats))
        .route(
            "/v2/models/{model}/versions/{version}/stats",
            get(version_stats),
        )
        .route(
            "/v2/models/{model}/infer",
            post(model_infer).layer(budget()),
        )
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(version_infer).layer(budget()),
        )
        .route(
            "/v2/models/{model}/traffic",
            get(traffic::get_traffic).merge(put(traffic::put_traffic)),
        )
        .route("/v2/models/{model}/traffic/promote", post(traffic::promote))
        .route(
            "/v2/models/{model}/rollout",
            get(traffic::get_rollout)
                .merge(post(traffic::start_rollout))
                .merge(axum::routing::delete(traffic::abort_rollout)),
        )
        .route(
            "/v2/models/{model}/rollout/abort",
            post(traffic::abort_rollout),
        )
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/models/{model}/load", post(repository_load))
        .route(
            "/v2/repository/models/{model}/unload",
            post(repository_unload),
        )
        .route("/v2/systemsharedmemory/status", get(shm::status_all))
        .route(
            "/v2/systemsharedmemory/region/{name}/status",
            get(shm::status_one),
        )
        .route(
            "/v2/systemsharedmemory/region/{name}/register",
            post(shm::register),
        )
        .route(
            "/v2/systemsharedmemory/unregister",
            post(shm::unregister_all),
        )
        .route(
            "/v2/systemsharedmemory/region/{name}/unregister",
            post(shm::unregister_one),
        )
        .route(
            "/v2/cudasharedmemory/{*rest}",
            get(shm::cuda).post(shm::cuda),
        )
        .merge(status::routes())
        .fallback(reject::no_route)
        .method_not_allowed_fallback(reject::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            finish,
        ))
        .with_state(state)
}

/// Every answer's last step: framework rejections in the error table's JSON, and while
/// draining, `Connection: close`, so keep-alive clients reconnect (to another replica) instead
/// of racing our listener's close with a reused socket.
async fn finish(State(s): State<AppState>, resp: Response) -> Response {
    let mut resp = reject::json_errors(resp, s.max_request_bytes).await;
    if s.router.is_draining() {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// KServe v2's health bodies: `{"live": true}`, `{"ready": bool}` (with 503 when not ready),
/// which the kserve SDK parses; tritonclient reads only the status.
async fn live() -> Json<Value> {
    Json(json!({"live": true}))
}

async fn ready(State(s): State<AppState>) -> (StatusCode, Json<Value>) {
    ready_answer(s.router.server_ready())
}

fn ready_answer(ready: bool) -> (StatusCode, Json<Value>) {
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"ready": ready})))
}

async fn server_metadata(State(s): State<AppState>) -> Json<Value> {
    Json(json!({
        "name": &*s.server_name,
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": server_extensions(),
    }))
}

type ReadyAnswer = Result<(StatusCode, Json<Value>), ApiError>;

/// The spec's model ready body: `{"name": ..., "ready": bool}`.
fn model_ready_answer(model: String, ready: bool) -> (StatusCode, Json<Value>) {
    let (status, _) = ready_answer(ready);
    (status, Json(json!({"name": model, "ready": ready})))
}

async fn model_ready(State(s): State<AppState>, Path(model): Path<String>) -> ReadyAnswer {
    let ready = s.router.model_ready(&model, None)?;
    Ok(model_ready_answer(model, ready))
}

async fn version_ready(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> ReadyAnswer {
    let ready = s.router.model_ready(&model, Some(&version))?;
    Ok(model_ready_answer(model, ready))
}

async fn model_metadata(
    State(s): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    views::metadata_json(&s.router, &model, None)
}

async fn version_metadata(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    views::metadata_json(&s.router, &model, Some(&version))
}

async fn model_config(
    State(s): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(views::config_json(&s.router.version(&model, None)?)))
}

async fn version_config(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(views::config_json(
        &s.router.version(&model, Some(&version))?,
    )))
}

async fn all_stats(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(views::stats_json(s.router.statistics(None, None)?))
}

async fn model_stats(
    State(s): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(views::stats_json(s.router.statistics(Some(&model), None)?))
}

async fn version_stats(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(views::stats_json(
        s.router.statistics(Some(&model), Some(&version))?,
    ))
}

async fn model_infer(
    State(s): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    infer(&s, &model, None, &headers, body).await
}

async fn version_infer(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    infer(&s, &model, Some(&version), &headers, body).await
}

/// One inference call, in its trace span when traces are exported (the caller's W3C
/// `traceparent` / `tracestate` headers make it a child of the caller's span).
async fn infer(
    s: &AppState,
    model: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let span = telemetry::server_span(
        Protocol::Http,
        "POST /v2/models/{model}/infer",
        header("traceparent"),
        header("tracestate"),
    );
    if span.is_disabled() {
        return infer_untraced(s, model, version, headers, body).await;
    }
    let answer = infer_untraced(s, model, version, headers, body)
        .instrument(span.clone())
        .await
        .unwrap_or_else(IntoResponse::into_response);
    telemetry::record_http_status(&span, answer.status().as_u16());
    Ok(answer)
}

async fn infer_untraced(
    s: &AppState,
    model: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let router = &s.router;
    let body =
        body.map_err(|e| reject::rejection(e.status(), e.body_text(), s.max_request_bytes))?;
    // A Content-Encoding was decoded (and removed) by `budget` before this handler.
    let header_len = match headers.get(HEADER_CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "Inference-Header-Content-Length {v:?} is not a byte count"
                    ))
                })?,
        ),
    };
    let mut decoded = codec::decode(model, version, body, header_len)
        .inspect_err(|_| router.count_undecodable(model, Protocol::Http))?;
    let key = headers.get(ROUTE_KEY);
    decoded.request.route_key = route_key(key.map(HeaderValue::as_bytes)).map_err(|e| {
        // The value as received, escaped: it tells which client sent it.
        ApiError::BadRequest(match key {
            Some(v) => format!("{e}, got {v:?}"),
            None => e,
        })
    })?;
    let pending = std::mem::take(&mut decoded.shm.inputs);
    let _held = (!pending.is_empty())
        .then(|| router.take_inflight_bytes(super::shm::input_bytes(&pending)))
        .transpose()?;
    s.shm
        .resolve(&mut decoded.request, pending, s.max_request_bytes)
        .await?;
    let mut response = router.infer(decoded.request).await?;
    router.classify(&mut response, &decoded.classification)?;
    s.shm.deliver(&response, &decoded.shm.outputs).await?;
    let (body, json_len) = telemetry::encode_span().in_scope(|| {
        codec::encode(
            &response,
            &decoded.output_binary,
            decoded.binary_default,
            &decoded.shm.outputs,
        )
    })?;
    let accepted = Encoding::accepted(headers.get(header::ACCEPT_ENCODING).map(|v| v.as_bytes()));
    let mut resp = match accepted {
        Some(enc) => compressed(enc, model, body).await?,
        None => body.into_response(),
    };
    let h = resp.headers_mut();
    match json_len {
        Some(len) => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(HEADER_CONTENT_LENGTH, HeaderValue::from(len));
        }
        None => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
    }
    Ok(resp)
}

/// An answer body compressed as the client accepts (`Accept-Encoding`); the binary extension's
/// `Inference-Header-Content-Length` still counts the decoded JSON, as tritonclient reads it.
/// Large bodies compress off the async runtime.
async fn compressed(enc: Encoding, model: &str, body: Bytes) -> Result<Response, ApiError> {
    const INLINE: usize = 64 * 1024;
    let packed = if body.len() <= INLINE {
        enc.compress(&body)
    } else {
        tokio::task::spawn_blocking(move || enc.compress(&body))
            .await
            .map_err(|e| crate::routing::InferError::Internal {
                model: model.to_owned(),
                reason: format!("compressing the answer: {e}"),
            })?
    };
    let mut resp = packed.into_response();
    resp.headers_mut().insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(enc.name()),
    );
    Ok(resp)
}

/// `POST /v2/repository/index` with an optional `{"ready": true}` body.
async fn repository_index(
    State(s): State<AppState>,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let ready_only = if body.is_empty() {
        false
    } else {
        let v: Value = serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!("malformed repository index request: {e}"))
        })?;
        v.get("ready").and_then(Value::as_bool).unwrap_or(false)
    };
    let rows: Vec<Value> = s
        .admin
        .index(ready_only)?
        .into_iter()
        .map(|r| {
            let mut row = json!({"name": r.name, "state": r.state, "reason": r.reason});
            if !r.version.is_empty() {
                row["version"] = json!(r.version);
            }
            row
        })
        .collect();
    Ok(Json(Value::Array(rows)))
}

/// The upload a load request's Triton `parameters` describe (`config` JSON, base64 `file:`
/// contents), if any.
fn load_parameters(model: &str, body: &Bytes) -> Result<Option<Upload>, ApiError> {
    if body.is_empty() {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("malformed load request: {e}")))?;
    let Some(params) = v.get("parameters") else {
        return Ok(None);
    };
    let Value::Object(params) = params else {
        return Err(ApiError::BadRequest(
            "load request 'parameters' must be an object".into(),
        ));
    };
    let params = params.iter().map(|(k, v)| {
        let value = match v {
            Value::String(s) => Param::Str(s.clone()),
            Value::Bool(_) => Param::Other("bool"),
            Value::Number(_) => Param::Other("int"),
            _ => Param::Other("json"),
        };
        (k.clone(), value)
    });
    load_params::upload(model, params)
}

async fn repository_load(
    State(s): State<AppState>,
    Mutation { model, auth, body }: Mutation,
) -> Result<Json<Value>, ApiError> {
    let upload = load_parameters(&model, &body)?;
    s.admin.load(auth, &model, upload).await?;
    Ok(Json(json!({})))
}

async fn repository_unload(
    State(s): State<AppState>,
    Path(model): Path<String>,
    auth: Authorized,
) -> Result<Json<Value>, ApiError> {
    s.admin.unload(auth, &model).await?;
    Ok(Json(json!({})))
}
