//! A real server on 127.0.0.1:0, configured by a small builder:
//! `TestServer::builder().repo(dir).control(ModelControlMode::Explicit).load(&["mlp"]).start()`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ferroserve::config::{ModelControlMode, ServerConfig, ShutdownConfig};
use ferroserve::server::{self, Listeners};
use serde_json::Value;
use tokio::sync::oneshot;

use super::models::bundled_models;
use super::wait::wait_until;

/// How long a server may take to start (loading included) on a loaded machine.
const START_LIMIT: Duration = Duration::from_secs(30);

pub struct TestServer {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// Where a server without a configured token wrote the one it made.
    pub admin_token_file: std::path::PathBuf,
    _token_dir: tempfile::TempDir,
    /// "http", or "https" for a server with TLS on its HTTP port.
    scheme: &'static str,
    /// What `get`, `url` and the start-up waits use (one trusting the test CA under TLS).
    pub client: reqwest::Client,
}

/// Defaults, but no drain delay: tests stop servers often.
pub fn test_config() -> ServerConfig {
    ServerConfig {
        shutdown: ShutdownConfig {
            drain_delay: 0.0,
            timeout: 10.0,
        },
        ..ServerConfig::default()
    }
}

/// What a test server is configured with before it starts. Host and ports are always
/// 127.0.0.1:0, so tests run in parallel.
pub struct Builder {
    config: ServerConfig,
    wait_ready: bool,
    /// Each server's own admin token file, so parallel tests never share one.
    token_dir: tempfile::TempDir,
    https: Option<reqwest::Client>,
}

impl Builder {
    /// Serve the repository at `path` (default: the bundled models).
    pub fn repo(mut self, path: &Path) -> Self {
        self.config.model_repository = path.to_path_buf();
        self
    }

    pub fn control(mut self, mode: ModelControlMode) -> Self {
        self.config.model_control_mode = mode;
        self
    }

    /// The models loaded at start in explicit mode.
    pub fn load(mut self, models: &[&str]) -> Self {
        self.config.load_models = models.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn admin_token(mut self, token: &str) -> Self {
        self.config.admin_token = Some(token.into());
        self
    }

    /// The repository poll period in poll mode.
    pub fn poll_secs(mut self, secs: f64) -> Self {
        self.config.repository_poll_secs = secs;
        self
    }

    /// Strict readiness: the server is ready only when every model is.
    pub fn strict(mut self, strict: bool) -> Self {
        self.config.strict_readiness = strict;
        self
    }

    /// Any other setting.
    pub fn configure(mut self, edit: impl FnOnce(&mut ServerConfig)) -> Self {
        edit(&mut self.config);
        self
    }

    /// The HTTP port speaks TLS (configured with `configure`): `client` trusts its CA.
    pub fn https(mut self, client: reqwest::Client) -> Self {
        self.https = Some(client);
        self
    }

    /// `true` (default): `start` returns once /v2/health/ready answers 200. `false`: once
    /// loading has finished, ready or not (for repositories with a model that fails).
    pub fn wait_ready(mut self, wait: bool) -> Self {
        self.wait_ready = wait;
        self
    }

    fn local(&self) -> ServerConfig {
        let config = self.config.clone();
        ServerConfig {
            admin_token_file: config
                .admin_token_file
                .clone()
                .or_else(|| Some(self.token_dir.path().join("admin-token"))),
            host: "127.0.0.1".into(),
            http_port: 0,
            grpc_port: 0,
            metrics_port: 0,
            ..config
        }
    }

    pub async fn start(self) -> TestServer {
        let wait_ready = self.wait_ready;
        let config = self.local();
        let explicit = (config.model_control_mode == ModelControlMode::Explicit)
            .then(|| config.load_models.clone());
        let config_token_file = config.admin_token_file.clone().unwrap_or_default();
        let listeners = Listeners::bind(&config).await.expect("bind 127.0.0.1:0");
        let (http, grpc, metrics) = listeners.addrs().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(server::run(config, listeners, async {
            let _ = stopped.await;
        }));
        let server = TestServer {
            http,
            grpc,
            metrics,
            stop: Some(stop),
            handle: Some(handle),
            admin_token_file: config_token_file,
            _token_dir: self.token_dir,
            scheme: if self.https.is_some() {
                "https"
            } else {
                "http"
            },
            client: self.https.unwrap_or_default(),
        };
        if wait_ready {
            server.wait_ready().await;
        } else {
            server.wait_settled(explicit.as_deref()).await;
        }
        server
    }

    /// Runs the server expecting it to fail at start-up, and returns the error.
    pub async fn start_fails(self) -> anyhow::Error {
        let config = self.local();
        let listeners = Listeners::bind(&config).await.expect("bind 127.0.0.1:0");
        tokio::time::timeout(
            START_LIMIT,
            server::run(config, listeners, std::future::pending()),
        )
        .await
        .expect("the server neither failed nor stopped")
        .expect_err("the server started")
    }
}

impl TestServer {
    /// The bundled models, the test defaults, waiting for readiness.
    pub fn builder() -> Builder {
        Builder {
            config: ServerConfig {
                model_repository: bundled_models(),
                ..test_config()
            },
            wait_ready: true,
            token_dir: tempfile::tempdir().expect("a temporary directory"),
            https: None,
        }
    }

    /// A server on the bundled models, ready.
    pub async fn start() -> TestServer {
        Self::builder().start().await
    }

    /// The token a server without a configured one made at start (from its token file).
    pub fn made_admin_token(&self) -> String {
        std::fs::read_to_string(&self.admin_token_file)
            .expect("the server wrote its admin token file")
            .trim()
            .to_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.http)
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// `GET path`: the status and the JSON body (null when there is none).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn wait_ready(&self) {
        let client = &self.client;
        wait_until(START_LIMIT, "the server became ready", || async {
            let r = client.get(self.url("/v2/health/ready")).send().await;
            r.is_ok_and(|r| r.status() == 200)
        })
        .await;
    }

    /// Waits until no model the server loads at start is still loading. `explicit`: the models
    /// named to load in explicit mode (the others stay unloaded).
    async fn wait_settled(&self, explicit: Option<&[String]>) {
        let client = &self.client;
        let settled = |rows: &[Value]| {
            rows.iter()
                .all(|r| match r["state"].as_str().unwrap_or("") {
                    "LOADING" => false,
                    // Present, not loaded yet: at start-up, or never in explicit mode.
                    "" => explicit.is_some_and(|load| {
                        !load.iter().any(|m| r["name"].as_str() == Some(m.as_str()))
                    }),
                    _ => true,
                })
        };
        wait_until(
            START_LIMIT,
            "the server finished loading its models",
            || async {
                let Ok(r) = client.post(self.url("/v2/repository/index")).send().await else {
                    return false;
                };
                let rows: Value = r.json().await.unwrap_or(Value::Null);
                rows.as_array().is_some_and(|rows| settled(rows))
            },
        )
        .await;
    }

    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Sends the shutdown signal; the server drains and `run` ends on its own.
    pub fn signal_stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    /// Stops the server and returns how `run` ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.signal_stop();
        match self.handle.take() {
            Some(h) => h.await.expect("server task panicked"),
            None => Ok(()),
        }
    }

    /// How `run` ended, once it has (the signal sent before); panics after `limit`.
    pub async fn stopped_within(mut self, limit: Duration) -> anyhow::Result<()> {
        let handle = self.handle.take().expect("the server task");
        tokio::time::timeout(limit, handle)
            .await
            .unwrap_or_else(|_| panic!("run did not return within {limit:?}"))
            .expect("server task panicked")
    }
}
