//! The `parameters` of an inference request and its tensors as the HTTP codec reads them
//! (booleans, counts, strings, shared memory references) and the ones an output answers with.

use serde::Serialize;
use serde_json::value::RawValue;

use super::wire::Params;
use crate::api::error::ApiError;
use crate::api::shm::ShmRef;

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

/// A parameter's raw value as echoed in a message (cut: it is the client's text).
fn shown(v: &RawValue) -> &str {
    let s = v.get();
    s.char_indices().nth(64).map_or(s, |(i, _)| &s[..i])
}

pub(super) fn param_bool(params: &Params<'_>, key: &str) -> Result<Option<bool>, ApiError> {
    match params.get(key) {
        None => Ok(None),
        Some(v) => match v.get() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(bad(format!(
                "parameter {key:?} must be a boolean, got {}",
                shown(v)
            ))),
        },
    }
}

pub(super) fn param_u64(params: &Params<'_>, key: &str) -> Result<Option<u64>, ApiError> {
    match params.get(key) {
        None => Ok(None),
        Some(v) => serde_json::from_str::<u64>(v.get()).map(Some).map_err(|_| {
            bad(format!(
                "parameter {key:?} must be a non-negative integer, got {}",
                shown(v)
            ))
        }),
    }
}

fn param_str<'a>(params: &Params<'a>, key: &str) -> Result<Option<String>, ApiError> {
    match params.get(key) {
        None => Ok(None),
        Some(v) => serde_json::from_str::<String>(v.get())
            .map(Some)
            .map_err(|_| {
                bad(format!(
                    "parameter {key:?} must be a string, got {}",
                    shown(v)
                ))
            }),
    }
}

/// A tensor's `shared_memory_region` / `_offset` / `_byte_size` parameters, if it has them.
pub(super) fn shm_ref(params: &Params<'_>) -> Result<Option<ShmRef>, ApiError> {
    let Some(region) = param_str(params, "shared_memory_region")? else {
        return Ok(None);
    };
    let byte_size = param_u64(params, "shared_memory_byte_size")?
        .ok_or_else(|| bad("shared_memory_region needs shared_memory_byte_size"))?;
    Ok(Some(ShmRef {
        region,
        offset: param_u64(params, "shared_memory_offset")?.unwrap_or(0),
        byte_size,
    }))
}

#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum OutputParams<'a> {
    Binary {
        binary_data_size: usize,
    },
    /// Written into a region: the response names it instead of carrying the bytes.
    Shm {
        shared_memory_region: &'a str,
        #[serde(skip_serializing_if = "is_zero")]
        shared_memory_offset: u64,
        shared_memory_byte_size: usize,
    },
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}
