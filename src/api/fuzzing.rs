//! Entry points for the cargo-fuzz targets in `fuzz/`: the request decoders the server runs, with
//! the limits it applies, callable without a server. Not an API (hidden from the docs).

use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::grpc::codec as grpc_codec;
use super::grpc::prescan::{scan, Refusal};
use super::http::{codec as http_codec, data};
use crate::proto::inference as pb;
use crate::routing::{InferRequest, InferResponse};
use crate::tensor::DataType;

pub use super::http::codec::Decoded;

/// An HTTP infer body (`header_len`: the `Inference-Header-Content-Length` header) decoded as
/// the `/infer` handler decodes it.
pub fn http_decode(body: &[u8], header_len: Option<usize>) -> Result<Decoded, String> {
    http_codec::decode("m", None, Bytes::copy_from_slice(body), header_len)
        .map_err(|e| e.to_string())
}

#[derive(Deserialize)]
struct EncodedResponse<'a> {
    #[serde(borrow)]
    outputs: Vec<EncodedOutput<'a>>,
}

#[derive(Deserialize)]
struct EncodedOutput<'a> {
    name: String,
    datatype: String,
    shape: Vec<usize>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    parameters: Option<BinarySize>,
}

#[derive(Deserialize)]
struct BinarySize {
    binary_data_size: usize,
}

/// Encodes `resp` as the HTTP transport answers it, once all JSON and once all binary, and
/// decodes both back: every output must come back as it went (JSON: when JSON can spell it,
/// i.e. finite floats and UTF-8 strings).
pub fn http_round_trip(resp: &InferResponse) -> Result<(), String> {
    for binary in [false, true] {
        let (body, json_len) =
            http_codec::encode(resp, &[], binary, &[]).map_err(|e| e.to_string())?;
        let json_len = json_len.unwrap_or(body.len());
        let head: EncodedResponse =
            serde_json::from_slice(&body[..json_len]).map_err(|e| format!("re-read: {e}"))?;
        if head.outputs.len() != resp.outputs.len() {
            return Err("output count changed".into());
        }
        let mut blobs = body.slice(json_len..);
        for (sent, got) in resp.outputs.iter().zip(head.outputs) {
            let t = &sent.tensor;
            let dtype = DataType::from_wire(&got.datatype)?;
            if got.name != sent.name || dtype != t.dtype() || got.shape != t.shape() {
                return Err(format!("output {:?} changed its description", sent.name));
            }
            let back = match (got.data, got.parameters) {
                (None, Some(size)) if binary && size.binary_data_size <= blobs.len() => {
                    blobs.split_to(size.binary_data_size)
                }
                (Some(raw), None) if !binary => {
                    match data::json_tensor(dtype, got.shape.clone(), raw) {
                        Ok(back) => back.data().clone(),
                        Err(_) if !json_spellable(t) => continue,
                        Err(e) => return Err(format!("output {:?} re-decoded: {e}", sent.name)),
                    }
                }
                _ => {
                    return Err(format!(
                        "output {:?}: data and binary size disagree",
                        sent.name
                    ))
                }
            };
            if !same_values(t, &back, binary) && (binary || json_spellable(t)) {
                return Err(format!("output {:?} came back different", sent.name));
            }
        }
        if !blobs.is_empty() {
            return Err("binary bytes left over".into());
        }
    }
    Ok(())
}

/// Whether `back` holds `t`'s values: its bytes exactly, except that JSON spells a BOOL byte as
/// `true` or `false` (any non-zero byte is true, as the backends read it).
fn same_values(t: &crate::tensor::Tensor, back: &Bytes, binary: bool) -> bool {
    match t.dtype() {
        DataType::Bool if !binary => t
            .data()
            .iter()
            .map(|&b| b != 0)
            .eq(back.iter().map(|&b| b != 0)),
        _ => back == t.data(),
    }
}

/// Whether JSON can carry `t` exactly (no NaN or infinity, UTF-8 strings only).
fn json_spellable(t: &crate::tensor::Tensor) -> bool {
    match t.dtype() {
        DataType::F16 => t
            .to_vec::<half::f16>()
            .is_some_and(|v| v.iter().all(|x| x.is_finite())),
        DataType::F32 => t
            .to_vec::<f32>()
            .is_some_and(|v| v.iter().all(|x| x.is_finite())),
        DataType::F64 => t
            .to_vec::<f64>()
            .is_some_and(|v| v.iter().all(|x| x.is_finite())),
        DataType::Bytes => t
            .byte_strings()
            .is_some_and(|v| v.iter().all(|s| std::str::from_utf8(s).is_ok())),
        _ => true,
    }
}

/// A gRPC `ModelInferRequest` message (the bytes after the 5-byte frame header) taken as the
/// server takes it: the pre-scan's refusals at `max_request_bytes` (as `grpc::budget` applies
/// them), prost's decode, then the domain conversion with `grpc-timeout` as sent.
pub fn grpc_decode(
    msg: &[u8],
    grpc_timeout: Option<&str>,
    max_request_bytes: usize,
) -> Result<InferRequest, String> {
    if msg.len() > max_request_bytes {
        return Err("message over max_request_bytes".into());
    }
    match scan(msg) {
        Ok(s) if s.overhead > max_request_bytes => return Err("decoded overhead too large".into()),
        Err(Refusal::TooMany(reason)) => return Err(reason),
        Ok(_) | Err(Refusal::Malformed) => {}
    }
    let message = pb::ModelInferRequest::decode(msg).map_err(|e| e.to_string())?;
    let mut req = tonic::Request::new(message);
    if let Some(t) = grpc_timeout.and_then(|t| t.parse().ok()) {
        req.metadata_mut().insert("grpc-timeout", t);
    }
    grpc_codec::decode(req)
        .map(|d| d.request)
        .map_err(|e| e.to_string())
}

/// The gRPC response for `resp`, decoded back by prost: its raw outputs must be the tensors'.
pub fn grpc_round_trip(resp: InferResponse) -> Result<(), String> {
    let want: Vec<Bytes> = resp
        .outputs
        .iter()
        .map(|o| o.tensor.data().clone())
        .collect();
    let encoded = grpc_codec::encode(resp, &[]).encode_to_vec();
    let back = pb::ModelInferResponse::decode(&encoded[..]).map_err(|e| e.to_string())?;
    match back.raw_output_contents == want {
        true => Ok(()),
        false => Err("raw outputs came back different".into()),
    }
}

/// The deadline both transports compute from a decoded timeout (it must never overflow).
pub fn deadline_of(timeout: Option<Duration>) -> Option<std::time::Instant> {
    crate::routing::request::deadline(std::time::Instant::now(), timeout, None)
}
