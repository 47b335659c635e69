//! Admission of one request on the router: a place on the server and one on its version, or an
//! at-once refusal counted with the model's labels. The counting itself is `policy::admission`.

use super::{InferError, Router};
use crate::metrics::reason;
use crate::policy::admission::{BytePermit, Permit};
use crate::registry::ModelVersion;

impl Router {
    /// Places on the server and on the version, or an at-once refusal (counted as rejected).
    pub(super) fn admit<'a>(
        &'a self,
        mv: &'a ModelVersion,
    ) -> Result<(Permit<'a>, Permit<'a>), InferError> {
        let refuse = |what: &str, limit: usize| {
            self.metrics
                .rejected
                .with_label_values(&[&mv.name, &mv.version_label, reason::OVERLOADED])
                .inc();
            tracing::debug!(limit, "refused: {what} max_concurrent_requests in flight");
            InferError::Overloaded {
                model: mv.name.clone(),
                reason: format!("{what} max_concurrent_requests ({limit}) requests in flight"),
            }
        };
        let server = self
            .admission
            .try_enter()
            .ok_or_else(|| refuse("the server's", self.admission.limit()))?;
        let version = mv
            .admission
            .try_enter()
            .ok_or_else(|| refuse("the model's", mv.admission.limit()))?;
        Ok((server, version))
    }

    /// A reservation of `bytes` of request body from `max_inflight_bytes`, or the at-once
    /// refusal both transports answer (429 / RESOURCE_EXHAUSTED).
    pub fn take_inflight_bytes(&self, bytes: usize) -> Result<BytePermit, InferError> {
        self.inflight_bytes
            .try_take(bytes)
            .ok_or_else(|| self.inflight_bytes_refusal(bytes))
    }

    /// The refusal of a request that needs `bytes` of `max_inflight_bytes` in all.
    pub fn inflight_bytes_refusal(&self, bytes: usize) -> InferError {
        let budget = &self.inflight_bytes;
        tracing::debug!(bytes, used = budget.used(), "refused: max_inflight_bytes");
        InferError::ServerOverloaded(format!(
            "this request needs {bytes} bytes and requests being decoded or queued hold {} of \
             the server's max_inflight_bytes ({})",
            budget.used(),
            budget.limit()
        ))
    }
}
