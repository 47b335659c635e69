//! The inputs and outputs an ONNX file declares (its graph's `ValueInfo`), read without the
//! engines: which dimensions are fixed, named (`dim_param`), unknown, and which tensors have no
//! shape at all. Only these few fields are decoded; weights are skipped, not copied.

/// One dimension as the file writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeclaredDim {
    Fixed(u64),
    Named(String),
    /// Neither a value nor a name (skl2onnx's batch dimension, for one).
    Unknown,
}

impl DeclaredDim {
    pub fn fixed(&self) -> Option<usize> {
        match self {
            DeclaredDim::Fixed(v) => usize::try_from(*v).ok(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredTensor {
    pub name: String,
    /// `None`: the file gives no shape (not even a rank); `Some(vec![])` is a scalar.
    pub shape: Option<Vec<DeclaredDim>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Declared {
    /// Graph inputs that are not initializers, in graph order.
    pub inputs: Vec<DeclaredTensor>,
    pub outputs: Vec<DeclaredTensor>,
}

impl Declared {
    /// Reads the declarations of an ONNX file's bytes.
    pub fn read(model: &[u8]) -> Result<Declared, String> {
        let proto = <pb::Model as prost::Message>::decode(model)
            .map_err(|e| format!("not an ONNX model: {e}"))?;
        let graph = proto.graph.unwrap_or_default();
        let initializers: std::collections::HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let tensor = |v: &pb::ValueInfo| DeclaredTensor {
            name: v.name.clone(),
            shape: v
                .r#type
                .as_ref()
                .and_then(|t| t.tensor_type.as_ref())
                .and_then(|t| t.shape.as_ref())
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(pb::DimValue::Value(v)) if *v >= 0 => {
                                DeclaredDim::Fixed(*v as u64)
                            }
                            Some(pb::DimValue::Param(p)) if !p.is_empty() => {
                                DeclaredDim::Named(p.clone())
                            }
                            _ => DeclaredDim::Unknown,
                        })
                        .collect()
                }),
        };
        Ok(Declared {
            inputs: graph
                .input
                .iter()
                .filter(|v| !initializers.contains(v.name.as_str()))
                .map(tensor)
                .collect(),
            outputs: graph.output.iter().map(tensor).collect(),
        })
    }

    pub fn input(&self, name: &str) -> Option<&DeclaredTensor> {
        self.inputs.iter().find(|t| t.name == name)
    }

    /// Triton's auto-complete rule for batching: every input and output has a shape whose
    /// first dimension is not fixed (named or unknown), so the first dimension can be the batch.
    pub fn batchable(&self) -> bool {
        !self.inputs.is_empty()
            && self.inputs.iter().chain(&self.outputs).all(|t| {
                t.shape
                    .as_ref()
                    .and_then(|s| s.first())
                    .is_some_and(|d| d.fixed().is_none())
            })
    }
}

/// The few fields of onnx.proto read here, with their onnx.proto tags.
mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Model {
        #[prost(message, optional, tag = "7")]
        pub graph: Option<Graph>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Graph {
        #[prost(message, repeated, tag = "5")]
        pub initializer: Vec<Named>,
        #[prost(message, repeated, tag = "11")]
        pub input: Vec<ValueInfo>,
        #[prost(message, repeated, tag = "12")]
        pub output: Vec<ValueInfo>,
    }
    /// A TensorProto's name only (tag 8); its data is skipped.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Named {
        #[prost(string, tag = "8")]
        pub name: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueInfo {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub r#type: Option<Type>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Type {
        #[prost(message, optional, tag = "1")]
        pub tensor_type: Option<TensorType>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorType {
        #[prost(message, optional, tag = "2")]
        pub shape: Option<Shape>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Shape {
        #[prost(message, repeated, tag = "1")]
        pub dim: Vec<Dim>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dim {
        #[prost(oneof = "DimValue", tags = "1, 2")]
        pub value: Option<DimValue>,
    }
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum DimValue {
        #[prost(int64, tag = "1")]
        Value(i64),
        #[prost(string, tag = "2")]
        Param(String),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(file: &str) -> Declared {
        let path = format!("{}/tests/data/dim_forms/{file}", env!("CARGO_MANIFEST_DIR"));
        Declared::read(&std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn every_dimension_form_is_told_apart() {
        let shape = |file: &str| read(file).inputs[0].shape.clone();
        assert_eq!(
            shape("fixed.onnx"),
            Some(vec![DeclaredDim::Fixed(2), DeclaredDim::Fixed(3)])
        );
        assert_eq!(
            shape("dim_param.onnx"),
            Some(vec![DeclaredDim::Named("N".into()), DeclaredDim::Fixed(3)])
        );
        assert_eq!(
            shape("unknown.onnx"),
            Some(vec![DeclaredDim::Unknown, DeclaredDim::Fixed(3)])
        );
        assert_eq!(shape("no_shape.onnx"), None);
    }

    #[test]
    fn initializers_are_not_inputs_and_batching_needs_every_first_dim_open() {
        let d = read("reshape8.onnx");
        assert_eq!(d.inputs.len(), 1, "the Reshape's shape is an initializer");
        assert!(d.batchable());
        assert!(read("unknown.onnx").batchable());
        assert!(!read("fixed.onnx").batchable());
        assert!(!read("no_shape.onnx").batchable());
        assert!(Declared::read(b"\xff\xff").is_err());
    }
}
