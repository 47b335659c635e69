//! The accept loops of the three ports, with every phase of a connection bounded
//! (`conn::ConnLimits`): HTTP and metrics are served here with hyper (what `axum::serve` does,
//! plus the limits it cannot set); gRPC is served by tonic from the connections `grpc_incoming`
//! admits, with `GrpcConnLayer` tracking its requests. Graceful shutdown lets requests in
//! flight finish.
//!
//! hyper starts the header timer whenever it waits for a request head, so it also closes
//! HTTP/1 keep-alive connections idle for that long.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tower::ServiceExt;

pub use super::conn::ConnLimits;
use super::conn::{self, ConnState, ConnTable, TimedBody};
use super::tls::{self, MaybeTls, PortTls};

/// Streams a client may reset before they are accepted (CVE-2023-44487, rapid reset), and
/// streams the server may reset for the client's errors (RUSTSEC-2024-0003: a flood of streams
/// beyond `max_concurrent_streams`), per connection; one more is answered with GOAWAY. Set on
/// both HTTP/2 ports: tonic 0.14 passes `None` for the second, which hyper reads as no limit.
pub const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
pub const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting and waits for
/// open connections to finish their requests (idle ones close at once).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnLimits,
    tls: Option<PortTls>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS)
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let table = Arc::new(ConnTable::default());
    tokio::pin!(shutdown);
    loop {
        let io = tokio::select! {
            accepted = conn::accept(&listener, &table, limits) => match accepted {
                Ok(io) => io,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: serving goes on.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let state = io.state().clone();
        let service = tracked(app.clone(), state.clone(), limits.body_read_timeout);
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        let acceptor = tls.as_ref().map(PortTls::acceptor);
        tokio::spawn(async move {
            let served = async move {
                let io = match acceptor {
                    None => MaybeTls::Plain(io),
                    Some(acceptor) => {
                        match tls::handshake(acceptor, io, limits.handshake_timeout).await {
                            Some(io) => io,
                            None => return,
                        }
                    }
                };
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(io), service)
                    .into_owned();
                // A slow or vanished client ends its own connection; nothing to report.
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!("connection closed: {e}");
                }
            };
            tokio::select! {
                () = served => {}
                // Closed by its bounds (timeout or eviction): dropping it closes the socket.
                () = state.closed() => {}
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// `app` for one connection: each request counts as in flight on `state` until answered, and
/// its body must arrive within `body_timeout`.
fn tracked(
    app: axum::Router,
    state: Arc<ConnState>,
    body_timeout: Duration,
) -> impl hyper::service::Service<
    http::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let guard = state.start_request();
        let req = req.map(|b| axum::body::Body::new(TimedBody::new(b, body_timeout)));
        let call = app.clone().oneshot(req);
        async move {
            let response = call.await;
            drop(guard);
            response
        }
    })
}

/// The gRPC port's connections, admitted and watched like the HTTP ones (and their TLS
/// handshakes done, each on its own task), for tonic's `serve_with_incoming_shutdown`.
pub fn grpc_incoming(
    listener: TcpListener,
    limits: ConnLimits,
    tls: Option<PortTls>,
) -> Pin<Box<dyn Stream<Item = io::Result<MaybeTls>> + Send>> {
    let table = Arc::new(ConnTable::default());
    let Some(tls) = tls else {
        return Box::pin(futures_util::stream::unfold(
            (listener, table),
            move |(listener, table)| async move {
                let next = conn::accept(&listener, &table, limits).await;
                if let Err(e) = &next {
                    accept_failed(e).await;
                }
                Some((next.map(MaybeTls::Plain), (listener, table)))
            },
        ));
    };
    // Handshakes finish in any order, so the accept loop hands them over through a channel;
    // it ends (closing the listener) when tonic drops the stream.
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<MaybeTls>>(64);
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = conn::accept(&listener, &table, limits) => next,
                () = tx.closed() => break,
            };
            match next {
                Ok(io) => {
                    let (tx, acceptor) = (tx.clone(), tls.acceptor());
                    tokio::spawn(async move {
                        if let Some(io) =
                            tls::handshake(acceptor, io, limits.handshake_timeout).await
                        {
                            let _ = tx.send(Ok(io)).await;
                        }
                    });
                }
                Err(e) => accept_failed(&e).await,
            }
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|next| (next, rx))
    }))
}

/// tonic skips a failed accept; pause so running out of descriptors does not spin.
async fn accept_failed(e: &io::Error) {
    tracing::warn!("accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// What tonic puts in each gRPC request's extensions: the connection it came on.
#[derive(Clone)]
pub struct GrpcConnInfo {
    pub conn: Arc<ConnState>,
    pub tcp: TcpConnectInfo,
}

impl Connected for MaybeTls {
    type ConnectInfo = GrpcConnInfo;

    fn connect_info(&self) -> GrpcConnInfo {
        let io = self.guarded();
        GrpcConnInfo {
            conn: io.state().clone(),
            tcp: io.tcp().connect_info(),
        }
    }
}

/// Counts each gRPC call as in flight on its connection and bounds its body read.
#[derive(Debug, Clone, Copy)]
pub struct GrpcConnLayer {
    pub body_read_timeout: Duration,
}

impl<S> tower::Layer<S> for GrpcConnLayer {
    type Service = GrpcConn<S>;

    fn layer(&self, inner: S) -> GrpcConn<S> {
        GrpcConn {
            inner,
            body_read_timeout: self.body_read_timeout,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcConn<S> {
    inner: S,
    body_read_timeout: Duration,
}

type GrpcRequest = http::Request<tonic::body::Body>;

impl<S> tower::Service<GrpcRequest> for GrpcConn<S>
where
    S: tower::Service<GrpcRequest>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: GrpcRequest) -> Self::Future {
        let guard = req
            .extensions()
            .get::<GrpcConnInfo>()
            .map(|info| info.conn.start_request());
        let timeout = self.body_read_timeout;
        // Streaming RPCs are not served (ModelStreamInfer answers UNIMPLEMENTED), so every
        // body is one unary message and a total deadline fits it.
        let req = req.map(|b| tonic::body::Body::new(TimedBody::new(b, timeout)));
        let call = self.inner.call(req);
        Box::pin(async move {
            let response = call.await;
            drop(guard);
            response
        })
    }
}
