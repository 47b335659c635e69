"""Writes the small ONNX files tests/onnx_file.rs serves (committed; rerun to regenerate).

    python tests/data/onnx_file/build.py   (onnx from tests/python/requirements.txt)

- zipmap_strings.onnx: Softmax of X [N, 3] into an ai.onnx.ml ZipMap with string labels
  (skl2onnx's default classifier output), beside an INT64 ArgMax label output.
- zipmap_ints.onnx: the same with classlabels_int64s, two classes.
- external.onnx + weights.bin: Y = X @ W + B with W and B as external data (W at offset 0,
  B at offset 64 of weights.bin), as torch's newer exporter and MLflow write large models.
- scaler.onnx: ai.onnx.ml Scaler of X [N, 2] (offset [1, -1], scale [2, 0.5]) as skl2onnx
  writes a StandardScaler; imputer.onnx: ai.onnx.ml Imputer of X [N, 2] replacing NaN by
  [10, 20] as skl2onnx writes a SimpleImputer.
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
OPSETS = [helper.make_opsetid("", 13), helper.make_opsetid("ai.onnx.ml", 1)]


def zipmap(name: str, classes: int, labels: dict) -> None:
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", classes])
    label = helper.make_tensor_value_info("output_label", TensorProto.INT64, ["N"])
    # A sequence of maps, as skl2onnx types it.
    map_type = helper.make_map_type_proto(
        TensorProto.STRING if "classlabels_strings" in labels else TensorProto.INT64,
        helper.make_tensor_type_proto(TensorProto.FLOAT, []),
    )
    seq = helper.make_value_info("output_probability", helper.make_sequence_type_proto(map_type))
    nodes = [
        helper.make_node("Softmax", ["X"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["output_label"], axis=1, keepdims=0),
        helper.make_node("ZipMap", ["probabilities"], ["output_probability"],
                         domain="ai.onnx.ml", **labels),
    ]
    graph = helper.make_graph(nodes, name, [x], [label, seq])
    model = helper.make_model(graph, opset_imports=OPSETS, ir_version=8)
    onnx.checker.check_model(model)
    onnx.save_model(model, HERE / f"{name}.onnx")


def external() -> None:
    w = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    b = np.array([0.5, -0.5], dtype=np.float32)
    blob = bytearray(72)
    blob[0:16] = w.tobytes()
    blob[64:72] = b.tobytes()
    (HERE / "weights.bin").write_bytes(bytes(blob))
    inits = []
    for name, array, offset in (("W", w, 0), ("B", b, 64)):
        t = numpy_helper.from_array(array, name)
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "weights.bin"), ("offset", str(offset)),
                           ("length", str(array.nbytes))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        inits.append(t)
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 2])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 2])
    nodes = [helper.make_node("MatMul", ["X", "W"], ["XW"]), helper.make_node("Add", ["XW", "B"], ["Y"])]
    graph = helper.make_graph(nodes, "external", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=OPSETS[:1], ir_version=8)
    onnx.save_model(model, HERE / "external.onnx")


def ml_op(name: str, op: str, **attrs) -> None:
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 2])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 2])
    node = helper.make_node(op, ["X"], ["Y"], domain="ai.onnx.ml", **attrs)
    graph = helper.make_graph([node], name, [x], [y])
    model = helper.make_model(graph, opset_imports=OPSETS, ir_version=8)
    onnx.checker.check_model(model)
    onnx.save_model(model, HERE / f"{name}.onnx")


if __name__ == "__main__":
    zipmap("zipmap_strings", 3, {"classlabels_strings": ["setosa", "versicolor", "virginica"]})
    zipmap("zipmap_ints", 2, {"classlabels_int64s": [10, 20]})
    external()
    ml_op("scaler", "Scaler", offset=[1.0, -1.0], scale=[2.0, 0.5])
    ml_op("imputer", "Imputer", imputed_value_floats=[10.0, 20.0], replaced_value_float=float("nan"))
