//! The accept loops of the three ports, with every phase of a connection bounded
//! (`conn::ConnLimits`), all served here with hyper: HTTP and metrics as `axum::serve` would,
//! plus the limits it cannot set; gRPC with tonic's routes as the service (`serve_grpc`), its
//! connections admitted and watched like the HTTP ones, with `GrpcConnLayer` bounding its
//! bodies. Every port's requests are tracked until their answers are sent (`api::sent`).
//! Graceful shutdown lets requests in flight finish.
//!
//! A connection closed by its bounds (evicted from a full table, or idle or silent too long) is
//! shut down gracefully first: an HTTP/2 one is sent GOAWAY, so a well-behaved client retries on
//! a new connection instead of seeing a reset, and gets [`GOODBYE_GRACE`] to finish what is in
//! flight before the socket is dropped.
//!
//! hyper starts the header timer whenever it waits for a request head, so it also closes
//! HTTP/1 keep-alive connections idle for that long.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

pub use super::conn::ConnLimits;
use super::conn::{self, ConnState, ConnTable};
use super::error::ApiError;
use super::sent::Tracked;
use super::tls::{self, MaybeTls, PortTls};

/// Streams a client may reset before they are accepted (CVE-2023-44487, rapid reset), and
/// streams the server may reset for the client's errors (RUSTSEC-2024-0003: a flood of streams
/// beyond `max_concurrent_streams`), per connection; one more is answered with GOAWAY. Set on
/// both HTTP/2 ports (hyper's default for the second is no limit).
pub const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
pub const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// How long a connection closed by its bounds has, after GOAWAY (HTTP/2) or the end of
/// keep-alive (HTTP/1), before its socket is dropped.
pub const GOODBYE_GRACE: Duration = Duration::from_secs(1);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting and waits for
/// open connections to finish their requests (idle ones close at once).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnLimits,
    tls: Option<PortTls>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let builder = builder(limits);
    let timeout = limits.body_read_timeout;
    let service = move |_: &Arc<ConnState>| timed(app.clone(), timeout);
    accept_loop(listener, builder, limits, tls, shutdown, service).await
}

/// Serves the gRPC port: `routes` (tonic's routes under the server's layers, `GrpcConnLayer`
/// outermost) over HTTP/2 only, as tonic's own server would, on connections bounded as the
/// HTTP ones are.
pub async fn serve_grpc<S, B>(
    listener: TcpListener,
    routes: S,
    limits: ConnLimits,
    tls: Option<PortTls>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    S: tower::Service<GrpcRequest, Response = http::Response<B>, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let builder = builder(limits).http2_only();
    let service = move |_: &Arc<ConnState>| {
        let routes = routes.clone();
        hyper::service::service_fn(move |req: http::Request<Incoming>| {
            routes.clone().oneshot(req.map(tonic::body::Body::new))
        })
    };
    accept_loop(listener, builder, limits, tls, shutdown, service).await
}

fn builder(limits: ConnLimits) -> Builder<TokioExecutor> {
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
    builder
}

/// Accepts under the port's connection table and serves each connection with the service
/// `service` makes for it, until `shutdown`; then waits for every connection to end.
async fn accept_loop<S, B>(
    listener: TcpListener,
    builder: Builder<TokioExecutor>,
    limits: ConnLimits,
    tls: Option<PortTls>,
    shutdown: impl Future<Output = ()>,
    service: impl Fn(&Arc<ConnState>) -> S,
) -> io::Result<()>
where
    S: hyper::service::Service<http::Request<Incoming>, Response = http::Response<B>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let builder = Arc::new(builder);
    let table = Arc::new(ConnTable::default());
    // Every connection holds a receiver; all dropped means all ended.
    let (stop_tx, stop_rx) = watch::channel(false);
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
        let service = Tracked {
            inner: service(&state),
            conn: state.clone(),
        };
        let (builder, mut stop) = (builder.clone(), stop_rx.clone());
        let acceptor = tls.as_ref().map(PortTls::acceptor);
        tokio::spawn(async move {
            // The TLS handshake on the connection's own task, inside its slot and its bounds.
            let io = match acceptor {
                None => MaybeTls::Plain(io),
                Some(acceptor) => tokio::select! {
                    io = tls::handshake(acceptor, io, limits.handshake_timeout) => match io {
                        Some(io) => io,
                        None => return,
                    },
                    () = state.closed() => return,
                },
            };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            tokio::pin!(conn);
            let bounded = tokio::select! {
                // A slow or vanished client ends its own connection; nothing to report.
                done = conn.as_mut() => return log_end(done),
                () = state.closed() => true,
                _ = stop.wait_for(|s| *s) => false,
            };
            // GOAWAY on HTTP/2, no more keep-alive on HTTP/1; a connection closed by its
            // bounds gets the grace, one drained at shutdown as long as its requests take.
            if bounded {
                state.linger_on_close();
            }
            conn.as_mut().graceful_shutdown();
            if bounded {
                if let Ok(done) = tokio::time::timeout(GOODBYE_GRACE, conn).await {
                    log_end(done);
                }
            } else {
                log_end(conn.await);
            }
        });
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    stop_tx.closed().await;
    Ok(())
}

fn log_end(done: Result<(), BoxError>) {
    if let Err(e) = done {
        tracing::debug!("connection closed: {e}");
    }
}

/// `app` for one connection: each request's body must arrive within `body_timeout`.
fn timed(
    app: axum::Router,
    body_timeout: Duration,
) -> impl hyper::service::Service<
    http::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let req = req.map(|b| axum::body::Body::new(TimedBody::new(b, body_timeout)));
        app.clone().oneshot(req)
    })
}

/// A gRPC body error as tonic finds it: a late body as the table's status, which tonic looks
/// for in the error it is given.
fn grpc_body_error(e: BoxError) -> BoxError {
    match e.downcast_ref::<BodyTimeout>() {
        Some(_) => Box::new(tonic::Status::from(ApiError::body_read(&*e))),
        None => e,
    }
}

/// Bounds each gRPC call's body read.
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

pub type GrpcRequest = http::Request<tonic::body::Body>;

impl<S> tower::Service<GrpcRequest> for GrpcConn<S>
where
    S: tower::Service<GrpcRequest>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: GrpcRequest) -> Self::Future {
        let timeout = self.body_read_timeout;
        // Streaming RPCs are not served (ModelStreamInfer answers UNIMPLEMENTED), so every
        // body is one unary message and a total deadline fits it. A late body is answered
        // DEADLINE_EXCEEDED with the table's message (tonic would say UNKNOWN).
        let req = req
            .map(|b| tonic::body::Body::new(TimedBody::new(b, timeout).map_err(grpc_body_error)));
        self.inner.call(req)
    }
}

/// The body read did not finish within `body_read_timeout` (answered by
/// [`super::error::ApiError::body_read`]: 408 / DEADLINE_EXCEEDED).
#[derive(Debug, thiserror::Error)]
#[error("request body not received within {} s", .0.as_secs_f64())]
pub struct BodyTimeout(pub Duration);

/// A request body that fails once its deadline passes with data still missing. Data already
/// received is returned even after the deadline, so a handler that reads late is not refused.
pub struct TimedBody<B> {
    inner: B,
    timeout: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<B> TimedBody<B> {
    pub fn new(inner: B, timeout: Duration) -> Self {
        TimedBody {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout(this.timeout).into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
