//! The batcher of one model version: `submit` queues a request and awaits its answer; one loop
//! task hands batches to whichever instance is free; instance threads concatenate inputs along
//! dimension 0, run the backend and split the outputs back per request.

pub mod queue;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::backend::worker::WorkerPool;
use crate::backend::Backend;
use crate::metrics::{Metrics, VersionStats};
use crate::tensor::Tensor;
use queue::{BatchQueue, Pending};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("the queue is full ({0} requests waiting)")]
    QueueFull(usize),
    #[error("the model version is shutting down")]
    Closed,
    #[error("the request's deadline passed before it was computed")]
    DeadlineExceeded,
    #[error("the request was cancelled")]
    Cancelled,
    #[error("{0}")]
    Backend(String),
}

/// How one version's batcher behaves.
#[derive(Debug, Clone)]
pub struct BatcherConfig {
    pub model: String,
    pub version: String,
    pub max_batch_size: usize,
    pub combine: bool,
    pub max_queue_size: usize,
}

/// Cloneable handle; the loop and instances stop when the last handle is dropped, after
/// answering everything already queued.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Pending>,
    queued: Arc<AtomicUsize>,
    max_queue_size: usize,
}

struct Shared {
    config: BatcherConfig,
    stats: Arc<VersionStats>,
    metrics: Arc<Metrics>,
    queued: Arc<AtomicUsize>,
}

impl Batcher {
    /// Starts the instance threads and the loop task. Must be called inside a tokio runtime.
    pub fn start(
        config: BatcherConfig,
        instances: Vec<Box<dyn Backend>>,
        stats: Arc<VersionStats>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Batcher> {
        let queued = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel(config.max_queue_size);
        let (idle_tx, idle_rx) = mpsc::channel(instances.len().max(1));
        let shared = Arc::new(Shared {
            config: config.clone(),
            stats,
            metrics,
            queued: queued.clone(),
        });
        let run_shared = shared.clone();
        let name = format!("{}-v{}", config.model, config.version);
        let pool = WorkerPool::spawn(
            &name,
            instances,
            move |ix, backend: &mut dyn Backend, batch: Vec<Pending>| {
                execute(&run_shared, backend, batch);
                // The loop may be gone at shutdown; then nobody needs to know we are idle.
                let _ = idle_tx.blocking_send(ix);
            },
        )?;
        let queue = BatchQueue::new(config.max_batch_size, config.combine);
        tokio::spawn(run_loop(rx, idle_rx, pool, queue, shared));
        Ok(Batcher {
            tx,
            queued,
            max_queue_size: config.max_queue_size,
        })
    }

    /// Queues `inputs` (model order, `rows` rows) and waits for the outputs (model order).
    pub async fn submit(
        &self,
        inputs: Vec<Tensor>,
        rows: usize,
        deadline: Option<Instant>,
    ) -> Result<Vec<Tensor>, BatchError> {
        let waiting = self.queued.fetch_add(1, Ordering::AcqRel);
        if waiting >= self.max_queue_size {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(BatchError::QueueFull(waiting));
        }
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            inputs,
            rows,
            enqueued: Instant::now(),
            deadline,
            reply,
        };
        if let Err(e) = self.tx.try_send(pending) {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(match e {
                mpsc::error::TrySendError::Full(_) => BatchError::QueueFull(waiting),
                mpsc::error::TrySendError::Closed(_) => BatchError::Closed,
            });
        }
        answer.await.unwrap_or(Err(BatchError::Closed))
    }

    /// Requests waiting for an instance.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

async fn run_loop(
    mut rx: mpsc::Receiver<Pending>,
    mut idle_rx: mpsc::Receiver<usize>,
    pool: WorkerPool<Vec<Pending>>,
    mut queue: BatchQueue,
    shared: Arc<Shared>,
) {
    let mut idle: Vec<usize> = (0..pool.len()).rev().collect();
    let mut open = true;
    loop {
        while let Ok(p) = rx.try_recv() {
            queue.push(p);
        }
        if !idle.is_empty() && !queue.is_empty() {
            let (batch, dropped) = queue.pop_batch(Instant::now());
            shared
                .queued
                .fetch_sub(batch.len() + dropped, Ordering::AcqRel);
            if !batch.is_empty() {
                if let Some(ix) = idle.pop() {
                    if let Err(batch) = pool.try_send(ix, batch) {
                        fail_all(batch, BatchError::Backend("model instance stopped".into()));
                    }
                }
            }
            continue;
        }
        if !open && queue.is_empty() {
            break;
        }
        tokio::select! {
            Some(ix) = idle_rx.recv() => idle.push(ix),
            p = rx.recv(), if open => match p {
                Some(p) => queue.push(p),
                None => open = false,
            },
            else => break,
        }
    }
    // Joining waits for the instances' last batches: do it off the async runtime.
    tokio::task::spawn_blocking(move || drop(pool));
}

fn fail_all(batch: Vec<Pending>, error: BatchError) {
    for p in batch {
        let _ = p.reply.send(Err(error.clone()));
    }
}

/// Runs one batch on one instance and answers every request in it.
fn execute(shared: &Shared, backend: &mut dyn Backend, batch: Vec<Pending>) {
    let start = Instant::now();
    // Last look before compute: skip work nobody waits for.
    let (live, dead): (Vec<Pending>, Vec<Pending>) =
        batch.into_iter().partition(|p| p.check_live(start).is_ok());
    for p in dead {
        let e = p.check_live(start).err().unwrap_or(BatchError::Cancelled);
        let _ = p.reply.send(Err(e));
    }
    if live.is_empty() {
        return;
    }
    let labels = [shared.config.model.as_str(), shared.config.version.as_str()];
    for p in &live {
        let waited = start.saturating_duration_since(p.enqueued);
        shared.stats.queue.record(waited);
        shared
            .metrics
            .queue_duration
            .with_label_values(&labels)
            .observe(waited.as_secs_f64());
    }
    let rows: Vec<usize> = live.iter().map(|p| p.rows).collect();
    let total_rows: usize = rows.iter().sum();

    let result = run_batch(backend, &live, &rows);
    let elapsed = start.elapsed();
    shared
        .stats
        .compute_infer
        .record_n(live.len() as u64, elapsed);
    shared.stats.execution_count.fetch_add(1, Ordering::Relaxed);
    shared
        .stats
        .inference_count
        .fetch_add(total_rows as u64, Ordering::Relaxed);
    shared
        .metrics
        .compute_duration
        .with_label_values(&labels)
        .observe(elapsed.as_secs_f64());
    shared
        .metrics
        .batch_size
        .with_label_values(&labels)
        .observe(total_rows as f64);

    match result {
        Ok(per_request) => {
            for (p, outputs) in live.into_iter().zip(per_request) {
                let _ = p.reply.send(Ok(outputs));
            }
        }
        Err(e) => fail_all(live, e),
    }
}

/// Concatenates, runs and splits; a panic inside the engine becomes an error for this batch only.
fn run_batch(
    backend: &mut dyn Backend,
    live: &[Pending],
    rows: &[usize],
) -> Result<Vec<Vec<Tensor>>, BatchError> {
    let backend_err = |e: String| BatchError::Backend(e);
    if let [single] = live {
        let out = catch_unwind(AssertUnwindSafe(|| backend.infer(&single.inputs)))
            .map_err(|_| backend_err("the backend panicked".into()))?
            .map_err(|e| backend_err(e.to_string()))?;
        return Ok(vec![out]);
    }
    let n_inputs = live[0].inputs.len();
    let inputs = (0..n_inputs)
        .map(|i| Tensor::concat(&live.iter().map(|p| p.inputs[i].clone()).collect::<Vec<_>>()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| backend_err(e.to_string()))?;
    let outputs = catch_unwind(AssertUnwindSafe(|| backend.infer(&inputs)))
        .map_err(|_| backend_err("the backend panicked".into()))?
        .map_err(|e| backend_err(e.to_string()))?;
    let mut per_request: Vec<Vec<Tensor>> = vec![Vec::with_capacity(outputs.len()); live.len()];
    for out in outputs {
        for (slot, piece) in per_request
            .iter_mut()
            .zip(out.split(rows).map_err(|e| backend_err(e.to_string()))?)
        {
            slot.push(piece);
        }
    }
    Ok(per_request)
}
