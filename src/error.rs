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
    /// The client did not send its request body within `body_read_timeout_secs` (HTTP 408;
    /// gRPC has no closer code than DEADLINE_EXCEEDED: a time bound passed before an answer).
    RequestTimeout,
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
    /// A route that exists, asked with a method it does not answer (HTTP 405; gRPC has no
    /// methods on a path, so UNIMPLEMENTED).
    MethodNotAllowed,
}

impl ErrorCode {
    /// The `code` label of `requests_total`: one vocabulary for both protocols (gRPC's names).
    pub const fn label(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::ResourceExhausted | ErrorCode::PayloadTooLarge => "resource_exhausted",
            ErrorCode::DeadlineExceeded | ErrorCode::RequestTimeout => "deadline_exceeded",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::Internal => "internal",
            ErrorCode::Unimplemented | ErrorCode::MethodNotAllowed => "unimplemented",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::FailedPrecondition => "failed_precondition",
        }
    }
}

/// Bytes of a client's string (a model, version, input or output name, a header value) that an
/// error message repeats; the rest is summarised, so a 4 MiB name answers a short error and a
/// gRPC message stays far below the 16 KiB metadata limit of stock clients.
pub const ECHO_LIMIT: usize = 200;

/// A client's string as error messages repeat it: `{:?}`-quoted like the whole string was,
/// cut to [`ECHO_LIMIT`] bytes (on a character boundary) with the full length said.
pub fn clip(s: &str) -> Clipped<'_> {
    Clipped(s)
}

pub struct Clipped<'a>(&'a str);

impl std::fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0;
        if s.len() <= ECHO_LIMIT {
            return write!(f, "{s:?}");
        }
        let mut end = ECHO_LIMIT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{:?}... ({} bytes)", &s[..end], s.len())
    }
}

/// A client's string as Triton's messages repeat it: `'name'` in single quotes (control
/// characters escaped), cut to [`ECHO_LIMIT`] bytes as [`clip`] cuts.
pub fn quote(s: &str) -> Quoted<'_> {
    Quoted(s)
}

pub struct Quoted<'a>(&'a str);

impl std::fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0;
        let mut end = s.len().min(ECHO_LIMIT);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        f.write_str("'")?;
        for c in s[..end].chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_debug())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        f.write_str("'")?;
        if end < s.len() {
            write!(f, "... ({} bytes)", s.len())?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Clipped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Longest error message a transport sends (a final bound for messages that echo more than one
/// client string, or a string not passed through [`clip`]).
pub const MESSAGE_LIMIT: usize = 2048;

/// `message` cut to [`MESSAGE_LIMIT`] bytes on a character boundary.
pub fn clip_message(mut message: String) -> String {
    if message.len() > MESSAGE_LIMIT {
        let mut end = MESSAGE_LIMIT;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("... (cut)");
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_short_strings_and_cuts_long_ones_on_a_char_boundary() {
        assert_eq!(clip("mlp").to_string(), "\"mlp\"");
        let long = "é".repeat(300);
        let shown = clip(&long).to_string();
        assert!(shown.len() < ECHO_LIMIT + 40, "{shown}");
        assert!(shown.ends_with("... (600 bytes)"), "{shown}");
        let cut = clip_message("x".repeat(1 << 20));
        assert_eq!(quote("mlp").to_string(), "'mlp'");
        assert_eq!(quote("a\nb").to_string(), "'a\\nb'");
        assert!(quote(&long).to_string().ends_with("'... (600 bytes)"));
        assert!(cut.len() <= MESSAGE_LIMIT + 16);
    }
}
