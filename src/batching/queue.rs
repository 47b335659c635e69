//! The batcher's queue state: pending requests in arrival order, and the rule that picks the
//! next batch. Pure (no tokio runtime needed) so it is unit-tested directly.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::BatchError;
use crate::tensor::{DataType, Tensor};

pub type Reply = oneshot::Sender<Result<Vec<Tensor>, BatchError>>;

/// One queued request: its inputs in model order, its row count and who waits for it.
pub struct Pending {
    pub inputs: Vec<Tensor>,
    pub rows: usize,
    pub enqueued: Instant,
    pub deadline: Option<Instant>,
    pub reply: Reply,
    /// Its request and queue-wait spans (empty with trace export off).
    pub trace: crate::telemetry::Queued,
}

impl Pending {
    /// Requests may share a batch only when every input agrees on datatype and non-batch dims.
    fn compatible(&self, other: &Pending) -> bool {
        self.inputs.len() == other.inputs.len()
            && self.inputs.iter().zip(&other.inputs).all(|(a, b)| {
                a.dtype() == b.dtype()
                    && a.dtype() != DataType::Bytes
                    && a.shape().get(1..) == b.shape().get(1..)
            })
    }

    /// Whether it is still wanted in time and anyone still waits for the answer. The deadline
    /// comes first: a caller that timed out has also dropped its receiver.
    pub fn check_live(&self, now: Instant) -> Result<(), BatchError> {
        match self.deadline {
            Some(d) if d <= now => Err(BatchError::DeadlineExceeded),
            _ if self.reply.is_closed() => Err(BatchError::Cancelled),
            _ => Ok(()),
        }
    }
}

/// Requests dropped unanswered by the backend, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub deadline: usize,
    pub cancelled: usize,
}

impl Dropped {
    pub fn total(&self) -> usize {
        self.deadline + self.cancelled
    }

    /// Answers `p` with `e` and counts it.
    pub fn drop_with(&mut self, p: Pending, e: BatchError) {
        match e {
            BatchError::DeadlineExceeded => self.deadline += 1,
            _ => self.cancelled += 1,
        }
        let _ = p.reply.send(Err(e));
    }
}

/// When and how big batches are formed.
#[derive(Debug, Clone, Default)]
pub struct BatchPolicy {
    /// Most rows in one batch; 0 when the model does not batch.
    pub max_rows: usize,
    /// Whether several requests may be combined (`[dynamic_batching]`).
    pub combine: bool,
    /// Ascending sizes worth waiting for; empty means `max_rows`.
    pub preferred: Vec<usize>,
    /// The most the oldest request waits for companions.
    pub max_delay: Duration,
}

/// Requests not yet handed to an instance.
pub struct BatchQueue {
    items: VecDeque<Pending>,
    /// Rows of all queued requests.
    rows: usize,
    policy: BatchPolicy,
}

impl BatchQueue {
    pub fn new(mut policy: BatchPolicy) -> BatchQueue {
        policy.combine &= policy.max_rows > 0;
        BatchQueue {
            items: VecDeque::new(),
            rows: 0,
            policy,
        }
    }

    pub fn push(&mut self, p: Pending) {
        self.rows += p.rows;
        self.items.push_back(p);
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn remove(&mut self, i: usize) -> Option<Pending> {
        let p = self.items.remove(i)?;
        self.rows -= p.rows;
        Some(p)
    }

    /// With an instance free, when the next batch should go: `now` once a full (or largest
    /// preferred) batch is queued or there is nothing to wait for, else when the oldest request
    /// has waited `max_delay`. `None` when empty.
    pub fn dispatch_at(&self, now: Instant) -> Option<Instant> {
        let oldest = self.items.front()?.enqueued;
        let p = &self.policy;
        let enough = p
            .preferred
            .last()
            .map_or(p.max_rows, |&largest| largest.min(p.max_rows));
        if !p.combine || p.max_delay.is_zero() || self.rows >= enough {
            return Some(now);
        }
        Some((oldest + p.max_delay).max(now))
    }

    /// Rows to aim for now: everything up to the maximum, or the largest preferred size that
    /// the queue can fill (all of it when it fills none).
    fn target_rows(&self) -> usize {
        let p = &self.policy;
        let available = self.rows.min(p.max_rows);
        p.preferred
            .iter()
            .rev()
            .find(|&&s| s <= available)
            .copied()
            .unwrap_or(available)
    }

    /// Takes the next batch: the oldest live request, then (when combining) later compatible ones
    /// in arrival order while the rows fit the target. Dead requests met on the way are answered
    /// and dropped; their counts are returned with the batch.
    pub fn pop_batch(&mut self, now: Instant) -> (Vec<Pending>, Dropped) {
        let target = self.target_rows();
        let mut dropped = Dropped::default();
        let first = loop {
            let Some(p) = self.remove(0) else {
                return (Vec::new(), dropped);
            };
            match p.check_live(now) {
                Ok(()) => break p,
                Err(e) => dropped.drop_with(p, e),
            }
        };
        let mut rows = first.rows;
        let mut batch = vec![first];
        if !self.policy.combine {
            return (batch, dropped);
        }
        let mut i = 0;
        while i < self.items.len() && rows < target {
            let p = &self.items[i];
            if let Err(e) = p.check_live(now) {
                if let Some(p) = self.remove(i) {
                    dropped.drop_with(p, e);
                }
                continue;
            }
            if rows + p.rows <= target && batch[0].compatible(p) {
                if let Some(p) = self.remove(i) {
                    rows += p.rows;
                    batch.push(p);
                }
                continue;
            }
            i += 1;
        }
        (batch, dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_rows: usize, combine: bool, preferred: &[usize], delay_us: u64) -> BatchPolicy {
        BatchPolicy {
            max_rows,
            combine,
            preferred: preferred.to_vec(),
            max_delay: Duration::from_micros(delay_us),
        }
    }

    fn pending(
        rows: usize,
        width: usize,
    ) -> (Pending, oneshot::Receiver<Result<Vec<Tensor>, BatchError>>) {
        let (tx, rx) = oneshot::channel();
        let t = Tensor::from_values(vec![rows, width], &vec![0f32; rows * width]).unwrap();
        (
            Pending {
                inputs: vec![t],
                rows,
                enqueued: Instant::now(),
                deadline: None,
                reply: tx,
                trace: Default::default(),
            },
            rx,
        )
    }

    #[test]
    fn without_combining_each_request_is_its_own_batch() {
        let mut q = BatchQueue::new(policy(8, false, &[], 0));
        let (a, _ra) = pending(1, 4);
        let (b, _rb) = pending(1, 4);
        q.push(a);
        q.push(b);
        assert_eq!(q.pop_batch(Instant::now()).0.len(), 1);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn combining_fills_rows_up_to_the_maximum_in_arrival_order() {
        let mut q = BatchQueue::new(policy(4, true, &[], 0));
        let mut keep = Vec::new();
        for rows in [2, 3, 1, 1] {
            let (p, r) = pending(rows, 4);
            keep.push(r);
            q.push(p);
        }
        let (batch, _) = q.pop_batch(Instant::now());
        assert_eq!(
            batch.iter().map(|p| p.rows).collect::<Vec<_>>(),
            vec![2, 1, 1]
        );
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn different_trailing_shapes_never_share_a_batch() {
        let mut q = BatchQueue::new(policy(8, true, &[], 0));
        let (a, _ra) = pending(1, 4);
        let (b, _rb) = pending(1, 5);
        let (c, _rc) = pending(1, 4);
        q.push(a);
        q.push(b);
        q.push(c);
        let (batch, _) = q.pop_batch(Instant::now());
        assert_eq!(batch.len(), 2);
        assert!(batch.iter().all(|p| p.inputs[0].shape()[1] == 4));
    }

    #[test]
    fn cancelled_and_expired_requests_are_dropped_before_batching() {
        let mut q = BatchQueue::new(policy(8, true, &[], 0));
        let (cancelled, rx) = pending(1, 4);
        drop(rx);
        let (mut expired, mut rx_expired) = pending(1, 4);
        expired.deadline = Some(Instant::now() - Duration::from_millis(1));
        let (live, _rl) = pending(1, 4);
        q.push(cancelled);
        q.push(expired);
        q.push(live);
        let (batch, dropped) = q.pop_batch(Instant::now());
        assert_eq!(
            (batch.len(), dropped),
            (
                1,
                Dropped {
                    deadline: 1,
                    cancelled: 1
                }
            )
        );
        assert!(matches!(
            rx_expired.try_recv(),
            Ok(Err(BatchError::DeadlineExceeded))
        ));
    }

    #[test]
    fn a_free_instance_waits_for_companions_only_up_to_the_delay() {
        let mut q = BatchQueue::new(policy(8, true, &[], 1_000));
        let (a, _ra) = pending(2, 4);
        let enqueued = a.enqueued;
        q.push(a);
        let now = Instant::now();
        assert_eq!(
            q.dispatch_at(now),
            Some((enqueued + Duration::from_micros(1_000)).max(now))
        );
        let (b, _rb) = pending(6, 4);
        q.push(b);
        assert_eq!(q.dispatch_at(now), Some(now), "a full batch goes at once");
    }

    #[test]
    fn zero_delay_or_no_combining_dispatches_at_once() {
        for (combine, delay) in [(true, 0), (false, 5_000)] {
            let mut q = BatchQueue::new(policy(8, combine, &[], delay));
            let (a, _ra) = pending(1, 4);
            q.push(a);
            let now = Instant::now();
            assert_eq!(q.dispatch_at(now), Some(now));
        }
    }

    #[test]
    fn preferred_sizes_shape_the_batch() {
        let mut q = BatchQueue::new(policy(16, true, &[4, 8], 10_000));
        let mut keep = Vec::new();
        for _ in 0..6 {
            let (p, r) = pending(1, 4);
            keep.push(r);
            q.push(p);
        }
        let now = Instant::now();
        assert!(q.dispatch_at(now).unwrap() > now, "6 rows: wait for 8");
        let (batch, _) = q.pop_batch(now);
        assert_eq!(
            batch.len(),
            4,
            "when forced, the largest preferred size that fits"
        );
        for _ in 0..6 {
            let (p, r) = pending(1, 4);
            keep.push(r);
            q.push(p);
        }
        assert_eq!(
            q.dispatch_at(now),
            Some(now),
            "8 rows: the largest preferred size is reached"
        );
        assert_eq!(q.pop_batch(now).0.len(), 8);
    }
}
