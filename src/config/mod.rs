//! Typed configuration: the server's (file < `FERROSERVE_*` env < flags) and each model's
//! `config.toml`, validated once at start-up with messages that name the bad field.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::policy::traffic::TrafficPolicy;
use crate::tensor::DataType;

/// Request bodies above this are refused (HTTP 413 / gRPC RESOURCE_EXHAUSTED) unless configured.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Source(#[from] config::ConfigError),
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("{path}: {message}")]
    Model { path: PathBuf, message: String },
}

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
    /// Bearer token required by every mutating endpoint when set.
    pub admin_token: Option<String>,
    /// Let mutating endpoints run without a token on a non-loopback listener.
    pub allow_unauthenticated_admin: bool,
    /// `[onnxruntime]`: where the `onnxruntime` backend finds its library.
    #[serde(default)]
    pub onnxruntime: OnnxRuntimeConfig,
    /// Inference requests in flight across all models beyond which new ones are refused at once
    /// (429 / RESOURCE_EXHAUSTED); 0: no server-wide limit.
    pub max_concurrent_requests: usize,
    /// Seconds an HTTP/1 client gets to send a request's headers before its connection is
    /// closed, so slow clients cannot hold connections. hyper also applies it to keep-alive
    /// connections waiting for their next request: keep it above a load balancer's idle timeout.
    pub header_read_timeout_secs: f64,
    /// Open HTTP connections (inference and metrics ports, each) at most; more wait to be
    /// accepted.
    pub max_connections: usize,
}

/// `[onnxruntime]` in the server config. The library is loaded once per process, by the first
/// model that needs it; `library` unset means `ORT_DYLIB_PATH`, then
/// `.cache/onnxruntime/libonnxruntime.so` (what `scripts/fetch-onnxruntime.sh` writes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OnnxRuntimeConfig {
    pub library: Option<PathBuf>,
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
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
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
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            strict_readiness: true,
            log_format: LogFormat::Text,
            shutdown: ShutdownConfig::default(),
            model_control_mode: ModelControlMode::None,
            repository_poll_secs: 15.0,
            load_models: Vec::new(),
            admin_token: None,
            allow_unauthenticated_admin: false,
            onnxruntime: OnnxRuntimeConfig::default(),
            max_concurrent_requests: 0,
            header_read_timeout_secs: 75.0,
            max_connections: 4096,
        }
    }
}

impl ServerConfig {
    /// Layers the optional TOML file, then `FERROSERVE_*` variables, then `overrides` (flags).
    pub fn load(
        file: Option<&Path>,
        overrides: &[(&str, String)],
    ) -> Result<ServerConfig, ConfigError> {
        let d = ServerConfig::default();
        let mut builder = config::Config::builder()
            .set_default("host", d.host)?
            .set_default("http_port", d.http_port)?
            .set_default("grpc_port", d.grpc_port)?
            .set_default("metrics_port", d.metrics_port)?
            .set_default(
                "model_repository",
                d.model_repository.to_string_lossy().into_owned(),
            )?
            .set_default("max_request_bytes", d.max_request_bytes as u64)?
            .set_default("strict_readiness", d.strict_readiness)?
            .set_default("log_format", "text")?
            .set_default("shutdown.drain_delay", d.shutdown.drain_delay)?
            .set_default("shutdown.timeout", d.shutdown.timeout)?
            .set_default("max_concurrent_requests", d.max_concurrent_requests as u64)?
            .set_default("header_read_timeout_secs", d.header_read_timeout_secs)?
            .set_default("max_connections", d.max_connections as u64)?;
        if let Some(file) = file {
            builder = builder.add_source(
                config::File::from(file)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        builder = builder.add_source(
            config::Environment::with_prefix("FERROSERVE")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                // FERROSERVE_LOAD_MODELS=a,b
                .list_separator(",")
                .with_list_parse_key("load_models"),
        );
        for (key, value) in overrides {
            builder = builder.set_override(*key, value.as_str())?;
        }
        let cfg: ServerConfig = builder.build()?.try_deserialize()?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
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
        if self.host.trim().is_empty() {
            return Err(ConfigError::Invalid("host must not be empty".into()));
        }
        Ok(())
    }
}

/// Which engine runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    #[default]
    Tract,
    /// ONNX Runtime, loaded from a shared library at run time (CPU or CUDA).
    OnnxRuntime,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Tract => "tract",
            BackendKind::OnnxRuntime => "onnxruntime",
        }
    }

    /// The KServe/Triton `platform` string reported in metadata and config.
    pub fn platform(self) -> &'static str {
        match self {
            BackendKind::Tract => "tract_onnx",
            BackendKind::OnnxRuntime => "onnxruntime_onnx",
        }
    }
}

/// One declared input or output, as in Triton's config: `dims` excludes the batch dimension
/// when the model batches, and -1 marks a variable dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorConfig {
    pub name: String,
    pub dtype: DataType,
    pub dims: Vec<i64>,
}

/// `[dynamic_batching]`: present means queued requests may be combined into one backend call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchingConfig {
    /// Batch sizes (rows) the batcher prefers to form, ascending; empty: up to `max_batch_size`.
    pub preferred_batch_sizes: Vec<usize>,
    /// The most a request waits for companions; zero takes whatever is queued when an instance
    /// frees up.
    pub max_queue_delay: Duration,
    /// A row's result never depends on its batch companions, bit for bit (default). The engines
    /// compute one row with another kernel than several, so a lone row then runs padded to two;
    /// `false` saves that padding (a single-row request's latency) and lets results differ
    /// within float rounding between a row computed alone and in a batch.
    pub row_invariant: bool,
}

/// Every version's queue, batching or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePolicy {
    /// Requests waiting beyond this are refused at once (429 / RESOURCE_EXHAUSTED).
    pub max_queue_size: usize,
    /// Deadline for requests that bring none of their own.
    pub default_timeout: Option<Duration>,
    /// Requests in flight (queued or computing) beyond which new ones are refused at once
    /// (429 / RESOURCE_EXHAUSTED); 0: no limit besides the queue.
    pub max_concurrent_requests: usize,
}

impl Default for QueuePolicy {
    fn default() -> Self {
        QueuePolicy {
            max_queue_size: 1024,
            default_timeout: None,
            max_concurrent_requests: 0,
        }
    }
}

/// A model's `config.toml`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub backend: BackendKind,
    /// 0: the model does not batch and shapes are taken as given.
    pub max_batch_size: usize,
    /// Declared tensors; empty means "read them from the graph".
    pub inputs: Vec<TensorConfig>,
    pub outputs: Vec<TensorConfig>,
    pub instance_count: usize,
    pub dynamic_batching: Option<BatchingConfig>,
    pub queue: QueuePolicy,
    pub version_policy: VersionPolicy,
    /// Where the model runs; only `onnxruntime` offers CUDA.
    pub device: Device,
    /// Session options of `backend = "onnxruntime"` (defaults otherwise).
    pub onnxruntime: OnnxRuntimeOptions,
    /// `[traffic]`: weights and shadow applied when the model loads (see `policy::traffic`).
    /// Not part of what a version is built from: changing it never reloads a version.
    pub traffic: Option<TrafficPolicy>,
}

impl ModelConfig {
    /// Equal in everything a loaded version is built from (all but `[traffic]`).
    pub fn same_versions_as(&self, other: &ModelConfig) -> bool {
        let strip = |c: &ModelConfig| ModelConfig {
            traffic: None,
            ..c.clone()
        };
        strip(self) == strip(other)
    }
}

/// `[traffic]` of a model config: `weights = { "1" = 90, "2" = 10 }` and
/// `shadow = { version = "3", percent = 5 }` (versions as strings or integers).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTraffic {
    #[serde(default)]
    weights: std::collections::BTreeMap<String, i64>,
    shadow: Option<RawShadow>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShadow {
    version: StrOrNum,
    percent: StrOrNum,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StrOrNum {
    Int(i64),
    Float(f64),
    Str(String),
}

impl StrOrNum {
    fn text(&self) -> String {
        match self {
            StrOrNum::Int(i) => i.to_string(),
            StrOrNum::Float(f) => f.to_string(),
            StrOrNum::Str(s) => s.clone(),
        }
    }
}

impl RawTraffic {
    fn validate(self) -> Result<TrafficPolicy, String> {
        let weights: Vec<(String, i64)> = self.weights.into_iter().collect();
        let shadow = match self.shadow {
            None => None,
            Some(s) => {
                let percent = match s.percent {
                    StrOrNum::Int(i) => i as f64,
                    StrOrNum::Float(f) => f,
                    StrOrNum::Str(t) => {
                        return Err(format!(
                            "traffic.shadow.percent must be a number, got {t:?}"
                        ))
                    }
                };
                Some((s.version.text(), percent))
            }
        };
        TrafficPolicy::validate(&weights, shadow, None).map_err(|e| format!("traffic.{e}"))
    }
}

/// Which of a model's versions are served (Triton's version policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPolicy {
    /// The highest `n`.
    Latest(usize),
    All,
    /// Exactly these (missing ones are reported).
    Specific(Vec<u64>),
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Latest(1)
    }
}

impl VersionPolicy {
    /// The versions to serve out of those present (ascending); specific versions not present
    /// are returned too, so their absence is reported.
    pub fn select(&self, present: &[u64]) -> Vec<u64> {
        match self {
            VersionPolicy::Latest(n) => present[present.len().saturating_sub(*n)..].to_vec(),
            VersionPolicy::All => present.to_vec(),
            VersionPolicy::Specific(list) => list.clone(),
        }
    }
}

/// `version_policy = "all"`, `{ latest = 2 }` or `{ specific = [1, 3] }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawVersionPolicy {
    Word(String),
    Table {
        latest: Option<usize>,
        specific: Option<Vec<u64>>,
    },
}

impl Default for RawVersionPolicy {
    fn default() -> Self {
        RawVersionPolicy::Table {
            latest: Some(1),
            specific: None,
        }
    }
}

impl RawVersionPolicy {
    fn validate(self) -> Result<VersionPolicy, String> {
        const EXPECTED: &str =
            "expected \"all\", { latest = N > 0 } or { specific = [positive versions] }";
        match self {
            RawVersionPolicy::Word(w) if w == "all" => Ok(VersionPolicy::All),
            RawVersionPolicy::Table {
                latest: Some(n),
                specific: None,
            } if n > 0 => Ok(VersionPolicy::Latest(n)),
            RawVersionPolicy::Table {
                latest: None,
                specific: Some(mut v),
            } if !v.is_empty() && !v.contains(&0) => {
                v.sort_unstable();
                v.dedup();
                Ok(VersionPolicy::Specific(v))
            }
            _ => Err(format!("version_policy: {EXPECTED}")),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatchingConfig {
    #[serde(default)]
    preferred_batch_sizes: Vec<usize>,
    #[serde(default)]
    max_queue_delay_us: u64,
    max_queue_size: Option<u64>,
    default_timeout_us: Option<u64>,
    #[serde(default = "default_true")]
    row_invariant: bool,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTensorConfig {
    name: String,
    #[serde(alias = "data_type")]
    datatype: String,
    #[serde(default)]
    dims: Vec<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModelConfig {
    name: Option<String>,
    #[serde(default)]
    backend: BackendKind,
    #[serde(default)]
    max_batch_size: usize,
    #[serde(default, alias = "inputs")]
    input: Vec<RawTensorConfig>,
    #[serde(default, alias = "outputs")]
    output: Vec<RawTensorConfig>,
    #[serde(default = "one")]
    instance_count: usize,
    dynamic_batching: Option<RawBatchingConfig>,
    max_queue_size: Option<u64>,
    default_timeout_us: Option<u64>,
    #[serde(default)]
    max_concurrent_requests: usize,
    #[serde(default)]
    version_policy: RawVersionPolicy,
    device: Option<String>,
    intra_op_threads: Option<usize>,
    inter_op_threads: Option<usize>,
    graph_optimization_level: Option<GraphOptimizationLevel>,
    traffic: Option<RawTraffic>,
    /// Free-form annotations, ignored by the server.
    #[serde(default)]
    #[allow(dead_code)]
    parameters: HashMap<String, String>,
}

fn one() -> usize {
    1
}

/// Largest batch we accept in a model config; bigger is almost surely a typo.
const MAX_BATCH_LIMIT: usize = 1 << 16;

impl ModelConfig {
    /// Reads and validates `<model dir>/config.toml`; `name` is the directory's name.
    pub fn from_file(path: &Path, name: &str) -> Result<ModelConfig, ConfigError> {
        let err = |message: String| ConfigError::Model {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        ModelConfig::parse(&text, name).map_err(err)
    }

    pub fn parse(text: &str, name: &str) -> Result<ModelConfig, String> {
        let raw: RawModelConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        if let Some(n) = &raw.name {
            if n != name {
                return Err(format!(
                    "name {n:?} does not match the model directory {name:?}"
                ));
            }
        }
        if raw.max_batch_size > MAX_BATCH_LIMIT {
            return Err(format!(
                "max_batch_size {} is above the limit {MAX_BATCH_LIMIT}",
                raw.max_batch_size
            ));
        }
        if raw.instance_count == 0 || raw.instance_count > 64 {
            return Err(format!(
                "instance_count must be 1..=64, got {}",
                raw.instance_count
            ));
        }
        // Triton keeps the queue knobs under dynamic batching; every model of ours has a queue,
        // so the top level takes them too, but not both places at once.
        let batching = raw.dynamic_batching.as_ref();
        let once = |top: Option<u64>, nested: Option<u64>, key: &str| match (top, nested) {
            (Some(_), Some(_)) => Err(format!(
                "{key} is set both at the top level and in [dynamic_batching]"
            )),
            (a, b) => Ok(a.or(b)),
        };
        let max_queue_size = once(
            raw.max_queue_size,
            batching.and_then(|b| b.max_queue_size),
            "max_queue_size",
        )?
        .map_or(QueuePolicy::default().max_queue_size, |v| {
            usize::try_from(v).unwrap_or(usize::MAX)
        });
        if max_queue_size == 0 {
            return Err("max_queue_size must be positive".into());
        }
        let default_timeout = once(
            raw.default_timeout_us,
            batching.and_then(|b| b.default_timeout_us),
            "default_timeout_us",
        )?
        .filter(|&us| us > 0)
        .map(Duration::from_micros);
        if let Some(b) = batching {
            if raw.max_batch_size == 0 {
                return Err("dynamic_batching needs max_batch_size > 0".into());
            }
            if let Some(p) = b
                .preferred_batch_sizes
                .iter()
                .find(|&&p| p == 0 || p > raw.max_batch_size)
            {
                return Err(format!(
                    "preferred batch size {p} is outside 1..={}",
                    raw.max_batch_size
                ));
            }
        }
        let tensors =
            |list: Vec<RawTensorConfig>, what: &str| -> Result<Vec<TensorConfig>, String> {
                let mut out: Vec<TensorConfig> = Vec::with_capacity(list.len());
                for t in list {
                    let dtype = DataType::parse(&t.datatype).ok_or_else(|| {
                        format!("{what} {:?}: unknown datatype {:?}", t.name, t.datatype)
                    })?;
                    if let Some(d) = t.dims.iter().find(|&&d| d < -1 || d == 0) {
                        return Err(format!(
                            "{what} {:?}: dimension {d} must be positive or -1",
                            t.name
                        ));
                    }
                    if out.iter().any(|o| o.name == t.name) {
                        return Err(format!("{what} {:?} is declared twice", t.name));
                    }
                    out.push(TensorConfig {
                        name: t.name,
                        dtype,
                        dims: t.dims,
                    });
                }
                Ok(out)
            };
        let (device, onnxruntime) = onnxruntime_keys(&raw)?;
        let traffic = raw.traffic.map(RawTraffic::validate).transpose()?;
        Ok(ModelConfig {
            backend: raw.backend,
            max_batch_size: raw.max_batch_size,
            inputs: tensors(raw.input, "input")?,
            outputs: tensors(raw.output, "output")?,
            instance_count: raw.instance_count,
            dynamic_batching: raw.dynamic_batching.map(|b| {
                let mut preferred = b.preferred_batch_sizes;
                preferred.sort_unstable();
                preferred.dedup();
                BatchingConfig {
                    preferred_batch_sizes: preferred,
                    max_queue_delay: Duration::from_micros(b.max_queue_delay_us),
                    row_invariant: b.row_invariant,
                }
            }),
            queue: QueuePolicy {
                max_queue_size,
                default_timeout,
                max_concurrent_requests: raw.max_concurrent_requests,
            },
            version_policy: raw.version_policy.validate()?,
            device,
            onnxruntime,
            traffic,
        })
    }
}

/// `device = "cpu" | "cuda:N"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(u32),
}

impl Device {
    pub fn parse(text: &str) -> Option<Device> {
        match text.trim() {
            "cpu" => Some(Device::Cpu),
            other => {
                let id = other.strip_prefix("cuda:")?;
                // Digits only: `u32::from_str` would also take "+1".
                if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                id.parse().ok().map(Device::Cuda)
            }
        }
    }

    /// The GPU index, for Triton's `instance_group.gpus`.
    pub fn gpu(self) -> Option<u32> {
        match self {
            Device::Cpu => None,
            Device::Cuda(id) => Some(id),
        }
    }

    /// Triton's `instance_group.kind`.
    pub fn instance_kind(self) -> &'static str {
        match self {
            Device::Cpu => "KIND_CPU",
            Device::Cuda(_) => "KIND_GPU",
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(id) => write!(f, "cuda:{id}"),
        }
    }
}

/// ONNX Runtime's graph optimisation levels, by its own names (`ORT_ENABLE_BASIC` is "basic").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GraphOptimizationLevel {
    Disable,
    Basic,
    Extended,
    Layout,
    #[default]
    All,
}

/// Per-model ONNX Runtime session options; `None` leaves ONNX Runtime's default (one intra-op
/// thread per physical core, sequential execution).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OnnxRuntimeOptions {
    pub intra_op_threads: Option<usize>,
    pub inter_op_threads: Option<usize>,
    pub graph_optimization_level: GraphOptimizationLevel,
}

impl ModelConfig {
    /// What computes the model, as reported in its Triton config (`parameters`): ONNX Runtime's
    /// provider name, or the engine's. The configured device is the one used: ONNX Runtime
    /// registers CUDA strictly, so a CUDA model that cannot use CUDA does not load.
    pub fn execution_provider(&self) -> &'static str {
        match (self.backend, self.device) {
            (BackendKind::Tract, _) => "tract",
            (BackendKind::OnnxRuntime, Device::Cpu) => "CPUExecutionProvider",
            (BackendKind::OnnxRuntime, Device::Cuda(_)) => "CUDAExecutionProvider",
        }
    }
}

/// The `device` and ONNX Runtime keys of a model config, checked against its backend.
fn onnxruntime_keys(raw: &RawModelConfig) -> Result<(Device, OnnxRuntimeOptions), String> {
    let device = match &raw.device {
        None => Device::Cpu,
        Some(text) => Device::parse(text)
            .ok_or_else(|| format!("device must be \"cpu\" or \"cuda:N\", got {text:?}"))?,
    };
    for (key, threads) in [
        ("intra_op_threads", raw.intra_op_threads),
        ("inter_op_threads", raw.inter_op_threads),
    ] {
        if threads.is_some_and(|n| n == 0 || n > 1024) {
            return Err(format!(
                "{key} must be 1..=1024 (omit it for ONNX Runtime's default)"
            ));
        }
    }
    if raw.backend != BackendKind::OnnxRuntime {
        if device != Device::Cpu {
            return Err(format!(
                "device \"{device}\" needs backend = \"onnxruntime\" ({} runs on the CPU only)",
                raw.backend.as_str()
            ));
        }
        let set = [
            ("intra_op_threads", raw.intra_op_threads.is_some()),
            ("inter_op_threads", raw.inter_op_threads.is_some()),
            (
                "graph_optimization_level",
                raw.graph_optimization_level.is_some(),
            ),
        ];
        if let Some((key, _)) = set.iter().find(|(_, present)| *present) {
            return Err(format!("{key} applies to backend = \"onnxruntime\" only"));
        }
    }
    Ok((
        device,
        OnnxRuntimeOptions {
            intra_op_threads: raw.intra_op_threads,
            inter_op_threads: raw.inter_op_threads,
            graph_optimization_level: raw.graph_optimization_level.unwrap_or_default(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_config_parses_triton_like_fields() {
        let cfg = ModelConfig::parse(
            r#"
            backend = "tract"
            max_batch_size = 8
            [[input]]
            name = "x"
            datatype = "FP32"
            dims = [4]
            [[output]]
            name = "y"
            datatype = "TYPE_INT64"
            "#,
            "m",
        )
        .unwrap();
        assert_eq!(cfg.max_batch_size, 8);
        assert_eq!(
            cfg.inputs[0],
            TensorConfig {
                name: "x".into(),
                dtype: DataType::F32,
                dims: vec![4]
            }
        );
        assert_eq!(cfg.outputs[0].dtype, DataType::I64);
        assert_eq!(cfg.instance_count, 1);
    }

    #[test]
    fn version_policies_parse_in_triton_forms() {
        let policy = |t: &str| ModelConfig::parse(t, "m").map(|c| c.version_policy);
        assert_eq!(policy(""), Ok(VersionPolicy::Latest(1)));
        assert_eq!(
            policy("version_policy = { latest = 2 }"),
            Ok(VersionPolicy::Latest(2))
        );
        assert_eq!(policy("version_policy = \"all\""), Ok(VersionPolicy::All));
        assert_eq!(
            policy("version_policy = { specific = [3, 1] }"),
            Ok(VersionPolicy::Specific(vec![1, 3]))
        );
        for bad in [
            "version_policy = \"some\"",
            "version_policy = { latest = 0 }",
            "version_policy = { specific = [] }",
        ] {
            assert!(policy(bad).is_err(), "{bad}");
        }
        assert_eq!(VersionPolicy::Latest(2).select(&[1, 2, 5]), vec![2, 5]);
        assert_eq!(
            VersionPolicy::Specific(vec![1, 9]).select(&[1, 2]),
            vec![1, 9]
        );
    }

    #[test]
    fn dynamic_batching_takes_triton_knobs_once() {
        let text = "max_batch_size = 16\n[dynamic_batching]\npreferred_batch_sizes = [8, 4]\n\
                    max_queue_delay_us = 500\nmax_queue_size = 7\ndefault_timeout_us = 2000\n";
        let cfg = ModelConfig::parse(text, "m").unwrap();
        let b = cfg.dynamic_batching.unwrap();
        assert_eq!(b.preferred_batch_sizes, vec![4, 8]);
        assert_eq!(b.max_queue_delay, Duration::from_micros(500));
        assert!(b.row_invariant, "row invariance is on unless turned off");
        assert_eq!(cfg.queue.max_queue_size, 7);
        assert_eq!(cfg.queue.default_timeout, Some(Duration::from_millis(2)));
        let twice =
            "max_batch_size = 4\nmax_queue_size = 3\n[dynamic_batching]\nmax_queue_size = 3";
        assert!(ModelConfig::parse(twice, "m").unwrap_err().contains("both"));
        let big = "max_batch_size = 4\n[dynamic_batching]\npreferred_batch_sizes = [5]";
        assert!(ModelConfig::parse(big, "m")
            .unwrap_err()
            .contains("outside"));
        assert_eq!(
            ModelConfig::parse("", "m").unwrap().queue,
            QueuePolicy::default()
        );
        let limited = ModelConfig::parse("max_concurrent_requests = 3", "m").unwrap();
        assert_eq!(limited.queue.max_concurrent_requests, 3);
    }

    #[test]
    fn onnxruntime_keys_parse_and_belong_to_their_backend() {
        let cfg = ModelConfig::parse(
            "backend = 'onnxruntime'\ndevice = 'cuda:1'\nintra_op_threads = 2\n\
             graph_optimization_level = 'extended'",
            "m",
        )
        .unwrap();
        assert_eq!(cfg.backend, BackendKind::OnnxRuntime);
        assert_eq!(cfg.device, Device::Cuda(1));
        assert_eq!(cfg.device.instance_kind(), "KIND_GPU");
        assert_eq!(cfg.onnxruntime.intra_op_threads, Some(2));
        assert_eq!(cfg.onnxruntime.inter_op_threads, None);
        assert_eq!(
            cfg.onnxruntime.graph_optimization_level,
            GraphOptimizationLevel::Extended
        );
        let plain = ModelConfig::parse("backend = 'onnxruntime'", "m").unwrap();
        assert_eq!(plain.device, Device::Cpu);
        assert_eq!(plain.onnxruntime, OnnxRuntimeOptions::default());
        for (text, want) in [
            ("backend = 'onnxruntime'\ndevice = 'gpu'", "device must be"),
            (
                "backend = 'onnxruntime'\ndevice = 'cuda:+1'",
                "device must be",
            ),
            ("backend = 'onnxruntime'\nintra_op_threads = 0", "1..=1024"),
            ("device = 'cuda:0'", "needs backend = \"onnxruntime\""),
            ("inter_op_threads = 2", "applies to backend"),
            (
                "backend = 'onnxruntime'\ngraph_optimization_level = 'max'",
                "unknown variant",
            ),
        ] {
            let err = ModelConfig::parse(text, "m").unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn traffic_section_parses_weights_and_shadow() {
        let cfg = ModelConfig::parse(
            "[traffic]\nweights = { \"1\" = 90, \"2\" = 10 }\nshadow = { version = 3, percent = 5 }",
            "m",
        )
        .unwrap();
        let t = cfg.traffic.clone().unwrap();
        assert_eq!(
            t.weights,
            std::collections::BTreeMap::from([(1, 90), (2, 10)])
        );
        assert_eq!(
            t.shadow.as_ref().map(|s| (s.version, s.percent)),
            Some((3, 5.0))
        );
        assert!(cfg.same_versions_as(&ModelConfig::parse("", "m").unwrap()));
        for (text, want) in [
            ("[traffic]\nweights = { \"1\" = -5 }", "weight -5"),
            ("[traffic]\nweights = { \"1\" = 0 }", "all weights are zero"),
            (
                "[traffic]\nweights = { \"a\" = 1 }",
                "not a positive integer",
            ),
            (
                "[traffic]\nshadow = { version = \"2\", percent = 150 }",
                "outside 0..=100",
            ),
            ("[traffic]\nsplit = 3", "unknown field"),
        ] {
            let err = ModelConfig::parse(text, "m").unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn model_config_rejects_unknown_fields_and_bad_dims() {
        assert!(ModelConfig::parse("max_batch = 3", "m")
            .unwrap_err()
            .contains("unknown field"));
        let err =
            ModelConfig::parse("[[input]]\nname='x'\ndatatype='FP32'\ndims=[0]", "m").unwrap_err();
        assert!(err.contains("dimension 0"), "{err}");
        let err = ModelConfig::parse("[[input]]\nname='x'\ndatatype='FP99'", "m").unwrap_err();
        assert!(err.contains("unknown datatype"), "{err}");
        let err = ModelConfig::parse("name = 'other'", "m").unwrap_err();
        assert!(err.contains("does not match"), "{err}");
    }

    #[test]
    fn server_config_flags_win_over_env_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        std::fs::write(
            &file,
            "http_port = 1000\ngrpc_port = 1001\nmetrics_port = 1002\n",
        )
        .unwrap();
        // Only this test sets this variable.
        std::env::set_var("FERROSERVE_GRPC_PORT", "2001");
        std::env::set_var("FERROSERVE_METRICS_PORT", "2002");
        std::env::set_var("FERROSERVE_LOAD_MODELS", "iris,mlp");
        std::env::set_var("FERROSERVE_SHUTDOWN__DRAIN_DELAY", "1.5");
        let cfg = ServerConfig::load(Some(&file), &[("metrics_port", "3002".into())]).unwrap();
        std::env::remove_var("FERROSERVE_GRPC_PORT");
        std::env::remove_var("FERROSERVE_METRICS_PORT");
        std::env::remove_var("FERROSERVE_LOAD_MODELS");
        std::env::remove_var("FERROSERVE_SHUTDOWN__DRAIN_DELAY");
        assert_eq!(cfg.load_models, ["iris", "mlp"]);
        assert_eq!(cfg.shutdown.drain_delay, 1.5);
        assert_eq!(
            (cfg.http_port, cfg.grpc_port, cfg.metrics_port),
            (1000, 2001, 3002)
        );
        assert_eq!(cfg.max_request_bytes, DEFAULT_MAX_REQUEST_BYTES);
    }
}
