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

Reference outputs come from scikit-learn (predict / predict_proba, cast to float32)
or numpy (mlp, dense: float32), never from onnxruntime; onnxruntime (if installed) is only
used at the end to check the .onnx files against them.
"""

import os

# Single-threaded BLAS before numpy is imported: keeps the solver's arithmetic (and so the
# fitted coefficients) independent of the core count.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import json
import sys
import warnings
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


def main():
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


if __name__ == "__main__":
    sys.exit(main())
