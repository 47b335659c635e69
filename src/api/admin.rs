//! The control plane both transports expose: repository index, load and unload, traffic policy,
//! promotion and rollouts (the latter in every model-control mode). Mutations are
//! authenticated: with an admin token set, `Authorization: Bearer <token>` (HTTP header or gRPC
//! metadata) compared in constant time; with none set, only a loopback-only server (or one
//! started with `--allow-unauthenticated-admin`) accepts them.

use std::net::IpAddr;
use std::sync::Arc;

use super::error::ApiError;
use crate::config::ServerConfig;
use crate::policy::traffic::TrafficPolicy;
use crate::registry::manager::{ControlError, IndexRow, ModelManager};
use crate::rollout::judge::RolloutRequest;
use crate::rollout::{RolloutStatus, TrafficControl};

/// A policy and the model's latest rollout, as `GET .../traffic` reports them.
pub type TrafficView = (Option<Arc<TrafficPolicy>>, Option<RolloutStatus>);

/// Proof that a mutating request passed [`Admin::authorize`], the only maker of one. Every
/// mutation takes one by value, so a handler can neither forget the check nor run it twice.
#[must_use = "a mutation needs it: pass it on"]
pub struct Authorized(());

pub struct Admin {
    manager: Arc<ModelManager>,
    traffic: Arc<TrafficControl>,
    token: Option<String>,
    /// No token configured, and mutations are allowed anyway (loopback-only or explicit flag).
    open_without_token: bool,
}

impl Admin {
    pub fn new(
        manager: Arc<ModelManager>,
        traffic: Arc<TrafficControl>,
        config: &ServerConfig,
    ) -> Admin {
        let loopback_only = match config.host.as_str() {
            "localhost" => true,
            host => host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()),
        };
        Admin {
            manager,
            traffic,
            token: config.admin_token.clone().filter(|t| !t.is_empty()),
            open_without_token: loopback_only || config.allow_unauthenticated_admin,
        }
    }

    pub fn manager(&self) -> &Arc<ModelManager> {
        &self.manager
    }

    /// Checks the `Authorization` value of a mutating request, once per request.
    pub fn authorize(&self, authorization: Option<&[u8]>) -> Result<Authorized, ApiError> {
        let Some(token) = &self.token else {
            return if self.open_without_token {
                Ok(Authorized(()))
            } else {
                Err(ApiError::Forbidden(
                    "model control is disabled: set an admin token (--admin-token / FERROSERVE_ADMIN_TOKEN), listen on \
                     loopback only, or pass --allow-unauthenticated-admin"
                        .into(),
                ))
            };
        };
        let given = authorization
            .and_then(|h| h.strip_prefix(b"Bearer "))
            .ok_or_else(|| {
                ApiError::Unauthenticated("missing 'Authorization: Bearer <token>'".into())
            })?;
        if constant_time_eq(given, token.as_bytes()) {
            Ok(Authorized(()))
        } else {
            Err(ApiError::Unauthenticated("invalid admin token".into()))
        }
    }

    pub fn index(&self, ready_only: bool) -> Result<Vec<IndexRow>, ApiError> {
        Ok(self.manager.index(ready_only)?)
    }

    /// Loads `model` from the repository. `with_parameters`: the request carried Triton's load
    /// parameters (config override, file upload); we load only from the repository, so those are
    /// refused rather than ignored.
    pub async fn load(
        &self,
        _: Authorized,
        model: &str,
        with_parameters: bool,
    ) -> Result<(), ApiError> {
        if with_parameters {
            return Err(ApiError::BadRequest(
                "load parameters (config overrides, file contents) are not accepted: models load only from the repository"
                    .into(),
            ));
        }
        Ok(self.manager.load(model).await?)
    }

    pub async fn unload(&self, _: Authorized, model: &str) -> Result<(), ApiError> {
        Ok(self.manager.unload(model).await?)
    }

    /// The policy and latest rollout (reads need no token, as the index).
    pub fn traffic(&self, model: &str) -> Result<TrafficView, ApiError> {
        Ok(self.traffic.policy(model)?)
    }

    pub fn set_traffic(
        &self,
        _: Authorized,
        model: &str,
        weights: &[(String, i64)],
        shadow: Option<(String, f64)>,
    ) -> Result<TrafficView, ApiError> {
        self.traffic.set_policy(model, weights, shadow)?;
        self.traffic(model)
    }

    pub fn promote(
        &self,
        _: Authorized,
        model: &str,
        version: &str,
    ) -> Result<TrafficView, ApiError> {
        self.traffic.promote(model, version)?;
        self.traffic(model)
    }

    pub fn start_rollout(
        &self,
        _: Authorized,
        model: &str,
        request: &RolloutRequest,
    ) -> Result<RolloutStatus, ApiError> {
        Ok(self.traffic.start_rollout(model, request)?)
    }

    pub fn rollout(&self, model: &str) -> Result<RolloutStatus, ApiError> {
        Ok(self.traffic.rollout(model)?)
    }

    pub fn abort_rollout(&self, _: Authorized, model: &str) -> Result<RolloutStatus, ApiError> {
        Ok(self.traffic.abort_rollout(model)?)
    }
}

/// Compares without an early exit, so timing does not reveal how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> ApiError {
        ApiError::Control(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"secret-token-123", b"secret-token-123"));
        assert!(!constant_time_eq(b"secret-token-124", b"secret-token-123"));
        assert!(!constant_time_eq(b"secret", b"secret-token-123"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
