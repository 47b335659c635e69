//! The batcher of one model version: `submit` queues a request and awaits its answer. Each
//! instance is an OS thread that, whenever it is free, takes the next batch from the shared queue
//! itself (waiting at most the queue delay for companions), concatenates inputs along dimension
//! 0, runs the backend and splits the outputs back per request.
//!
//! Instances pull rather than being handed batches by a loop task: under load a free instance
//! finds the next request already queued and starts at once, with no thread wake-up between
//! requests; an idle one is woken by the submitting task directly.

pub mod queue;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::{oneshot, watch};

use crate::backend::{Backend, BackendError};
use crate::metrics::{reason, Metrics, PhaseTimes, VersionStats};
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
                    instance_loop(&core, backend);
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

    /// Requests waiting for an instance.
    pub fn queued(&self) -> usize {
        self.core.shared.queued.load(Ordering::Acquire)
    }
}

/// One instance: take the next batch when it is due, run it, repeat; return once the queue is
/// closed and empty (dropping the backend).
fn instance_loop(core: &Core, mut backend: Box<dyn Backend>) {
    loop {
        let (batch, dropped, more) = {
            let mut state = core.lock();
            loop {
                let now = Instant::now();
                match state.queue.dispatch_at(now) {
                    // Closing: nothing more will arrive, so nothing is worth waiting for.
                    Some(at) if at <= now || !state.open => {
                        let (batch, dropped) = state.queue.pop_batch(now);
                        break (batch, dropped, !state.queue.is_empty());
                    }
                    Some(at) => {
                        state = core
                            .wake
                            .wait_timeout(state, at - now)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                    }
                    None if !state.open => return,
                    None => {
                        state = core
                            .wake
                            .wait(state)
                            .unwrap_or_else(PoisonError::into_inner);
                    }
                }
            }
        };
        core.shared.dequeued(batch.len() + dropped.total());
        core.shared.count_dropped(dropped);
        if more {
            // Work left behind: another idle instance may take it.
            core.wake.notify_one();
        }
        // Every request may have been dead.
        if !batch.is_empty() {
            execute(&core.shared, backend.as_mut(), batch);
        }
    }
}

/// Runs one batch on one instance and answers every request in it.
fn execute(shared: &Shared, backend: &mut dyn Backend, batch: Vec<Pending>) {
    let start = Instant::now();
    // Last look before compute: skip work nobody waits for.
    let (live, dead): (Vec<Pending>, Vec<Pending>) =
        batch.into_iter().partition(|p| p.check_live(start).is_ok());
    let mut dropped = Dropped::default();
    for p in dead {
        let e = p.check_live(start).err().unwrap_or(BatchError::Cancelled);
        dropped.drop_with(p, e);
    }
    shared.count_dropped(dropped);
    if live.is_empty() {
        return;
    }
    for p in &live {
        let waited = start.saturating_duration_since(p.enqueued);
        shared.stats.queue.record(waited);
        shared.metrics.queue_duration.observe(waited.as_secs_f64());
    }
    let rows: Vec<usize> = live.iter().map(|p| p.rows).collect();
    let total_rows: usize = rows.iter().sum();

    let mut times = PhaseTimes::default();
    let result = run_batch(backend, &live, &rows, &mut times);
    shared.stats.record_batch(live.len(), total_rows, times);
    shared
        .metrics
        .compute_duration
        .observe(times.total().as_secs_f64());
    shared.metrics.batch_size.observe(total_rows as f64);

    match result {
        Ok(per_request) => {
            for (p, outputs) in live.into_iter().zip(per_request) {
                let _ = p.reply.send(Ok(outputs));
            }
        }
        Err(e) => {
            for p in live {
                let _ = p.reply.send(Err(e.clone()));
            }
        }
    }
}

/// Concatenates, runs and splits, timing each phase into `times`; a panic inside the engine
/// becomes an error for this batch only.
fn run_batch(
    backend: &mut dyn Backend,
    live: &[Pending],
    rows: &[usize],
    times: &mut PhaseTimes,
) -> Result<Vec<Vec<Tensor>>, BatchError> {
    let mut infer = |inputs: &[Tensor], times: &mut PhaseTimes| {
        let t = Instant::now();
        let out = catch_unwind(AssertUnwindSafe(|| backend.infer(inputs)));
        times.infer = t.elapsed();
        out.map_err(|_| BatchError::Panicked)?
            .map_err(BatchError::from)
    };
    // A single request's inputs and outputs are used as they are: no input or output phase.
    if let [single] = live {
        return Ok(vec![infer(&single.inputs, times)?]);
    }
    let t = Instant::now();
    let n_inputs = live[0].inputs.len();
    let inputs = (0..n_inputs)
        .map(|i| Tensor::concat(&live.iter().map(|p| p.inputs[i].clone()).collect::<Vec<_>>()))
        .collect::<Result<Vec<_>, _>>();
    times.input = t.elapsed();
    let outputs = infer(&inputs?, times)?;
    let t = Instant::now();
    let mut per_request: Vec<Vec<Tensor>> = vec![Vec::with_capacity(outputs.len()); live.len()];
    let split = (|| {
        for out in outputs {
            for (slot, piece) in per_request.iter_mut().zip(out.split(rows)?) {
                slot.push(piece);
            }
        }
        Ok::<_, BatchError>(())
    })();
    times.output = t.elapsed();
    split.map(|()| per_request)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    /// Sleeps `delay` per call, records each call's rows and time span, echoes its input.
    struct Slow {
        delay: Duration,
        calls: Arc<Mutex<Vec<(usize, Instant, Instant)>>>,
    }

    impl Backend for Slow {
        fn infer(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, BackendError> {
            let start = Instant::now();
            std::thread::sleep(self.delay);
            self.calls
                .lock()
                .unwrap()
                .push((inputs[0].rows(), start, Instant::now()));
            Ok(inputs.to_vec())
        }
    }

    type Calls = Arc<Mutex<Vec<(usize, Instant, Instant)>>>;

    fn batcher(
        instances: usize,
        delay: Duration,
        policy: BatchPolicy,
        queue: usize,
    ) -> (Batcher, Calls) {
        let calls: Calls = Arc::default();
        let backends = (0..instances)
            .map(|_| {
                Box::new(Slow {
                    delay,
                    calls: calls.clone(),
                }) as Box<dyn Backend>
            })
            .collect();
        let metrics = Metrics::new().unwrap();
        let config = BatcherConfig {
            model: "m".into(),
            version: "1".into(),
            policy,
            max_queue_size: queue,
        };
        let b = Batcher::start(config, backends, Arc::default(), &metrics).unwrap();
        (b, calls)
    }

    fn row(v: f32) -> Vec<Tensor> {
        vec![Tensor::from_values(vec![1, 2], &[v, v]).unwrap()]
    }

    fn plain(max_rows: usize) -> BatchPolicy {
        BatchPolicy {
            max_rows,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_request_past_its_deadline_is_answered_and_never_computed() {
        let (b, calls) = batcher(1, Duration::from_millis(100), plain(4), 16);
        let busy = tokio::spawn({
            let b = b.clone();
            async move { b.submit(row(1.0), 1, None).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let deadline = Instant::now() + Duration::from_millis(10);
        let late = b.submit(row(2.0), 1, Some(deadline)).await;
        assert_eq!(late, Err(BatchError::DeadlineExceeded));
        assert!(busy.await.unwrap().is_ok());
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            calls.lock().unwrap().len(),
            1,
            "only the first request was computed"
        );
        let m = &b.core.shared.metrics;
        assert_eq!(m.rejected_deadline.get(), 1);
        assert_eq!(m.rejected_cancelled.get(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_request_is_not_computed() {
        let (b, calls) = batcher(1, Duration::from_millis(100), plain(4), 16);
        let busy = tokio::spawn({
            let b = b.clone();
            async move { b.submit(row(1.0), 1, None).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let gone = tokio::spawn({
            let b = b.clone();
            async move { b.submit(row(2.0), 1, None).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        gone.abort();
        assert!(busy.await.unwrap().is_ok());
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            calls.lock().unwrap().len(),
            1,
            "the aborted request was dropped before compute"
        );
        assert_eq!(b.queued(), 0);
        let m = &b.core.shared.metrics;
        assert_eq!(
            m.rejected_cancelled.get(),
            1,
            "counted as rejected{{reason=\"cancelled\"}}"
        );
        assert_eq!(m.rejected_deadline.get(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn instances_run_batches_in_parallel() {
        let (b, calls) = batcher(2, Duration::from_millis(150), plain(4), 16);
        let (x, y) = tokio::join!(b.submit(row(1.0), 1, None), b.submit(row(2.0), 1, None));
        assert!(x.is_ok() && y.is_ok());
        let calls = calls.lock().unwrap();
        assert_eq!(calls.len(), 2);
        let (a, c) = (calls[0], calls[1]);
        assert!(
            a.1 < c.2 && c.1 < a.2,
            "the two slow batches overlap in time: {calls:?}"
        );
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let (b, _calls) = batcher(1, Duration::from_millis(200), plain(4), 2);
        let mut waiting = Vec::new();
        for i in 0..3 {
            let b = b.clone();
            waiting.push(tokio::spawn(async move {
                b.submit(row(i as f32), 1, None).await
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // One computing, two queued: the queue of 2 is full.
        let refused = b.submit(row(9.0), 1, None).await;
        assert!(
            matches!(refused, Err(BatchError::QueueFull(_))),
            "{refused:?}"
        );
        for w in waiting {
            assert!(w.await.unwrap().is_ok());
        }
    }

    #[tokio::test]
    async fn queued_requests_are_combined_and_split_back_in_order() {
        let policy = BatchPolicy {
            max_rows: 8,
            combine: true,
            preferred: vec![],
            max_delay: Duration::from_millis(50),
        };
        let (b, calls) = batcher(1, Duration::from_millis(1), policy, 16);
        let answers =
            futures_util::future::join_all((0..4).map(|i| b.submit(row(i as f32), 1, None))).await;
        for (i, a) in answers.into_iter().enumerate() {
            assert_eq!(a.unwrap(), row(i as f32));
        }
        let calls = calls.lock().unwrap();
        assert_eq!(
            calls.iter().map(|c| c.0).collect::<Vec<_>>(),
            vec![4],
            "one backend call of 4 rows"
        );
    }
}
