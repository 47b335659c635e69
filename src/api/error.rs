//! The one table from domain errors to HTTP status and gRPC code, so both transports answer a
//! failure the same way.

use axum::http::StatusCode;

use crate::registry::manager::ControlError;
use crate::rollout::TrafficError;
use crate::routing::InferError;

/// Everything a transport can answer with, besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Infer(#[from] InferError),
    /// The request could not be decoded (malformed JSON, bad binary header, bad tensor data).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error(transparent)]
    Control(ControlError),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Traffic(#[from] TrafficError),
}

impl ApiError {
    pub fn http_status(&self) -> StatusCode {
        match self {
            ApiError::Infer(e) => match e {
                InferError::ModelNotFound(_) | InferError::VersionNotFound { .. } => {
                    StatusCode::NOT_FOUND
                }
                InferError::InvalidInput(_) => StatusCode::BAD_REQUEST,
                InferError::NotReady { .. } | InferError::Unavailable(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                InferError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
                InferError::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
                // nginx's "client closed request": nobody reads it, but logs show why.
                InferError::Cancelled => {
                    StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
                }
                InferError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unimplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Control(e) => match e {
                ControlError::InvalidName(_)
                | ControlError::OutsideRepository(_)
                | ControlError::LoadFailed { .. } => StatusCode::BAD_REQUEST,
                ControlError::NotFound(_) => StatusCode::NOT_FOUND,
                ControlError::NotAllowed(_) => StatusCode::CONFLICT,
                ControlError::Repository(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Traffic(e) => match e {
                TrafficError::ModelNotFound(_) | TrafficError::NoRollout(_) => {
                    StatusCode::NOT_FOUND
                }
                TrafficError::Invalid(_) => StatusCode::BAD_REQUEST,
                TrafficError::Conflict(_) => StatusCode::CONFLICT,
            },
        }
    }

    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            ApiError::Infer(e) => match e {
                InferError::ModelNotFound(_) | InferError::VersionNotFound { .. } => {
                    tonic::Code::NotFound
                }
                InferError::InvalidInput(_) => tonic::Code::InvalidArgument,
                InferError::NotReady { .. } | InferError::Unavailable(_) => {
                    tonic::Code::Unavailable
                }
                InferError::Overloaded { .. } => tonic::Code::ResourceExhausted,
                InferError::DeadlineExceeded(_) => tonic::Code::DeadlineExceeded,
                InferError::Cancelled => tonic::Code::Cancelled,
                InferError::Internal { .. } => tonic::Code::Internal,
            },
            ApiError::BadRequest(_) => tonic::Code::InvalidArgument,
            ApiError::PayloadTooLarge(_) => tonic::Code::ResourceExhausted,
            ApiError::Unimplemented(_) => tonic::Code::Unimplemented,
            ApiError::Control(e) => match e {
                ControlError::InvalidName(_)
                | ControlError::OutsideRepository(_)
                | ControlError::LoadFailed { .. } => tonic::Code::InvalidArgument,
                ControlError::NotFound(_) => tonic::Code::NotFound,
                ControlError::NotAllowed(_) => tonic::Code::FailedPrecondition,
                ControlError::Repository(_) => tonic::Code::Internal,
            },
            ApiError::Unauthenticated(_) => tonic::Code::Unauthenticated,
            ApiError::Forbidden(_) => tonic::Code::PermissionDenied,
            ApiError::Traffic(e) => match e {
                TrafficError::ModelNotFound(_) | TrafficError::NoRollout(_) => {
                    tonic::Code::NotFound
                }
                TrafficError::Invalid(_) => tonic::Code::InvalidArgument,
                TrafficError::Conflict(_) => tonic::Code::FailedPrecondition,
            },
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> tonic::Status {
        tonic::Status::new(e.grpc_code(), e.to_string())
    }
}

impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let body = serde_json::json!({ "error": self.to_string() });
        let status = self.http_status();
        let mut resp = (status, axum::Json(body)).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            // Refusals are immediate and overload is usually brief: try again in a second.
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_transports_map_each_error_consistently() {
        let cases = [
            (
                ApiError::from(InferError::ModelNotFound("m".into())),
                404,
                tonic::Code::NotFound,
            ),
            (
                InferError::InvalidInput("x".into()).into(),
                400,
                tonic::Code::InvalidArgument,
            ),
            (
                InferError::Overloaded {
                    model: "m".into(),
                    reason: "r".into(),
                }
                .into(),
                429,
                tonic::Code::ResourceExhausted,
            ),
            (
                InferError::DeadlineExceeded("m".into()).into(),
                504,
                tonic::Code::DeadlineExceeded,
            ),
            (
                ApiError::PayloadTooLarge("big".into()),
                413,
                tonic::Code::ResourceExhausted,
            ),
            (
                ApiError::BadRequest("json".into()),
                400,
                tonic::Code::InvalidArgument,
            ),
            (
                TrafficError::Invalid("weights".into()).into(),
                400,
                tonic::Code::InvalidArgument,
            ),
            (
                TrafficError::Conflict("running".into()).into(),
                409,
                tonic::Code::FailedPrecondition,
            ),
            (
                TrafficError::NoRollout("m".into()).into(),
                404,
                tonic::Code::NotFound,
            ),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.http_status().as_u16(), status, "{err}");
            assert_eq!(err.grpc_code(), code, "{err}");
        }
    }
}
