//! Wires the registry, router and the three listeners (HTTP, gRPC, metrics), loads the model
//! repository, and shuts everything down when the given future completes. Listeners are passed
//! in, so tests bind `127.0.0.1:0` and run servers side by side.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::serve::ListenerExt;
use futures_util::future::join_all;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;

use crate::api;
use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::registry::{loader, repository, ModelEntry, Registry, VersionState};
use crate::routing::Router;

/// The three bound sockets the server serves on.
pub struct Listeners {
    pub http: TcpListener,
    pub grpc: TcpListener,
    pub metrics: TcpListener,
}

impl Listeners {
    /// Binds the configured host and ports (port 0 picks a free one).
    pub async fn bind(config: &ServerConfig) -> std::io::Result<Listeners> {
        let bind = |port: u16| TcpListener::bind((config.host.clone(), port));
        Ok(Listeners {
            http: bind(config.http_port).await?,
            grpc: bind(config.grpc_port).await?,
            metrics: bind(config.metrics_port).await?,
        })
    }

    pub fn addrs(&self) -> std::io::Result<(SocketAddr, SocketAddr, SocketAddr)> {
        Ok((
            self.http.local_addr()?,
            self.grpc.local_addr()?,
            self.metrics.local_addr()?,
        ))
    }
}

/// Serves until `shutdown` completes, then stops accepting and finishes requests in flight.
pub async fn run(
    config: ServerConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let (http_addr, grpc_addr, metrics_addr) = listeners.addrs()?;
    let metrics = Arc::new(Metrics::new().context("metrics registry")?);
    let registry = Arc::new(Registry::default());
    let router = Arc::new(Router::new(
        registry.clone(),
        metrics.clone(),
        config.strict_readiness,
    ));

    let repo = &config.model_repository;
    let models = repository::scan(repo)
        .with_context(|| format!("cannot read the model repository {}", repo.display()))?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    // Serve first: liveness answers while models load, readiness waits for them.
    let http_app = api::http::app(router.clone(), config.max_request_bytes);
    let http_listener = listeners.http.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let http = tokio::spawn(
        axum::serve(http_listener, http_app)
            .with_graceful_shutdown(stopped())
            .into_future(),
    );

    let grpc_incoming = TcpListenerStream::new(listeners.grpc).map(|s| {
        if let Ok(tcp) = &s {
            let _ = tcp.set_nodelay(true);
        }
        s
    });
    let grpc = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(tower::util::MapResponseLayer::new(api::grpc::map_oversize))
            .add_service(api::grpc::service(router.clone(), config.max_request_bytes))
            .serve_with_incoming_shutdown(grpc_incoming, stopped()),
    );

    let metrics_app = axum::Router::new().route(
        "/metrics",
        axum::routing::get({
            let metrics = metrics.clone();
            move || async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    metrics.render(),
                )
            }
        }),
    );
    let metrics_server = tokio::spawn(
        axum::serve(listeners.metrics, metrics_app)
            .with_graceful_shutdown(stopped())
            .into_future(),
    );

    load_repository(&registry, &metrics, models).await;
    log_summary(&registry, http_addr, grpc_addr, metrics_addr, started);

    shutdown.await;
    let drain = config.shutdown;
    router.begin_drain();
    tracing::info!(
        drain_delay_s = drain.drain_delay,
        timeout_s = drain.timeout,
        "shutdown requested: readiness is false, serving on while load balancers drain"
    );
    tokio::time::sleep(drain.drain_delay()).await;
    tracing::info!("no longer accepting connections; finishing requests in flight");
    let _ = stop_tx.send(true);
    let servers = async {
        let (h, g, m) = tokio::join!(http, grpc, metrics_server);
        h??;
        g??;
        m??;
        anyhow::Ok(())
    };
    match tokio::time::timeout(drain.timeout(), servers).await {
        Ok(result) => result?,
        Err(_) => tracing::warn!(
            timeout_s = drain.timeout,
            "shutdown timeout: abandoning requests still in flight"
        ),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Publishes every model as loading, then loads them concurrently and publishes each result.
async fn load_repository(
    registry: &Registry,
    metrics: &Arc<Metrics>,
    models: Vec<repository::ModelDir>,
) {
    registry.publish(|table| {
        for m in &models {
            let mut entry = ModelEntry {
                name: m.name.clone(),
                versions: Default::default(),
                error: None,
            };
            match &m.config {
                Err(e) => entry.error = Some(e.clone()),
                Ok(_) if m.versions.is_empty() => {
                    entry.error = Some(format!("{} has no version directories", m.path.display()))
                }
                Ok(_) => {
                    for (v, _) in m.served_versions() {
                        entry.versions.insert(v, VersionState::Loading);
                    }
                }
            }
            table.models.insert(m.name.clone(), entry);
        }
    });
    for m in &models {
        if let Err(e) = &m.config {
            tracing::error!(model = %m.name, "model not loaded: {e}");
        } else if m.versions.is_empty() {
            tracing::error!(model = %m.name, path = %m.path.display(), "model not loaded: no version directories");
        }
    }
    let loads = models.iter().filter_map(|m| m.config.as_ref().ok().map(|c| (m, c))).flat_map(|(m, config)| {
        m.served_versions().into_iter().map(move |(version, file)| async move {
            let result = loader::load_version(&m.name, version, &file, config, metrics.clone()).await;
            let state = match result {
                Ok(mv) => {
                    tracing::info!(
                        model = %m.name,
                        version,
                        backend = config.backend.as_str(),
                        load_ms = mv.load_time.as_millis() as u64,
                        "model version ready"
                    );
                    VersionState::Ready(mv)
                }
                Err(reason) => {
                    tracing::error!(model = %m.name, version, file = %file.display(), "model version failed to load: {reason}");
                    VersionState::Unavailable(reason)
                }
            };
            let ready = matches!(state, VersionState::Ready(_));
            metrics.model_ready.with_label_values(&[m.name.as_str(), &version.to_string()]).set(i64::from(ready));
            registry.publish(|table| {
                if let Some(entry) = table.models.get_mut(&m.name) {
                    entry.versions.insert(version, state.clone());
                }
            });
        })
    });
    join_all(loads).await;
}

fn log_summary(
    registry: &Registry,
    http: SocketAddr,
    grpc: SocketAddr,
    metrics: SocketAddr,
    started: Instant,
) {
    let table = registry.snapshot();
    let models: Vec<String> = table
        .models
        .values()
        .map(|m| {
            let versions: Vec<String> = m
                .versions
                .iter()
                .map(|(v, s)| match s {
                    VersionState::Ready(mv) => {
                        format!(
                            "v{v}:{}:{}ms",
                            mv.config.backend.as_str(),
                            mv.load_time.as_millis()
                        )
                    }
                    other => format!("v{v}:{}", other.as_str()),
                })
                .collect();
            let state = if m.is_ready() { "READY" } else { "UNAVAILABLE" };
            format!("{}[{}]={state}", m.name, versions.join(","))
        })
        .collect();
    let ready = table.models.values().filter(|m| m.is_ready()).count();
    tracing::info!(
        http_addr = %http,
        grpc_addr = %grpc,
        metrics_addr = %metrics,
        models = %models.join(" "),
        ready = ready,
        total = table.models.len(),
        startup_ms = started.elapsed().as_millis() as u64,
        "ferroserve serving"
    );
}
