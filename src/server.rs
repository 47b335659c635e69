//! Wires the registry, router and the three listeners (HTTP, gRPC, metrics), loads the model
//! repository, and shuts everything down when the given future completes. Listeners are passed
//! in, so tests bind `127.0.0.1:0` and run servers side by side.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api;
use crate::api::admin::Admin;
use crate::api::serve::ConnLimits;
use crate::api::tls::{PortTls, Tls};
use crate::config::ServerConfig;
use crate::config::{ModelControlMode, TlsPort};
use crate::metrics::Metrics;
use crate::registry::source::location::Location;
use crate::registry::{repository, Registry, VersionState};
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
    // Nothing is loaded here: the first model that needs ONNX Runtime loads it (or fails alone).
    crate::backend::configure_onnxruntime(config.onnxruntime.library.clone());
    let (http_addr, grpc_addr, metrics_addr) = listeners.addrs()?;
    let metrics = Arc::new(Metrics::new().context("metrics registry")?);
    let registry = Arc::new(Registry::default());
    let router = Arc::new(
        Router::new(registry.clone(), metrics.clone(), config.strict_readiness)
            .with_max_concurrent_requests(config.max_concurrent_requests)
            .with_max_inflight_bytes(config.max_inflight_bytes),
    );

    // A directory, or a bucket's local mirror (registry::source), with the models an MLflow
    // registry feeds; the same opening as `ferroserve predict`'s.
    let opened = Location {
        repository: &config.model_repository,
        model_name: config.model_name.clone(),
        options: &config.model_repository_options,
        cache_dir: config.model_cache_dir(),
        cache_max_bytes: config.model_cache_max_bytes,
        own_cache: config.model_cache_dir.is_some(),
    }
    .open(&metrics)
    .map_err(anyhow::Error::msg)?;
    let root = opened.root().to_path_buf();
    repository::scan(&opened.repo)
        .with_context(|| format!("cannot read the model repository {}", root.display()))?;
    let manager = Arc::new(opened.manager(
        registry.clone(),
        metrics.clone(),
        config.model_control_mode,
        config.shutdown.timeout(),
    ));
    let traffic = crate::rollout::TrafficControl::new(registry.clone(), metrics.clone());
    // Rollouts declared by config.toml `[rollout]` (issue 16): started on the source's clock.
    let declared = tokio::spawn(traffic.clone().follow_declared());
    let admin = Arc::new(Admin::new(manager.clone(), traffic, &config)?);

    let (stop_tx, stop_rx) = watch::channel(false);
    let health_stop = stop_rx.clone();
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let tls = Tls::load(&config.tls, metrics.clone())?;
    if let Some(tls) = &tls {
        tracing::info!(
            ports = ?config.tls.ports,
            client_certificates_required = config.tls.client_ca_file.is_some(),
            "tls: on (the metrics port stays plain)"
        );
        tls.watch(secs(config.tls.reload_poll_secs), stopped());
    }
    let port_tls = |port| {
        let tls = tls.clone().filter(|_| config.tls.on(port));
        tls.map(|tls| PortTls { tls, port })
    };

    // Serve first: liveness answers while models load, readiness waits for them.
    let shm = Arc::new(api::shm::SharedMemory::new(config.allow_shared_memory));
    let http_app = api::http::app(
        router.clone(),
        admin.clone(),
        shm.clone(),
        config.max_request_bytes,
        &config.server_name,
    )
    // The status page links to the metrics port.
    .layer(axum::Extension(api::http::MetricsPort(metrics_addr.port())));
    let limits = conn_limits(&config);
    let http = tokio::spawn(api::serve::serve(
        listeners.http,
        http_app,
        limits,
        port_tls(TlsPort::Http),
        stopped(),
    ));

    // grpc.health.v1 from the router's state (Kubernetes `grpc:` probes), and reflection.
    let (health, health_handle) = api::grpc::health::service(router.clone(), health_stop);
    let (reflection_v1, reflection_v1alpha) =
        api::grpc::reflection::services().context("gRPC reflection descriptors")?;
    // tonic's routes served by our accept loop, which bounds every connection (count,
    // handshake, idle, keep-alive pings, streams) and says goodbye (GOAWAY) when it closes one.
    let grpc_routes = tonic::service::Routes::new(api::grpc::service(
        router.clone(),
        admin.clone(),
        shm,
        config.max_request_bytes,
        &config.server_name,
    ))
    .add_service(api::admin_grpc::service(admin.clone(), router.clone()))
    .add_service(health)
    .add_service(reflection_v1)
    .add_service(reflection_v1alpha)
    .prepare();
    let grpc_app = tower::ServiceBuilder::new()
        .layer(api::serve::GrpcConnLayer {
            body_read_timeout: limits.body_read_timeout,
        })
        .layer(api::grpc::AnswersLayer)
        // The token of a mutation before its body is read (or decoded).
        .layer(api::admin_grpc::AdminTokenLayer(admin.clone()))
        .layer(api::grpc::budget::InflightBytesLayer::new(
            router.clone(),
            config.max_request_bytes,
        ))
        .service(grpc_routes);
    let grpc = tokio::spawn(api::serve::serve_grpc(
        listeners.grpc,
        grpc_app,
        limits,
        port_tls(TlsPort::Grpc),
        stopped(),
    ));

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
    let metrics_server = tokio::spawn(api::serve::serve(
        listeners.metrics,
        metrics_app,
        limits,
        None,
        stopped(),
    ));

    manager
        .load_initial(&config.load_models)
        .await
        .context("loading the model repository")?;
    log_summary(&registry, http_addr, grpc_addr, metrics_addr, started);
    if config.model_control_mode == ModelControlMode::Poll {
        let period = std::time::Duration::from_secs_f64(config.repository_poll_secs);
        let (manager, stop) = (manager.clone(), stopped());
        tokio::spawn(async move {
            tokio::pin!(stop);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => manager.poll().await,
                    _ = &mut stop => break,
                }
            }
        });
    }

    shutdown.await;
    let drain = config.shutdown;
    router.begin_drain();
    health_handle.refresh();
    tracing::info!(
        drain_delay_s = drain.drain_delay,
        timeout_s = drain.timeout,
        "shutdown requested: readiness is false, serving on while load balancers drain"
    );
    tokio::time::sleep(drain.drain_delay()).await;
    tracing::info!("no longer accepting connections; finishing requests in flight");
    let _ = stop_tx.send(true);
    declared.abort();
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

fn secs(s: f64) -> std::time::Duration {
    std::time::Duration::from_secs_f64(s)
}

fn conn_limits(config: &ServerConfig) -> ConnLimits {
    ConnLimits {
        header_read_timeout: secs(config.header_read_timeout_secs),
        handshake_timeout: secs(config.handshake_timeout_secs),
        body_read_timeout: secs(config.body_read_timeout_secs),
        idle_timeout: secs(config.idle_timeout_secs),
        keepalive_interval: secs(config.http2_keepalive_interval_secs),
        keepalive_timeout: secs(config.http2_keepalive_timeout_secs),
        max_streams: config.http2_max_concurrent_streams,
        max_connections: config.max_connections,
        write_stall_timeout: secs(config.write_stall_timeout_secs),
    }
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
