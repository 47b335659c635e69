//! The measurement loop: closed-loop workers (the open loop is [`super::schedule`]), the measured
//! window, and the merge of the workers' statistics ([`super::stats`]).
//!
//! A request belongs to the measured window when its (intended) send time is in `[t0, t1)`;
//! workers stop starting requests at `t1` and finish the one in flight, so the tail of the
//! window is measured like the rest of it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::config::{Load, Plan};
use super::conn::Conn;
use super::schedule;
use super::stats::{lock, process_cpu_time, Measured, Stats};

/// Runs the load of `plan` over `conns` (one per worker) and returns the merged measurements.
pub async fn drive(plan: &Plan, conns: Vec<Conn>) -> anyhow::Result<Measured> {
    let start = Instant::now();
    let t0 = start + plan.warmup;
    let t1 = t0 + plan.duration;
    let all: Vec<Arc<Mutex<Stats>>> = conns
        .iter()
        .map(|_| Arc::new(Mutex::new(Stats::new())))
        .collect();
    let dropped = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(conns.len());
    let mut scheduler = None;
    match plan.load {
        Load::Closed { .. } => {
            for (conn, stats) in conns.into_iter().zip(&all) {
                tasks.push(tokio::spawn(closed_worker(conn, stats.clone(), t0, t1)));
            }
        }
        Load::Open { rate, .. } => {
            let window = schedule::Window { start, t0, t1 };
            let (workers, sched) = schedule::open_loop(conns, &all, window, rate, dropped.clone());
            tasks = workers;
            scheduler = Some(tokio::spawn(sched));
        }
    }

    tokio::time::sleep_until(t0.into()).await;
    let (w0, cpu0) = (Instant::now(), process_cpu_time());
    tokio::time::sleep_until(t1.into()).await;
    let (w1, cpu1) = (Instant::now(), process_cpu_time());

    if let Some(s) = scheduler.take() {
        // It stops at t1 and drops the workers' senders, so that they finish.
        let _ = s.await;
    }
    // Requests in flight at t1 finish (they are measured); a server that never answers must not
    // hang the run, though.
    let grace = Duration::from_secs(10).max(plan.duration);
    let joined = tokio::time::timeout(grace, futures_util::future::join_all(&mut tasks)).await;
    if joined.is_err() {
        eprintln!("bench: some requests were still unanswered {grace:?} after the end; abandoned");
        for t in &tasks {
            t.abort();
        }
    }
    let mut stats = Stats::new();
    for s in &all {
        stats.merge(&lock(s));
    }
    Ok(Measured {
        stats,
        dropped_by_client: dropped.load(Ordering::Relaxed),
        window: w1.saturating_duration_since(w0),
        cpu: cpu0.zip(cpu1).map(|(a, b)| b.saturating_sub(a)),
    })
}

async fn closed_worker(mut conn: Conn, stats: Arc<Mutex<Stats>>, t0: Instant, t1: Instant) {
    loop {
        let sent = Instant::now();
        if sent >= t1 {
            return;
        }
        let result = conn.call().await;
        if sent >= t0 {
            lock(&stats).record(sent, result);
        }
    }
}
