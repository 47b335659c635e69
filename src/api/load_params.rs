//! Triton's load parameters, as both transports carry them (HTTP: `parameters` of the JSON
//! body, `file:` values base64; gRPC: `ModelRepositoryParameter`s), turned into an upload:
//! the `config` JSON model configuration translated to our `config.toml` and validated as the
//! file would be, the `file:<path>` contents with their paths. Errors use Triton's words.

use base64::Engine;
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::config::ModelConfig;
use crate::error::quote;
use crate::registry::upload::Upload;

/// One parameter's value, as the transport typed it.
pub enum Param {
    Str(String),
    Bytes(Vec<u8>),
    /// Any other type, named as Triton names parameter types.
    Other(&'static str),
}

fn bad(msg: String) -> ApiError {
    ApiError::BadRequest(msg)
}

/// The upload the parameters describe; `None` when there are none (a plain reload).
pub fn upload(
    model: &str,
    params: impl IntoIterator<Item = (String, Param)>,
) -> Result<Option<Upload>, ApiError> {
    let mut up = Upload::default();
    let mut any = false;
    for (key, value) in params {
        any = true;
        if key == "config" {
            let Param::Str(json) = value else {
                return Err(bad(
                    "invalid value type for load parameter 'config', expected string_param.".into(),
                ));
            };
            up.config_toml = Some(config_toml(model, &json)?);
        } else if let Some(path) = key.strip_prefix("file:") {
            let bytes = match value {
                Param::Bytes(b) => b,
                // HTTP: base64 text (Triton's `DecodeBase64`).
                Param::Str(text) => base64::engine::general_purpose::STANDARD
                    .decode(text.as_bytes())
                    .map_err(|e| {
                        bad(format!(
                            "unable to decode base64 of load parameter {}: {e}",
                            quote(&key)
                        ))
                    })?,
                Param::Other(_) => {
                    return Err(bad(format!(
                        "invalid value type for load parameter {}, expected bytes_param.",
                        quote(&key)
                    )))
                }
            };
            up.files.push((path.to_owned(), bytes));
        } else {
            let kind = match value {
                Param::Str(_) => "string",
                Param::Bytes(_) => "bytes",
                Param::Other(kind) => kind,
            };
            return Err(bad(format!(
                "Unrecognized load parameter {} with type '{kind}'",
                quote(&key)
            )));
        }
    }
    if !up.files.is_empty() && up.config_toml.is_none() {
        return Err(bad(
            "Load parameter 'config' must be specified for model file override".into(),
        ));
    }
    Ok(any.then_some(up))
}

/// Triton answers a config override it cannot use with `failed to load 'X', failed to poll
/// from model repository` (its poll failed; the reason goes to its log), which clients match
/// on; we say the reason after it. The code stays INVALID_ARGUMENT (Triton's is INTERNAL): the
/// request is at fault.
fn override_refused(model: &str, why: &str) -> String {
    format!(
        "failed to load {}, failed to poll from model repository: Invalid config override: {why}",
        quote(model)
    )
}

/// Triton's JSON model configuration as our `config.toml`, validated by the same parser as a
/// file. Fields we do not serve are refused by name (unless empty or zero, as Triton's own
/// `get_model_config` output carries them).
pub fn config_toml(model: &str, json: &str) -> Result<String, ApiError> {
    let invalid = |why: String| bad(override_refused(model, &why));
    let v: Value = serde_json::from_str(json).map_err(|e| invalid(e.to_string()))?;
    let Value::Object(fields) = v else {
        return Err(invalid(
            "the model configuration must be a JSON object".into(),
        ));
    };
    let mut out = toml::Table::new();
    for (key, value) in &fields {
        match key.as_str() {
            "name" => {
                let name = value.as_str().unwrap_or_default();
                if !name.is_empty() && name != model {
                    return Err(invalid(format!(
                        "name {} does not match the model {}",
                        quote(name),
                        quote(model)
                    )));
                }
            }
            "platform" | "backend" => {
                let engine = match value.as_str().unwrap_or_default() {
                    "" => continue,
                    "onnxruntime_onnx" | "onnxruntime" => "onnxruntime",
                    "tract_onnx" | "tract" => "tract",
                    "auto" => "auto",
                    other => {
                        return Err(invalid(format!(
                            "{key} {} is not served here (onnxruntime_onnx, onnxruntime, tract_onnx)",
                            quote(other)
                        )))
                    }
                };
                out.insert("backend".into(), engine.into());
            }
            "max_batch_size" => {
                out.insert("max_batch_size".into(), int(value, key).map_err(invalid)?.into());
            }
            "input" | "output" => {
                let list = tensors(value, key).map_err(invalid)?;
                out.insert(key.clone(), toml::Value::Array(list));
            }
            "dynamic_batching" => {
                out.insert(key.clone(), batching(value).map_err(invalid)?.into());
            }
            "instance_group" => instance_group(value, &mut out).map_err(invalid)?,
            _ if is_empty(value) => {}
            _ => {
                return Err(invalid(format!(
                    "field {} is not supported (supported: name, platform, backend, max_batch_size, input, output, dynamic_batching, instance_group)",
                    quote(key)
                )))
            }
        }
    }
    let text = toml::to_string(&out).map_err(|e| invalid(e.to_string()))?;
    ModelConfig::parse(&text, model).map_err(invalid)?;
    Ok(text)
}

/// Empty, zero or false: what protobuf's JSON writes for a field left at its default.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_empty),
    }
}

/// An integer, as a JSON number or (protobuf's JSON for 64-bit fields) a string.
fn int(v: &Value, key: &str) -> Result<i64, String> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| format!("{key} must be an integer"))
}

fn tensors(v: &Value, key: &str) -> Result<Vec<toml::Value>, String> {
    let Value::Array(list) = v else {
        return Err(format!("{key} must be a list"));
    };
    list.iter()
        .map(|t| {
            let Value::Object(t) = t else {
                return Err(format!("each {key} must be an object"));
            };
            let mut out = toml::Table::new();
            for (field, value) in t {
                match field.as_str() {
                    "name" => {
                        out.insert("name".into(), value.as_str().unwrap_or_default().into());
                    }
                    "data_type" => {
                        let dtype = value.as_str().unwrap_or_default();
                        out.insert("datatype".into(), dtype.into());
                    }
                    "dims" => {
                        let Value::Array(dims) = value else {
                            return Err(format!("{key} dims must be a list"));
                        };
                        let dims = dims
                            .iter()
                            .map(|d| int(d, "dims").map(toml::Value::from))
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(|e| e.to_string())?;
                        out.insert("dims".into(), toml::Value::Array(dims));
                    }
                    "format" if value.as_str().is_some_and(|f| f == "FORMAT_NONE") => {}
                    _ if is_empty(value) => {}
                    _ => return Err(format!("{key} field {} is not supported", quote(field))),
                }
            }
            Ok(toml::Value::Table(out))
        })
        .collect()
}

fn batching(v: &Value) -> Result<toml::Table, String> {
    let Value::Object(b) = v else {
        return Err("dynamic_batching must be an object".into());
    };
    let mut out = toml::Table::new();
    for (field, value) in b {
        match field.as_str() {
            "preferred_batch_size" => {
                let sizes = value
                    .as_array()
                    .ok_or("preferred_batch_size must be a list")?
                    .iter()
                    .map(|d| int(d, field).map(toml::Value::from))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                out.insert("preferred_batch_sizes".into(), toml::Value::Array(sizes));
            }
            "max_queue_delay_microseconds" => {
                let us = int(value, field).map_err(|e| e.to_string())?;
                out.insert("max_queue_delay_us".into(), us.into());
            }
            _ if is_empty(value) => {}
            _ => {
                return Err(format!(
                    "dynamic_batching field {} is not supported",
                    quote(field)
                ))
            }
        }
    }
    Ok(out)
}

fn instance_group(v: &Value, out: &mut toml::Table) -> Result<(), String> {
    let groups = v.as_array().ok_or("instance_group must be a list")?;
    let [group] = groups.as_slice() else {
        return if groups.is_empty() {
            Ok(())
        } else {
            Err("one instance_group is supported".into())
        };
    };
    let group: &Map<String, Value> = group
        .as_object()
        .ok_or("instance_group must hold objects")?;
    for (field, value) in group {
        match field.as_str() {
            "count" => {
                let n = int(value, "count").map_err(|e| e.to_string())?;
                out.insert("instance_count".into(), n.into());
            }
            "kind" => match value.as_str().unwrap_or_default() {
                "" | "KIND_AUTO" | "KIND_CPU" => {}
                "KIND_GPU" => {
                    out.insert("device".into(), "cuda:0".into());
                }
                other => {
                    return Err(format!(
                        "instance_group kind {} is not supported",
                        quote(other)
                    ))
                }
            },
            "name" => {}
            _ if is_empty(value) => {}
            _ => {
                return Err(format!(
                    "instance_group field {} is not supported",
                    quote(field)
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triton_json_config_becomes_our_toml() {
        let json = r#"{"name":"simple","platform":"onnxruntime_onnx","max_batch_size":8,
            "input":[{"name":"INPUT0","data_type":"TYPE_INT32","dims":["16"]}],
            "output":[{"name":"OUTPUT0","data_type":"TYPE_INT32","dims":[16]}],
            "dynamic_batching":{"preferred_batch_size":[4],"max_queue_delay_microseconds":100},
            "instance_group":[{"count":2,"kind":"KIND_CPU"}],"optimization":{},"model_warmup":[]}"#;
        let text = config_toml("simple", json).unwrap();
        let cfg = ModelConfig::parse(&text, "simple").unwrap();
        assert_eq!(cfg.max_batch_size, 8);
        assert_eq!(cfg.instance_count, 2);
        assert_eq!(cfg.inputs[0].dims, vec![16]);
        assert_eq!(cfg.backend.as_str(), "onnxruntime");
        let b = cfg.dynamic_batching.unwrap();
        assert_eq!(b.preferred_batch_sizes, vec![4]);
    }

    #[test]
    fn unsupported_or_invalid_configs_are_refused_by_name() {
        let err = config_toml(
            "m",
            r#"{"sequence_batching":{"max_sequence_idle_microseconds":5}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("failed to load 'm', failed to poll from model repository: Invalid config override: field 'sequence_batching'"),
            "{err}"
        );
        let err = config_toml(
            "m",
            r#"{"max_batch_size":0,"dynamic_batching":{"max_queue_delay_microseconds":5}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("dynamic_batching needs max_batch_size > 0"),
            "{err}"
        );
        assert!(config_toml("m", "{").is_err());
        assert!(config_toml("m", r#"{"name":"other"}"#).is_err());
    }

    #[test]
    fn files_without_config_are_refused_with_tritons_words() {
        let params = vec![("file:1/model.onnx".to_string(), Param::Bytes(vec![1]))];
        let err = upload("m", params).unwrap_err().to_string();
        assert_eq!(
            err,
            "Load parameter 'config' must be specified for model file override"
        );
        assert_eq!(upload("m", Vec::new()).unwrap(), None);
    }
}
