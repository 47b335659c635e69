//! The batcher of one model version: `submit` queues a request and awaits its answer; one loop
//! task hands batches to whichever instance is free; instance threads concatenate inputs along
//! dimension 0, run the backend and split the outputs back per request.

pub mod queue;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};

use crate::backend::worker::WorkerPool;
use crate::backend::Backend;
use crate::metrics::{Metrics, VersionStats};
use crate::tensor::Tensor;
use prometheus::{Histogram, IntGauge};
pub use queue::BatchPolicy;
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
    pub policy: BatchPolicy,
    pub max_queue_size: usize,
}

/// Cloneable handle; the loop and instances stop when the last handle is dropped, after
/// answering everything already queued.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Pending>,
    shared: Arc<Shared>,
    /// Turns true once the loop has answered everything queued and the instance threads joined.
    stopped: watch::Receiver<bool>,
}

/// Per-version metric handles, resolved once instead of per request.
struct VersionMetrics {
    queue_duration: Histogram,
    compute_duration: Histogram,
    batch_size: Histogram,
    queue_depth: IntGauge,
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
}

impl Batcher {
    /// Starts the instance threads and the loop task. Must be called inside a tokio runtime.
    pub fn start(
        config: BatcherConfig,
        instances: Vec<Box<dyn Backend>>,
        stats: Arc<VersionStats>,
        metrics: &Metrics,
    ) -> std::io::Result<Batcher> {
        let labels = [config.model.as_str(), config.version.as_str()];
        let shared = Arc::new(Shared {
            stats,
            metrics: VersionMetrics {
                queue_duration: metrics.queue_duration.with_label_values(&labels),
                compute_duration: metrics.compute_duration.with_label_values(&labels),
                batch_size: metrics.batch_size.with_label_values(&labels),
                queue_depth: metrics.queue_depth.with_label_values(&labels),
            },
            queued: AtomicUsize::new(0),
            max_queue_size: config.max_queue_size,
        });
        let (tx, rx) = mpsc::channel(config.max_queue_size);
        let (idle_tx, idle_rx) = mpsc::channel(instances.len().max(1));
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
        let queue = BatchQueue::new(config.policy);
        let shared_loop = shared.clone();
        let (stopped_tx, stopped) = watch::channel(false);
        tokio::spawn(async move {
            run_loop(rx, idle_rx, pool, queue, shared_loop).await;
            let _ = stopped_tx.send(true);
        });
        Ok(Batcher {
            tx,
            shared,
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
        let shared = &self.shared;
        let waiting = shared.queued.fetch_add(1, Ordering::AcqRel);
        if waiting >= shared.max_queue_size {
            shared.queued.fetch_sub(1, Ordering::AcqRel);
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
        if let Err(e) = self.tx.try_send(pending) {
            shared.dequeued(1);
            return Err(match e {
                mpsc::error::TrySendError::Full(_) => BatchError::QueueFull(waiting),
                mpsc::error::TrySendError::Closed(_) => BatchError::Closed,
            });
        }
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

    /// Completes once every handle is gone, the queue is answered and the threads are joined.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stopped.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// Requests waiting for an instance.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
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
        let now = Instant::now();
        // Closing: nothing more will arrive, so nothing is worth waiting for.
        let due = if idle.is_empty() {
            None
        } else {
            queue.dispatch_at(now).map(|at| if open { at } else { now })
        };
        if due.is_some_and(|at| at <= now) {
            let (batch, dropped) = queue.pop_batch(now);
            shared.dequeued(batch.len() + dropped);
            // Only a non-empty batch takes the idle instance: every request may have been dead.
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
        let wake = due.map(tokio::time::Instant::from_std);
        tokio::select! {
            Some(ix) = idle_rx.recv() => idle.push(ix),
            p = rx.recv(), if open => match p {
                Some(p) => queue.push(p),
                None => open = false,
            },
            _ = sleep_until(wake), if wake.is_some() => {}
            else => break,
        }
    }
    // Joining waits for the instances' last batches: do it off the async runtime.
    let _ = tokio::task::spawn_blocking(move || drop(pool)).await;
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
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
    for p in &live {
        let waited = start.saturating_duration_since(p.enqueued);
        shared.stats.queue.record(waited);
        shared.metrics.queue_duration.observe(waited.as_secs_f64());
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
        .observe(elapsed.as_secs_f64());
    shared.metrics.batch_size.observe(total_rows as f64);

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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::backend::BackendError;

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
