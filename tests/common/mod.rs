//! Test harness: a real server on 127.0.0.1:0 over a model repository, and the references that
//! models/build.py computed with scikit-learn / numpy.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferroserve::config::{ServerConfig, ShutdownConfig};
use ferroserve::server::{self, Listeners};
use serde_json::Value;
use tokio::sync::oneshot;

pub struct TestServer {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub fn bundled_models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

impl TestServer {
    /// Starts a server on the bundled models and waits until it is ready.
    pub async fn start() -> TestServer {
        Self::start_with(
            ServerConfig {
                model_repository: bundled_models(),
                ..test_config()
            },
            true,
        )
        .await
    }

    /// Starts a server with `config` (host and ports are forced to 127.0.0.1:0).
    pub async fn start_with(config: ServerConfig, wait_ready: bool) -> TestServer {
        let config = ServerConfig {
            host: "127.0.0.1".into(),
            http_port: 0,
            grpc_port: 0,
            metrics_port: 0,
            ..config
        };
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
        };
        if wait_ready {
            server.wait_ready().await;
        } else {
            server.wait_settled().await;
        }
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        for _ in 0..400 {
            if let Ok(r) = client.get(self.url("/v2/health/ready")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("server did not become ready within 10 s");
    }

    /// Waits until the start-up summary has been reached (loading finished, ready or not).
    async fn wait_settled(&self) {
        let client = reqwest::Client::new();
        for _ in 0..400 {
            if let Ok(r) = client.get(self.url("/v2/models/stats")).send().await {
                if r.status() == 200 {
                    // Loading publishes versions one by one; give the last one a moment.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("server did not start within 10 s");
    }

    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Stops the server and returns how `run` ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.handle.take() {
            Some(h) => h.await.expect("server task panicked"),
            None => Ok(()),
        }
    }
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

/// One tensor of a reference file.
#[derive(Debug, Clone)]
pub struct RefTensor {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
    pub data: Vec<Value>,
}

impl RefTensor {
    pub fn f32s(&self) -> Vec<f32> {
        self.data
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    }
    pub fn i64s(&self) -> Vec<i64> {
        self.data.iter().map(|v| v.as_i64().unwrap()).collect()
    }
    pub fn json(&self) -> Value {
        serde_json::json!({"name": self.name, "datatype": self.datatype, "shape": self.shape, "data": self.data})
    }
}

/// The reference inputs and outputs of a bundled model (tests/data/<model>.json).
pub struct Reference {
    pub inputs: Vec<RefTensor>,
    pub outputs: Vec<RefTensor>,
}

pub fn reference(model: &str) -> Reference {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(format!("{model}.json"));
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let tensors = |key: &str| -> Vec<RefTensor> {
        v[key]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, t)| RefTensor {
                name: name.clone(),
                datatype: t["datatype"].as_str().unwrap().into(),
                shape: t["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_i64().unwrap())
                    .collect(),
                data: t["data"].as_array().unwrap().clone(),
            })
            .collect()
    };
    Reference {
        inputs: tensors("inputs"),
        outputs: tensors("outputs"),
    }
}

pub const BUNDLED: [&str; 3] = ["iris", "digits", "mlp"];

/// Labels exact, floats within 1e-5.
pub fn assert_matches_reference(
    model: &str,
    name: &str,
    datatype: &str,
    shape: &[i64],
    values: &[f64],
    want: &RefTensor,
) {
    assert_eq!(datatype, want.datatype, "{model}/{name} datatype");
    assert_eq!(shape, &want.shape[..], "{model}/{name} shape");
    assert_eq!(
        values.len(),
        want.data.len(),
        "{model}/{name} element count"
    );
    for (i, (got, w)) in values.iter().zip(&want.data).enumerate() {
        let w = w.as_f64().unwrap();
        if datatype.starts_with("INT") {
            assert_eq!(*got, w, "{model}/{name}[{i}]");
        } else {
            assert!(
                (got - w).abs() <= 1e-5,
                "{model}/{name}[{i}]: got {got}, want {w}"
            );
        }
    }
}
