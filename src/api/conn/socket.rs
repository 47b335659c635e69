//! A connection's socket: notes each write that finds it full (the wait on a client the
//! watchdog bounds), frees its slot when dropped, and lingers after a goodbye.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::{ConnState, ConnTable};

/// A connection's socket: frees its slot when dropped.
pub struct Guarded {
    /// `None` only while being dropped.
    pub(super) tcp: Option<TcpStream>,
    pub(super) state: Arc<ConnState>,
    pub(super) table: Arc<ConnTable>,
}

impl Guarded {
    pub fn state(&self) -> &Arc<ConnState> {
        &self.state
    }

    /// The client's address, for logs.
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.tcp.as_ref().and_then(|tcp| tcp.peer_addr().ok())
    }
}

/// How long a socket closed by its bounds is drained after its goodbye.
pub const LINGER: Duration = Duration::from_secs(1);

impl Drop for Guarded {
    fn drop(&mut self) {
        self.state.close("ended");
        self.table.remove(self.state.id);
        // Closing a socket with unread bytes from the client (a PING ack, a WINDOW_UPDATE)
        // sends a reset, and the client's kernel then drops what it had not read yet: the
        // GOAWAY. Half-close and read what still comes, briefly (nginx's lingering close).
        let tcp = self.tcp.take();
        if let (Some(tcp), true) = (tcp, self.state.linger.load(Ordering::Acquire)) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(linger(tcp));
            }
        }
    }
}

async fn linger(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let drain = async {
        let mut sink = [0u8; 4096];
        while tcp.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut().tcp.as_mut() {
            Some(tcp) => Pin::new(tcp).poll_read(cx, buf),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(tcp) = this.tcp.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        let written = Pin::new(tcp).poll_write(cx, b);
        this.state.note_write(written.is_pending());
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().tcp.as_mut() {
            Some(tcp) => Pin::new(tcp).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().tcp.as_mut() {
            Some(tcp) => Pin::new(tcp).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}
