//! What the router keeps about a request for logs and metrics beyond its answer: the id its log
//! lines carry, and whether its caller left before the answer.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::{code, Metrics, Protocol};
use crate::registry::ModelVersion;

/// Counts a request whose caller went away (its future dropped) before it was answered.
pub(super) struct Unanswered<'a>(Option<(&'a Metrics, &'a ModelVersion, Protocol)>);

impl<'a> Unanswered<'a> {
    pub(super) fn new(metrics: &'a Metrics, mv: &'a ModelVersion, protocol: Protocol) -> Self {
        Unanswered(Some((metrics, mv, protocol)))
    }

    pub(super) fn answered(mut self) {
        self.0 = None;
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if let Some((metrics, mv, protocol)) = self.0.take() {
            metrics
                .requests
                .with_label_values(&[
                    &mv.name,
                    &mv.version_label,
                    protocol.as_str(),
                    code::CANCELLED,
                ])
                .inc();
            tracing::debug!("cancelled by the client");
        }
    }
}

/// A request's id in logs: the client's, else a process-unique number (not sent back).
pub(super) enum RequestId<'a> {
    Given(&'a str),
    Generated(u64),
}

impl<'a> RequestId<'a> {
    pub(super) fn of(id: &'a str) -> RequestId<'a> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        if id.is_empty() {
            RequestId::Generated(NEXT.fetch_add(1, Ordering::Relaxed))
        } else {
            RequestId::Given(id)
        }
    }
}

impl std::fmt::Display for RequestId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestId::Given(id) => f.write_str(id),
            RequestId::Generated(n) => write!(f, "~{n}"),
        }
    }
}
