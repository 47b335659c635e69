//! Bounded admission: a count of requests in flight with an optional limit, and beside it a
//! budget of request bytes ([`ByteBudget`]). A request over the
//! limit is refused at once (no waiting: a waiting request is the queue's job, and the queue is
//! bounded too); an admitted one holds a [`Permit`] until it is answered or dropped.
//!
//! Counted in the router (`routing::admit`) rather than in a tower layer in front of the
//! transports: it applies to inference only (health, metadata and metrics still answer under
//! overload), both transports share it, and the refusal is recorded with the model's labels.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus::IntGauge;

pub struct Admission {
    /// 0: unlimited (the count and gauge are still kept).
    limit: usize,
    in_flight: AtomicUsize,
    gauge: Option<IntGauge>,
}

impl Admission {
    pub fn new(limit: usize, gauge: Option<IntGauge>) -> Admission {
        Admission {
            limit,
            in_flight: AtomicUsize::new(0),
            gauge,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// A permit, or `None` when `limit` requests are in flight.
    pub fn try_enter(&self) -> Option<Permit<'_>> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if self.limit > 0 && before >= self.limit {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        if let Some(g) = &self.gauge {
            g.inc();
        }
        Some(Permit(self))
    }
}

/// One admitted request; leaving (answer, error or cancellation) frees its place.
pub struct Permit<'a>(&'a Admission);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        if let Some(g) = &self.0.gauge {
            g.dec();
        }
    }
}

/// The server-wide budget of request bytes being read, decoded or queued
/// (`max_inflight_bytes`): a request whose bytes do not fit is refused at once rather than
/// pushing the process into swap or the OOM killer; its bytes come back when it is answered.
/// Taken by both transports before they decode a body, so it is shared (`Arc`) and its
/// reservations are owned.
pub struct ByteBudget {
    /// 0: unlimited (the count is still kept).
    limit: usize,
    used: AtomicUsize,
}

impl ByteBudget {
    pub fn new(limit: usize) -> Arc<ByteBudget> {
        Arc::new(ByteBudget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Adds `bytes` to the count unless that passes the limit.
    fn add(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let after = used.checked_add(bytes)?;
                (self.limit == 0 || after <= self.limit).then_some(after)
            })
            .is_ok()
    }

    /// A reservation of `bytes`, or `None` when they do not fit beside the others.
    pub fn try_take(self: &Arc<Self>, bytes: usize) -> Option<BytePermit> {
        self.add(bytes).then(|| BytePermit {
            budget: self.clone(),
            bytes,
        })
    }
}

/// Bytes held for one request until it is answered or dropped.
pub struct BytePermit {
    budget: Arc<ByteBudget>,
    bytes: usize,
}

impl BytePermit {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Grows the reservation to `total` bytes (a body longer than declared, a decoded form
    /// larger than the wire); `false`, and unchanged, when that does not fit.
    pub fn try_grow_to(&mut self, total: usize) -> bool {
        let more = total.saturating_sub(self.bytes);
        if more == 0 || self.budget.add(more) {
            self.bytes = self.bytes.max(total);
            true
        } else {
            false
        }
    }
}

impl Drop for BytePermit {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_refuses_at_once_and_a_permit_frees_its_place() {
        let gauge = IntGauge::new("g", "h").unwrap();
        let a = Admission::new(2, Some(gauge.clone()));
        let p1 = a.try_enter().unwrap();
        let p2 = a.try_enter().unwrap();
        assert!(a.try_enter().is_none(), "a third request is refused");
        assert_eq!((a.in_flight(), gauge.get()), (2, 2));
        drop(p1);
        let p3 = a.try_enter().expect("a freed place is taken again");
        drop((p2, p3));
        assert_eq!((a.in_flight(), gauge.get()), (0, 0));
    }

    #[test]
    fn zero_means_unlimited() {
        let a = Admission::new(0, None);
        let permits: Vec<_> = (0..1000).map(|_| a.try_enter().unwrap()).collect();
        assert_eq!(a.in_flight(), 1000);
        drop(permits);
        assert_eq!(a.in_flight(), 0);
    }

    #[test]
    fn the_byte_budget_refuses_what_does_not_fit_and_frees_on_drop() {
        let b = ByteBudget::new(100);
        let mut p1 = b.try_take(60).unwrap();
        assert!(b.try_take(41).is_none(), "41 more do not fit beside 60");
        let p2 = b.try_take(40).unwrap();
        assert!(!p1.try_grow_to(61), "growing past the limit is refused");
        assert_eq!((p1.bytes(), b.used()), (60, 100));
        drop(p2);
        assert!(p1.try_grow_to(100));
        assert!(b.try_take(usize::MAX).is_none(), "no overflow");
        drop(p1);
        assert_eq!(b.used(), 0);
        let unlimited = ByteBudget::new(0);
        let big = unlimited.try_take(usize::MAX / 2).unwrap();
        assert_eq!(big.bytes(), usize::MAX / 2);
    }
}
