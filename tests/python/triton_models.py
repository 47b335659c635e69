"""The models Triton's client example programs expect, made with the onnx helper at test time.

    python tests/python/triton_models.py DIR [--backend tract|onnxruntime]

writes them into DIR (a model repository); the suite calls `write_repository`, and
`tests/data/triton/` holds their output for the Rust tests (regenerate with
`python tests/python/triton_models.py tests/data/triton`). Shapes as the
examples use them (`[-1, 16]`, max_batch_size 8):
- `simple`: INT32 INPUT0, INPUT1 -> OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1;
- `simple_int8`: the same in INT8;
- `simple_string`: BYTES inputs holding decimal integers -> BYTES outputs, the sum and the
  difference written as decimal strings (ONNX `Cast` string -> INT32 -> string, which both
  engines run);
- `simple_identity`: BYTES INPUT0 -> OUTPUT0, unchanged.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import onnx
from onnx import TensorProto, helper

SHAPE = ["N", 16]
MAX_BATCH_SIZE = 8


def _save(repo: Path, name: str, graph, backend: str) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    (repo / name / "1").mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(repo / name / "1" / "model.onnx"))
    # No [[input]]/[[output]]: the names, types and dims are read from the graph.
    (repo / name / "config.toml").write_text(
        f'backend = "{backend}"\nmax_batch_size = {MAX_BATCH_SIZE}\n'
    )


def _io(names, elem):
    return [helper.make_tensor_value_info(n, elem, SHAPE) for n in names]


def add_sub(name: str, elem: int):
    return helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        name,
        _io(("INPUT0", "INPUT1"), elem),
        _io(("OUTPUT0", "OUTPUT1"), elem),
    )


def string_add_sub():
    to_int = [helper.make_node("Cast", [f"INPUT{i}"], [f"i{i}"], to=TensorProto.INT32) for i in (0, 1)]
    math = [
        helper.make_node("Add", ["i0", "i1"], ["sum"]),
        helper.make_node("Sub", ["i0", "i1"], ["diff"]),
    ]
    to_str = [
        helper.make_node("Cast", ["sum"], ["OUTPUT0"], to=TensorProto.STRING),
        helper.make_node("Cast", ["diff"], ["OUTPUT1"], to=TensorProto.STRING),
    ]
    return helper.make_graph(
        to_int + math + to_str,
        "simple_string",
        _io(("INPUT0", "INPUT1"), TensorProto.STRING),
        _io(("OUTPUT0", "OUTPUT1"), TensorProto.STRING),
    )


def identity():
    return helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
        "simple_identity",
        _io(("INPUT0",), TensorProto.STRING),
        _io(("OUTPUT0",), TensorProto.STRING),
    )


MODELS = ("simple", "simple_int8", "simple_string", "simple_identity")


def write_repository(repo: Path, backend: str = "tract", names=MODELS) -> None:
    graphs = {
        "simple": lambda: add_sub("simple", TensorProto.INT32),
        "simple_int8": lambda: add_sub("simple_int8", TensorProto.INT8),
        "simple_string": string_add_sub,
        "simple_identity": identity,
    }
    for name in names:
        _save(repo, name, graphs[name](), backend)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--backend", default="tract", choices=("tract", "onnxruntime"))
    args = ap.parse_args()
    write_repository(Path(args.dir), args.backend)
