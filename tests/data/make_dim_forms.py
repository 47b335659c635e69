"""Writes the small ONNX files of tests/dim_forms.rs into tests/data/dim_forms/ (committed, so
the Rust tests need no Python). Each is `y = x + 1` over FP32 unless said otherwise, and differs
only in how it writes its dimensions:

  fixed.onnx        x [2, 3]                    every dimension a value
  dim_param.onnx    x ["N", 3]                  the batch dimension named
  unknown.onnx      x [?, 3]                    neither value nor name (skl2onnx's batch dim)
  unknown_inner.onnx x ["N", ?]                 an inner dimension unknown
  no_shape.onnx     x (no shape at all)         not even a rank; y likewise
  ort_only.onnx     Det: x ["N", 2, 2] -> y ["N"]  an op tract lacks, ONNX Runtime has
  no_engine.onnx    an op of an unknown domain   neither engine can build it
  reshape8.onnx     x ["N", "L"] -> Reshape [-1, 2, 4] -> y ["N", 2, 4]: runs only when L = 8

Run: /work/main/.venv/bin/python tests/data/make_dim_forms.py
"""

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dim_forms")
F = TensorProto.FLOAT


def dims(*ds):
    """A value_info shape from ints, strings (dim_param) and None (neither set)."""
    shape = onnx.TensorShapeProto()
    for d in ds:
        dim = shape.dim.add()
        if isinstance(d, int):
            dim.dim_value = d
        elif isinstance(d, str):
            dim.dim_param = d
    return shape


def value(name, shape, elem=F):
    """A tensor value_info; `shape` None writes no shape at all."""
    vi = onnx.ValueInfoProto()
    vi.name = name
    vi.type.tensor_type.elem_type = elem
    if shape is not None:
        vi.type.tensor_type.shape.CopyFrom(shape)
    return vi


def save(name, nodes, inputs, outputs, initializers=(), opsets=(("", 13),)):
    graph = helper.make_graph(nodes, name, inputs, outputs, list(initializers))
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets]
    )
    model.ir_version = 8
    onnx.save(model, os.path.join(OUT, name + ".onnx"))


def add_one(name, x_shape, y_shape, one_shape=(1,)):
    one = numpy_helper.from_array(np.ones(one_shape, dtype=np.float32), "one")
    save(
        name,
        [helper.make_node("Add", ["x", "one"], ["y"])],
        [value("x", x_shape)],
        [value("y", y_shape)],
        [one],
    )


def main():
    os.makedirs(OUT, exist_ok=True)
    add_one("fixed", dims(2, 3), dims(2, 3))
    add_one("dim_param", dims("N", 3), dims("N", 3))
    add_one("unknown", dims(None, 3), dims(None, 3))
    add_one("unknown_inner", dims("N", None), dims("N", None))
    add_one("no_shape", None, None)
    save(
        "ort_only",
        [helper.make_node("Det", ["x"], ["y"])],
        [value("x", dims("N", 2, 2))],
        [value("y", dims("N"))],
    )
    save(
        "no_engine",
        [helper.make_node("Nope", ["x"], ["y"], domain="com.ferroserve.test")],
        [value("x", dims("N", 3))],
        [value("y", dims("N", 3))],
        opsets=(("", 13), ("com.ferroserve.test", 1)),
    )
    shape = numpy_helper.from_array(np.array([-1, 2, 4], dtype=np.int64), "shape")
    save(
        "reshape8",
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        [value("x", dims("N", "L"))],
        [value("y", dims("N", 2, 4))],
        [shape],
    )


if __name__ == "__main__":
    main()
