//! The HTTP/REST inference body: JSON tensors (flat or nested `data`, parsed in [`super::data`])
//! and the binary tensor data extension (a JSON header of `Inference-Header-Content-Length`
//! bytes, then raw tensors).

use bytes::{Bytes, BytesMut};
use serde::Serialize;

use super::data::{json_tensor, DataError, JsonData};
use super::params::{param_bool, param_u64, shm_ref, OutputParams};
use super::wire::JsonRequest;
use crate::api::error::ApiError;
use crate::api::shm::{PendingInput, ShmRef, ShmUse};
use crate::error::quote;
use crate::metrics::Protocol;
use crate::routing::request::timeout_from_micros;
use crate::routing::{InferRequest, InferResponse, NamedTensor};
use crate::tensor::{shape_from_wire, DataType, Tensor, TensorError};

/// A decoded request plus what the response encoder must know: which outputs go binary.
pub struct Decoded {
    pub request: InferRequest,
    /// (output name, binary) for explicitly requested outputs.
    pub output_binary: Vec<(String, bool)>,
    /// `binary_data_output`: the default for outputs not listed.
    pub binary_default: bool,
    /// Tensors in system shared memory regions.
    pub shm: ShmUse,
    /// (output name, K) of outputs asked for as classifications.
    pub classification: Vec<(String, usize)>,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

/// Decodes an infer body; `header_len` is the `Inference-Header-Content-Length` value, if sent.
pub fn decode(
    model: &str,
    version: Option<&str>,
    body: Bytes,
    header_len: Option<usize>,
) -> Result<Decoded, ApiError> {
    let json_len = header_len.unwrap_or(body.len());
    if json_len > body.len() {
        return Err(bad(format!(
            "Inference-Header-Content-Length {json_len} is larger than the body ({} bytes)",
            body.len()
        )));
    }
    let req: JsonRequest = serde_json::from_slice(&body[..json_len])
        .map_err(|e| bad(format!("malformed inference request JSON: {e}")))?;
    let mut binary = body.slice(json_len..);

    let mut inputs = Vec::with_capacity(req.inputs.0.len());
    let mut shm = ShmUse::default();
    for (index, input) in req.inputs.0.into_iter().enumerate() {
        let dtype = DataType::from_wire(&input.datatype)
            .map_err(|e| bad(format!("input {:?}: {e}", input.name)))?;
        let shape = input
            .shape
            .0
            .and_then(|dims| shape_from_wire(&dims))
            .map_err(|e| bad(format!("input {:?}: {e}", input.name)))?;
        let in_shm =
            shm_ref(&input.parameters).map_err(|e| bad(format!("input {:?}: {e}", input.name)))?;
        if let Some(at) = in_shm {
            if input.data.is_some() {
                return Err(bad(format!(
                    "input {:?} has both shared_memory_region and data",
                    input.name
                )));
            }
            shm.inputs.push(PendingInput {
                index,
                name: input.name,
                dtype,
                shape,
                at,
            });
            continue;
        }
        let binary_size = param_u64(&input.parameters, "binary_data_size")
            .map_err(|e| bad(format!("input {:?}: {e}", input.name)))?;
        let tensor = match binary_size {
            Some(size) => {
                if input.data.is_some() {
                    return Err(bad(format!("input {:?} has both binary_data_size and data", input.name)));
                }
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                if size > binary.len() {
                    return Err(bad(format!(
                        "input {:?}: binary_data_size {size} exceeds the {} binary bytes left in the body",
                        input.name,
                        binary.len()
                    )));
                }
                match Tensor::new(dtype, shape, binary.split_to(size)) {
                    Err(TensorError::ByteSize { expected, actual, .. }) => {
                        // Triton's words (infer_request.cc), as gRPC answers them.
                        return Err(bad(format!(
                            "input byte size mismatch for input {} for model {}. Expected {expected}, got {actual}",
                            quote(&input.name),
                            quote(model)
                        )));
                    }
                    other => other.map_err(DataError::from),
                }
            }
            None => {
                let data = input.data.ok_or_else(|| bad(format!("input {:?} has no data", input.name)))?;
                json_tensor(dtype, shape, data)
            }
        }
        .map_err(|e| bad(format!("input {:?}: {e}", input.name)))?;
        inputs.push(NamedTensor {
            name: input.name,
            tensor,
        });
    }
    if !binary.is_empty() {
        return Err(bad(format!(
            "{} bytes of binary data are not claimed by any input's binary_data_size",
            binary.len()
        )));
    }
    let mut output_binary = Vec::with_capacity(req.outputs.0.len());
    let mut classification = Vec::new();
    for o in &req.outputs.0 {
        let what = |e: ApiError| bad(format!("output {:?}: {e}", o.name));
        if let Some(k) = param_u64(&o.parameters, "classification").map_err(what)? {
            classification.push((o.name.clone(), usize::try_from(k).unwrap_or(usize::MAX)));
        }
        if let Some(at) = shm_ref(&o.parameters).map_err(what)? {
            shm.outputs.push((o.name.clone(), at));
        }
        output_binary.push((
            o.name.clone(),
            param_bool(&o.parameters, "binary_data")?.unwrap_or(false),
        ));
    }
    let binary_default = param_bool(&req.parameters, "binary_data_output")?.unwrap_or(false);
    // tritonclient's `timeout` parameter is in microseconds.
    let timeout = param_u64(&req.parameters, "timeout")?.and_then(timeout_from_micros);
    Ok(Decoded {
        request: InferRequest {
            model: model.to_owned(),
            version: version.map(str::to_owned),
            id: req.id.unwrap_or_default(),
            inputs,
            outputs: req.outputs.0.into_iter().map(|o| o.name).collect(),
            timeout,
            protocol: Protocol::Http,
            route_key: None,
        },
        output_binary,
        binary_default,
        shm,
        classification,
    })
}

#[derive(Serialize)]
struct JsonResponse<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    id: &'a str,
    outputs: Vec<JsonOutputTensor<'a>>,
}

#[derive(Serialize)]
struct JsonOutputTensor<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<OutputParams<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonData<'a>>,
}

/// Encodes a response; returns the body and, when binary outputs follow the JSON, its length.
pub fn encode(
    resp: &InferResponse,
    output_binary: &[(String, bool)],
    binary_default: bool,
    shm_outputs: &[(String, ShmRef)],
) -> Result<(Bytes, Option<usize>), ApiError> {
    let binary_of = |name: &str| {
        output_binary
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| *b)
            .unwrap_or(binary_default)
    };
    let mut blobs: Vec<&Bytes> = Vec::new();
    let outputs = resp
        .outputs
        .iter()
        .map(|o| {
            let in_shm = shm_outputs.iter().find(|(n, _)| n == &o.name);
            let binary = in_shm.is_none() && binary_of(&o.name);
            if binary {
                blobs.push(o.tensor.data());
            }
            let parameters = match in_shm {
                Some((_, at)) => Some(OutputParams::Shm {
                    shared_memory_region: &at.region,
                    shared_memory_offset: at.offset,
                    shared_memory_byte_size: o.tensor.data().len(),
                }),
                None => binary.then(|| OutputParams::Binary {
                    binary_data_size: o.tensor.data().len(),
                }),
            };
            JsonOutputTensor {
                name: &o.name,
                datatype: o.tensor.dtype().as_str(),
                shape: o.tensor.shape(),
                parameters,
                data: (!binary && in_shm.is_none()).then_some(JsonData(&o.tensor)),
            }
        })
        .collect();
    let body = JsonResponse {
        model_name: &resp.model,
        model_version: &resp.version,
        id: &resp.id,
        outputs,
    };
    let json = serde_json::to_vec(&body)
        .map_err(|e| ApiError::BadRequest(format!("cannot encode response: {e}")))?;
    if blobs.is_empty() {
        return Ok((Bytes::from(json), None));
    }
    let json_len = json.len();
    let mut buf = BytesMut::with_capacity(json_len + blobs.iter().map(|b| b.len()).sum::<usize>());
    buf.extend_from_slice(&json);
    for b in blobs {
        buf.extend_from_slice(b);
    }
    Ok((buf.freeze(), Some(json_len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_flat_json_data_decode_the_same() {
        let flat = br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]}]}"#;
        let nested =
            br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]}]}"#;
        let a = decode("m", None, Bytes::from_static(flat), None).unwrap();
        let b = decode("m", None, Bytes::from_static(nested), None).unwrap();
        assert_eq!(a.request.inputs, b.request.inputs);
        assert_eq!(
            a.request.inputs[0].tensor.to_vec::<f32>().unwrap(),
            vec![1., 2., 3., 4.]
        );
    }

    fn decode_err(body: &str) -> String {
        match decode("m", None, Bytes::copy_from_slice(body.as_bytes()), None) {
            Ok(_) => panic!("{body} decoded"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn ragged_nested_data_is_refused_naming_the_input_and_the_row() {
        let e = decode_err(
            r#"{"inputs":[{"name":"x","shape":[2,4],"datatype":"FP32","data":[[1,2,3],[4,5,6,7,8]]}]}"#,
        );
        assert!(
            e.contains(r#"input "x""#) && e.contains("data[0] has 3 elements"),
            "{e}"
        );
        let e = decode_err(
            r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[[1,2],[3,[4]]]}]}"#,
        );
        assert!(
            e.contains("data[1][1] is nested deeper than shape [2, 2]"),
            "{e}"
        );
        let e = decode_err(
            r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[[1,2],3,4]}]}"#,
        );
        assert!(
            e.contains("data[1] should be an array of 2 elements"),
            "{e}"
        );
        let e = decode_err(
            r#"{"inputs":[{"name":"x","shape":[3],"datatype":"INT32","data":[1,[2,3]]}]}"#,
        );
        assert!(e.contains("data[1] is an array among elements"), "{e}");
    }

    #[test]
    fn data_before_datatype_and_shape_decodes_the_same() {
        let late =
            br#"{"inputs":[{"data":[[1,2],[3,4]],"name":"x","datatype":"INT64","shape":[2,2]}]}"#;
        let d = decode("m", None, Bytes::from_static(late), None).unwrap();
        assert_eq!(
            d.request.inputs[0].tensor.to_vec::<i64>().unwrap(),
            vec![1, 2, 3, 4]
        );
        let strings =
            br#"{"inputs":[{"name":"s","shape":[2],"datatype":"BYTES","data":["a","bc"]}]}"#;
        let d = decode("m", None, Bytes::from_static(strings), None).unwrap();
        assert_eq!(
            d.request.inputs[0].tensor.byte_strings().unwrap(),
            vec![&b"a"[..], b"bc"]
        );
    }

    #[test]
    fn counts_past_the_limits_are_refused_naming_them() {
        let input = r#"{"name":"x","shape":[1],"datatype":"FP32","data":[1]}"#;
        let many = vec![input; 1025].join(",");
        let e = decode_err(&format!(r#"{{"inputs":[{many}]}}"#));
        assert!(
            e.contains("too many inputs in one request: the limit is 1024"),
            "{e}"
        );
        let params: Vec<String> = (0..65).map(|i| format!(r#""p{i}":1"#)).collect();
        let e = decode_err(&format!(
            r#"{{"parameters":{{{}}},"inputs":[{input}]}}"#,
            params.join(",")
        ));
        assert!(
            e.contains("too many parameters in one request: the limit is 64"),
            "{e}"
        );
    }

    #[test]
    fn binary_inputs_are_cut_from_the_body_in_order() {
        let header = br#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"INT32","parameters":{"binary_data_size":8}}]}"#;
        let mut body = header.to_vec();
        body.extend_from_slice(&1i32.to_le_bytes());
        body.extend_from_slice(&(-2i32).to_le_bytes());
        let d = decode("m", None, Bytes::from(body), Some(header.len())).unwrap();
        assert_eq!(
            d.request.inputs[0].tensor.to_vec::<i32>().unwrap(),
            vec![1, -2]
        );
    }

    #[test]
    fn malformed_bodies_are_bad_requests_with_reasons() {
        let cases: [(&[u8], Option<usize>, &str); 6] = [
            (b"{not json", None, "malformed"),
            (
                br#"{"inputs":[{"name":"x","shape":[-1],"datatype":"FP32","data":[1]}]}"#,
                None,
                "negative",
            ),
            (
                br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1]}]}"#,
                None,
                "needs 2 elements",
            ),
            (
                br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":["a"]}]}"#,
                None,
                "not a number",
            ),
            (
                br#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT8","data":[300]}]}"#,
                None,
                "not a valid INT8",
            ),
            (b"{}", Some(10), "larger than the body"),
        ];
        for (body, header, want) in cases {
            let err = decode("m", None, Bytes::copy_from_slice(body), header)
                .err()
                .unwrap();
            assert!(matches!(err, ApiError::BadRequest(_)), "{err}");
            assert!(
                err.to_string().contains(want),
                "{err} should contain {want}"
            );
        }
    }

    #[test]
    fn encode_puts_binary_outputs_after_the_json() {
        let t = Tensor::from_values(vec![2], &[1.5f32, 2.5]).unwrap();
        let resp = InferResponse {
            model: "m".into(),
            version: "1".into(),
            id: String::new(),
            outputs: vec![NamedTensor {
                name: "y".into(),
                tensor: t,
            }],
        };
        let (body, len) = encode(&resp, &[], true, &[]).unwrap();
        let len = len.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body[..len]).unwrap();
        assert_eq!(json["outputs"][0]["parameters"]["binary_data_size"], 8);
        assert_eq!(&body[len..], &[0, 0, 0xc0, 0x3f, 0, 0, 0x20, 0x40]);
        let (body, len) = encode(&resp, &[("y".into(), false)], true, &[]).unwrap();
        assert!(len.is_none());
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["outputs"][0]["data"], serde_json::json!([1.5, 2.5]));
    }
}
