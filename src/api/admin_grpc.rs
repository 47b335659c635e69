//! gRPC front end of the traffic control plane: `ferroserve.admin.v1.TrafficAdmin`, the same
//! operations and errors as the HTTP traffic and rollout routes. Handlers translate and call
//! `Admin`. [`AdminTokenLayer`] refuses a mutation of either gRPC service without the token from
//! its metadata, before tonic reads or decodes a byte of its body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::{Request, Response, Status};

use super::admin::{Admin, Authorized, TrafficView};
use crate::rollout::judge::RolloutRequest;
use crate::rollout::{RolloutStatus, WindowSummary};

use crate::proto::admin as pb;
use pb::traffic_admin_server::{TrafficAdmin, TrafficAdminServer};

pub struct AdminService {
    admin: Arc<Admin>,
    /// The drift reports' source (read-only views).
    router: Arc<crate::routing::Router>,
}

pub fn service(
    admin: Arc<Admin>,
    router: Arc<crate::routing::Router>,
) -> TrafficAdminServer<AdminService> {
    TrafficAdminServer::new(AdminService { admin, router })
}

/// A mutation's message and the proof its `authorization` metadata passed (both gRPC services).
pub(super) fn authorized<T>(admin: &Admin, req: Request<T>) -> Result<(Authorized, T), Status> {
    let value = req.metadata().get("authorization").map(|v| v.as_bytes());
    let auth = admin.authorize(value)?;
    Ok((auth, req.into_inner()))
}

/// The mutating methods of both gRPC services.
const MUTATIONS: [&str; 8] = [
    "/ferroserve.admin.v1.TrafficAdmin/SetTraffic",
    "/ferroserve.admin.v1.TrafficAdmin/Promote",
    "/ferroserve.admin.v1.TrafficAdmin/StartRollout",
    "/ferroserve.admin.v1.TrafficAdmin/AbortRollout",
    "/inference.GRPCInferenceService/RepositoryModelLoad",
    "/inference.GRPCInferenceService/RepositoryModelUnload",
    "/inference.GRPCInferenceService/SystemSharedMemoryRegister",
    "/inference.GRPCInferenceService/SystemSharedMemoryUnregister",
];

/// Tower layer of the gRPC server: a mutation without the right token is answered
/// UNAUTHENTICATED from its headers, so its body (huge, or not even protobuf) is never read.
/// The handlers still take their [`Authorized`] from [`authorized`]: the guard stays the only
/// way to a mutation, this layer only answers earlier.
#[derive(Clone)]
pub struct AdminTokenLayer(pub Arc<Admin>);

impl<S> tower::Layer<S> for AdminTokenLayer {
    type Service = AdminToken<S>;
    fn layer(&self, inner: S) -> AdminToken<S> {
        AdminToken {
            inner,
            admin: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AdminToken<S> {
    inner: S,
    admin: Arc<Admin>,
}

impl<S, ReqBody, B> tower::Service<http::Request<ReqBody>> for AdminToken<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<B>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Default + Send + 'static,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<B>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        if MUTATIONS.contains(&req.uri().path()) {
            let value = req.headers().get(http::header::AUTHORIZATION);
            if let Err(e) = self.admin.authorize(value.map(|v| v.as_bytes())) {
                let status = Status::from(e).into_http();
                return Box::pin(std::future::ready(Ok(status)));
            }
        }
        Box::pin(self.inner.call(req))
    }
}

fn policy_proto(model: &str, (policy, rollout): TrafficView) -> pb::TrafficPolicy {
    pb::TrafficPolicy {
        model: model.to_owned(),
        weights: policy
            .as_ref()
            .map(|p| {
                p.weights
                    .iter()
                    .map(|(v, w)| (v.to_string(), i64::from(*w)))
                    .collect()
            })
            .unwrap_or_default(),
        shadow: policy
            .as_ref()
            .and_then(|p| p.shadow.as_ref())
            .map(|s| pb::Shadow {
                version: s.version.to_string(),
                percent: s.percent,
            }),
        rollout: rollout.map(|r| rollout_proto(model, &r)),
    }
}

fn window_proto(w: &Option<WindowSummary>) -> Option<pb::Window> {
    w.as_ref().map(|w| pb::Window {
        requests: w.requests,
        errors: w.errors,
        error_rate: w.error_rate,
        p99_ms: w.p99.map(|d| d.as_secs_f64() * 1e3),
    })
}

fn rollout_proto(model: &str, s: &RolloutStatus) -> pb::RolloutStatus {
    pb::RolloutStatus {
        model: model.to_owned(),
        candidate: s.spec.candidate.to_string(),
        stable: s.stable.to_string(),
        state: s.state.as_str().to_owned(),
        step: u32::try_from(s.step).unwrap_or(u32::MAX),
        percent: s.percent,
        steps: s.spec.steps.clone(),
        step_duration_s: s.spec.step_duration.as_secs_f64(),
        max_error_rate_increase: s.spec.max_error_rate_increase,
        max_p99_ratio: s.spec.max_p99_ratio.unwrap_or(0.0),
        min_requests: s.spec.min_requests,
        reason: s.reason.clone().unwrap_or_default(),
        candidate_window: window_proto(&s.candidate_window),
        stable_window: window_proto(&s.stable_window),
        max_prediction_drift: s.spec.max_prediction_drift,
    }
}

type GrpcResult<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl TrafficAdmin for AdminService {
    async fn get_traffic(
        &self,
        req: Request<pb::GetTrafficRequest>,
    ) -> GrpcResult<pb::TrafficPolicy> {
        let model = req.into_inner().model;
        let view = self.admin.traffic(&model)?;
        Ok(Response::new(policy_proto(&model, view)))
    }

    async fn set_traffic(
        &self,
        req: Request<pb::SetTrafficRequest>,
    ) -> GrpcResult<pb::TrafficPolicy> {
        let (auth, r) = authorized(&self.admin, req)?;
        let weights: Vec<(String, i64)> = r.weights.into_iter().collect();
        let shadow = r.shadow.map(|s| (s.version, s.percent));
        let view = self.admin.set_traffic(auth, &r.model, &weights, shadow)?;
        Ok(Response::new(policy_proto(&r.model, view)))
    }

    async fn promote(&self, req: Request<pb::PromoteRequest>) -> GrpcResult<pb::TrafficPolicy> {
        let (auth, r) = authorized(&self.admin, req)?;
        let view = self.admin.promote(auth, &r.model, &r.version)?;
        Ok(Response::new(policy_proto(&r.model, view)))
    }

    async fn start_rollout(
        &self,
        req: Request<pb::StartRolloutRequest>,
    ) -> GrpcResult<pb::RolloutStatus> {
        let (auth, r) = authorized(&self.admin, req)?;
        let request = RolloutRequest {
            candidate: r.candidate,
            stable: Some(r.stable).filter(|s| !s.is_empty()),
            steps: r.steps,
            step_duration_s: r.step_duration_s,
            max_error_rate_increase: r.max_error_rate_increase,
            max_p99_ratio: r.max_p99_ratio,
            min_requests: r.min_requests,
            max_prediction_drift: r.max_prediction_drift,
        };
        let status = self.admin.start_rollout(auth, &r.model, &request)?;
        Ok(Response::new(rollout_proto(&r.model, &status)))
    }

    async fn get_rollout(
        &self,
        req: Request<pb::GetRolloutRequest>,
    ) -> GrpcResult<pb::RolloutStatus> {
        let model = req.into_inner().model;
        let status = self.admin.rollout(&model)?;
        Ok(Response::new(rollout_proto(&model, &status)))
    }

    async fn abort_rollout(
        &self,
        req: Request<pb::AbortRolloutRequest>,
    ) -> GrpcResult<pb::RolloutStatus> {
        let (auth, r) = authorized(&self.admin, req)?;
        let model = r.model;
        let status = self.admin.abort_rollout(auth, &model)?;
        Ok(Response::new(rollout_proto(&model, &status)))
    }

    async fn get_drift(&self, req: Request<pb::GetDriftRequest>) -> GrpcResult<pb::DriftReport> {
        let r = req.into_inner();
        let version = Some(r.version.as_str()).filter(|v| !v.is_empty());
        let report = self
            .router
            .drift(&r.model, version)
            .map_err(super::error::ApiError::from)?;
        Ok(Response::new(drift_proto(&report)))
    }
}

/// The drift report as the admin service answers it; `json` is the HTTP endpoint's document.
fn drift_proto(r: &crate::drift::Report) -> pb::DriftReport {
    use crate::drift::profile::Role;
    pb::DriftReport {
        model: r.model.clone(),
        version: r.version.clone(),
        state: if r.baseline.is_some() {
            "collecting_baseline"
        } else {
            "monitoring"
        }
        .into(),
        closed_windows: r.closed.map_or(0, |c| c.0),
        window_rows: r.closed.map_or(0, |c| c.1),
        drifting_share: r.drifting_share,
        features: r
            .features
            .iter()
            .map(|f| {
                let (counts, scores) = f.closed.clone().unzip();
                pb::FeatureDrift {
                    tensor: f.tensor.clone(),
                    feature: f.profile.name.clone(),
                    role: if f.role == Role::Input {
                        "input"
                    } else {
                        "output"
                    }
                    .into(),
                    reference: f.profile.proportions.clone(),
                    window_counts: counts.unwrap_or_default(),
                    psi: scores.as_ref().map_or(0.0, |s| s.psi),
                    js_distance: scores.as_ref().map_or(0.0, |s| s.js_distance),
                    p_value: scores.as_ref().and_then(|s| s.p_value),
                    drifting: scores.as_ref().is_some_and(|s| s.drifting),
                    window_closed: scores.is_some(),
                }
            })
            .collect(),
        json: super::http::drift::report_json(r).to_string(),
    }
}
