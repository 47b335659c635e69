//! Micro-benchmarks of the per-batch bookkeeping on the serving path: the batcher's queue
//! (push + pop_batch) and batch assembly / disassembly (`Tensor::concat`, `Tensor::split`).
//!
//!     cargo bench --bench micro [-- FILTER]
//!
//! Short measurement windows (1 s warm-up, 2 s measurement) keep the whole run under a minute.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ferroserve::batching::queue::{BatchQueue, Pending};
use ferroserve::batching::{BatchError, BatchPolicy};
use ferroserve::tensor::Tensor;
use tokio::sync::oneshot;

type Receiver = oneshot::Receiver<Result<Vec<Tensor>, BatchError>>;

fn values(n: usize) -> Vec<f32> {
    (0..n).map(|i| (i % 251) as f32 * 0.01).collect()
}

/// `count` live one-row requests of `width` FP32 features, and the receivers that keep them live.
fn pendings(count: usize, width: usize) -> (Vec<Pending>, Vec<Receiver>) {
    let now = Instant::now();
    let row = Tensor::from_values(vec![1, width], &values(width)).expect("tensor");
    (0..count)
        .map(|_| {
            let (tx, rx) = oneshot::channel();
            let p = Pending {
                inputs: vec![row.clone()],
                rows: 1,
                enqueued: now,
                deadline: Some(now + Duration::from_secs(3600)),
                reply: tx,
                trace: Default::default(),
            };
            (p, rx)
        })
        .unzip()
}

fn bench_queue(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch_queue");
    const REQUESTS: usize = 64;
    g.throughput(Throughput::Elements(REQUESTS as u64));
    // (label, combine, preferred sizes, batches expected from 64 one-row requests)
    let cases: [(&str, bool, &[usize], usize); 3] = [
        ("combine=off", false, &[], REQUESTS),
        ("combine=on", true, &[], 1),
        ("combine=on,preferred=[8,16,32]", true, &[8, 16, 32], 2),
    ];
    for (label, combine, preferred, expected) in cases {
        let policy = BatchPolicy {
            max_rows: 64,
            combine,
            preferred: preferred.to_vec(),
            max_delay: Duration::ZERO,
        };
        g.bench_function(format!("push{REQUESTS}x1row+pop_all/{label}"), |b| {
            b.iter_batched(
                || pendings(REQUESTS, 64),
                |(items, receivers)| {
                    let mut q = BatchQueue::new(policy.clone());
                    for p in items {
                        q.push(p);
                    }
                    let now = Instant::now();
                    let mut batches = Vec::new();
                    while q.dispatch_at(now).is_some() {
                        let (batch, dropped) = q.pop_batch(now);
                        debug_assert_eq!(dropped.total(), 0);
                        batches.push(batch);
                    }
                    assert_eq!(batches.len(), expected);
                    // Returned so that dropping the requests is not timed.
                    (batches, receivers)
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn bench_tensor(c: &mut Criterion) {
    let mut g = c.benchmark_group("tensor");

    let rows: Vec<Tensor> = (0..64)
        .map(|_| Tensor::from_values(vec![1, 64], &values(64)).expect("tensor"))
        .collect();
    let images: Vec<Tensor> = (0..8)
        .map(|_| Tensor::from_values(vec![8, 3, 32, 32], &values(8 * 3 * 32 * 32)).expect("tensor"))
        .collect();
    let rows_joined = Tensor::concat(&rows).expect("concat");
    let images_joined = Tensor::concat(&images).expect("concat");

    g.throughput(Throughput::Bytes(rows_joined.data().len() as u64));
    g.bench_function("concat/64x[1,64]", |b| {
        b.iter(|| Tensor::concat(black_box(&rows)).expect("concat"))
    });
    // split shares the buffer (no copy): count pieces, not bytes.
    g.throughput(Throughput::Elements(64));
    g.bench_function("split/[64,64]->64x1", |b| {
        let parts = [1usize; 64];
        b.iter(|| black_box(&rows_joined).split(&parts).expect("split"))
    });

    g.throughput(Throughput::Bytes(images_joined.data().len() as u64));
    g.bench_function("concat/8x[8,3,32,32]", |b| {
        b.iter(|| Tensor::concat(black_box(&images)).expect("concat"))
    });
    g.throughput(Throughput::Elements(8));
    g.bench_function("split/[64,3,32,32]->8x8", |b| {
        let parts = [8usize; 8];
        b.iter(|| black_box(&images_joined).split(&parts).expect("split"))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = bench_queue, bench_tensor
}
criterion_main!(benches);
