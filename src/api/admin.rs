//! The control plane both transports expose: repository index, load and unload. Mutations are
//! authenticated: with an admin token set, `Authorization: Bearer <token>` (HTTP header or gRPC
//! metadata) compared in constant time; with none set, only a loopback-only server (or one
//! started with `--allow-unauthenticated-admin`) accepts them.

use std::net::IpAddr;
use std::sync::Arc;

use super::error::ApiError;
use crate::config::ServerConfig;
use crate::registry::manager::{ControlError, IndexRow, ModelManager};

pub struct Admin {
    manager: Arc<ModelManager>,
    token: Option<String>,
    /// No token configured, and mutations are allowed anyway (loopback-only or explicit flag).
    open_without_token: bool,
}

impl Admin {
    pub fn new(manager: Arc<ModelManager>, config: &ServerConfig) -> Admin {
        let loopback_only = match config.host.as_str() {
            "localhost" => true,
            host => host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()),
        };
        Admin {
            manager,
            token: config.admin_token.clone().filter(|t| !t.is_empty()),
            open_without_token: loopback_only || config.allow_unauthenticated_admin,
        }
    }

    pub fn manager(&self) -> &Arc<ModelManager> {
        &self.manager
    }

    /// Checks the `Authorization` value of a mutating request.
    pub fn authorize(&self, authorization: Option<&[u8]>) -> Result<(), ApiError> {
        let Some(token) = &self.token else {
            return if self.open_without_token {
                Ok(())
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
            Ok(())
        } else {
            Err(ApiError::Unauthenticated("invalid admin token".into()))
        }
    }

    pub fn index(&self, ready_only: bool) -> Result<Vec<IndexRow>, ApiError> {
        Ok(self.manager.index(ready_only)?)
    }

    pub async fn load(&self, authorization: Option<&[u8]>, model: &str) -> Result<(), ApiError> {
        self.authorize(authorization)?;
        Ok(self.manager.load(model).await?)
    }

    pub async fn unload(&self, authorization: Option<&[u8]>, model: &str) -> Result<(), ApiError> {
        self.authorize(authorization)?;
        Ok(self.manager.unload(model).await?)
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
