//! `ai.onnx.ml` operators tract has no kernel for, lowered to standard ONNX operators both
//! engines run, computing the same float operations ONNX Runtime's own kernels do: `Scaler`
//! ((X - offset) * scale) becomes Cast, Sub, Mul; `Imputer` with float values becomes IsNaN
//! (or Equal) and Where. Called by `onnx_file` on the decoded graph.

use tract_onnx::pb;

const ML_DOMAIN: &str = "ai.onnx.ml";
/// The default-domain opsets that have what a lowering uses: Cast, Sub and Mul with numpy
/// broadcasting (7); IsNaN and Where (9); Equal on floats (11).
const SCALER_OPSET: i64 = 7;
const NAN_OPSET: i64 = 9;
const EQUAL_OPSET: i64 = 11;

/// Lowers the graph's Scalers and float Imputers when the model's default-domain opset has the
/// operators they become; returns how many nodes were lowered.
pub fn lower(model: &mut pb::ModelProto) -> usize {
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty())
        .map(|o| o.version);
    let Some(graph) = model.graph.as_mut() else {
        return 0;
    };
    let Some(opset) = opset else {
        return 0;
    };
    let mut lowered = 0;
    let mut nodes = Vec::with_capacity(graph.node.len());
    for node in std::mem::take(&mut graph.node) {
        let replacement = match (node.domain.as_str(), node.op_type.as_str()) {
            (ML_DOMAIN, "Scaler") if opset >= SCALER_OPSET => scaler(&node, &mut graph.initializer),
            (ML_DOMAIN, "Imputer") => imputer(&node, opset, &mut graph.initializer),
            _ => None,
        };
        match replacement {
            Some(replacement) => {
                lowered += 1;
                nodes.extend(replacement);
            }
            None => nodes.push(node),
        }
    }
    graph.node = nodes;
    lowered
}

fn scaler(
    node: &pb::NodeProto,
    initializers: &mut Vec<pb::TensorProto>,
) -> Option<Vec<pb::NodeProto>> {
    let (x, y) = io(node)?;
    let offset = floats(node, "offset").unwrap_or_else(|| vec![0.0]);
    let scale = floats(node, "scale").unwrap_or_else(|| vec![1.0]);
    let (offset_name, scale_name) = (format!("{y}__scaler_offset"), format!("{y}__scaler_scale"));
    initializers.push(constant(&offset_name, offset));
    initializers.push(constant(&scale_name, scale));
    let (cast, centred) = (format!("{y}__scaler_cast"), format!("{y}__scaler_centred"));
    let to = pb::AttributeProto {
        name: "to".into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: pb::tensor_proto::DataType::Float as i64,
        ..Default::default()
    };
    Some(vec![
        op(node, "Cast", vec![x], &cast, vec![to]),
        op(
            node,
            "Sub",
            vec![cast.clone(), offset_name],
            &centred,
            vec![],
        ),
        op(node, "Mul", vec![centred.clone(), scale_name], &y, vec![]),
    ])
}

fn imputer(
    node: &pb::NodeProto,
    opset: i64,
    initializers: &mut Vec<pb::TensorProto>,
) -> Option<Vec<pb::NodeProto>> {
    let (x, y) = io(node)?;
    // ONNX Runtime's Imputer takes float values only with float inputs: no cast is needed.
    let values = floats(node, "imputed_value_floats")?;
    let replaced = node
        .attribute
        .iter()
        .find(|a| a.name == "replaced_value_float")
        .map_or(0.0, |a| a.f);
    if opset
        < if replaced.is_nan() {
            NAN_OPSET
        } else {
            EQUAL_OPSET
        }
    {
        return None;
    }
    let (values_name, mask) = (format!("{y}__imputer_values"), format!("{y}__imputer_mask"));
    initializers.push(constant(&values_name, values));
    let test = if replaced.is_nan() {
        op(node, "IsNaN", vec![x.clone()], &mask, vec![])
    } else {
        let replaced_name = format!("{y}__imputer_replaced");
        initializers.push(constant(&replaced_name, vec![replaced]));
        op(node, "Equal", vec![x.clone(), replaced_name], &mask, vec![])
    };
    Some(vec![
        test,
        op(
            node,
            "Where",
            vec![mask.clone(), values_name, x],
            &y,
            vec![],
        ),
    ])
}

fn io(node: &pb::NodeProto) -> Option<(String, String)> {
    match (node.input.as_slice(), node.output.as_slice()) {
        ([x], [y]) if !x.is_empty() && !y.is_empty() => Some((x.clone(), y.clone())),
        _ => None,
    }
}

/// A float-list attribute, `None` when absent or empty.
fn floats(node: &pb::NodeProto, name: &str) -> Option<Vec<f32>> {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.floats.clone())
        .filter(|f| !f.is_empty())
}

fn constant(name: &str, values: Vec<f32>) -> pb::TensorProto {
    pb::TensorProto {
        dims: vec![values.len() as i64],
        data_type: pb::tensor_proto::DataType::Float as i32,
        float_data: values,
        name: name.into(),
        ..Default::default()
    }
}

fn op(
    from: &pb::NodeProto,
    op_type: &str,
    input: Vec<String>,
    output: &str,
    attribute: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        input,
        output: vec![output.to_owned()],
        name: format!("{}__{}", from.name, op_type.to_lowercase()),
        op_type: op_type.into(),
        attribute,
        ..Default::default()
    }
}
