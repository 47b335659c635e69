//! The batcher of one model version: `submit` queues a request and awaits its answer. Each
//! instance is an OS thread that, whenever it is free, takes the next batch from the shared queue
//! itself (waiting at most the queue delay for companions), concatenates inputs along dimension
//! 0, runs the backend and splits the outputs back per request.
//!
//! Instances pull rather than being handed batches by a loop task: under load a free instance
//! finds the next request already queued and starts at once, with no thread wake-up between
//! requests; an idle one is woken by the submitting task directly.

mod instance;
pub mod queue;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::{oneshot, watch};

use crate::backend::{Backend, BackendError};
use crate::metrics::{reason, Metrics, VersionStats};
use crate::tensor::{Tensor, TensorError};
use prometheus::{Histogram, IntCounter, IntGauge};
pub use queue::BatchPolicy;
use queue::{BatchQueue, Dropped, Pending};

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
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("the backend panicked")]
    Panicked,
    /// Concatenating the batch's inputs or splitting its outputs back per request.
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

/// How one version's batcher behaves.
#[derive(Debug, Clone)]
pub struct BatcherConfig {
    pub model: String,
    pub version: String,
    pub policy: BatchPolicy,
    pub max_queue_size: usize,
}

/// Cloneable handle; the instances stop when the last handle is dropped, after answering
/// everything already queued.
#[derive(Clone)]
pub struct Batcher {
    core: Arc<Core>,
    /// Dropped with the last handle: closes the queue.
    _open: Arc<OpenGuard>,
    /// Turns true once everything queued is answered and every instance has dropped its backend.
    stopped: watch::Receiver<bool>,
}

/// What the submitting tasks and the instance threads share.
struct Core {
    state: Mutex<State>,
    /// Signalled when a request arrives, when a batch leaves work behind, and on close.
    wake: Condvar,
    shared: Arc<Shared>,
}

struct State {
    queue: BatchQueue,
    /// False once the last handle is gone: instances answer what is queued and exit.
    open: bool,
}

impl Core {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The lock is never held across backend code (panics there are caught anyway), so a
        // poisoned queue is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct OpenGuard(Arc<Core>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.lock().open = false;
        self.0.wake.notify_all();
    }
}

/// Per-version metric handles, resolved once instead of per request.
struct VersionMetrics {
    queue_duration: Histogram,
    compute_duration: Histogram,
    batch_size: Histogram,
    queue_depth: IntGauge,
    rejected_queue_full: IntCounter,
    rejected_deadline: IntCounter,
    rejected_cancelled: IntCounter,
}

struct Shared {
    stats: Arc<VersionStats>,
    metrics: VersionMetrics,
    /// Requests submitted and not yet handed to an instance (or dropped).
    queued: AtomicUsize,
    max_queue_size: usize,
    /// Model and version, for the batch's trace span.
    names: (String, String),
    /// Set once at load when `[drift]` is on: answered requests are binned here.
    drift: std::sync::OnceLock<Arc<crate::drift::Monitor>>,
}

impl Shared {
    fn dequeued(&self, n: usize) {
        let left = self.queued.fetch_sub(n, Ordering::AcqRel).saturating_sub(n);
        self.metrics.queue_depth.set(left as i64);
    }

    /// Counts requests dropped without compute (they have been answered already).
    fn count_dropped(&self, d: Dropped) {
        if d.deadline > 0 {
            self.metrics.rejected_deadline.inc_by(d.deadline as u64);
        }
        if d.cancelled > 0 {
            self.metrics.rejected_cancelled.inc_by(d.cancelled as u64);
        }
    }
}

impl Batcher {
    /// Starts one thread per instance.
    pub fn start(
        config: BatcherConfig,
        instances: Vec<Box<dyn Backend>>,
        stats: Arc<VersionStats>,
        metrics: &Metrics,
    ) -> std::io::Result<Batcher> {
        let labels = [config.model.as_str(), config.version.as_str()];
        let rejected = |reason: &str| {
            metrics
                .rejected
                .with_label_values(&[labels[0], labels[1], reason])
        };
        let shared = Arc::new(Shared {
            stats,
            metrics: VersionMetrics {
                queue_duration: metrics.queue_duration.with_label_values(&labels),
                compute_duration: metrics.compute_duration.with_label_values(&labels),
                batch_size: metrics.batch_size.with_label_values(&labels),
                queue_depth: metrics.queue_depth.with_label_values(&labels),
                rejected_queue_full: rejected(reason::QUEUE_FULL),
                rejected_deadline: rejected(reason::DEADLINE),
                rejected_cancelled: rejected(reason::CANCELLED),
            },
            queued: AtomicUsize::new(0),
            max_queue_size: config.max_queue_size,
            names: (config.model.clone(), config.version.clone()),
            drift: std::sync::OnceLock::new(),
        });
        let core = Arc::new(Core {
            state: Mutex::new(State {
                queue: BatchQueue::new(config.policy),
                open: true,
            }),
            wake: Condvar::new(),
            shared,
        });
        // Made before the threads: if one fails to spawn, dropping it stops the others.
        let open = Arc::new(OpenGuard(core.clone()));
        let (stopped_tx, stopped) = watch::channel(instances.is_empty());
        let stopped_tx = Arc::new(stopped_tx);
        let running = Arc::new(AtomicUsize::new(instances.len()));
        let name = format!("{}-v{}", config.model, config.version);
        for (ix, backend) in instances.into_iter().enumerate() {
            let (core, running, stopped_tx) = (core.clone(), running.clone(), stopped_tx.clone());
            std::thread::Builder::new()
                .name(format!("{name}#{ix}"))
                .spawn(move || {
                    instance::instance_loop(&core, backend);
                    if running.fetch_sub(1, Ordering::AcqRel) == 1 {
                        let _ = stopped_tx.send(true);
                    }
                })?;
        }
        Ok(Batcher {
            core,
            _open: open,
            stopped,
        })
    }

    /// Queues `inputs` (model order, `rows` rows) and waits for the outputs (model order).
    /// Past `deadline` the request is answered `DeadlineExceeded` and, if still queued, skipped.
    pub async fn submit(
        &self,
        inputs: Vec<Tensor>,
        rows: usize,
        deadline: Option<Instant>,
    ) -> Result<Vec<Tensor>, BatchError> {
        let shared = &self.core.shared;
        if deadline.is_some_and(|d| d <= Instant::now()) {
            shared.metrics.rejected_deadline.inc();
            return Err(BatchError::DeadlineExceeded);
        }
        let waiting = shared.queued.fetch_add(1, Ordering::AcqRel);
        if waiting >= shared.max_queue_size {
            shared.queued.fetch_sub(1, Ordering::AcqRel);
            shared.metrics.rejected_queue_full.inc();
            return Err(BatchError::QueueFull(waiting));
        }
        shared.metrics.queue_depth.set(waiting as i64 + 1);
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            inputs,
            rows,
            enqueued: Instant::now(),
            deadline,
            reply,
            trace: crate::telemetry::Queued::start(),
        };
        {
            let mut state = self.core.lock();
            if !state.open {
                drop(state);
                shared.dequeued(1);
                return Err(BatchError::Closed);
            }
            state.queue.push(pending);
        }
        self.core.wake.notify_one();
        // A request whose deadline passed is dropped from the queue, which can close `answer`
        // a moment before the timer below fires: that is still a deadline, not a closed model.
        let answer = async {
            answer.await.unwrap_or_else(|_| match deadline {
                Some(d) if d <= Instant::now() => Err(BatchError::DeadlineExceeded),
                _ => Err(BatchError::Closed),
            })
        };
        match deadline {
            // Dropping `answer` at the deadline marks the queued request dead: it is skipped.
            Some(d) => tokio::time::timeout_at(d.into(), answer)
                .await
                .unwrap_or(Err(BatchError::DeadlineExceeded)),
            None => answer.await,
        }
    }

    /// Completes once every handle is gone, the queue is answered and every instance thread has
    /// dropped its backend.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stopped.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Bins every answered request (inputs and outputs) into `monitor`, after its answer is
    /// sent; a second call is ignored.
    pub fn monitor_drift(&self, monitor: Arc<crate::drift::Monitor>) {
        let _ = self.core.shared.drift.set(monitor);
    }

    /// Requests waiting for an instance.
    pub fn queued(&self) -> usize {
        self.core.shared.queued.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests;
