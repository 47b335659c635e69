//! The one table from [`ErrorCode`] to HTTP status and gRPC code, so both transports answer a
//! failure the same way; each domain error says its code once (`crate::error`).

use axum::http::StatusCode;

use crate::error::{clip_message, ErrorCode};
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
    /// No route has this path.
    #[error("{0}")]
    NoRoute(String),
    /// A named thing the request refers to is not there (a shared memory region: Triton's
    /// NOT_FOUND).
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error(transparent)]
    Control(ControlError),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Traffic(#[from] TrafficError),
    /// The body did not arrive within the connection's body read timeout.
    #[error("request body not received within {} s", .0.as_secs_f64())]
    BodyTimeout(std::time::Duration),
}

impl ApiError {
    /// The transport's own failures mapped to the shared vocabulary; domain errors bring theirs.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Infer(e) => e.code(),
            ApiError::BadRequest(_) => ErrorCode::InvalidArgument,
            ApiError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            ApiError::Unimplemented(_) => ErrorCode::Unimplemented,
            ApiError::NoRoute(_) | ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            ApiError::Control(e) => e.code(),
            ApiError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            ApiError::Forbidden(_) => ErrorCode::PermissionDenied,
            ApiError::Traffic(e) => e.code(),
            ApiError::BodyTimeout(_) => ErrorCode::RequestTimeout,
        }
    }

    pub fn http_status(&self) -> StatusCode {
        http_status(self.code())
    }

    /// The message a client reads, bounded whatever client strings it repeats.
    pub fn message(&self) -> String {
        clip_message(self.to_string())
    }

    pub fn grpc_code(&self) -> tonic::Code {
        grpc_code(self.code())
    }
}

/// The HTTP status of each code: the one place HTTP answers are decided.
pub fn http_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        // nginx's "client closed request": nobody reads it, but logs show why.
        ErrorCode::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorCode::FailedPrecondition => StatusCode::CONFLICT,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
    }
}

/// The gRPC code of each code: the one place gRPC answers are decided.
pub fn grpc_code(code: ErrorCode) -> tonic::Code {
    match code {
        ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorCode::NotFound => tonic::Code::NotFound,
        ErrorCode::Unavailable => tonic::Code::Unavailable,
        ErrorCode::ResourceExhausted | ErrorCode::PayloadTooLarge => tonic::Code::ResourceExhausted,
        ErrorCode::DeadlineExceeded | ErrorCode::RequestTimeout => tonic::Code::DeadlineExceeded,
        ErrorCode::Cancelled => tonic::Code::Cancelled,
        ErrorCode::Internal => tonic::Code::Internal,
        ErrorCode::Unimplemented | ErrorCode::MethodNotAllowed => tonic::Code::Unimplemented,
        ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
        ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
        ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
    }
}

impl ApiError {
    /// A failed body read: the body deadline's own answer when that is what failed (found
    /// anywhere in the error's source chain), else 400 with the reason.
    pub fn body_read(e: &(dyn std::error::Error + 'static)) -> ApiError {
        let mut source = Some(e);
        while let Some(err) = source {
            if let Some(timeout) = err.downcast_ref::<super::serve::BodyTimeout>() {
                return ApiError::BodyTimeout(timeout.0);
            }
            source = err.source();
        }
        ApiError::BadRequest(format!("cannot read the request body: {e}"))
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> tonic::Status {
        tonic::Status::new(e.grpc_code(), e.message())
    }
}

impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let body = serde_json::json!({ "error": self.message() });
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
                ApiError::BodyTimeout(std::time::Duration::from_secs(3)),
                408,
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

    /// Every variant, with the status, code and label it answered with before the table was
    /// derived from `ErrorCode`.
    #[test]
    fn every_error_keeps_its_status_code_and_label() {
        let s = String::new;
        let infer = [
            (
                InferError::ModelNotFound(s()),
                404,
                tonic::Code::NotFound,
                "not_found",
            ),
            (
                InferError::VersionNotFound {
                    model: s(),
                    version: s(),
                },
                404,
                tonic::Code::NotFound,
                "not_found",
            ),
            (
                InferError::NotReady {
                    model: s(),
                    reason: s(),
                },
                404,
                tonic::Code::NotFound,
                "not_found",
            ),
            (
                InferError::Unavailable(s()),
                503,
                tonic::Code::Unavailable,
                "unavailable",
            ),
            (
                InferError::InvalidInput(s()),
                400,
                tonic::Code::InvalidArgument,
                "invalid_argument",
            ),
            (
                InferError::Overloaded {
                    model: s(),
                    reason: s(),
                },
                429,
                tonic::Code::ResourceExhausted,
                "resource_exhausted",
            ),
            (
                InferError::DeadlineExceeded(s()),
                504,
                tonic::Code::DeadlineExceeded,
                "deadline_exceeded",
            ),
            (
                InferError::Cancelled,
                499,
                tonic::Code::Cancelled,
                "cancelled",
            ),
            (
                InferError::Internal {
                    model: s(),
                    reason: s(),
                },
                500,
                tonic::Code::Internal,
                "internal",
            ),
        ];
        for (err, status, code, label) in infer {
            assert_eq!(err.code().label(), label, "{err}");
            let err = ApiError::from(err);
            assert_eq!(err.http_status().as_u16(), status, "{err}");
            assert_eq!(err.grpc_code(), code, "{err}");
        }
        let others = [
            (ApiError::BadRequest(s()), 400, tonic::Code::InvalidArgument),
            (
                ApiError::PayloadTooLarge(s()),
                413,
                tonic::Code::ResourceExhausted,
            ),
            (
                ApiError::Unimplemented(s()),
                501,
                tonic::Code::Unimplemented,
            ),
            (
                ApiError::Unauthenticated(s()),
                401,
                tonic::Code::Unauthenticated,
            ),
            (ApiError::Forbidden(s()), 403, tonic::Code::PermissionDenied),
            (ApiError::NoRoute(s()), 404, tonic::Code::NotFound),
            (ApiError::NotFound(s()), 404, tonic::Code::NotFound),
            (
                ApiError::MethodNotAllowed(s()),
                405,
                tonic::Code::Unimplemented,
            ),
            (
                ApiError::Control(ControlError::InvalidName(s())),
                400,
                tonic::Code::InvalidArgument,
            ),
            (
                ApiError::Control(ControlError::OutsideRepository(s())),
                400,
                tonic::Code::InvalidArgument,
            ),
            (
                ApiError::Control(ControlError::LoadFailed {
                    model: s(),
                    reason: s(),
                }),
                400,
                tonic::Code::InvalidArgument,
            ),
            (
                ApiError::Control(ControlError::NotFound(s())),
                404,
                tonic::Code::NotFound,
            ),
            (
                ApiError::Control(ControlError::NotAllowed(s())),
                409,
                tonic::Code::FailedPrecondition,
            ),
            (
                ApiError::Control(ControlError::Repository(s())),
                500,
                tonic::Code::Internal,
            ),
            (
                ApiError::Control(ControlError::NotInRepository(s())),
                500,
                tonic::Code::Internal,
            ),
            (
                InferError::BadVersion(s()).into(),
                400,
                tonic::Code::InvalidArgument,
            ),
            (
                InferError::VersionNotReady {
                    model: s(),
                    version: s(),
                    reason: s(),
                }
                .into(),
                503,
                tonic::Code::Unavailable,
            ),
            (
                ApiError::Control(ControlError::Upload(
                    crate::registry::upload::UploadError::TooLarge(s()),
                )),
                413,
                tonic::Code::ResourceExhausted,
            ),
            (
                TrafficError::ModelNotFound(s()).into(),
                404,
                tonic::Code::NotFound,
            ),
            (
                TrafficError::NoRollout(s()).into(),
                404,
                tonic::Code::NotFound,
            ),
            (
                TrafficError::Invalid(s()).into(),
                400,
                tonic::Code::InvalidArgument,
            ),
            (
                TrafficError::Conflict(s()).into(),
                409,
                tonic::Code::FailedPrecondition,
            ),
        ];
        for (err, status, code) in others {
            assert_eq!(err.http_status().as_u16(), status, "{err:?}");
            assert_eq!(err.grpc_code(), code, "{err:?}");
        }
    }
}
