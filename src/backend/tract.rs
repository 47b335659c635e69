//! tract (pure Rust, CPU): load and declutter the ONNX graph once with a symbolic batch
//! dimension, then optimise one concrete plan per batch size on first use, because concretised
//! plans run markedly faster than the symbolic one.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tract_onnx::prelude::{
    self as tp, DatumType, Framework, InferenceModelExt, IntoRunnable, IntoTensor, TDim, TValue,
    TVec, TypedModel, TypedRunnableModel,
};
use tract_onnx::tract_hir::infer::Factoid;

use super::{
    padding, Backend, BackendError, Declared, GraphSignature, GraphTensor, LoadFailure,
    LoadOptions, LoadedModel,
};
use crate::tensor::{DataType, Tensor};

type Plan = Arc<TypedRunnableModel>;

/// The graph shared by all instances of one model version.
struct Graph {
    typed: TypedModel,
    /// The symbol of the batch dimension, when the model batches.
    batch: Option<tp::Symbol>,
    /// Output datatypes as the ONNX file declares them; tract may compute some as TDim.
    output_dtypes: Vec<DatumType>,
    /// Concrete plans by batch size, plus the symbolic plan under key 0.
    plans: Mutex<HashMap<usize, Plan>>,
    max_plans: usize,
    /// tract multiplies a single row with a matrix-vector kernel whose rounding differs from the
    /// matrix-matrix kernel used for 2+ rows (measured on the bundled mlp: every output differs in
    /// the last bits), so single rows run as two (see `padding`).
    pad_single_rows: bool,
}

pub fn load(
    model: Bytes,
    declared: &Declared,
    path: &Path,
    options: &LoadOptions,
) -> Result<LoadedModel, BackendError> {
    let fail = |reason: LoadFailure| BackendError::Load {
        path: path.display().to_string(),
        reason,
    };
    let engine = |e: tp::TractError| fail(LoadFailure::Engine(format!("{e:#}")));
    // Decoded from the caller's buffer, so tensor data is not copied once more on the way.
    let proto = <tract_onnx::pb::ModelProto as prost::Message>::decode(model)
        .map_err(|e| fail(LoadFailure::Engine(format!("not an ONNX model: {e}"))))?;
    let mut model = tract_onnx::onnx()
        .model_for_proto_model(&proto)
        .map_err(engine)?;
    drop(proto);
    super::tract_facts::set_input_facts(&mut model, declared, options).map_err(&fail)?;

    let mut output_dtypes = Vec::new();
    for ix in 0..model.outputs.len() {
        let fact = model.output_fact(ix).map_err(engine)?;
        output_dtypes.push(fact.datum_type.concretize());
    }
    let typed = model
        .into_typed()
        .and_then(|m| m.into_decluttered())
        .map_err(
            |e| match declared.inputs.iter().find(|t| t.shape.is_none()) {
                // An input with no shape that tract could not work out: the config must say.
                Some(t) if !options.input_hints.iter().any(|h| h.name == t.name) => {
                    fail(LoadFailure::NoShape(t.name.clone()))
                }
                _ => engine(e),
            },
        )?;

    let mut signature = GraphSignature::default();
    for (ix, outlet) in typed
        .input_outlets()
        .map_err(|e| fail(LoadFailure::Engine(e.to_string())))?
        .iter()
        .enumerate()
    {
        let fact = typed
            .input_fact(ix)
            .map_err(|e| fail(LoadFailure::Engine(e.to_string())))?;
        let name = typed.node(outlet.node).name.clone();
        signature
            .inputs
            .push(graph_tensor(name, fact.datum_type, fact.shape.dims()).map_err(&fail)?);
    }
    let mut declared = Vec::new();
    for (ix, outlet) in typed
        .output_outlets()
        .map_err(|e| fail(LoadFailure::Engine(e.to_string())))?
        .iter()
        .enumerate()
    {
        let fact = typed
            .output_fact(ix)
            .map_err(|e| fail(LoadFailure::Engine(e.to_string())))?;
        let name = typed
            .outlet_label(*outlet)
            .map(str::to_owned)
            .unwrap_or_else(|| typed.node(outlet.node).name.clone());
        let dt = output_dtypes
            .get(ix)
            .copied()
            .flatten()
            .unwrap_or(fact.datum_type);
        let dt = if dt == DatumType::TDim {
            DatumType::I64
        } else {
            dt
        };
        signature
            .outputs
            .push(graph_tensor(name, dt, fact.shape.dims()).map_err(&fail)?);
        declared.push(dt);
    }

    let batch = if options.max_batch_size > 0 {
        let first = typed
            .input_fact(0)
            .map_err(|e| fail(LoadFailure::Engine(e.to_string())))?;
        match first.shape.dims().first() {
            Some(TDim::Sym(s)) => Some(s.clone()),
            Some(d) => {
                return Err(fail(LoadFailure::FixedBatchDimension {
                    max_batch_size: options.max_batch_size,
                    dim: d.to_string(),
                }))
            }
            None => return Err(fail(LoadFailure::ScalarBatchInput)),
        }
    } else {
        None
    };

    let graph = Arc::new(Graph {
        typed,
        batch,
        output_dtypes: declared,
        plans: Mutex::new(HashMap::new()),
        max_plans: options.max_batch_size + 1,
        pad_single_rows: padding::pads_single_rows(options),
    });
    let instances = (0..options.instance_count)
        .map(|_| {
            Box::new(TractInstance {
                graph: graph.clone(),
            }) as Box<dyn Backend>
        })
        .collect();
    Ok(LoadedModel {
        signature,
        instances,
    })
}

fn graph_tensor(name: String, dt: DatumType, dims: &[TDim]) -> Result<GraphTensor, LoadFailure> {
    let Some(dtype) = from_datum(dt) else {
        return Err(LoadFailure::UnsupportedDatatype {
            name,
            datatype: format!("{dt:?}"),
        });
    };
    let shape = dims
        .iter()
        .map(|d| d.as_i64().and_then(|v| usize::try_from(v).ok()))
        .collect();
    Ok(GraphTensor { name, dtype, shape })
}

fn from_datum(dt: DatumType) -> Option<DataType> {
    Some(match dt {
        DatumType::Bool => DataType::Bool,
        DatumType::U8 => DataType::U8,
        DatumType::U16 => DataType::U16,
        DatumType::U32 => DataType::U32,
        DatumType::U64 => DataType::U64,
        DatumType::I8 => DataType::I8,
        DatumType::I16 => DataType::I16,
        DatumType::I32 => DataType::I32,
        DatumType::I64 | DatumType::TDim => DataType::I64,
        DatumType::F16 => DataType::F16,
        DatumType::F32 => DataType::F32,
        DatumType::F64 => DataType::F64,
        DatumType::String => DataType::Bytes,
        _ => return None,
    })
}

fn to_datum(dt: DataType) -> DatumType {
    match dt {
        DataType::Bool => DatumType::Bool,
        DataType::U8 => DatumType::U8,
        DataType::U16 => DatumType::U16,
        DataType::U32 => DatumType::U32,
        DataType::U64 => DatumType::U64,
        DataType::I8 => DatumType::I8,
        DataType::I16 => DatumType::I16,
        DataType::I32 => DatumType::I32,
        DataType::I64 => DatumType::I64,
        DataType::F16 => DatumType::F16,
        DataType::F32 => DatumType::F32,
        DataType::F64 => DatumType::F64,
        DataType::Bytes => DatumType::String,
    }
}

impl Graph {
    /// The plan for `batch` rows: built and cached on first use (key 0 is the symbolic plan).
    fn plan(&self, batch: usize) -> tp::TractResult<Plan> {
        let key = if self.batch.is_some() { batch } else { 0 };
        // A poisoned lock only means another instance panicked mid-insert; the map is still valid.
        if let Some(plan) = self
            .plans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(plan.clone());
        }
        let plan = match &self.batch {
            Some(sym) if key > 0 => {
                let subs = HashMap::from([(sym.clone(), TDim::Val(key as i64))]);
                self.typed
                    .set_symbols(&subs)?
                    .into_optimized()?
                    .into_runnable()?
            }
            _ => self.typed.clone().into_optimized()?.into_runnable()?,
        };
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        if plans.len() < self.max_plans {
            plans.insert(key, plan.clone());
        }
        Ok(plan)
    }
}

struct TractInstance {
    graph: Arc<Graph>,
}

impl Backend for TractInstance {
    fn infer(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, BackendError> {
        padding::run_padded(self.graph.pad_single_rows, inputs, |inputs| {
            let batch = inputs.first().map(Tensor::rows).unwrap_or(1);
            self.graph.run(inputs, batch)
        })
    }
}

impl Graph {
    fn run(&self, inputs: &[Tensor], batch: usize) -> Result<Vec<Tensor>, BackendError> {
        let plan = self
            .plan(batch)
            .map_err(|e| BackendError::Run(format!("{e:#}")))?;
        let values = inputs
            .iter()
            .map(to_tract)
            .collect::<Result<TVec<TValue>, _>>()?;
        let outputs = plan
            .run(values)
            .map_err(|e| BackendError::Run(format!("{e:#}")))?;
        outputs
            .into_iter()
            .zip(&self.output_dtypes)
            .map(|(value, &declared)| from_tract(value, declared))
            .collect()
    }
}

fn to_tract(t: &Tensor) -> Result<TValue, BackendError> {
    let shape = t.shape();
    let tensor = match t.dtype() {
        // Not every byte is a valid `bool`: decode instead of reinterpreting.
        DataType::Bool => {
            let values: Vec<bool> = t.data().iter().map(|&b| b != 0).collect();
            tp::Tensor::from_shape(shape, &values)
        }
        DataType::Bytes => {
            let items = t
                .byte_strings()
                .ok_or_else(|| BackendError::Run("malformed BYTES tensor".into()))?
                .into_iter()
                .map(|b| String::from_utf8(b.to_vec()))
                .collect::<Result<Vec<String>, _>>()
                .map_err(|_| BackendError::Unsupported("BYTES input that is not UTF-8".into()))?;
            tp::tract_ndarray::ArrayD::from_shape_vec(shape, items)
                .map(tp::Tensor::from)
                .map_err(|e| e.into())
        }
        // SAFETY: every bit pattern is a valid value of the remaining numeric types, and
        // `from_raw_dt` checks the byte length against the shape before copying.
        dt => unsafe { tp::Tensor::from_raw_dt(to_datum(dt), shape, t.data()) },
    };
    tensor
        .map(TValue::from)
        .map_err(|e| BackendError::Run(format!("input tensor: {e:#}")))
}

fn from_tract(value: TValue, declared: DatumType) -> Result<Tensor, BackendError> {
    let run = |e: tp::TractError| BackendError::Run(format!("output tensor: {e:#}"));
    let tensor = value.into_tensor();
    let tensor = if tensor.datum_type() == declared {
        tensor
    } else {
        tensor.cast_to_dt(declared).map_err(run)?.into_owned()
    };
    let shape = tensor.shape().to_vec();
    let dtype = from_datum(declared)
        .ok_or_else(|| BackendError::Unsupported(format!("output datatype {declared:?}")))?;
    // `try_as_plain_ram` copies device or lazily-backed storage to RAM instead of panicking.
    let view = tensor.try_as_plain_ram().map_err(run)?;
    let result = if declared == DatumType::String {
        Tensor::from_byte_strings(shape, view.as_slice::<String>().map_err(run)?)
    } else {
        Tensor::new(dtype, shape, Bytes::copy_from_slice(view.as_bytes()))
    };
    result.map_err(|e| BackendError::Run(format!("output tensor: {e}")))
}
