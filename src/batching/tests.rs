//! The batcher end to end on a backend that sleeps and records: batch assembly, queue delay,
//! deadlines, cancellation, panics and shutdown.

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
