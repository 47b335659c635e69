//! The server process's settings (`ServerConfig` and its tables), their defaults, stated here
//! once, and their validation. Where the values come from is `config/mod.rs`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, OnnxRuntimeConfig, TlsConfig, TracingConfig};

/// Request bodies above this are refused (HTTP 413 / gRPC RESOURCE_EXHAUSTED) unless configured.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// 1 GiB: sixteen requests of the largest size at once. Bodies count once as received; their
/// decoded tensors are about as large again, so this bounds request memory near 2 GiB.
pub const DEFAULT_MAX_INFLIGHT_BYTES: usize = 1024 * 1024 * 1024;

/// A model repository's location when it is on object storage (`s3://`), for `serve` and `predict`.
pub fn object_repository(location: &std::path::Path) -> Option<&str> {
    location.to_str().filter(|r| r.starts_with("s3://"))
}

/// The default bound of the local cache of a bucket's or a registry's files (10 GiB).
pub const DEFAULT_MODEL_CACHE_MAX_BYTES: u64 = 10 * 1024 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Everything the server process is configured with. Keys missing from every source take
/// their defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    pub host: String,
    pub http_port: u16,
    pub grpc_port: u16,
    pub metrics_port: u16,
    pub model_repository: PathBuf,
    /// A `model_repository` of `s3://bucket/prefix` is mirrored here (default: the system
    /// temporary directory's `ferroserve-model-cache`); one server process per directory.
    pub model_cache_dir: Option<PathBuf>,
    /// The bound on the cache's bytes; a version that would pass it is not downloaded.
    pub model_cache_max_bytes: u64,
    /// `[model_repository_options]`: object_store's S3 settings (`aws_endpoint`, `aws_region`,
    /// `aws_virtual_hosted_style_request`, ...) over the `AWS_*` environment. Keep credentials
    /// in the environment (a Secret), not in a file.
    pub model_repository_options: std::collections::BTreeMap<String, String>,
    /// Serve `model_repository` as one model's directory under this name (KServe mounts one
    /// model at `/mnt/models` and routes `/v2/models/{InferenceService name}`): a bare
    /// `model.onnx` there is version 1, else its version directories.
    pub model_name: Option<String>,
    /// Largest accepted request body (HTTP) or message (gRPC), in bytes.
    pub max_request_bytes: usize,
    /// Triton's strict readiness: the server is ready only when every model in the repository is.
    pub strict_readiness: bool,
    pub log_format: LogFormat,
    pub shutdown: ShutdownConfig,
    /// Triton's model control modes: what loads models and when.
    pub model_control_mode: ModelControlMode,
    /// Seconds between repository scans in `poll` mode.
    pub repository_poll_secs: f64,
    /// Models loaded at start in `explicit` mode.
    pub load_models: Vec<String>,
    /// Bearer token required by every mutating endpoint when set. When not set, the server
    /// makes one at start and writes it to `admin_token_file` (unless
    /// `allow_unauthenticated_admin`).
    pub admin_token: Option<String>,
    /// Where a token made at start is written, readable by this user only; the CLIs read it
    /// from there. Default: [`default_admin_token_file`].
    pub admin_token_file: Option<PathBuf>,
    /// Let mutating endpoints run without any token, from anyone who reaches the port.
    pub allow_unauthenticated_admin: bool,
    /// Triton's system shared memory extension (regions of `/dev/shm` registered by clients on
    /// this host); registering still takes what the admin rules require.
    pub allow_shared_memory: bool,
    /// Accept Triton's load parameters (`config` JSON, `file:` contents) from admitted admin
    /// callers, writing the model into the repository; off: such loads are refused (403).
    pub allow_model_upload: bool,
    /// `[onnxruntime]`: where the `onnxruntime` backend finds its library.
    pub onnxruntime: OnnxRuntimeConfig,
    /// Inference requests in flight across all models beyond which new ones are refused at once
    /// (429 / RESOURCE_EXHAUSTED); 0: no server-wide limit.
    pub max_concurrent_requests: usize,
    /// Request bytes being read, decoded or queued across the server beyond which a new request
    /// is refused at once (429 / RESOURCE_EXHAUSTED); 0: no budget.
    pub max_inflight_bytes: usize,
    /// Seconds an HTTP/1 client gets to send a request's headers before its connection is
    /// closed, so slow clients cannot hold connections. hyper also applies it to keep-alive
    /// connections waiting for their next request: keep it above a load balancer's idle timeout.
    pub header_read_timeout_secs: f64,
    /// Open connections per port (HTTP, gRPC and metrics, each). When full, a new connection
    /// closes the oldest idle one (or one that has not completed a request yet) instead of
    /// waiting, so probes get through.
    pub max_connections: usize,
    /// Seconds a new connection gets to deliver its first request (HTTP/1 head, HTTP/2 preface
    /// and first stream), on every port.
    pub handshake_timeout_secs: f64,
    /// Seconds a request's body may take to arrive whole after its head.
    pub body_read_timeout_secs: f64,
    /// Seconds a connection may stay open with no request in flight (HTTP/2 and gRPC mostly:
    /// `header_read_timeout_secs` closes idle HTTP/1 connections first).
    pub idle_timeout_secs: f64,
    /// Seconds a connection may go with the server holding response bytes its client takes
    /// none of (a socket left full, an HTTP/2 window left closed) before it is closed; counted
    /// between two writes, not for the whole answer, so slow but steady readers are served.
    pub write_stall_timeout_secs: f64,
    /// HTTP/2 (and gRPC) keep-alive: a ping this often, and the connection is closed when one
    /// is not answered within `http2_keepalive_timeout_secs`.
    pub http2_keepalive_interval_secs: f64,
    pub http2_keepalive_timeout_secs: f64,
    /// Concurrent HTTP/2 streams (requests) per connection, on the HTTP and gRPC ports.
    pub http2_max_concurrent_streams: u32,
    /// `[tls]`: certificate, key and optional client CA for the HTTP and gRPC ports.
    pub tls: TlsConfig,
    /// The name server metadata reports (`GET /v2`, gRPC ServerMetadata), for clients that check
    /// it (some programs insist on `triton`).
    pub server_name: String,
    /// `[tracing]`: OpenTelemetry trace export (off by default; `OTEL_*` variables win).
    pub tracing: TracingConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ModelControlMode {
    /// Load everything at start; the repository API is read-only.
    #[default]
    None,
    /// Load everything at start, then rescan every `repository_poll_secs`: new or changed
    /// versions load, removed ones unload.
    Poll,
    /// Load only `load_models` at start; then only through the repository API.
    Explicit,
}

impl ModelControlMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelControlMode::None => "none",
            ModelControlMode::Poll => "poll",
            ModelControlMode::Explicit => "explicit",
        }
    }
}

/// What happens on SIGTERM/SIGINT: readiness turns false at once, the server keeps serving for
/// `drain_delay` (so load balancers stop sending), then stops accepting and gives requests in
/// flight up to `timeout` to finish.
/// A `[shutdown]` table that sets one key takes the other's default.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default)]
pub struct ShutdownConfig {
    /// Seconds.
    pub drain_delay: f64,
    /// Seconds.
    pub timeout: f64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_delay: 5.0,
            timeout: 30.0,
        }
    }
}

impl ShutdownConfig {
    pub fn drain_delay(&self) -> Duration {
        Duration::from_secs_f64(self.drain_delay)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "0.0.0.0".into(),
            http_port: 8000,
            grpc_port: 8001,
            metrics_port: 8002,
            model_repository: PathBuf::from("models"),
            model_name: None,
            model_cache_dir: None,
            model_cache_max_bytes: DEFAULT_MODEL_CACHE_MAX_BYTES,
            model_repository_options: Default::default(),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            strict_readiness: true,
            log_format: LogFormat::default(),
            shutdown: ShutdownConfig::default(),
            model_control_mode: ModelControlMode::default(),
            repository_poll_secs: 15.0,
            load_models: Vec::new(),
            admin_token: None,
            admin_token_file: None,
            allow_unauthenticated_admin: false,
            allow_shared_memory: false,
            allow_model_upload: false,
            onnxruntime: OnnxRuntimeConfig::default(),
            max_concurrent_requests: 0,
            max_inflight_bytes: DEFAULT_MAX_INFLIGHT_BYTES,
            header_read_timeout_secs: 75.0,
            max_connections: 4096,
            handshake_timeout_secs: 10.0,
            body_read_timeout_secs: 60.0,
            idle_timeout_secs: 300.0,
            write_stall_timeout_secs: 30.0,
            http2_keepalive_interval_secs: 30.0,
            http2_keepalive_timeout_secs: 20.0,
            http2_max_concurrent_streams: 1024,
            tls: TlsConfig::default(),
            server_name: "ferroserve".into(),
            tracing: TracingConfig::default(),
        }
    }
}

impl ServerConfig {
    /// The configured `admin_token_file`, else the default.
    pub fn admin_token_file(&self) -> PathBuf {
        self.admin_token_file
            .clone()
            .unwrap_or_else(default_admin_token_file)
    }

    /// Where a repository on object storage is cached.
    pub fn model_cache_dir(&self) -> PathBuf {
        self.model_cache_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("ferroserve-model-cache"))
    }

    /// `model_repository` when it is on object storage (`s3://`).
    pub fn object_repository(&self) -> Option<&str> {
        object_repository(&self.model_repository)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.object_repository().is_some() && self.model_name.is_some() {
            return Err(ConfigError::Invalid(
                "model_name needs a local model_repository (an s3:// repository holds model directories)".into(),
            ));
        }
        if self.model_cache_max_bytes == 0 {
            return Err(ConfigError::Invalid(
                "model_cache_max_bytes must be positive".into(),
            ));
        }
        if !(0.05..=86_400.0).contains(&self.repository_poll_secs) {
            return Err(ConfigError::Invalid(format!(
                "repository_poll_secs must be 0.05..=86400, got {}",
                self.repository_poll_secs
            )));
        }
        if self.admin_token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err(ConfigError::Invalid(
                "admin_token must be at least 16 characters".into(),
            ));
        }
        for (key, v) in [
            ("shutdown.drain_delay", self.shutdown.drain_delay),
            ("shutdown.timeout", self.shutdown.timeout),
        ] {
            if !(0.0..=3600.0).contains(&v) {
                return Err(ConfigError::Invalid(format!(
                    "{key} must be 0..=3600 seconds, got {v}"
                )));
            }
        }
        if !(0.01..=3600.0).contains(&self.header_read_timeout_secs) {
            return Err(ConfigError::Invalid(format!(
                "header_read_timeout_secs must be 0.01..=3600, got {}",
                self.header_read_timeout_secs
            )));
        }
        for (key, v) in [
            ("handshake_timeout_secs", self.handshake_timeout_secs),
            ("body_read_timeout_secs", self.body_read_timeout_secs),
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("write_stall_timeout_secs", self.write_stall_timeout_secs),
            (
                "http2_keepalive_interval_secs",
                self.http2_keepalive_interval_secs,
            ),
            (
                "http2_keepalive_timeout_secs",
                self.http2_keepalive_timeout_secs,
            ),
        ] {
            if !(0.01..=86_400.0).contains(&v) {
                return Err(ConfigError::Invalid(format!(
                    "{key} must be 0.01..=86400 seconds, got {v}"
                )));
            }
        }
        if self.http2_max_concurrent_streams == 0 {
            return Err(ConfigError::Invalid(
                "http2_max_concurrent_streams must be positive".into(),
            ));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "max_connections must be positive".into(),
            ));
        }
        if self.max_request_bytes == 0 {
            return Err(ConfigError::Invalid(
                "max_request_bytes must be positive".into(),
            ));
        }
        self.tls.validate()?;
        self.tracing.validate()?;
        let name = &self.server_name;
        if name.trim().is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(ConfigError::Invalid(format!(
                "server_name must be 1..=128 printable characters, got {name:?}"
            )));
        }
        if self.host.trim().is_empty() {
            return Err(ConfigError::Invalid("host must not be empty".into()));
        }
        Ok(())
    }
}

/// Where a server without a configured token writes the one it makes, and where the CLIs look
/// for it: `$XDG_RUNTIME_DIR/ferroserve/admin-token`, else `<tmp>/ferroserve-<uid>/admin-token`.
pub fn default_admin_token_file() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("ferroserve").join("admin-token"),
        None => {
            use std::os::unix::fs::MetadataExt;
            let uid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
            std::env::temp_dir()
                .join(format!("ferroserve-{uid}"))
                .join("admin-token")
        }
    }
}
