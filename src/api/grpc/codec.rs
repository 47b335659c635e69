//! gRPC ⇄ domain for inference: `ModelInferRequest` to [`InferRequest`] (typed `contents` or
//! `raw_input_contents`, deadline from the `timeout` parameter or `grpc-timeout`), and
//! [`InferResponse`] to `ModelInferResponse` (raw outputs).

use std::time::Duration;

use bytes::Bytes;
use tonic::Request;

use crate::api::error::ApiError;
use crate::api::shm::{PendingInput, ShmRef, ShmUse};
use crate::error::{clip, quote};
use crate::metrics::Protocol;
use crate::proto::inference as pb;
use crate::routing::request::{route_key, timeout_from_micros, ROUTE_KEY};
use crate::routing::{InferRequest, InferResponse, NamedTensor};
use crate::tensor::{
    check_element_count, expected_elements, shape_from_wire, CountError, DataType, Element, Tensor,
    TensorError,
};

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

/// Parses the `grpc-timeout` header (e.g. `100m`, `5S`). A value beyond what a duration holds
/// saturates (it is "never", as a huge `timeout` parameter over HTTP is); one that is not a
/// number and a unit is refused, as the HTTP `timeout` parameter is.
fn grpc_timeout(req: &tonic::metadata::MetadataMap) -> Result<Option<Duration>, ApiError> {
    let Some(v) = req.get("grpc-timeout") else {
        return Ok(None);
    };
    let malformed = || {
        bad(format!(
            "grpc-timeout must be digits and one of the units H M S m u n, got {}",
            clip(&String::from_utf8_lossy(v.as_encoded_bytes()))
        ))
    };
    let text = v.to_str().map_err(|_| malformed())?;
    let (num, unit) = text.split_at(text.len().checked_sub(1).ok_or_else(malformed)?);
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    let n: u64 = num.parse().unwrap_or(u64::MAX);
    Ok(Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return Err(malformed()),
    }))
}

/// tritonclient's `timeout` parameter (microseconds), as an int64 or a uint64; anything else
/// is refused with the HTTP transport's wording.
fn param_timeout(
    params: &std::collections::HashMap<String, pb::InferParameter>,
) -> Result<Option<Duration>, ApiError> {
    use pb::infer_parameter::ParameterChoice;
    let refused = |got: String| {
        bad(format!(
            "parameter \"timeout\" must be a non-negative integer, got {got}"
        ))
    };
    match params
        .get("timeout")
        .and_then(|p| p.parameter_choice.as_ref())
    {
        None => Ok(None),
        Some(ParameterChoice::Int64Param(us)) => u64::try_from(*us)
            .map(timeout_from_micros)
            .map_err(|_| refused(us.to_string())),
        Some(ParameterChoice::Uint64Param(us)) => Ok(timeout_from_micros(*us)),
        Some(other) => Err(refused(format!("{other:?}").chars().take(64).collect())),
    }
}

type Params = std::collections::HashMap<String, pb::InferParameter>;

/// A non-negative integer parameter (tritonclient sends int64).
fn param_count(params: &Params, key: &str) -> Result<Option<u64>, ApiError> {
    use pb::infer_parameter::ParameterChoice;
    match params.get(key).and_then(|p| p.parameter_choice.as_ref()) {
        None => Ok(None),
        Some(ParameterChoice::Int64Param(v)) => u64::try_from(*v).map(Some).map_err(|_| {
            bad(format!(
                "parameter {key:?} must be a non-negative integer, got {v}"
            ))
        }),
        Some(ParameterChoice::Uint64Param(v)) => Ok(Some(*v)),
        Some(_) => Err(bad(format!(
            "parameter {key:?} must be a non-negative integer"
        ))),
    }
}

/// A tensor's `shared_memory_region` / `_offset` / `_byte_size` parameters, if it has them.
fn shm_ref(params: &Params) -> Result<Option<ShmRef>, ApiError> {
    use pb::infer_parameter::ParameterChoice;
    let region = match params
        .get("shared_memory_region")
        .and_then(|p| p.parameter_choice.as_ref())
    {
        None => return Ok(None),
        Some(ParameterChoice::StringParam(s)) => s.clone(),
        Some(_) => return Err(bad("parameter \"shared_memory_region\" must be a string")),
    };
    let byte_size = param_count(params, "shared_memory_byte_size")?
        .ok_or_else(|| bad("shared_memory_region needs shared_memory_byte_size"))?;
    Ok(Some(ShmRef {
        region,
        offset: param_count(params, "shared_memory_offset")?.unwrap_or(0),
        byte_size,
    }))
}

/// Why an input's tensor could not be built from what the request carries.
#[derive(Debug, thiserror::Error)]
enum ContentsError {
    #[error(transparent)]
    Count(#[from] CountError),
    #[error("{value} does not fit {dtype}")]
    DoesNotFit { value: String, dtype: DataType },
    #[error("FP16 data must be sent in raw_input_contents")]
    Fp16NotRaw,
    #[error("no data: set contents or raw_input_contents")]
    NoData,
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

fn contents_tensor(
    dtype: DataType,
    shape: Vec<usize>,
    c: &pb::InferTensorContents,
) -> Result<Tensor, ContentsError> {
    fn narrow<S: Copy + std::fmt::Display, T: Element + TryFrom<S>>(
        shape: Vec<usize>,
        v: &[S],
    ) -> Result<Tensor, ContentsError> {
        let values = v
            .iter()
            .map(|&x| {
                T::try_from(x).map_err(|_| ContentsError::DoesNotFit {
                    value: x.to_string(),
                    dtype: T::DTYPE,
                })
            })
            .collect::<Result<Vec<T>, _>>()?;
        Ok(Tensor::from_values(shape, &values)?)
    }
    let given = match dtype {
        DataType::Bool => c.bool_contents.len(),
        DataType::I8 | DataType::I16 | DataType::I32 => c.int_contents.len(),
        DataType::I64 => c.int64_contents.len(),
        DataType::U8 | DataType::U16 | DataType::U32 => c.uint_contents.len(),
        DataType::U64 => c.uint64_contents.len(),
        DataType::F32 => c.fp32_contents.len(),
        DataType::F64 => c.fp64_contents.len(),
        DataType::Bytes => c.bytes_contents.len(),
        DataType::F16 => {
            // Whatever the datatype, an oversize shape is reported as such first.
            expected_elements(&shape)?;
            return Err(ContentsError::Fp16NotRaw);
        }
    };
    check_element_count(&shape, given, "contents have")?;
    match dtype {
        DataType::Bool => Ok(Tensor::from_values(shape, &c.bool_contents)?),
        DataType::I8 => narrow::<i32, i8>(shape, &c.int_contents),
        DataType::I16 => narrow::<i32, i16>(shape, &c.int_contents),
        DataType::I32 => narrow::<i32, i32>(shape, &c.int_contents),
        DataType::I64 => narrow::<i64, i64>(shape, &c.int64_contents),
        DataType::U8 => narrow::<u32, u8>(shape, &c.uint_contents),
        DataType::U16 => narrow::<u32, u16>(shape, &c.uint_contents),
        DataType::U32 => narrow::<u32, u32>(shape, &c.uint_contents),
        DataType::U64 => narrow::<u64, u64>(shape, &c.uint64_contents),
        DataType::F32 => narrow::<f32, f32>(shape, &c.fp32_contents),
        DataType::F64 => narrow::<f64, f64>(shape, &c.fp64_contents),
        DataType::Bytes => Ok(Tensor::from_byte_strings(shape, &c.bytes_contents)?),
        DataType::F16 => Err(ContentsError::Fp16NotRaw),
    }
}

/// A decoded request and what it wants of shared memory and classification (output name, K).
pub struct Decoded {
    pub request: InferRequest,
    pub shm: ShmUse,
    pub classification: Vec<(String, usize)>,
}

pub fn decode(req: Request<pb::ModelInferRequest>) -> Result<Decoded, ApiError> {
    let deadline = grpc_timeout(req.metadata())?;
    let route_key = route_key(req.metadata().get(ROUTE_KEY).map(|v| v.as_bytes())).map_err(bad)?;
    let r = req.into_inner();
    let raw = r.raw_input_contents;
    if let Some(mixed) = r
        .inputs
        .iter()
        .find(|i| i.contents.is_some() && !raw.is_empty())
    {
        // Triton's words (infer_handler.cc).
        return Err(bad(format!(
            "contents field must not be specified when using raw_input_contents for {} for model {}",
            quote(&mixed.name),
            quote(&r.model_name)
        )));
    }
    // Inputs in shared memory have no raw entry: the others take raw_input_contents in order
    // (as tritonclient sends them and Triton reads them), all of them or none.
    let in_raw = r
        .inputs
        .iter()
        .filter(|i| !shm_ref(&i.parameters).is_ok_and(|at| at.is_some()))
        .count();
    if !raw.is_empty() && raw.len() != in_raw {
        return Err(bad(format!(
            "raw_input_contents has {} entries for {in_raw} inputs not in shared memory; send all of them raw or none",
            raw.len()
        )));
    }
    let mut inputs = Vec::with_capacity(r.inputs.len());
    let mut shm = ShmUse::default();
    let mut raw_entries = raw.iter();
    for (ix, input) in r.inputs.into_iter().enumerate() {
        let name = input.name;
        let dtype = DataType::from_wire(&input.datatype)
            .map_err(|e| bad(format!("input {}: {e}", clip(&name))))?;
        let shape = shape_from_wire(&input.shape)
            .map_err(|e| bad(format!("input {}: {e}", clip(&name))))?;
        if let Some(at) =
            shm_ref(&input.parameters).map_err(|e| bad(format!("input {}: {e}", clip(&name))))?
        {
            shm.inputs.push(PendingInput {
                index: ix,
                name,
                dtype,
                shape,
                at,
            });
            continue;
        }
        let tensor = match (raw_entries.next(), &input.contents) {
            (Some(bytes), _) => match Tensor::new(dtype, shape, Bytes::clone(bytes)) {
                Err(TensorError::ByteSize {
                    expected, actual, ..
                }) => {
                    // Triton's words (infer_request.cc).
                    return Err(bad(format!(
                        "input byte size mismatch for input {} for model {}. Expected {expected}, got {actual}",
                        quote(&name),
                        quote(&r.model_name)
                    )));
                }
                other => other.map_err(ContentsError::from),
            },
            (None, Some(contents)) => contents_tensor(dtype, shape, contents),
            (None, None) => Err(ContentsError::NoData),
        }
        .map_err(|e| bad(format!("input {}: {e}", clip(&name))))?;
        inputs.push(NamedTensor { name, tensor });
    }
    let mut classification = Vec::new();
    for o in &r.outputs {
        let what = |e: ApiError| bad(format!("output {}: {e}", clip(&o.name)));
        if let Some(k) = param_count(&o.parameters, "classification").map_err(what)? {
            classification.push((o.name.clone(), usize::try_from(k).unwrap_or(usize::MAX)));
        }
        if let Some(at) = shm_ref(&o.parameters).map_err(what)? {
            shm.outputs.push((o.name.clone(), at));
        }
    }
    let request = InferRequest {
        model: r.model_name,
        version: Some(r.model_version).filter(|v| !v.is_empty()),
        id: r.id,
        inputs,
        outputs: r.outputs.into_iter().map(|o| o.name).collect(),
        timeout: param_timeout(&r.parameters)?.or(deadline),
        protocol: Protocol::Grpc,
        route_key,
    };
    Ok(Decoded {
        request,
        shm,
        classification,
    })
}

/// The response: outputs described in `outputs`, their bytes in `raw_output_contents` (what
/// tritonclient reads without a copy).
/// Outputs written into shared memory carry its parameters and an empty raw entry (so the
/// raw entries stay in step with `outputs`).
pub fn encode(resp: InferResponse, shm_outputs: &[(String, ShmRef)]) -> pb::ModelInferResponse {
    use pb::infer_parameter::ParameterChoice;
    let param = |c: ParameterChoice| pb::InferParameter {
        parameter_choice: Some(c),
    };
    let mut outputs = Vec::with_capacity(resp.outputs.len());
    let mut raw = Vec::with_capacity(resp.outputs.len());
    for o in resp.outputs {
        let mut parameters = std::collections::HashMap::new();
        let data = match shm_outputs.iter().find(|(n, _)| n == &o.name) {
            Some((_, at)) => {
                parameters.insert(
                    "shared_memory_region".into(),
                    param(ParameterChoice::StringParam(at.region.clone())),
                );
                if at.offset != 0 {
                    parameters.insert(
                        "shared_memory_offset".into(),
                        param(ParameterChoice::Int64Param(at.offset as i64)),
                    );
                }
                parameters.insert(
                    "shared_memory_byte_size".into(),
                    param(ParameterChoice::Int64Param(o.tensor.data().len() as i64)),
                );
                Bytes::new()
            }
            None => o.tensor.data().clone(),
        };
        outputs.push(pb::model_infer_response::InferOutputTensor {
            name: o.name,
            datatype: o.tensor.dtype().as_str().into(),
            shape: o.tensor.shape().iter().map(|&d| d as i64).collect(),
            parameters,
            ..Default::default()
        });
        raw.push(data);
    }
    pb::ModelInferResponse {
        model_name: resp.model,
        model_version: resp.version,
        id: resp.id,
        parameters: Default::default(),
        outputs,
        raw_output_contents: raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units_parse() {
        let mut m = tonic::metadata::MetadataMap::new();
        m.insert("grpc-timeout", "250m".parse().unwrap());
        assert_eq!(grpc_timeout(&m).unwrap(), Some(Duration::from_millis(250)));
        m.insert("grpc-timeout", "3S".parse().unwrap());
        assert_eq!(grpc_timeout(&m).unwrap(), Some(Duration::from_secs(3)));
        for bad in ["x", "S", "12", "-1S", "1.5S", "1s"] {
            m.insert("grpc-timeout", bad.parse().unwrap());
            assert!(grpc_timeout(&m).is_err(), "{bad}");
        }
        m.insert("grpc-timeout", "18446744073709551615S".parse().unwrap());
        assert_eq!(
            grpc_timeout(&m).unwrap(),
            Some(Duration::from_secs(u64::MAX))
        );
        m.insert("grpc-timeout", "99999999999999999999999H".parse().unwrap());
        assert_eq!(
            grpc_timeout(&m).unwrap(),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn contents_are_checked_for_count_and_range() {
        let c = pb::InferTensorContents {
            int_contents: vec![1, 300],
            ..Default::default()
        };
        assert!(contents_tensor(DataType::I8, vec![2], &c)
            .unwrap_err()
            .to_string()
            .contains("does not fit"));
        assert!(contents_tensor(DataType::I32, vec![3], &c)
            .unwrap_err()
            .to_string()
            .contains("needs 3 elements"));
        assert_eq!(
            contents_tensor(DataType::I16, vec![2], &c)
                .unwrap()
                .to_vec::<i16>()
                .unwrap(),
            vec![1, 300]
        );
    }
}
