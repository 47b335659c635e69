//! An instance thread's life: take the next due batch from the shared queue, run it on the
//! backend (a panic fails only that batch), split the outputs and answer each request.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::PoisonError;
use std::time::Instant;

use super::queue::{Dropped, Pending};
use super::{BatchError, Core, Shared};
use crate::backend::Backend;
use crate::metrics::PhaseTimes;
use crate::tensor::Tensor;

/// One instance: take the next batch when it is due, run it, repeat; return once the queue is
/// closed and empty (dropping the backend).
pub(super) fn instance_loop(core: &Core, mut backend: Box<dyn Backend>) {
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

    let mut live = live;
    let (model, version) = &shared.names;
    let (span, _requests) = crate::telemetry::batch_span(
        model,
        version,
        (live.len(), total_rows),
        live.iter_mut().map(|p| &mut p.trace),
    );
    let mut times = PhaseTimes::default();
    let result = span.in_scope(|| run_batch(backend, &live, &rows, &mut times));
    drop(span);
    shared.stats.record_batch(live.len(), total_rows, times);
    shared
        .metrics
        .compute_duration
        .observe(times.total().as_secs_f64());
    shared.metrics.batch_size.observe(total_rows as f64);

    match result {
        Ok(per_request) => {
            let drift = shared.drift.get();
            // Tensors share their bytes: what is kept for binning costs reference counts.
            let mut answered = Vec::with_capacity(if drift.is_some() { live.len() } else { 0 });
            for (p, outputs) in live.into_iter().zip(per_request) {
                if drift.is_some() {
                    answered.push((p.inputs, outputs.clone()));
                }
                let _ = p.reply.send(Ok(outputs));
            }
            // Every answer of the batch is sent before anything is binned.
            if let Some(monitor) = drift {
                for (inputs, outputs) in &answered {
                    monitor.observe(inputs, outputs);
                }
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
