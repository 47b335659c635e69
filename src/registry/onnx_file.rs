//! The ONNX file as the engines get it: self-contained bytes. Initializers whose data lives in
//! sidecar files (`data_location = EXTERNAL`) are read from inside the version directory only
//! and inlined, so no engine ever opens a file itself; a graph output made by an `ai.onnx.ml`
//! ZipMap (skl2onnx's default classifier output, a sequence of maps no tensor protocol carries)
//! becomes the `[N, C]` probability tensor the ZipMap consumes, under the output's own name,
//! with the ZipMap's class labels kept for the output's config; `ai.onnx.ml` operators tract
//! lacks are lowered to standard ones (`onnx_ml`). A file that needs none of this is passed
//! through byte for byte (it is not even decoded).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use prost::Message;
use tract_onnx::pb;

use super::onnx_ml;
use super::open::{open_inside, ReadError};

/// Protobuf's hard limit on one message: a model past it cannot be encoded or decoded.
const PROTOBUF_LIMIT: u64 = i32::MAX as u64;
const EXTERNAL: i32 = pb::tensor_proto::DataLocation::External as i32;
const ML_DOMAIN: &str = "ai.onnx.ml";

/// The bytes the engines load and what the rewrite learnt on the way.
#[derive(Debug)]
pub struct Prepared {
    pub bytes: Bytes,
    /// Class labels of outputs that were ZipMaps, by output name, in column order.
    pub labels: BTreeMap<String, Vec<String>>,
}

/// Why a model file could not be made self-contained.
#[derive(Debug, thiserror::Error)]
pub enum OnnxFileError {
    #[error("cannot load {}: not a valid ONNX model: {reason}", .path.display())]
    Decode { path: PathBuf, reason: String },
    #[error(
        "cannot load {}: tensor {tensor:?} keeps its data in {location:?}, which is not a \
         relative path inside the version directory", .path.display()
    )]
    ExternalPath {
        path: PathBuf,
        tensor: String,
        location: String,
    },
    #[error(
        "cannot load {}: tensor {tensor:?} keeps its data in {location:?}, which resolves \
         outside the version directory (to {})", .path.display(), .real.display()
    )]
    ExternalOutside {
        path: PathBuf,
        tensor: String,
        location: String,
        real: PathBuf,
    },
    #[error("cannot load {}: external data of tensor {tensor:?}: {source}", .path.display())]
    ExternalRead {
        path: PathBuf,
        tensor: String,
        source: ReadError,
    },
    #[error("cannot load {}: external data of tensor {tensor:?}: {reason}", .path.display())]
    ExternalData {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    #[error(
        "cannot load {}: with its external data inlined the model would be {size} bytes, over \
         protobuf's 2 GiB limit for one model", .path.display()
    )]
    TooLarge { path: PathBuf, size: u64 },
}

/// Makes `bytes` (the checked contents of `file`, inside the canonical repository `root`)
/// self-contained; see the module comment.
pub fn prepare(root: &Path, file: &Path, bytes: Vec<u8>) -> Result<Prepared, OnnxFileError> {
    let unchanged = |bytes: Vec<u8>| Prepared {
        bytes: bytes.into(),
        labels: BTreeMap::new(),
    };
    // Every rewrite needs a string that is in the file: skip decoding files that have none.
    let mentions = |needle: &[u8]| memchr::memmem::find(&bytes, needle).is_some();
    let needles: [&[u8]; 4] = [b"ZipMap", b"location", b"Scaler", b"Imputer"];
    if !needles.into_iter().any(mentions) {
        return Ok(unchanged(bytes));
    }
    let mut model =
        pb::ModelProto::decode(bytes.as_slice()).map_err(|e| OnnxFileError::Decode {
            path: file.to_path_buf(),
            reason: e.to_string(),
        })?;
    let Some(graph) = model.graph.as_mut() else {
        return Ok(unchanged(bytes));
    };
    let labels = cut_zipmaps(graph);
    let mut inliner = Inliner {
        root,
        file,
        dir: None,
        open: HashMap::new(),
        size: bytes.len() as u64,
    };
    inliner.graph(graph)?;
    let inlined = !inliner.open.is_empty();
    let lowered = onnx_ml::lower(&mut model);
    if labels.is_empty() && !inlined && lowered == 0 {
        return Ok(unchanged(bytes));
    }
    if !labels.is_empty() && !model.opset_import.iter().any(|o| o.domain.is_empty()) {
        // The Identity that replaces a ZipMap is in the default domain, version 1 onwards.
        model.opset_import.push(pb::OperatorSetIdProto {
            domain: String::new(),
            version: 1,
        });
    }
    let size = model.encoded_len() as u64;
    if size > PROTOBUF_LIMIT {
        return Err(OnnxFileError::TooLarge {
            path: file.to_path_buf(),
            size,
        });
    }
    Ok(Prepared {
        bytes: model.encode_to_vec().into(),
        labels,
    })
}

/// Replaces each ZipMap whose output is a graph output (and feeds nothing else) by an Identity
/// of its input, and types that output as the FP32 `[N, C]` tensor. Returns the labels.
fn cut_zipmaps(graph: &mut pb::GraphProto) -> BTreeMap<String, Vec<String>> {
    let mut labels = BTreeMap::new();
    let batch = graph
        .input
        .first()
        .and_then(|i| tensor_shape(i)?.dim.first().cloned())
        .unwrap_or_default();
    for index in 0..graph.node.len() {
        let node = &graph.node[index];
        if node.op_type != "ZipMap" || node.domain != ML_DOMAIN {
            continue;
        }
        let (Some(input), Some(output)) = (node.input.first(), node.output.first()) else {
            continue;
        };
        let consumed = graph.node.iter().any(|n| n.input.contains(output));
        if consumed || !graph.output.iter().any(|o| &o.name == output) {
            continue;
        }
        let classes = class_labels(node);
        let (input, output) = (input.clone(), output.clone());
        let columns = pb::tensor_shape_proto::Dimension {
            value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(
                classes.len() as i64,
            )),
            ..Default::default()
        };
        graph.node[index] = pb::NodeProto {
            input: vec![input],
            output: vec![output.clone()],
            name: graph.node[index].name.clone(),
            op_type: "Identity".into(),
            ..Default::default()
        };
        for out in graph.output.iter_mut().filter(|o| o.name == output) {
            out.r#type = Some(pb::TypeProto {
                denotation: String::new(),
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: pb::tensor_proto::DataType::Float as i32,
                    shape: Some(pb::TensorShapeProto {
                        dim: vec![batch.clone(), columns.clone()],
                    }),
                })),
            });
        }
        labels.insert(output, classes);
    }
    labels
}

fn tensor_shape(value: &pb::ValueInfoProto) -> Option<&pb::TensorShapeProto> {
    match value.r#type.as_ref()?.value.as_ref()? {
        pb::type_proto::Value::TensorType(t) => t.shape.as_ref(),
    }
}

/// A ZipMap's keys: `classlabels_strings` or `classlabels_int64s`, in column order.
fn class_labels(node: &pb::NodeProto) -> Vec<String> {
    let mut labels = Vec::new();
    for attr in &node.attribute {
        match attr.name.as_str() {
            "classlabels_strings" => labels.extend(
                attr.strings
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned()),
            ),
            "classlabels_int64s" => labels.extend(attr.ints.iter().map(i64::to_string)),
            _ => {}
        }
    }
    labels
}

/// Inlines external data, reading each sidecar file through one checked descriptor.
struct Inliner<'a> {
    root: &'a Path,
    file: &'a Path,
    /// The canonical version directory, resolved on first use.
    dir: Option<PathBuf>,
    open: HashMap<String, (File, u64)>,
    /// The model's size so far, held under the protobuf limit before anything is read.
    size: u64,
}

impl Inliner<'_> {
    fn graph(&mut self, graph: &mut pb::GraphProto) -> Result<(), OnnxFileError> {
        for tensor in &mut graph.initializer {
            self.tensor(tensor)?;
        }
        for node in &mut graph.node {
            for attr in &mut node.attribute {
                if let Some(t) = attr.t.as_mut() {
                    self.tensor(t)?;
                }
                for t in &mut attr.tensors {
                    self.tensor(t)?;
                }
                if let Some(g) = attr.g.as_mut() {
                    self.graph(g)?;
                }
                for g in &mut attr.graphs {
                    self.graph(g)?;
                }
            }
        }
        Ok(())
    }

    fn tensor(&mut self, tensor: &mut pb::TensorProto) -> Result<(), OnnxFileError> {
        if tensor.data_location != Some(EXTERNAL) {
            return Ok(());
        }
        let field = |key: &str| {
            tensor
                .external_data
                .iter()
                .find(|e| e.key == key)
                .map(|e| e.value.clone())
        };
        let location = field("location").unwrap_or_default();
        let number = |key: &str| -> Result<Option<u64>, OnnxFileError> {
            field(key)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .map_err(|_| OnnxFileError::ExternalData {
                            path: self.file.to_path_buf(),
                            tensor: tensor.name.clone(),
                            reason: format!("{key} {v:?} is not a byte count"),
                        })
                })
                .transpose()
        };
        let (offset, length) = (number("offset")?.unwrap_or(0), number("length")?);
        let data = self.read(&tensor.name, &location, offset, length)?;
        tensor.raw_data = data;
        tensor.data_location = None;
        tensor.external_data.clear();
        Ok(())
    }

    fn read(
        &mut self,
        tensor: &str,
        location: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<Vec<u8>, OnnxFileError> {
        let failed = |reason: String| OnnxFileError::ExternalData {
            path: self.file.to_path_buf(),
            tensor: tensor.to_owned(),
            reason,
        };
        let relative = Path::new(location);
        let plain = relative
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if location.is_empty() || !plain || relative.file_name().is_none() {
            return Err(OnnxFileError::ExternalPath {
                path: self.file.to_path_buf(),
                tensor: tensor.to_owned(),
                location: location.to_owned(),
            });
        }
        if !self.open.contains_key(location) {
            let dir = self.dir()?;
            let opened = open_inside(&dir, &dir.join(relative)).map_err(|e| match e {
                ReadError::Outside { real, .. } => OnnxFileError::ExternalOutside {
                    path: self.file.to_path_buf(),
                    tensor: tensor.to_owned(),
                    location: location.to_owned(),
                    real,
                },
                source => OnnxFileError::ExternalRead {
                    path: self.file.to_path_buf(),
                    tensor: tensor.to_owned(),
                    source,
                },
            })?;
            self.open
                .insert(location.to_owned(), (opened.0, opened.1.len()));
        }
        let Some((file, size)) = self.open.get_mut(location) else {
            return Err(failed(format!("{location} is not open")));
        };
        let size = *size;
        let length = length.unwrap_or(size.saturating_sub(offset));
        if offset.checked_add(length).is_none_or(|end| end > size) {
            return Err(failed(format!(
                "offset {offset} + length {length} is beyond the end of {location} ({size} bytes)"
            )));
        }
        self.size = self.size.saturating_add(length);
        if self.size > PROTOBUF_LIMIT {
            return Err(OnnxFileError::TooLarge {
                path: self.file.to_path_buf(),
                size: self.size,
            });
        }
        let io = |e: std::io::Error| failed(format!("reading {location}: {e}"));
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        // Below the protobuf limit checked above, so the length fits in memory terms.
        let mut data = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
        file.take(length).read_to_end(&mut data).map_err(io)?;
        if data.len() as u64 != length {
            return Err(failed(format!("{location} ended while it was read")));
        }
        Ok(data)
    }

    /// The version directory (the model file's), canonical and inside the repository.
    fn dir(&mut self) -> Result<PathBuf, OnnxFileError> {
        if let Some(dir) = &self.dir {
            return Ok(dir.clone());
        }
        let parent = self.file.parent().unwrap_or(Path::new("."));
        let dir = parent
            .canonicalize()
            .map_err(|e| OnnxFileError::ExternalData {
                path: self.file.to_path_buf(),
                tensor: String::new(),
                reason: format!("{}: {e}", parent.display()),
            })?;
        if !dir.starts_with(self.root) {
            return Err(OnnxFileError::ExternalOutside {
                path: self.file.to_path_buf(),
                tensor: String::new(),
                location: parent.display().to_string(),
                real: dir,
            });
        }
        self.dir = Some(dir.clone());
        Ok(dir)
    }
}
