//! Bounded admission: a count of requests in flight with an optional limit. A request over the
//! limit is refused at once (no waiting: a waiting request is the queue's job, and the queue is
//! bounded too); an admitted one holds a [`Permit`] until it is answered or dropped.
//!
//! Counted in the router (`routing::admit`) rather than in a tower layer in front of the
//! transports: it applies to inference only (health, metadata and metrics still answer under
//! overload), both transports share it, and the refusal is recorded with the model's labels.

use std::sync::atomic::{AtomicUsize, Ordering};

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
}
