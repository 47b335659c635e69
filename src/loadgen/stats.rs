//! What the workers measure: error codes, per-worker counts and latency histograms, the merged
//! result of a run and the load generator's own CPU time. A leaf: the clients return its
//! [`ErrorCode`], the workers (closed and open loop) record into it, the driver merges it.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// Non-200 HTTP status.
    Http(u16),
    /// Non-OK gRPC status sent by the server.
    Grpc(tonic::Code),
    /// Could not (re)open a TCP connection (refused, for gRPC).
    Connect,
    /// The connection failed while sending or receiving (any other transport failure).
    Io,
}

impl ErrorCode {
    /// The server refused the request at admission (HTTP 429, gRPC RESOURCE_EXHAUSTED): it was
    /// answered, quickly if admission control works, but not served.
    pub fn is_rejection(self) -> bool {
        matches!(
            self,
            ErrorCode::Http(429) | ErrorCode::Grpc(tonic::Code::ResourceExhausted)
        )
    }

    /// The report's key: the HTTP status, the gRPC code name, `connect` or `io`.
    pub fn name(self) -> String {
        use tonic::Code::*;
        match self {
            ErrorCode::Http(s) => s.to_string(),
            ErrorCode::Connect => "connect".into(),
            ErrorCode::Io => "io".into(),
            ErrorCode::Grpc(c) => match c {
                Ok => "OK",
                Cancelled => "CANCELLED",
                Unknown => "UNKNOWN",
                InvalidArgument => "INVALID_ARGUMENT",
                DeadlineExceeded => "DEADLINE_EXCEEDED",
                NotFound => "NOT_FOUND",
                AlreadyExists => "ALREADY_EXISTS",
                PermissionDenied => "PERMISSION_DENIED",
                ResourceExhausted => "RESOURCE_EXHAUSTED",
                FailedPrecondition => "FAILED_PRECONDITION",
                Aborted => "ABORTED",
                OutOfRange => "OUT_OF_RANGE",
                Unimplemented => "UNIMPLEMENTED",
                Internal => "INTERNAL",
                Unavailable => "UNAVAILABLE",
                DataLoss => "DATA_LOSS",
                Unauthenticated => "UNAUTHENTICATED",
            }
            .into(),
        }
    }
}

/// Counts and latencies of one worker (merged at the end).
pub struct Stats {
    /// Microseconds, successful requests only.
    pub latency_us: Histogram<u64>,
    /// Microseconds, refused requests only ([`ErrorCode::is_rejection`]).
    pub rejected_latency_us: Histogram<u64>,
    pub ok: u64,
    /// A short list: a run sees a handful of distinct codes at most.
    pub errors: Vec<(ErrorCode, u64)>,
}

/// 3 significant digits, 1 µs to 1 s up front (~90 KiB, paged in as used), growing when a
/// slower answer comes.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 1_000_000, 3)
        .map(|mut h| {
            h.auto(true);
            h
        })
        .unwrap_or_else(|_| unreachable!("constant, valid bounds"))
}

fn record_us(h: &mut Histogram<u64>, sent: Instant) {
    let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
    // Not `saturating_record`: it clamps to the current range instead of growing.
    if h.record(us).is_err() {
        h.saturating_record(us);
    }
}

impl Stats {
    pub(super) fn new() -> Stats {
        Stats {
            latency_us: histogram(),
            rejected_latency_us: histogram(),
            ok: 0,
            errors: Vec::new(),
        }
    }

    pub(super) fn record(&mut self, sent: Instant, result: Result<(), ErrorCode>) {
        match result {
            Ok(()) => {
                self.ok += 1;
                record_us(&mut self.latency_us, sent);
            }
            Err(code) => {
                if code.is_rejection() {
                    record_us(&mut self.rejected_latency_us, sent);
                }
                match self.errors.iter_mut().find(|(c, _)| *c == code) {
                    Some((_, n)) => *n += 1,
                    None => self.errors.push((code, 1)),
                }
            }
        }
    }

    pub(super) fn merge(&mut self, other: &Stats) {
        // Both histograms auto-resize, so adding cannot run out of range.
        let _ = self.latency_us.add(&other.latency_us);
        let _ = self.rejected_latency_us.add(&other.rejected_latency_us);
        self.ok += other.ok;
        for &(code, n) in &other.errors {
            match self.errors.iter_mut().find(|(c, _)| *c == code) {
                Some((_, m)) => *m += n,
                None => self.errors.push((code, n)),
            }
        }
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.iter().map(|(_, n)| n).sum()
    }
}

/// What a run measured.
pub struct Measured {
    pub stats: Stats,
    pub dropped_by_client: u64,
    /// Wall time of the measured window.
    pub window: Duration,
    /// The load generator process's user + system CPU time over the window, when available.
    pub cpu: Option<Duration>,
}

/// The lock is held only to count one request; a poisoned lock still holds valid counters.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// User + system CPU time of this process (all threads).
#[cfg(unix)]
pub fn process_cpu_time() -> Option<Duration> {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct behind a valid pointer; RUSAGE_SELF is always valid.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: rc == 0 means the kernel initialised the struct (and zeroed() already had).
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Some(tv(ru.ru_utime) + tv(ru.ru_stime))
}

#[cfg(not(unix))]
pub fn process_cpu_time() -> Option<Duration> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_merge_and_names() {
        let t = Instant::now();
        let mut a = Stats::new();
        a.record(t, Ok(()));
        a.record(t, Err(ErrorCode::Http(503)));
        let mut b = Stats::new();
        b.record(t, Err(ErrorCode::Http(503)));
        b.record(t, Err(ErrorCode::Grpc(tonic::Code::Unavailable)));
        a.merge(&b);
        assert_eq!(a.ok, 1);
        assert_eq!(a.errors_total(), 3);
        assert_eq!(a.latency_us.len(), 1);
        let names: Vec<String> = a.errors.iter().map(|(c, _)| c.name()).collect();
        assert_eq!(names, ["503", "UNAVAILABLE"]);
        assert_eq!(a.rejected_latency_us.len(), 0, "503 is not a rejection");
        a.record(t, Err(ErrorCode::Http(429)));
        a.record(t, Err(ErrorCode::Grpc(tonic::Code::ResourceExhausted)));
        assert_eq!(a.rejected_latency_us.len(), 2);
        assert_eq!(a.latency_us.len(), 1, "rejections are kept apart");
        assert!(process_cpu_time().is_some());
    }

    #[test]
    fn slow_answers_are_recorded_as_slow() {
        let mut s = Stats::new();
        let long_ago = Instant::now() - Duration::from_secs(5);
        s.record(long_ago, Ok(()));
        s.record(Instant::now() - Duration::from_micros(300), Ok(()));
        let max = s.latency_us.max();
        assert!((5_000_000..5_100_000).contains(&max), "{max}");
        assert!(s.latency_us.min() >= 300);
    }
}
