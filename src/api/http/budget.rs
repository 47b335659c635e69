//! The inference body read under the server's `max_inflight_bytes` budget: the bytes a
//! request declares (`Content-Length`) are taken before any is read, a body that streams past
//! its declaration grows the reservation as it arrives, and a request that does not fit is
//! refused at once (429). The bytes stay taken until the request is answered. A gzip or
//! deflate body (`Content-Encoding`) is decoded as it arrives, under the same bound: the decoded
//! bytes count against `max_request_bytes` and the budget, so a compression bomb is refused
//! (413) once it has decoded past the limit, never inflated whole.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use http_body_util::BodyExt;

use super::AppState;
use crate::api::compression::{Encoding, InflateError, Inflater};
use crate::api::error::ApiError;

fn too_large(limit: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "request body is too large: it exceeds the server's max_request_bytes ({limit} bytes)"
    ))
}

/// Middleware on the inference routes: reads the body within the budget, then runs the
/// handler on it, holding the reservation until the answer is made.
pub(super) async fn within_budget(State(s): State<AppState>, req: Request, next: Next) -> Response {
    match read(&s, req).await {
        Ok((req, permit)) => {
            let resp = next.run(req).await;
            drop(permit);
            resp
        }
        Err(e) => e.into_response(),
    }
}

async fn read(
    s: &AppState,
    req: Request,
) -> Result<(Request, crate::policy::admission::BytePermit), ApiError> {
    let max = s.max_request_bytes;
    let (parts, mut body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large(max));
    }
    let encoding = Encoding::of_request(
        parts
            .headers
            .get(header::CONTENT_ENCODING)
            .map(|v| v.as_bytes()),
    )
    .map_err(ApiError::BadRequest)?;
    let mut permit = s.router.take_inflight_bytes(declared.unwrap_or(0))?;
    let mut inflater = encoding.map(|e| Inflater::new(e, max, declared.unwrap_or(0)));
    let mut buf = BytesMut::with_capacity(if inflater.is_some() {
        0
    } else {
        declared.unwrap_or(0)
    });
    let mut received = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::body_read(&*e.into_inner()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        received = received.saturating_add(data.len());
        if received > max {
            return Err(too_large(max));
        }
        let total = match inflater.as_mut() {
            Some(i) => {
                i.push(&data).map_err(|e| undecodable(encoding, e, max))?;
                i.decoded_len().max(received)
            }
            None => {
                buf.extend_from_slice(&data);
                received
            }
        };
        if !permit.try_grow_to(total) {
            return Err(s.router.inflight_bytes_refusal(total).into());
        }
    }
    let body: Bytes = match inflater {
        Some(i) => i
            .finish()
            .map_err(|e| undecodable(encoding, e, max))?
            .into(),
        None => buf.freeze(),
    };
    let mut parts = parts;
    if encoding.is_some() {
        // The handler sees the decoded body, as if it had been sent so.
        parts.headers.remove(header::CONTENT_ENCODING);
        parts
            .headers
            .insert(header::CONTENT_LENGTH, body.len().into());
    }
    Ok((Request::from_parts(parts, Body::from(body)), permit))
}

fn undecodable(encoding: Option<Encoding>, e: InflateError, max: usize) -> ApiError {
    match e {
        InflateError::TooLarge => too_large(max),
        InflateError::Malformed(why) => ApiError::BadRequest(format!(
            "request body is not valid {}: {why}",
            encoding.map_or("identity", Encoding::name)
        )),
    }
}
