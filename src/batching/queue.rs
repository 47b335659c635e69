//! The batcher's queue state: pending requests in arrival order, and the rule that picks the
//! next batch. Pure (no tokio runtime needed) so it is unit-tested directly.

use std::collections::VecDeque;
use std::time::Instant;

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

    /// Whether anyone still waits for the answer and it is still wanted in time.
    pub fn check_live(&self, now: Instant) -> Result<(), BatchError> {
        if self.reply.is_closed() {
            return Err(BatchError::Cancelled);
        }
        match self.deadline {
            Some(d) if d <= now => Err(BatchError::DeadlineExceeded),
            _ => Ok(()),
        }
    }
}

/// Requests not yet handed to an instance.
pub struct BatchQueue {
    items: VecDeque<Pending>,
    /// Most rows in one batch; 0 when the model does not batch.
    max_rows: usize,
    /// Whether several requests may be combined (`[dynamic_batching]`).
    combine: bool,
}

impl BatchQueue {
    pub fn new(max_rows: usize, combine: bool) -> BatchQueue {
        BatchQueue {
            items: VecDeque::new(),
            max_rows,
            combine: combine && max_rows > 0,
        }
    }

    pub fn push(&mut self, p: Pending) {
        self.items.push_back(p);
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Takes the next batch: the oldest live request, then (when combining) later compatible ones
    /// in arrival order while the rows fit. Dead requests met on the way are answered and dropped;
    /// the count of them is returned with the batch.
    pub fn pop_batch(&mut self, now: Instant) -> (Vec<Pending>, usize) {
        let mut dropped = 0;
        let first = loop {
            let Some(p) = self.items.pop_front() else {
                return (Vec::new(), dropped);
            };
            match p.check_live(now) {
                Ok(()) => break p,
                Err(e) => {
                    dropped += 1;
                    let _ = p.reply.send(Err(e));
                }
            }
        };
        let mut rows = first.rows;
        let mut batch = vec![first];
        if !self.combine {
            return (batch, dropped);
        }
        let mut i = 0;
        while i < self.items.len() && rows < self.max_rows {
            let p = &self.items[i];
            if p.check_live(now).is_err() {
                if let Some(p) = self.items.remove(i) {
                    dropped += 1;
                    let e = p.check_live(now).err().unwrap_or(BatchError::Cancelled);
                    let _ = p.reply.send(Err(e));
                }
                continue;
            }
            if rows + p.rows <= self.max_rows && batch[0].compatible(p) {
                if let Some(p) = self.items.remove(i) {
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
    use std::time::Duration;

    use super::*;

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
            },
            rx,
        )
    }

    #[test]
    fn without_combining_each_request_is_its_own_batch() {
        let mut q = BatchQueue::new(8, false);
        let (a, _ra) = pending(1, 4);
        let (b, _rb) = pending(1, 4);
        q.push(a);
        q.push(b);
        assert_eq!(q.pop_batch(Instant::now()).0.len(), 1);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn combining_fills_rows_up_to_the_maximum_in_arrival_order() {
        let mut q = BatchQueue::new(4, true);
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
        let mut q = BatchQueue::new(8, true);
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
        let mut q = BatchQueue::new(8, true);
        let (cancelled, rx) = pending(1, 4);
        drop(rx);
        let (mut expired, mut rx_expired) = pending(1, 4);
        expired.deadline = Some(Instant::now() - Duration::from_millis(1));
        let (live, _rl) = pending(1, 4);
        q.push(cancelled);
        q.push(expired);
        q.push(live);
        let (batch, dropped) = q.pop_batch(Instant::now());
        assert_eq!((batch.len(), dropped), (1, 2));
        assert!(matches!(
            rx_expired.try_recv(),
            Ok(Err(BatchError::DeadlineExceeded))
        ));
    }
}
