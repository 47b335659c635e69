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
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tower::ServiceExt;

pub use super::conn::ConnLimits;
use super::conn::{self, ConnState, ConnTable, Guarded, TimedBody};
use super::error::ApiError;

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting and waits for
/// open connections to finish their requests (idle ones close at once).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnLimits,
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
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout);
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
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            tokio::select! {
                // A slow or vanished client ends its own connection; nothing to report.
                done = conn => if let Err(e) = done {
                    tracing::debug!("connection closed: {e}");
                },
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

/// A gRPC body error as tonic finds it: a late body as the table's status, which tonic looks
/// for in the error it is given.
fn grpc_body_error(e: BoxError) -> BoxError {
    match e.downcast_ref::<conn::BodyTimeout>() {
        Some(_) => Box::new(tonic::Status::from(ApiError::body_read(&*e))),
        None => e,
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The gRPC port's connections, admitted and watched like the HTTP ones, for tonic's
/// `serve_with_incoming_shutdown`.
pub fn grpc_incoming(
    listener: TcpListener,
    limits: ConnLimits,
) -> impl Stream<Item = io::Result<Guarded>> {
    let table = Arc::new(ConnTable::default());
    futures_util::stream::unfold((listener, table), move |(listener, table)| async move {
        let next = conn::accept(&listener, &table, limits).await;
        if let Err(e) = &next {
            // tonic skips a failed accept; pause so running out of descriptors does not spin.
            tracing::warn!("accept failed: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some((next, (listener, table)))
    })
}

/// What tonic puts in each gRPC request's extensions: the connection it came on.
#[derive(Clone)]
pub struct GrpcConnInfo {
    pub conn: Arc<ConnState>,
    pub tcp: TcpConnectInfo,
}

impl Connected for Guarded {
    type ConnectInfo = GrpcConnInfo;

    fn connect_info(&self) -> GrpcConnInfo {
        GrpcConnInfo {
            conn: self.state().clone(),
            tcp: self.tcp().connect_info(),
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
        // body is one unary message and a total deadline fits it. A late body is answered
        // DEADLINE_EXCEEDED with the table's message (tonic would say UNKNOWN).
        let req = req
            .map(|b| tonic::body::Body::new(TimedBody::new(b, timeout).map_err(grpc_body_error)));
        let call = self.inner.call(req);
        Box::pin(async move {
            let response = call.await;
            drop(guard);
            response
        })
    }
}
