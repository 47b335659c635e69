//! The per-request logic both transports share: resolve the model and version from a registry
//! snapshot, validate the inputs against the served signature, submit to the batcher, filter the
//! outputs, and record metrics. Transports only translate to and from these types.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::batching::BatchError;
use crate::error::{quote, ErrorCode};
use crate::metrics::{code, Metrics, Protocol};
use crate::policy::admission::{Admission, ByteBudget};
use crate::registry::{ModelEntry, ModelVersion, Registry};
use crate::tensor::Tensor;
use shadow::ShadowGate;

/// A tensor with its name, as it travels between transports and the core.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub tensor: Tensor,
}

#[derive(Debug, Clone)]
pub struct InferRequest {
    pub model: String,
    /// `None` or empty: the model's default version.
    pub version: Option<String>,
    pub id: String,
    pub inputs: Vec<NamedTensor>,
    /// Outputs wanted, in the order wanted; empty means all, in model order.
    pub outputs: Vec<String>,
    pub timeout: Option<Duration>,
    pub protocol: Protocol,
    /// Sticky routing key (`x-route-key`): the same key lands on the same version while the
    /// weights stay the same.
    pub route_key: Option<String>,
}

#[derive(Debug, Clone)]
pub struct InferResponse {
    pub model: String,
    pub version: String,
    pub id: String,
    pub outputs: Vec<NamedTensor>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum InferError {
    // Triton's wording, which clients match on (its core's model_repository_manager.cc,
    // model_lifecycle.cc and the server's common.cc).
    #[error("Request for unknown model: {} is not found", quote(.0))]
    ModelNotFound(String),
    #[error("Request for unknown model: {} version {} is not found", quote(.model), .version)]
    VersionNotFound { model: String, version: String },
    /// A version string that is not a number (Triton: INVALID_ARG, not NOT_FOUND).
    #[error("{}", bad_version(.0))]
    BadVersion(String),
    /// No version of the model is ready: Triton's "has no available versions" and its code,
    /// NOT_FOUND (its `model_lifecycle.cc`), with the reason added.
    #[error("Request for unknown model: {} has no available versions ({reason})", quote(.model))]
    NotReady { model: String, reason: String },
    /// The version named is known but not ready (loading, or failed to load).
    #[error("Request for unknown model: {} version {version} is not at ready state ({reason})", quote(.model))]
    VersionNotReady {
        model: String,
        version: String,
        reason: String,
    },
    #[error("{0}")]
    InvalidInput(String),
    #[error("model {model:?} is overloaded: {reason}")]
    Overloaded { model: String, reason: String },
    /// The server as a whole cannot take this request now (`max_inflight_bytes`).
    #[error("the server is overloaded: {0}")]
    ServerOverloaded(String),
    #[error("deadline exceeded before model {0:?} computed the request")]
    DeadlineExceeded(String),
    #[error("request cancelled")]
    Cancelled,
    #[error("model {0:?} is shutting down")]
    Unavailable(String),
    #[error("model {model:?} failed: {reason}")]
    Internal { model: String, reason: String },
}

impl InferError {
    /// Its code, from which the HTTP status, gRPC code and `requests_total` label derive.
    pub fn code(&self) -> ErrorCode {
        match self {
            InferError::ModelNotFound(_)
            | InferError::VersionNotFound { .. }
            | InferError::NotReady { .. } => ErrorCode::NotFound,
            // A named version that is loading or failed: Triton's UNAVAILABLE.
            InferError::VersionNotReady { .. } | InferError::Unavailable(_) => {
                ErrorCode::Unavailable
            }
            InferError::InvalidInput(_) | InferError::BadVersion(_) => ErrorCode::InvalidArgument,
            InferError::Overloaded { .. } | InferError::ServerOverloaded(_) => {
                ErrorCode::ResourceExhausted
            }
            InferError::DeadlineExceeded(_) => ErrorCode::DeadlineExceeded,
            InferError::Cancelled => ErrorCode::Cancelled,
            InferError::Internal { .. } => ErrorCode::Internal,
        }
    }
}

/// Triton's answer to a version string that is not a non-negative integer (`common.cc`'s
/// `GetModelVersionFromString`, `std::stol` named as it names it).
fn bad_version(v: &str) -> String {
    if v.trim_start().starts_with('-') && v.trim().parse::<i64>().is_ok() {
        format!(
            "invalid model version specified {} , version should be an integral value > 0",
            quote(v)
        )
    } else {
        format!(
            "failed to get model version from specified version string {} (details: stol), version should be an integral value > 0",
            quote(v)
        )
    }
}

pub struct Router {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    strict_readiness: bool,
    /// Set on shutdown: readiness turns false while requests are still served.
    draining: AtomicBool,
    /// Inference requests in flight on the whole server (`max_concurrent_requests`).
    admission: Admission,
    /// Request bytes being read, decoded or queued (`max_inflight_bytes`), taken by the
    /// transports before they decode a body.
    inflight_bytes: Arc<ByteBudget>,
    shadow: ShadowGate,
}

impl Router {
    pub fn new(registry: Arc<Registry>, metrics: Arc<Metrics>, strict_readiness: bool) -> Router {
        Router {
            registry,
            metrics,
            strict_readiness,
            draining: AtomicBool::new(false),
            admission: Admission::new(0, None),
            inflight_bytes: ByteBudget::new(0),
            shadow: ShadowGate::default(),
        }
    }

    /// Refuses inference requests at once while `limit` are in flight (0: no limit).
    pub fn with_max_concurrent_requests(mut self, limit: usize) -> Router {
        self.admission = Admission::new(limit, None);
        self
    }

    /// Refuses request bodies at once while `limit` bytes are being read, decoded or queued
    /// (0: no limit).
    pub fn with_max_inflight_bytes(mut self, limit: usize) -> Router {
        self.inflight_bytes = ByteBudget::new(limit);
        self
    }

    pub fn inflight_bytes(&self) -> &Arc<ByteBudget> {
        &self.inflight_bytes
    }

    /// Counts a request that could not be decoded (it never reached [`Router::infer`]); an
    /// unknown model stays out of the labels.
    pub fn count_undecodable(&self, model: &str, protocol: Protocol) {
        let known = self.registry.snapshot().models.contains_key(model);
        self.metrics
            .requests
            .with_label_values(&[
                if known { model } else { "" },
                "",
                protocol.as_str(),
                code::INVALID_ARGUMENT,
            ])
            .inc();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Turns readiness false for good; requests keep being served.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn server_ready(&self) -> bool {
        if self.draining.load(Ordering::Acquire) {
            false
        } else if self.strict_readiness {
            self.registry.all_ready()
        } else {
            self.registry.settled()
        }
    }

    /// The model's entry, or NOT_FOUND.
    pub fn entry(&self, model: &str) -> Result<ModelEntry, InferError> {
        self.registry
            .snapshot()
            .models
            .get(model)
            .cloned()
            .ok_or_else(|| InferError::ModelNotFound(model.to_owned()))
    }

    /// Readiness of a model (default version) or of one version. Unknown names are errors.
    pub fn model_ready(&self, model: &str, version: Option<&str>) -> Result<bool, InferError> {
        match self.version(model, version) {
            Ok(_) => Ok(true),
            Err(InferError::NotReady { .. } | InferError::VersionNotReady { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Runs one inference request end to end, in a span that carries its id (the client's, else
    /// a generated one) into every log line about it.
    pub async fn infer(&self, request: InferRequest) -> Result<InferResponse, InferError> {
        let span = tracing::info_span!(
            "request",
            id = %RequestId::of(&request.id),
            model = %request.model,
            protocol = request.protocol.as_str(),
        );
        self.infer_traced(request).instrument(span).await
    }

    async fn infer_traced(&self, request: InferRequest) -> Result<InferResponse, InferError> {
        let start = Instant::now();
        let protocol = request.protocol;
        let route = self.route(
            &request.model,
            request.version.as_deref(),
            request.route_key.as_deref(),
        );
        let route = match route {
            Ok(route) => route,
            Err(e) => {
                // Unknown names stay out of the labels: clients must not create time series.
                let model = if matches!(e, InferError::ModelNotFound(_)) {
                    ""
                } else {
                    request.model.as_str()
                };
                self.metrics
                    .requests
                    .with_label_values(&[model, "", protocol.as_str(), e.code().label()])
                    .inc();
                return Err(e);
            }
        };
        let mv = route.version;
        self.metrics
            .traffic
            .routed
            .with_label_values(&[
                mv.name.as_str(),
                mv.version_label.as_str(),
                route.reason.as_str(),
            ])
            .inc();
        crate::telemetry::record_route(
            &mv.name,
            &mv.version_label,
            route.reason.as_str(),
            protocol,
        );
        let unanswered = Unanswered::new(&self.metrics, &mv, protocol);
        let mut mirror = None;
        let result = self
            .infer_on(&mv, request, start, route.shadow, &mut mirror)
            .await;
        unanswered.answered();
        let elapsed = start.elapsed();
        let outcome = match &result {
            Ok(response) => {
                mv.stats.success.record(elapsed);
                mv.window.record(true, elapsed);
                if let Some(tx) = mirror {
                    let _ = tx.send(response.outputs.clone());
                }
                code::OK
            }
            Err(e) => {
                mv.stats.fail.record(elapsed);
                // A client that went away says nothing about the version.
                if !matches!(e, InferError::Cancelled) {
                    mv.window.record(false, elapsed);
                }
                e.code().label()
            }
        };
        mv.stats.touch();
        crate::telemetry::record_outcome(outcome);
        let labels = [
            mv.name.as_str(),
            mv.version_label.as_str(),
            protocol.as_str(),
        ];
        self.metrics
            .requests
            .with_label_values(&[labels[0], labels[1], labels[2], outcome])
            .inc();
        self.metrics
            .request_duration
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
        match &result {
            Err(e @ InferError::Internal { .. }) => tracing::warn!(error = %e, "inference failed"),
            _ => tracing::debug!(
                code = outcome,
                version = mv.version_label.as_str(),
                elapsed_us = elapsed.as_micros() as u64,
                "answered"
            ),
        }
        result
    }

    /// Validates and computes on `mv`. With a `shadow`, a copy of a request the primary accepted
    /// is mirrored to it, and `mirror` receives where to send the primary's outputs.
    async fn infer_on(
        &self,
        mv: &ModelVersion,
        request: InferRequest,
        start: Instant,
        shadow: Option<Arc<ModelVersion>>,
        mirror: &mut Option<tokio::sync::oneshot::Sender<Vec<NamedTensor>>>,
    ) -> Result<InferResponse, InferError> {
        let (_server_permit, _permit) = self.admit(mv)?;
        let copy = shadow.as_ref().map(|_| request.inputs.clone());
        let (inputs, rows) = validate::inputs(mv, request.inputs)?;
        let wanted = validate::outputs(mv, &request.outputs)?;
        if let (Some(shadow), Some(copy)) = (shadow, copy) {
            let deadline =
                request::deadline(start, request.timeout, shadow.config.queue.default_timeout);
            *mirror = self
                .shadow
                .mirror(shadow, copy, deadline, self.metrics.clone());
        }
        let deadline = request::deadline(start, request.timeout, mv.config.queue.default_timeout);
        let outputs = mv
            .batcher
            .submit(inputs, rows, deadline)
            .await
            .map_err(|e| {
                let model = mv.name.clone();
                match e {
                    BatchError::QueueFull(n) => InferError::Overloaded {
                        model,
                        reason: format!("{n} requests queued"),
                    },
                    BatchError::Closed => InferError::Unavailable(model),
                    BatchError::DeadlineExceeded => InferError::DeadlineExceeded(model),
                    BatchError::Cancelled => InferError::Cancelled,
                    e @ (BatchError::Backend(_) | BatchError::Panicked | BatchError::Tensor(_)) => {
                        InferError::Internal {
                            model,
                            reason: e.to_string(),
                        }
                    }
                }
            })?;
        let mut outputs: Vec<Option<Tensor>> = outputs.into_iter().map(Some).collect();
        let outputs = wanted
            .into_iter()
            .filter_map(|ix| {
                let tensor = outputs.get_mut(ix)?.take()?;
                Some(NamedTensor {
                    name: mv.signature.outputs[ix].name.clone(),
                    tensor,
                })
            })
            .collect();
        Ok(InferResponse {
            model: mv.name.clone(),
            version: mv.version_label.clone(),
            id: request.id,
            outputs,
        })
    }
}

mod admit;
pub mod classify;
pub mod request;
pub mod route;
pub mod shadow;
mod tracking;
mod validate;
mod views;

use tracking::{RequestId, Unanswered};
pub use views::{ModelMetadata, VersionStatistics};
