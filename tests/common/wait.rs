//! Bounded waits on observable state, instead of sleeps that guess how long something takes:
//! a slow machine only makes them poll longer, and a hang fails with a message naming what never
//! happened. The limits are bounds against hanging, not speed requirements.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

const PERIOD: Duration = Duration::from_millis(25);

/// Polls `cond` every 25 ms until it holds; panics with "timed out after {limit}: {what}".
pub async fn wait_until<F: Future<Output = bool>>(
    limit: Duration,
    what: &str,
    mut cond: impl FnMut() -> F,
) {
    let t0 = Instant::now();
    while !cond().await {
        assert!(t0.elapsed() < limit, "timed out after {limit:?}: {what}");
        tokio::time::sleep(PERIOD).await;
    }
}

/// Calls `probe` every 25 ms until `done` holds for what it returns, and returns that; fails
/// with "{failure}: {last value}" once `limit` has passed.
pub async fn poll_until<T: Display, F: Future<Output = T>>(
    limit: Duration,
    failure: &str,
    probe: impl FnMut() -> F,
    done: impl FnMut(&T) -> bool,
) -> T {
    poll_until_every(PERIOD, limit, failure, probe, done).await
}

/// [`poll_until`] with its own polling period, for state that lasts only moments.
pub async fn poll_until_every<T: Display, F: Future<Output = T>>(
    period: Duration,
    limit: Duration,
    failure: &str,
    mut probe: impl FnMut() -> F,
    mut done: impl FnMut(&T) -> bool,
) -> T {
    let t0 = Instant::now();
    loop {
        let value = probe().await;
        if done(&value) {
            return value;
        }
        assert!(t0.elapsed() < limit, "{failure}: {value}");
        tokio::time::sleep(period).await;
    }
}
