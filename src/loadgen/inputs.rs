//! Request construction: from the model's metadata, one set of deterministic pseudo-random input
//! tensors, encoded once per wire format. The measurement loop only ever clones the result
//! (`Bytes` clones are a reference-count increment), so encoding costs nothing per request.

use anyhow::{bail, Context};
use bytes::Bytes;
use serde_json::{json, Value};

use crate::proto::inference as pb;

/// One tensor of the model metadata (`GET /v2/models/{m}` or gRPC `ModelMetadata`).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorMeta {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelMeta {
    pub inputs: Vec<TensorMeta>,
    pub outputs: Vec<TensorMeta>,
}

impl ModelMeta {
    /// Reads the HTTP metadata JSON.
    pub fn from_json(v: &Value) -> anyhow::Result<ModelMeta> {
        let list = |key: &str| -> anyhow::Result<Vec<TensorMeta>> {
            let arr = v[key]
                .as_array()
                .with_context(|| format!("model metadata has no {key:?} array: {v}"))?;
            arr.iter()
                .map(|t| {
                    let shape = t["shape"]
                        .as_array()
                        .and_then(|s| s.iter().map(Value::as_i64).collect::<Option<Vec<_>>>());
                    match (t["name"].as_str(), t["datatype"].as_str(), shape) {
                        (Some(n), Some(d), Some(s)) => Ok(TensorMeta {
                            name: n.into(),
                            datatype: d.into(),
                            shape: s,
                        }),
                        _ => bail!("malformed tensor in model metadata: {t}"),
                    }
                })
                .collect()
        };
        Ok(ModelMeta {
            inputs: list("inputs")?,
            outputs: list("outputs")?,
        })
    }

    pub fn from_grpc(m: &pb::ModelMetadataResponse) -> ModelMeta {
        let conv = |ts: &[pb::model_metadata_response::TensorMetadata]| {
            ts.iter()
                .map(|t| TensorMeta {
                    name: t.name.clone(),
                    datatype: t.datatype.clone(),
                    shape: t.shape.clone(),
                })
                .collect()
        };
        ModelMeta {
            inputs: conv(&m.inputs),
            outputs: conv(&m.outputs),
        }
    }
}

/// One synthetic input: wire shape, raw little-endian bytes and the same values as JSON.
#[derive(Clone, Debug)]
pub struct Synth {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
    /// Binary layout of the protocol (BYTES elements carry a 4-byte length prefix).
    pub raw: Bytes,
    /// Flat JSON `data` array.
    pub json: Value,
}

/// Largest synthetic tensor: a load generator should not be asked to build gigabyte requests
/// by a typo in `--batch-size`.
const MAX_TENSOR_BYTES: usize = 1 << 30;

/// The batch (first) dimension becomes `batch`, other variable dimensions `seq_len`.
fn resolve_shape(t: &TensorMeta, batch: usize, seq_len: usize) -> anyhow::Result<Vec<i64>> {
    let b = i64::try_from(batch).context("--batch-size too large")?;
    let l = i64::try_from(seq_len).context("--seq-len too large")?;
    let mut shape = Vec::with_capacity(t.shape.len());
    for (i, &d) in t.shape.iter().enumerate() {
        shape.push(match (i, d) {
            (0, -1) => b,
            (_, -1) => l,
            (0, d) if d >= 0 && batch != 1 => bail!(
                "input {:?} has the fixed shape {:?} (no variable batch dimension): use --batch-size 1",
                t.name,
                t.shape
            ),
            (_, d) if d >= 0 => d,
            _ => bail!("input {:?} has an invalid shape {:?}", t.name, t.shape),
        });
    }
    Ok(shape)
}

/// splitmix64: a tiny, well-mixed generator, so runs are reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 24 bits, exact in f32.
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u32 << 24) as f32
    }
}

/// Builds every input of `meta` for `batch` rows (other variable dimensions: `seq_len`); values
/// are in [0, 1) for floats and 0..16 for integers (valid for index-like inputs; 1 for an input
/// whose name contains `mask`), so any model gets sane numbers.
pub fn synthesize(meta: &ModelMeta, batch: usize, seq_len: usize) -> anyhow::Result<Vec<Synth>> {
    if meta.inputs.is_empty() {
        bail!("the model declares no inputs");
    }
    let mut out = Vec::with_capacity(meta.inputs.len());
    for (idx, t) in meta.inputs.iter().enumerate() {
        let shape = resolve_shape(t, batch, seq_len)?;
        let count = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?))
            .filter(|&c| c <= MAX_TENSOR_BYTES / 8)
            .with_context(|| format!("input {:?}: shape {shape:?} is too large", t.name))?;
        let mut rng = Rng(0x5EED ^ idx as u64);
        let mut raw = Vec::with_capacity(count * 8);
        let mut json = Vec::with_capacity(count);
        // An attention mask of ones: every token counts (zeros could mask whole rows).
        let mask = t.name.to_ascii_lowercase().contains("mask");
        for _ in 0..count {
            let x = rng.next();
            let small = if mask { 1 } else { x % 16 };
            match t.datatype.as_str() {
                "BOOL" => {
                    raw.push((x & 1) as u8);
                    json.push(json!(x & 1 == 1));
                }
                "UINT8" | "INT8" | "UINT16" | "INT16" | "UINT32" | "INT32" | "UINT64" | "INT64" => {
                    // Little-endian: the low `width` bytes of the u64 are the value.
                    let width = match t.datatype.trim_start_matches('U') {
                        "INT8" => 1,
                        "INT16" => 2,
                        "INT32" => 4,
                        _ => 8,
                    };
                    raw.extend_from_slice(&small.to_le_bytes()[..width]);
                    json.push(json!(small));
                }
                "FP16" | "BF16" | "FP32" | "FP64" => {
                    let f = rng.unit();
                    match t.datatype.as_str() {
                        "FP16" => raw.extend_from_slice(&half::f16::from_f32(f).to_le_bytes()),
                        "BF16" => raw.extend_from_slice(&half::bf16::from_f32(f).to_le_bytes()),
                        "FP32" => raw.extend_from_slice(&f.to_le_bytes()),
                        _ => raw.extend_from_slice(&f64::from(f).to_le_bytes()),
                    }
                    json.push(json!(f));
                }
                "BYTES" => {
                    let s: String = (0..8)
                        .map(|i| char::from(b'a' + ((x >> (i * 5)) % 26) as u8))
                        .collect();
                    raw.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    raw.extend_from_slice(s.as_bytes());
                    json.push(json!(s));
                }
                other => bail!("input {:?}: unsupported datatype {other:?}", t.name),
            }
        }
        out.push(Synth {
            name: t.name.clone(),
            datatype: t.datatype.clone(),
            shape,
            raw: raw.into(),
            json: Value::Array(json),
        });
    }
    Ok(out)
}

/// HTTP JSON request body: all inputs as JSON `data`, all outputs returned as JSON.
pub fn json_body(inputs: &[Synth]) -> anyhow::Result<Bytes> {
    let inputs: Vec<Value> = inputs
        .iter()
        .map(|s| json!({"name": s.name, "datatype": s.datatype, "shape": s.shape, "data": s.json}))
        .collect();
    Ok(serde_json::to_vec(&json!({ "inputs": inputs }))?.into())
}

/// HTTP binary request body (JSON header followed by the raw tensors) and the header length
/// for `Inference-Header-Content-Length`; every output is requested with `binary_data: true`.
pub fn binary_body(inputs: &[Synth], outputs: &[TensorMeta]) -> anyhow::Result<(Bytes, usize)> {
    let ins: Vec<Value> = inputs
        .iter()
        .map(|s| {
            json!({"name": s.name, "datatype": s.datatype, "shape": s.shape,
                   "parameters": {"binary_data_size": s.raw.len()}})
        })
        .collect();
    let outs: Vec<Value> = outputs
        .iter()
        .map(|o| json!({"name": o.name, "parameters": {"binary_data": true}}))
        .collect();
    let mut body = serde_json::to_vec(&json!({"inputs": ins, "outputs": outs}))?;
    let header_len = body.len();
    for s in inputs {
        body.extend_from_slice(&s.raw);
    }
    Ok((body.into(), header_len))
}

/// gRPC request with `raw_input_contents`; no outputs listed, so every output comes back.
pub fn grpc_request(model: &str, version: Option<&str>, inputs: &[Synth]) -> pb::ModelInferRequest {
    pb::ModelInferRequest {
        model_name: model.into(),
        model_version: version.unwrap_or_default().into(),
        inputs: inputs
            .iter()
            .map(|s| pb::model_infer_request::InferInputTensor {
                name: s.name.clone(),
                datatype: s.datatype.clone(),
                shape: s.shape.clone(),
                ..Default::default()
            })
            .collect(),
        raw_input_contents: inputs.iter().map(|s| s.raw.clone()).collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mlp() -> ModelMeta {
        ModelMeta::from_json(&json!({
            "name": "mlp",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
            "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}],
        }))
        .unwrap()
    }

    #[test]
    fn synthesizes_batch_and_is_deterministic() {
        let a = synthesize(&mlp(), 3, 1).unwrap();
        let b = synthesize(&mlp(), 3, 1).unwrap();
        assert_eq!(a[0].shape, vec![3, 64]);
        assert_eq!(a[0].raw.len(), 3 * 64 * 4);
        assert_eq!(a[0].raw, b[0].raw);
        assert_eq!(a[0].json.as_array().unwrap().len(), 3 * 64);
        let first = f32::from_le_bytes(a[0].raw[..4].try_into().unwrap());
        assert_eq!(a[0].json[0].as_f64().unwrap() as f32, first);
    }

    #[test]
    fn binary_body_layout() {
        let m = mlp();
        let s = synthesize(&m, 2, 1).unwrap();
        let (body, n) = binary_body(&s, &m.outputs).unwrap();
        let header: Value = serde_json::from_slice(&body[..n]).unwrap();
        assert_eq!(header["inputs"][0]["parameters"]["binary_data_size"], 512);
        assert_eq!(header["outputs"][0]["parameters"]["binary_data"], true);
        assert_eq!(body.len() - n, 512);
        let j: Value = serde_json::from_slice(&json_body(&s).unwrap()).unwrap();
        assert_eq!(j["inputs"][0]["shape"], json!([2, 64]));
    }

    #[test]
    fn shapes_and_dtypes() {
        let meta = ModelMeta {
            inputs: vec![
                TensorMeta {
                    name: "ids".into(),
                    datatype: "INT64".into(),
                    shape: vec![-1, -1],
                },
                TensorMeta {
                    name: "s".into(),
                    datatype: "BYTES".into(),
                    shape: vec![-1],
                },
            ],
            outputs: vec![],
        };
        let s = synthesize(&meta, 4, 1).unwrap();
        assert_eq!(s[0].shape, vec![4, 1]);
        assert_eq!(s[0].raw.len(), 32);
        assert_eq!(s[0].json.as_array().unwrap().len(), 4);
        assert_eq!(s[1].raw.len(), 4 * 12);
        let fixed = TensorMeta {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![2, 3],
        };
        assert!(resolve_shape(&fixed, 2, 1).is_err());
        assert_eq!(resolve_shape(&fixed, 1, 7).unwrap(), vec![2, 3]);
        let long = synthesize(&meta, 2, 16).unwrap();
        assert_eq!(long[0].shape, vec![2, 16]);
        assert_eq!(long[0].raw.len(), 2 * 16 * 8);
        assert_eq!(
            long[1].shape,
            vec![2],
            "only dimensions after the first take --seq-len"
        );
    }
}
