//! `grpc.health.v1.Health` (tonic-health's messages) answered from the router's state, so
//! Kubernetes `grpc:` probes work: the whole server (`""`) and `inference.GRPCInferenceService`
//! follow server readiness, a model's name its readiness, the other services liveness; all of
//! them turn NOT_SERVING while the server drains. Watch streams end when the listener closes.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::api::error::ApiError;
use crate::routing::Router;

/// Served while models load: the services that need none.
const ALWAYS: [&str; 4] = [
    "ferroserve.admin.v1.TrafficAdmin",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];
const INFERENCE: &str = "inference.GRPCInferenceService";
/// How often the state is read for Watch streams (model loads publish without telling anyone);
/// the drain flip is pushed at once by [`HealthHandle::refresh`].
const REFRESH: Duration = Duration::from_millis(200);

/// The status of `service` now; `None` for a name the server does not know.
fn status(router: &Router, service: &str) -> Option<ServingStatus> {
    let serving = |up: bool| {
        if up && !router.is_draining() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    };
    if service.is_empty() || service == INFERENCE {
        Some(serving(router.server_ready()))
    } else if ALWAYS.contains(&service) {
        Some(serving(true))
    } else {
        router.model_ready(service, None).ok().map(serving)
    }
}

/// Everything a status depends on, compared to wake Watch streams only on a change.
#[derive(PartialEq)]
struct Fingerprint {
    server: bool,
    draining: bool,
    models: Vec<(String, bool)>,
}

fn fingerprint(router: &Router) -> Fingerprint {
    let table = router.registry().snapshot();
    Fingerprint {
        server: router.server_ready(),
        draining: router.is_draining(),
        models: table
            .models
            .keys()
            .map(|m| (m.clone(), router.model_ready(m, None).unwrap_or(false)))
            .collect(),
    }
}

/// Wakes the Watch streams when the state changed.
#[derive(Clone)]
pub struct HealthHandle {
    router: Arc<Router>,
    changes: Arc<watch::Sender<Fingerprint>>,
}

impl HealthHandle {
    /// Reads the state now (after the drain began, say) instead of at the next tick.
    pub fn refresh(&self) {
        let now = fingerprint(&self.router);
        self.changes.send_if_modified(|last| {
            let changed = *last != now;
            if changed {
                *last = now;
            }
            changed
        });
    }
}

pub struct HealthService {
    handle: HealthHandle,
    stop: watch::Receiver<bool>,
}

/// The service and its handle; the state is read every [`REFRESH`] until `stop` turns true,
/// which also ends every Watch stream (so the graceful close does not wait for them).
pub fn service(
    router: Arc<Router>,
    stop: watch::Receiver<bool>,
) -> (HealthServer<HealthService>, HealthHandle) {
    let changes = Arc::new(watch::channel(fingerprint(&router)).0);
    let handle = HealthHandle { router, changes };
    let (ticker, mut until) = (handle.clone(), stop.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => ticker.refresh(),
                _ = until.wait_for(|s| *s) => break,
            }
        }
    });
    let server = HealthServer::new(HealthService {
        handle: handle.clone(),
        stop,
    });
    (server, handle)
}

fn answer(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status.into(),
    }
}

struct WatchState {
    router: Arc<Router>,
    service: String,
    changes: watch::Receiver<Fingerprint>,
    stop: watch::Receiver<bool>,
    last: Option<ServingStatus>,
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = req.into_inner().service;
        match status(&self.handle.router, &service) {
            Some(s) => Ok(Response::new(answer(s))),
            None => Err(ApiError::NoRoute(format!("unknown service '{service}'")).into()),
        }
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    /// The status now, then each change; an unknown name reads SERVICE_UNKNOWN (it may appear).
    async fn watch(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut changes = self.handle.changes.subscribe();
        changes.mark_unchanged();
        let state = WatchState {
            router: self.handle.router.clone(),
            service: req.into_inner().service,
            changes,
            stop: self.stop.clone(),
            last: None,
        };
        let stream = futures_util::stream::unfold(state, |mut st| async move {
            loop {
                let now = status(&st.router, &st.service).unwrap_or(ServingStatus::ServiceUnknown);
                if st.last != Some(now) {
                    st.last = Some(now);
                    return Some((Ok(answer(now)), st));
                }
                tokio::select! {
                    changed = st.changes.changed() => if changed.is_err() { return None },
                    _ = st.stop.wait_for(|s| *s) => return None,
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
