//! The transport-free error vocabulary: every error a client can see maps once to an
//! [`ErrorCode`], and everything else is derived from that code in one place each: the HTTP
//! status and `tonic::Code` in `api::error`, the `code` label of `requests_total` here.
//!
//! Where each domain error is mapped (`fn code(&self) -> ErrorCode`, once per enum):
//! `routing::InferError`, `registry::manager::ControlError`, `rollout::TrafficError`, and the
//! transport's own `api::error::ApiError`. Lower layers (`backend::BackendError`,
//! `registry::loader::LoadError`, `batching::BatchError`) reach clients only wrapped in one of
//! those: a backend or batch failure as `InferError`, a load failure as `ControlError`.

/// What kind of failure an answer reports, named as gRPC names its codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed or does not fit the model (HTTP 400).
    InvalidArgument,
    /// No such model, version or rollout (HTTP 404).
    NotFound,
    /// Known but not serving: not ready, or shutting down (HTTP 503).
    Unavailable,
    /// Refused at once because the model or server is full; retry soon (HTTP 429).
    ResourceExhausted,
    /// The body is over the size limit (HTTP 413; gRPC has no closer code than
    /// RESOURCE_EXHAUSTED).
    PayloadTooLarge,
    /// The deadline passed before the model computed the request (HTTP 504).
    DeadlineExceeded,
    /// The client went away (HTTP 499, nginx's "client closed request").
    Cancelled,
    /// The server or the model failed (HTTP 500).
    Internal,
    /// An extension or feature this server does not offer (HTTP 501).
    Unimplemented,
    /// No or bad credentials (HTTP 401).
    Unauthenticated,
    /// Credentials that do not allow this (HTTP 403).
    PermissionDenied,
    /// Not allowed in the current state: wrong control mode, a rollout running (HTTP 409).
    FailedPrecondition,
}

impl ErrorCode {
    /// The `code` label of `requests_total`: one vocabulary for both protocols (gRPC's names).
    pub const fn label(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::ResourceExhausted | ErrorCode::PayloadTooLarge => "resource_exhausted",
            ErrorCode::DeadlineExceeded => "deadline_exceeded",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::Internal => "internal",
            ErrorCode::Unimplemented => "unimplemented",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::FailedPrecondition => "failed_precondition",
        }
    }
}
