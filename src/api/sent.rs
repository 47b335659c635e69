//! The answer side of a connection's requests, on every port: a request stays in flight on its
//! connection until its response body has been handed to the transport whole (or dropped),
//! not only until the handler returned, so the idle bound and eviction never cut an answer
//! still being read; and each frame of an answer that is ready and not yet taken counts as a
//! wait on the client, which `conn`'s watchdog bounds (`write_stall_timeout`).
//!
//! Why the frames and not only the socket: over HTTP/2 a client that never opens its
//! flow-control window leaves hyper with nothing it may write, so the socket stays writable
//! and idle while the answer waits for ever; only the body sees that nobody takes it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::conn::{ConnState, RequestGuard, Unpulled};

/// `inner` with each request tracked on `conn` until its answer is sent.
#[derive(Clone)]
pub struct Tracked<S> {
    pub inner: S,
    pub conn: Arc<ConnState>,
}

impl<S, B> hyper::service::Service<http::Request<Incoming>> for Tracked<S>
where
    S: hyper::service::Service<http::Request<Incoming>, Response = http::Response<B>>,
    S::Future: Send + 'static,
    B: Body,
{
    type Response = http::Response<SentBody<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        // Counted from here: an HTTP/1 request read ahead (pipelined) whose turn to be answered
        // does not come, because the client reads nothing, is in flight too.
        let request = self.conn.start_request();
        let conn = self.conn.clone();
        let call = self.inner.call(req);
        Box::pin(async move {
            let response = call.await?;
            Ok(response.map(|body| SentBody::new(body, &conn, request)))
        })
    }
}

/// A response body that keeps its request in flight until it ends or is dropped, and counts
/// as a wait on the client while a frame of it is ready and the transport has not taken it.
pub struct SentBody<B> {
    inner: B,
    conn: Arc<ConnState>,
    /// `Some` while the answer waits on the transport (the client's turn): from the start,
    /// and after each frame taken until the transport asks for the next one or drops the body.
    ready: Option<Unpulled>,
    _request: RequestGuard,
}

impl<B: Body> SentBody<B> {
    fn new(inner: B, conn: &Arc<ConnState>, request: RequestGuard) -> Self {
        let ready = (!inner.is_end_stream()).then(|| conn.answer_ready());
        SentBody {
            inner,
            conn: conn.clone(),
            ready,
            _request: request,
        }
    }
}

impl<B> Body for SentBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        // Taken: until the body yields again, the server is the one to wait for.
        this.ready = None;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        // A frame taken is the transport's to write: the wait on the client goes on until the
        // next poll, or until the body is dropped (hyper's HTTP/2 holds the body, its last
        // frame included, until the stream's window lets the frame go).
        if let Poll::Ready(Some(Ok(_))) = &polled {
            this.ready = Some(this.conn.answer_ready());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
