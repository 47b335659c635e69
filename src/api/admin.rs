//! The control plane both transports expose: repository index, load and unload, traffic policy,
//! promotion and rollouts (the latter in every model-control mode). Mutations are
//! authenticated, `Authorization: Bearer <token>` (HTTP header or gRPC metadata) compared in
//! constant time, whatever address the request comes from (behind a proxy or a sidecar the
//! peer says nothing about the sender). With no token configured the server makes one at start
//! and writes it to `admin_token_file` ([`super::admin_token`]); only
//! `allow_unauthenticated_admin` opens mutations to anyone.

use std::sync::Arc;

use anyhow::Context;

use super::error::ApiError;
use crate::config::ServerConfig;
use crate::policy::traffic::TrafficPolicy;
use crate::registry::manager::{ControlError, IndexRow, ModelManager};
use crate::registry::upload::Upload;
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
    /// `None`: the operator opened mutations to anyone (`allow_unauthenticated_admin`).
    token: Option<String>,
    /// `allow_model_upload`: the bound on an upload's files together (`max_request_bytes`).
    upload_limit: Option<usize>,
}

impl Admin {
    /// The configured token; else none when the operator opted out; else a token made now and
    /// written to `admin_token_file` (failing to write it fails the start: a token nobody can
    /// read would close the control plane without saying why).
    pub fn new(
        manager: Arc<ModelManager>,
        traffic: Arc<TrafficControl>,
        config: &ServerConfig,
    ) -> anyhow::Result<Admin> {
        let token = match config.admin_token.clone().filter(|t| !t.is_empty()) {
            Some(token) => Some(token),
            None if config.allow_unauthenticated_admin => {
                tracing::warn!(
                    "allow_unauthenticated_admin: anyone who reaches the ports can load, unload and change traffic"
                );
                None
            }
            None => {
                let path = config.admin_token_file();
                let token =
                    super::admin_token::generate().context("admin token: read the OS RNG")?;
                super::admin_token::write(&path, &token).with_context(|| {
                    format!(
                        "cannot write the admin token file {} (set admin_token_file, admin_token or allow_unauthenticated_admin)",
                        path.display()
                    )
                })?;
                tracing::info!(
                    admin_token_file = %path.display(),
                    "no admin token configured: made one; ferroserve models|traffic|rollout read it from this file"
                );
                Some(token)
            }
        };
        Ok(Admin {
            manager,
            traffic,
            token,
            upload_limit: config
                .allow_model_upload
                .then_some(config.max_request_bytes),
        })
    }

    /// With `allow_model_upload`: the bound on an upload (`max_request_bytes`).
    pub fn upload_limit(&self) -> Option<usize> {
        self.upload_limit
    }

    pub fn manager(&self) -> &Arc<ModelManager> {
        &self.manager
    }

    /// Checks the `Authorization` value of a mutating request, once per request.
    pub fn authorize(&self, authorization: Option<&[u8]>) -> Result<Authorized, ApiError> {
        let Some(token) = &self.token else {
            return Ok(Authorized(()));
        };
        let given = authorization.and_then(bearer).ok_or_else(|| {
                ApiError::Unauthenticated(
                "missing 'Authorization: Bearer <token>' (the server's admin_token, or the one in its admin_token_file)"
                    .into(),
            )
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

    /// Loads `model` from the repository; with an `upload` (Triton's `config` and `file:` load
    /// parameters), first writes it into the repository, which only `allow_model_upload`
    /// allows (refused otherwise, as Triton refuses a restricted API: 403).
    pub async fn load(
        &self,
        _: Authorized,
        model: &str,
        upload: Option<Upload>,
    ) -> Result<(), ApiError> {
        let Some(upload) = upload else {
            return Ok(self.manager.load(model).await?);
        };
        let Some(max_bytes) = self.upload_limit else {
            return Err(ApiError::Forbidden(
                "load parameters 'config' and 'file:' write the model into the repository: the operator must set allow_model_upload"
                    .into(),
            ));
        };
        Ok(self.manager.load_uploaded(model, upload, max_bytes).await?)
    }

    /// Unloads `model`. Triton's `unload_dependents` changes nothing: there are no ensembles
    /// here, so a model has no dependents.
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

/// The credentials of `Bearer <token>`; the scheme is case-insensitive (RFC 9110, 11.1) and
/// may be followed by more than one space.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    let start = rest.iter().position(|&b| b != b' ')?;
    Some(&rest[start..])
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
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"BEARER  abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Bearerabc"), None);
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"secret-token-123", b"secret-token-123"));
        assert!(!constant_time_eq(b"secret-token-124", b"secret-token-123"));
        assert!(!constant_time_eq(b"secret", b"secret-token-123"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
