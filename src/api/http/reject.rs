//! Everything the framework would answer by itself, answered through the one error table
//! instead (`{"error": ...}` JSON, status from `api::error`): unknown routes, wrong methods, body
//! and path rejections. And the extractors of the admin routes: [`Authorized`] from the
//! headers, which runs before [`Body`] reads a byte, so an unauthenticated client cannot make
//! the server read its body, and [`Mutation`], the two with the model of the path.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::{AppState, ADMIN_BODY_BYTES};
use crate::api::admin::Authorized;
use crate::api::error::ApiError;
use crate::error::clip;

/// The most of a framework rejection's text read to put into `{"error": ...}`: they are short.
const REJECTION_TEXT_LIMIT: usize = 4096;

impl FromRequestParts<AppState> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        let value = parts.headers.get(header::AUTHORIZATION);
        s.admin.authorize(value.map(|v| v.as_bytes()))
    }
}

/// An admin request's body (repository index and load, traffic, promotion, rollouts): a little
/// JSON, so at most [`ADMIN_BODY_BYTES`]; over it, 413 naming the limit. Read only after
/// [`Authorized`] has passed.
pub struct Body(pub Bytes);

impl FromRequest<AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &AppState) -> Result<Self, ApiError> {
        read_body(req, ADMIN_BODY_BYTES).await.map(Body)
    }
}

async fn read_body(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|e| {
            let e = e.into_inner();
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                ApiError::PayloadTooLarge(format!(
                    "request body is too large: admin requests take at most {limit} bytes"
                ))
            } else {
                ApiError::body_read(&*e)
            }
        })
}

/// A mutation of one model (`.../models/{model}/...`): the model, the proof the token passed
/// (from the headers), then the body (read only after that).
pub struct Mutation {
    pub model: String,
    pub auth: Authorized,
    pub body: Bytes,
}

impl FromRequest<AppState> for Mutation {
    type Rejection = ApiError;

    async fn from_request(req: Request, s: &AppState) -> Result<Self, ApiError> {
        let (mut parts, body) = req.into_parts();
        let Path(model) = Path::<String>::from_request_parts(&mut parts, s)
            .await
            .map_err(|e| rejection(e.status(), e.body_text(), s.max_request_bytes))?;
        let auth = Authorized::from_request_parts(&mut parts, s).await?;
        // With `allow_model_upload`, a load carries model files: up to `max_request_bytes`
        // from a caller already admitted.
        let limit = s
            .admin
            .upload_limit()
            .map_or(ADMIN_BODY_BYTES, |l| l.max(ADMIN_BODY_BYTES));
        let body = read_body(Request::from_parts(parts, body), limit).await?;
        Ok(Mutation { model, auth, body })
    }
}

/// A framework rejection (`status`, its text) as the error the table answers with.
pub fn rejection(status: StatusCode, text: String, max_request_bytes: usize) -> ApiError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => too_large(max_request_bytes),
        StatusCode::NOT_FOUND => ApiError::NoRoute(text),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed(text),
        _ => ApiError::BadRequest(text),
    }
}

pub fn too_large(max_request_bytes: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "request body is too large: it exceeds the server's max_request_bytes ({max_request_bytes} bytes)"
    ))
}

/// Fallback of every path no route has.
pub async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NoRoute(format!("no route {method} {}", clip(uri.path())))
}

/// Fallback of a route asked with a method it does not answer.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "method {method} is not allowed on {}",
        clip(uri.path())
    ))
}

/// The last layer: an error answer that is not JSON yet (a rejection the framework built before
/// any handler ran, e.g. a path that is not UTF-8) becomes the table's answer.
pub async fn json_errors(resp: Response, max_request_bytes: usize) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, REJECTION_TEXT_LIMIT)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let text = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let mut answer = rejection(status, text, max_request_bytes).into_response();
    // Headers the framework set for the client (Allow on a 405) stay.
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name, value.clone());
        }
    }
    if rejection(status, String::new(), 0).http_status() != status {
        // A status the table has no word for (e.g. 415) keeps its number.
        *answer.status_mut() = status;
    }
    answer
}
