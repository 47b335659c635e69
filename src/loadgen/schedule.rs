//! The open loop: requests scheduled every 1/rate seconds, handed to idle workers, latency
//! measured from the intended send time (so a slow server cannot slow the schedule down and
//! hide its own latency: no coordinated omission).
//!
//! The clock is a `timerfd` in the runtime's own epoll set, not tokio's timer (millisecond
//! granularity: requests would bunch up, and up to 1 ms would be added to every latency) nor a
//! thread of its own (two extra context switches per request). So a request costs the client
//! at most one extra wake-up, and none when the runtime is awake anyway.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::conn::Conn;
use super::stats::{lock, Stats};

/// Scheduling starts at `start`; requests intended in `[t0, t1)` are measured; none after `t1`.
#[derive(Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub t0: Instant,
    pub t1: Instant,
}

/// Spawns one worker per connection and returns them with the scheduler future (to be
/// spawned); the scheduler ends at `t1`, and the workers once it has and their request is done.
pub fn open_loop(
    conns: Vec<Conn>,
    stats: &[Arc<Mutex<Stats>>],
    w: Window,
    rate: f64,
    dropped: Arc<AtomicU64>,
) -> (Vec<JoinHandle<()>>, impl std::future::Future<Output = ()>) {
    let idle = Arc::new(Mutex::new((0..conns.len()).rev().collect::<Vec<_>>()));
    let mut senders = Vec::with_capacity(conns.len());
    let mut tasks = Vec::with_capacity(conns.len());
    for (i, (conn, stats)) in conns.into_iter().zip(stats).enumerate() {
        // Capacity 1: a worker is only handed a request while it is on the idle list.
        let (tx, rx) = mpsc::channel(1);
        senders.push(tx);
        tasks.push(tokio::spawn(worker(
            i,
            conn,
            rx,
            idle.clone(),
            stats.clone(),
            w,
        )));
    }
    (tasks, schedule(senders, idle, w, rate, dropped))
}

async fn worker(
    id: usize,
    mut conn: Conn,
    mut rx: mpsc::Receiver<Instant>,
    idle: Arc<Mutex<Vec<usize>>>,
    stats: Arc<Mutex<Stats>>,
    w: Window,
) {
    while let Some(intended) = rx.recv().await {
        let result = conn.call().await;
        if intended >= w.t0 && intended < w.t1 {
            // From the intended time: waiting for the scheduler or a slow server counts.
            lock(&stats).record(intended, result);
        }
        lock(&idle).push(id);
    }
}

async fn schedule(
    workers: Vec<mpsc::Sender<Instant>>,
    idle: Arc<Mutex<Vec<usize>>>,
    w: Window,
    rate: f64,
    dropped: Arc<AtomicU64>,
) {
    let mut timer = Timer::new();
    for k in 0u64.. {
        // From the start each time, so rounding does not accumulate.
        let intended = w.start + Duration::from_secs_f64(k as f64 / rate);
        if intended >= w.t1 {
            break;
        }
        let now = Instant::now();
        if intended > now {
            timer.sleep(intended - now).await;
        }
        let sent = match lock(&idle).pop() {
            Some(i) => workers[i].try_send(intended).is_ok(),
            None => false,
        };
        if !sent && intended >= w.t0 {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A one-shot, nanosecond-resolution sleep on a Linux `timerfd`; tokio's sleep elsewhere or if
/// the timerfd cannot be created.
struct Timer {
    #[cfg(target_os = "linux")]
    fd: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
}

impl Timer {
    #[cfg(target_os = "linux")]
    fn new() -> Timer {
        use std::os::fd::FromRawFd;
        // SAFETY: plain syscall; the result is checked before use.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        let fd = (raw >= 0)
            // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
            .then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) })
            .and_then(|fd| {
                let readable = tokio::io::Interest::READABLE;
                // SAFETY: the OwnedFd keeps the descriptor open, and always the same one, for as
                // long as the AsyncFd that owns it.
                unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, readable) }.ok()
            });
        Timer { fd }
    }

    #[cfg(not(target_os = "linux"))]
    fn new() -> Timer {
        Timer {}
    }

    #[cfg(target_os = "linux")]
    async fn sleep(&mut self, d: Duration) {
        use std::os::fd::AsRawFd;
        let Some(fd) = &self.fd else {
            return tokio::time::sleep(d).await;
        };
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: d.as_secs() as libc::time_t,
                // All zero would disarm the timer.
                tv_nsec: d.subsec_nanos().max(1) as libc::c_long,
            },
        };
        // SAFETY: a valid timerfd and a valid itimerspec; the old value is not asked for.
        let armed =
            unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if armed != 0 {
            return tokio::time::sleep(d).await;
        }
        loop {
            let Ok(mut ready) = fd.readable().await else {
                return tokio::time::sleep(d).await;
            };
            let expired = ready.try_io(|fd| {
                let mut count = [0u8; 8];
                // SAFETY: reads at most 8 bytes into an 8-byte buffer.
                let n = unsafe { libc::read(fd.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            if expired.is_ok() {
                // Unreadable until the next expiry: saves a read that would fail next time.
                ready.clear_ready();
                return;
            }
            // Err: WouldBlock, readiness cleared; not expired yet, wait again.
        }
    }

    #[cfg(not(target_os = "linux"))]
    async fn sleep(&mut self, d: Duration) {
        tokio::time::sleep(d).await
    }
}
