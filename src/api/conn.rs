//! Connection bounds shared by the three listeners (HTTP, gRPC, metrics): a table of open
//! connections per port, each with a watchdog closing it when it stays silent or idle too long
//! (`api::serve` then says goodbye and drops it), and a socket that frees its slot when dropped.
//!
//! Writing the answer is bounded too: a connection whose socket accepts no byte for
//! `write_stall_timeout` while the server has bytes for it, or whose transport takes nothing
//! from an answer ready to go for as long (an HTTP/2 flow-control window the client leaves
//! closed), is closed: the client is not reading (nginx's `send_timeout`, between two writes,
//! not for the whole answer, so a slow but steady reader is never cut). A request counts as in
//! flight until its answer has been handed over whole (`api::sent`), so neither the idle bound
//! nor eviction cuts an answer being read.
//!
//! When a port's table is full, a new connection is not left in the kernel's backlog: one is
//! closed for it, in this order: the one stalled longest on a client that takes no bytes (for
//! [`STALLED_AFTER`] or more), the oldest that has sent no request yet (silent, or stuck in its
//! handshake), the one idle longest between requests, the oldest whose first request is still
//! in flight (a slow first body) and not being read. A client reading its answer steadily
//! counts as busy.
//! Why: a backlog lets a few hundred silent sockets hold every slot until their timeouts run
//! out, so a health probe (one fresh connection, one quick request) would fail under an attack
//! that costs the attacker nothing; evicting what is idle or has produced nothing lets the
//! probe in at once, while a connection that has served requests and has one in flight is
//! never cut for a newcomer (then the newcomer waits for a slot, as before).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
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
    /// A connection whose client takes no response byte for this long while the server has
    /// some for it is closed.
    pub write_stall_timeout: Duration,
}

/// A connection waiting this long on its client to take response bytes is stalled: evicted
/// first from a full table. Shorter waits are a reader keeping up slowly (busy).
pub const STALLED_AFTER: Duration = Duration::from_secs(1);

/// Bytes the kernel may hold for a client that it has not sent yet (`TCP_NOTSENT_LOWAT`).
/// Without it Linux grows a send buffer to 4 MiB, so a client that reads nothing but sends
/// a request now and then is taken for a reader for as long as its answers take to fill that:
/// days at a request a minute. With it, a write finds the socket full once the client's own
/// receive buffer and this much are full, and the write stall bound starts. Data sent and not
/// yet acknowledged is not counted (it is what the network holds), so throughput is kept.
const UNSENT_LOWAT: u32 = 128 * 1024;

/// `write_blocked_ms` while writes go through.
const NOT_BLOCKED: u64 = u64::MAX;

/// One open connection, as its watchdog and the port's table see it.
#[derive(Debug)]
pub struct ConnState {
    id: u64,
    accepted: Instant,
    in_flight: AtomicUsize,
    completed: AtomicU64,
    /// Milliseconds after `accepted` of the last request start or end.
    last_active_ms: AtomicU64,
    /// Milliseconds after `accepted` of the first socket write that found the socket full
    /// with no byte accepted since; [`NOT_BLOCKED`] while writes go through.
    write_blocked_ms: AtomicU64,
    /// Answers with a frame ready that the transport has not taken yet: (since ms, answer id).
    unpulled: Mutex<BTreeSet<(u64, u64)>>,
    next_answer: AtomicU64,
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
            write_blocked_ms: AtomicU64::new(NOT_BLOCKED),
            unpulled: Mutex::new(BTreeSet::new()),
            next_answer: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            linger: AtomicBool::new(false),
            closed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        // Below NOT_BLOCKED for 584 million years.
        u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(NOT_BLOCKED - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.accepted + Duration::from_millis(ms)
    }

    fn touch(&self) {
        self.last_active_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn last_active(&self) -> Instant {
        self.at(self.last_active_ms.load(Ordering::Relaxed))
    }

    /// A socket write returned: `full` when it accepted nothing (the socket is full).
    fn note_write(&self, full: bool) {
        if full {
            let now = self.now_ms();
            let _ = self.write_blocked_ms.compare_exchange(
                NOT_BLOCKED,
                now,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        } else if self.write_blocked_ms.load(Ordering::Relaxed) != NOT_BLOCKED {
            self.write_blocked_ms.store(NOT_BLOCKED, Ordering::Release);
        }
    }

    /// An answer has a frame ready for the transport; waiting until the token drops.
    pub fn answer_ready(self: &Arc<Self>) -> Unpulled {
        let key = (
            self.now_ms(),
            self.next_answer.fetch_add(1, Ordering::Relaxed),
        );
        lock(&self.unpulled).insert(key);
        Unpulled {
            conn: self.clone(),
            key,
        }
    }

    /// Since when the connection has been waiting on its client to take response bytes: a
    /// socket write finding it full, else the oldest answer ready and not taken; `None` while
    /// nothing waits on the client.
    fn waiting_since(&self) -> Option<Instant> {
        let blocked = self.write_blocked_ms.load(Ordering::Acquire);
        if blocked != NOT_BLOCKED {
            return Some(self.at(blocked));
        }
        let oldest = lock(&self.unpulled).first().map(|(ms, _)| *ms);
        oldest.map(|ms| self.at(ms))
    }

    /// How long the connection has been waiting on its client, if it is.
    fn stalled_for(&self, now: Instant) -> Option<Duration> {
        self.waiting_since()
            .map(|since| now.saturating_duration_since(since))
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An answer's frame ready for the transport, counted in its connection's wait until dropped.
pub struct Unpulled {
    conn: Arc<ConnState>,
    key: (u64, u64),
}

impl Drop for Unpulled {
    fn drop(&mut self) {
        lock(&self.conn.unpulled).remove(&self.key);
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
    /// A connection waiting `stalled_after` or more on its client is stalled.
    fn admit(&self, max: usize, stalled_after: Duration) -> Option<Arc<ConnState>> {
        let mut conns = lock(&self.conns);
        let live = conns.values().filter(|c| !c.is_closing()).count();
        if live >= max.max(1) {
            let now = Instant::now();
            let open = || conns.values().filter(|c| !c.is_closing());
            // Stalled longest first: it holds answers its client does not take.
            let stalled = open()
                .filter_map(|c| Some((c.stalled_for(now).filter(|d| *d >= stalled_after)?, c)))
                .max_by_key(|(d, _)| *d)
                .map(|(_, c)| c);
            // A reader keeping up with its answers, however slowly, is busy from here on.
            let open = || open().filter(|c| c.waiting_since().is_none());
            // Never-productive first (what a flood of silent sockets consists of, so a flood
            // evicts itself before any client that has been served), then idle longest.
            let idle = || {
                open()
                    .filter(|c| c.in_flight.load(Ordering::Acquire) == 0)
                    .min_by_key(|c| (c.completed.load(Ordering::Relaxed) > 0, c.last_active()))
            };
            let unproductive = || {
                open()
                    .filter(|c| c.completed.load(Ordering::Relaxed) == 0)
                    .min_by_key(|c| c.accepted)
            };
            let victim = stalled.or_else(idle).or_else(unproductive)?;
            victim.close("the connection limit is reached and this one is stalled, idle or has not completed a request");
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::new(id));
        conns.insert(id, state.clone());
        Some(state)
    }

    fn remove(&self, id: u64) {
        lock(&self.conns).remove(&id);
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
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = socket2::SockRef::from(&tcp).set_tcp_notsent_lowat(UNSENT_LOWAT);
    loop {
        let stalled_after = STALLED_AFTER.min(limits.write_stall_timeout);
        if let Some(state) = table.admit(limits.max_connections, stalled_after) {
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

/// Closes the connection when it has waited on its client to take response bytes for the
/// write stall timeout, or gone without a request for its phase's limit: the handshake
/// timeout before its first request, the idle timeout after.
async fn watchdog(state: Arc<ConnState>, limits: ConnLimits) {
    // Woken at least this often: a stall can begin while it sleeps towards an idle deadline.
    let tick = limits
        .handshake_timeout
        .min(limits.idle_timeout)
        .min(limits.write_stall_timeout);
    loop {
        let now = Instant::now();
        let bound = if let Some(since) = state.waiting_since() {
            Some((
                since + limits.write_stall_timeout,
                "the client took no response bytes within the write stall timeout",
            ))
        } else if state.in_flight.load(Ordering::Acquire) > 0 {
            None
        } else if state.completed.load(Ordering::Relaxed) == 0 {
            Some((
                state.last_active() + limits.handshake_timeout,
                "no request within the handshake timeout",
            ))
        } else {
            Some((
                state.last_active() + limits.idle_timeout,
                "idle for the idle timeout",
            ))
        };
        let wake = match bound {
            Some((deadline, why)) if now >= deadline => {
                state.close(why);
                return;
            }
            Some((deadline, _)) => deadline.min(now + tick),
            None => now + tick,
        };
        tokio::select! {
            () = tokio::time::sleep_until(wake.into()) => {}
            () = state.closed() => return,
        }
    }
}

mod socket;
pub use socket::{Guarded, LINGER};
#[cfg(test)]
mod tests;
