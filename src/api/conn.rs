//! Connection bounds shared by the three listeners (HTTP, gRPC, metrics): a table of open
//! connections per port, each with a watchdog closing it when it stays silent or idle too long
//! (`api::serve` then says goodbye and drops it), and a socket that frees its slot when dropped.
//!
//! When a port's table is full, a new connection is not left in the kernel's backlog: one is
//! closed for it, in this order: the oldest that has sent no request yet (silent, or stuck in
//! its handshake), the one idle longest between requests, the oldest whose first request is
//! still in flight (a slow first body).
//! Why: a backlog lets a few hundred silent sockets hold every slot until their timeouts run
//! out, so a health probe (one fresh connection, one quick request) would fail under an attack
//! that costs the attacker nothing; evicting what is idle or has produced nothing lets the
//! probe in at once, while a connection that has served requests and has one in flight is
//! never cut for a newcomer (then the newcomer waits for a slot, as before).

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Every bound on a connection's phases; the same for all three ports.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// An HTTP/1 request's headers must arrive within this, else the connection is closed.
    pub header_read_timeout: Duration,
    /// A new connection must deliver its first request (HTTP/1 head, or HTTP/2 preface,
    /// settings and a first stream) within this.
    pub handshake_timeout: Duration,
    /// A request's body must have arrived whole this long after its head.
    pub body_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// HTTP/2 pings this often find dead peers; one unanswered for `keepalive_timeout` closes.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// HTTP/2 streams (concurrent requests) per connection.
    pub max_streams: u32,
    /// Open connections per port.
    pub max_connections: usize,
}

/// One open connection, as its watchdog and the port's table see it.
#[derive(Debug)]
pub struct ConnState {
    id: u64,
    accepted: Instant,
    in_flight: AtomicUsize,
    completed: AtomicU64,
    /// Milliseconds after `accepted` of the last request start or end.
    last_active_ms: AtomicU64,
    closing: AtomicBool,
    /// Set when the connection is shut down by its bounds: its socket lingers (see
    /// [`Guarded`]'s drop) so the goodbye is read, not lost to a reset.
    linger: AtomicBool,
    closed: Notify,
}

impl ConnState {
    fn new(id: u64) -> ConnState {
        ConnState {
            id,
            accepted: Instant::now(),
            in_flight: AtomicUsize::new(0),
            completed: AtomicU64::new(0),
            last_active_ms: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            linger: AtomicBool::new(false),
            closed: Notify::new(),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }

    fn last_active(&self) -> Instant {
        self.accepted + Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed))
    }

    /// A request has begun; in flight until the guard drops.
    pub fn start_request(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        RequestGuard(self.clone())
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Asks the connection's task to end it (gracefully, within a grace); from now on it no
    /// longer counts against the table's limit.
    pub fn close(&self, why: &str) {
        if !self.closing.swap(true, Ordering::AcqRel) {
            tracing::debug!(conn = self.id, "closing connection: {why}");
        }
        self.closed.notify_waiters();
    }

    /// The socket, once the connection ends, is half-closed and drained for at most
    /// [`LINGER`] before it is dropped.
    pub fn linger_on_close(&self) {
        self.linger.store(true, Ordering::Release);
    }

    /// Completes once `close` has been called.
    pub async fn closed(&self) {
        loop {
            let notified = self.closed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_closing() {
                return;
            }
            notified.await;
        }
    }
}

pub struct RequestGuard(Arc<ConnState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.completed.fetch_add(1, Ordering::Relaxed);
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The open connections of one port.
#[derive(Default)]
pub struct ConnTable {
    conns: Mutex<BTreeMap<u64, Arc<ConnState>>>,
    next_id: AtomicU64,
    freed: Notify,
}

impl ConnTable {
    /// Registers a new connection, closing an idle or unproductive one when full (see the
    /// module comment); `None` when every slot holds a client with a request in flight that
    /// has already been served.
    fn admit(&self, max: usize) -> Option<Arc<ConnState>> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let live = conns.values().filter(|c| !c.is_closing()).count();
        if live >= max.max(1) {
            let open = || conns.values().filter(|c| !c.is_closing());
            // Never-productive first (what a flood of silent sockets consists of, so a flood
            // evicts itself before any client that has been served), then idle longest.
            let idle = open()
                .filter(|c| c.in_flight.load(Ordering::Acquire) == 0)
                .min_by_key(|c| (c.completed.load(Ordering::Relaxed) > 0, c.last_active()));
            let victim = idle.or_else(|| {
                open()
                    .filter(|c| c.completed.load(Ordering::Relaxed) == 0)
                    .min_by_key(|c| c.accepted)
            })?;
            victim.close("the connection limit is reached and this one is idle or has not completed a request");
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::new(id));
        conns.insert(id, state.clone());
        Some(state)
    }

    fn remove(&self, id: u64) {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        self.freed.notify_one();
    }
}

/// Accepts the next connection and gives it a slot (evicting, or waiting while every slot is
/// busy serving), with its watchdog running.
pub async fn accept(
    listener: &TcpListener,
    table: &Arc<ConnTable>,
    limits: ConnLimits,
) -> io::Result<Guarded> {
    let (tcp, _) = listener.accept().await?;
    let _ = tcp.set_nodelay(true);
    loop {
        if let Some(state) = table.admit(limits.max_connections) {
            tokio::spawn(watchdog(state.clone(), limits));
            return Ok(Guarded {
                tcp: Some(tcp),
                state,
                table: table.clone(),
            });
        }
        // Requests finishing make connections evictable without freeing one: look again soon.
        let _ = tokio::time::timeout(Duration::from_millis(50), table.freed.notified()).await;
    }
}

/// Closes the connection when it has gone without a request for its phase's limit: the
/// handshake timeout before its first request, the idle timeout after.
async fn watchdog(state: Arc<ConnState>, limits: ConnLimits) {
    let recheck = limits.handshake_timeout.min(limits.idle_timeout);
    loop {
        let wake = if state.in_flight.load(Ordering::Acquire) > 0 {
            Instant::now() + recheck
        } else {
            let first = state.completed.load(Ordering::Relaxed) == 0;
            let (limit, why) = if first {
                (
                    limits.handshake_timeout,
                    "no request within the handshake timeout",
                )
            } else {
                (limits.idle_timeout, "idle for the idle timeout")
            };
            let deadline = state.last_active() + limit;
            if Instant::now() >= deadline {
                state.close(why);
                return;
            }
            deadline
        };
        tokio::select! {
            () = tokio::time::sleep_until(wake.into()) => {}
            () = state.closed() => return,
        }
    }
}

/// A connection's socket: frees its slot when dropped.
pub struct Guarded {
    /// `None` only while being dropped.
    tcp: Option<TcpStream>,
    state: Arc<ConnState>,
    table: Arc<ConnTable>,
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
        match self.get_mut().tcp.as_mut() {
            Some(tcp) => Pin::new(tcp).poll_write(cx, b),
            None => Poll::Ready(Ok(0)),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn served(table: &ConnTable) -> Arc<ConnState> {
        let c = table.admit(2).expect("a slot");
        drop(c.start_request());
        c
    }

    #[test]
    fn a_full_table_evicts_the_connection_idle_longest() {
        let table = ConnTable::default();
        let old = served(&table);
        let recent = served(&table);
        old.last_active_ms.store(0, Ordering::Relaxed);
        recent.last_active_ms.store(10, Ordering::Relaxed);
        let _new = table.admit(2).expect("an idle one evicted");
        assert!(old.is_closing());
        assert!(!recent.is_closing());
    }

    #[test]
    fn a_full_table_evicts_a_silent_newcomer_before_a_served_idle_client() {
        let table = ConnTable::default();
        let client = served(&table);
        client.last_active_ms.store(0, Ordering::Relaxed);
        let silent = table.admit(2).expect("a slot");
        silent.last_active_ms.store(10, Ordering::Relaxed);
        let _new = table.admit(2).expect("the silent one evicted");
        assert!(silent.is_closing());
        assert!(!client.is_closing());
    }

    #[test]
    fn a_first_request_still_unfinished_is_evicted_when_none_is_idle() {
        let table = ConnTable::default();
        let served_busy = served(&table);
        let _busy = served_busy.start_request();
        let slow_first = table.admit(2).expect("a slot");
        let _slow = slow_first.start_request();
        let _new = table.admit(2).expect("the unproductive one evicted");
        assert!(slow_first.is_closing());
        assert!(!served_busy.is_closing());
    }

    #[test]
    fn clients_served_and_busy_are_never_evicted_for_a_newcomer() {
        let table = ConnTable::default();
        let (a, b) = (served(&table), served(&table));
        let _busy = (a.start_request(), b.start_request());
        assert!(table.admit(2).is_none());
        assert!(!a.is_closing() && !b.is_closing());
    }
}
