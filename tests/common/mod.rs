//! Test harness: a real server on 127.0.0.1:0 over a model repository (`server`), repositories
//! built from the bundled models (`models`), bounded waits on observable state (`wait`), the
//! reference request and the "still serves" check (`probe`), hostile requests and the checks
//! on their refusals (`hostile`), and the
//! references that models/build.py computed with scikit-learn / numpy.
#![allow(dead_code, unused_imports)]

pub mod certs;
pub mod forms;
pub mod hostile;
mod models;
pub mod otlp;
pub mod probe;
mod process;
pub mod raw_codec;
pub mod raw_grpc;
pub mod raw_h2;
pub mod seaweed;
mod server;
pub mod spawned;
pub mod traffic;
mod wait;

use std::path::Path;

use serde_json::Value;

/// The generated protocol types, named once here so a move of the module touches one line.
pub use ferroserve::proto::admin as admin_pb;
pub use ferroserve::proto::inference as pb;

pub use models::{add_version, bundled_models, copy_model, onnxruntime_models, repo, ModelCopy};
pub use process::{assert_alone_in_this_process, rss_kib, threads};
pub use server::{test_config, Builder, TestServer};
pub use wait::{poll_until, poll_until_every, wait_until};

/// One tensor of a reference file.
#[derive(Debug, Clone)]
pub struct RefTensor {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
    pub data: Vec<Value>,
}

impl RefTensor {
    pub fn f32s(&self) -> Vec<f32> {
        self.data
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    }
    pub fn i64s(&self) -> Vec<i64> {
        self.data.iter().map(|v| v.as_i64().unwrap()).collect()
    }
    pub fn json(&self) -> Value {
        serde_json::json!({"name": self.name, "datatype": self.datatype, "shape": self.shape, "data": self.data})
    }
}

/// The reference inputs and outputs of a bundled model (tests/data/<model>.json).
pub struct Reference {
    pub inputs: Vec<RefTensor>,
    pub outputs: Vec<RefTensor>,
}

pub fn reference(model: &str) -> Reference {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(format!("{model}.json"));
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let tensors = |key: &str| -> Vec<RefTensor> {
        v[key]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, t)| RefTensor {
                name: name.clone(),
                datatype: t["datatype"].as_str().unwrap().into(),
                shape: t["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_i64().unwrap())
                    .collect(),
                data: t["data"].as_array().unwrap().clone(),
            })
            .collect()
    };
    Reference {
        inputs: tensors("inputs"),
        outputs: tensors("outputs"),
    }
}

pub const BUNDLED: [&str; 3] = ["iris", "digits", "mlp"];

/// Labels exact, floats within 1e-5.
pub fn assert_matches_reference(
    model: &str,
    name: &str,
    datatype: &str,
    shape: &[i64],
    values: &[f64],
    want: &RefTensor,
) {
    assert_eq!(datatype, want.datatype, "{model}/{name} datatype");
    assert_eq!(shape, &want.shape[..], "{model}/{name} shape");
    assert_eq!(
        values.len(),
        want.data.len(),
        "{model}/{name} element count"
    );
    for (i, (got, w)) in values.iter().zip(&want.data).enumerate() {
        let w = w.as_f64().unwrap();
        if datatype.starts_with("INT") {
            assert_eq!(*got, w, "{model}/{name}[{i}]");
        } else {
            assert!(
                (got - w).abs() <= 1e-5,
                "{model}/{name}[{i}]: got {got}, want {w}"
            );
        }
    }
}
