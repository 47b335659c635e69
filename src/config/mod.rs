//! Typed configuration: the server's (file < `FERROSERVE_*` env < flags) and each model's
//! `config.toml`, validated once at start-up with messages that name the bad field. This file
//! layers the server's sources; each kind of setting has a file of its own:
//! `server` (server settings), `model` (a model's `config.toml`), `version_policy`, `traffic`
//! (the `[traffic]` section), `tls` (the ports' certificates) and `onnxruntime` (ONNX Runtime's
//! library, devices and options).

pub mod drift;
mod model;
mod onnxruntime;
mod server;
mod tls;
mod tracing;
mod traffic;
mod version_policy;
mod warmup;

use std::path::{Path, PathBuf};

pub use drift::DriftConfig;
pub use model::{BackendKind, BatchingConfig, ModelConfig, QueuePolicy, TensorConfig};
pub use onnxruntime::{Device, GraphOptimizationLevel, OnnxRuntimeConfig, OnnxRuntimeOptions};
pub use server::{
    default_admin_token_file, object_repository, LogFormat, ModelControlMode, ServerConfig,
    ShutdownConfig, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MODEL_CACHE_MAX_BYTES,
};
pub use tls::{TlsConfig, TlsPort};
pub use tracing::TracingConfig;
pub use traffic::RolloutSection;
pub use version_policy::VersionPolicy;
pub use warmup::{WarmupConfig, WarmupInput};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Source(#[from] config::ConfigError),
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("{path}: {message}")]
    Model { path: PathBuf, message: String },
}

impl ServerConfig {
    /// Layers the optional TOML file, then `FERROSERVE_*` variables, then `overrides` (flags).
    pub fn load(
        file: Option<&Path>,
        overrides: &[(&str, String)],
    ) -> Result<ServerConfig, ConfigError> {
        // No builder defaults: keys missing from every source take `ServerConfig::default()`
        // through `#[serde(default)]`, so each default is stated once, in server.rs.
        let mut builder = config::Config::builder();
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
                .with_list_parse_key("load_models")
                .with_list_parse_key("tls.ports"),
        );
        for (key, value) in overrides {
            builder = builder.set_override(*key, value.as_str())?;
        }
        let cfg: ServerConfig = builder.build()?.try_deserialize()?;
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        std::env::set_var("FERROSERVE_TLS__PORTS", "grpc");
        let cfg = ServerConfig::load(Some(&file), &[("metrics_port", "3002".into())]).unwrap();
        std::env::remove_var("FERROSERVE_GRPC_PORT");
        std::env::remove_var("FERROSERVE_METRICS_PORT");
        std::env::remove_var("FERROSERVE_LOAD_MODELS");
        std::env::remove_var("FERROSERVE_SHUTDOWN__DRAIN_DELAY");
        std::env::remove_var("FERROSERVE_TLS__PORTS");
        assert_eq!(cfg.tls.ports, [TlsPort::Grpc]);
        assert_eq!(cfg.load_models, ["iris", "mlp"]);
        assert_eq!(cfg.shutdown.drain_delay, 1.5);
        assert_eq!(
            (cfg.http_port, cfg.grpc_port, cfg.metrics_port),
            (1000, 2001, 3002)
        );
        assert_eq!(cfg.max_request_bytes, DEFAULT_MAX_REQUEST_BYTES);
    }

    #[test]
    fn a_shutdown_table_with_one_key_takes_the_other_default() {
        // Through serde alone (no environment: the test above changes it while it runs).
        let cfg: ServerConfig = toml::from_str("[shutdown]\ndrain_delay = 2\n").unwrap();
        assert_eq!(cfg.shutdown.drain_delay, 2.0);
        assert_eq!(cfg.shutdown.timeout, ShutdownConfig::default().timeout);
        assert_eq!(cfg.http_port, ServerConfig::default().http_port);
    }

    #[test]
    fn connection_timeouts_out_of_range_are_refused_by_name() {
        // Each would otherwise panic in Duration::from_secs_f64 or hold connections for ever.
        for key in [
            "handshake_timeout_secs",
            "body_read_timeout_secs",
            "idle_timeout_secs",
            "write_stall_timeout_secs",
        ] {
            for bad in ["0", "-1", "1e300", "nan"] {
                let cfg: ServerConfig = toml::from_str(&format!("{key} = {bad}")).unwrap();
                let err = cfg.validate().unwrap_err().to_string();
                assert!(err.contains(key), "{key} = {bad}: {err}");
            }
        }
        let cfg: ServerConfig = toml::from_str("http2_max_concurrent_streams = 0").unwrap();
        assert!(cfg.validate().is_err());
    }
}
