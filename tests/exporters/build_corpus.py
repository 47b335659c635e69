"""The exporter corpus: models written by the real exporters at test time, pinned by
tests/python/requirements.txt (scikit-learn, skl2onnx, onnx, onnxruntime).

    python tests/exporters/build_corpus.py OUT [--with-config]

writes
    OUT/repo/NAME/1/model.onnx        exactly as the exporter saved it (plus its external data)
    OUT/repo/NAME-tract/...           the same file, served by tract
    OUT/repo/NAME-onnxruntime/...     the same file, served by ONNX Runtime
    OUT/expected/NAME.json            sample inputs and ONNX Runtime's outputs, run in-process on
                                      the same file (ZipMap outputs as the [N, C] tensor in label
                                      order, the form ferroserve serves them in); for the torch
                                      models {"samples": [...]} of several sizes on the dynamic axes

NAME has no config.toml (the server derives it, issue 14 item 4: `backend = "auto"`), the engine
copies a config.toml of one line (`backend = ...`). With --with-config (until serving with no
config.toml is merged) every copy gets a config.toml with `max_batch_size = 0` too (the
signature comes from the graph), and NAME is served by the first engine support.json lists.
tests/python/test_exporters.py runs it without --with-config.

The torch models (a small CNN, nn.TransformerEncoderLayer and a hand-written attention block,
with dynamic batch and sequence axes) are written by torch.onnx.export in a second process,
tests/exporters/torch_models.py, run with the torch venv's Python ($FERROSERVE_TORCH_PYTHON, or
<repo>/.venv-torch/bin/python, which scripts/setup-test-env.sh makes from
tests/exporters/requirements-torch.txt); their files are served exactly as torch saved them
(external data included), and ONNX Runtime's answers are checked against torch's before they
become the reference.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn import cluster, datasets, ensemble, impute, linear_model, pipeline, preprocessing, svm, tree

SEED = 0
ENGINES = ("tract", "onnxruntime")
HERE = Path(__file__).parent
SUPPORT = json.loads((HERE / "support.json").read_text())
TORCH_FAMILIES = {
    "cnn": "CNN (Conv, MaxPool, Gemm)",
    "transformer_block": "transformer block (nn.TransformerEncoderLayer: attention, LayerNorm)",
    "attention_block": "hand-written attention block (multi-head attention, LayerNorm, GELU)",
}


def iris():
    x, y = datasets.load_iris(return_X_y=True)
    return x.astype(np.float32), y


def regression():
    x, y = datasets.make_regression(n_samples=60, n_features=4, noise=0.1, random_state=SEED)
    return x.astype(np.float32), y.astype(np.float32)


def sklearn_models():
    """(name, family, fitted estimator, sample inputs by name, skl2onnx initial types)."""
    xi, yi = iris()
    xr, yr = regression()
    floats = [("input", FloatTensorType([None, 4]))]
    rows_i = {"input": xi[::30][:4]}
    rows_r = {"input": xr[:4]}
    yield "linear_regression", "linear models", linear_model.LinearRegression().fit(xr, yr), rows_r, floats
    yield "logistic_regression", "linear models + ZipMap", linear_model.LogisticRegression(max_iter=500).fit(xi, yi), rows_i, floats
    yield "svc", "SVMs + ZipMap", svm.SVC(probability=True, random_state=SEED).fit(xi, yi), rows_i, floats
    yield "svr", "SVMs", svm.SVR().fit(xr, yr), rows_r, floats
    yield "decision_tree_classifier", "tree ensembles + ZipMap", tree.DecisionTreeClassifier(max_depth=4, random_state=SEED).fit(xi, yi), rows_i, floats
    yield "decision_tree_regressor", "tree ensembles", tree.DecisionTreeRegressor(max_depth=4, random_state=SEED).fit(xr, yr), rows_r, floats
    yield "random_forest_classifier", "tree ensembles + ZipMap", ensemble.RandomForestClassifier(n_estimators=5, max_depth=4, random_state=SEED).fit(xi, yi), rows_i, floats
    yield "gradient_boosting_regressor", "tree ensembles", ensemble.GradientBoostingRegressor(n_estimators=10, max_depth=3, random_state=SEED).fit(xr, yr), rows_r, floats
    yield "kmeans", "k-means", cluster.KMeans(n_clusters=3, n_init=3, random_state=SEED).fit(xi), rows_i, floats
    yield "standard_scaler", "scalers", preprocessing.StandardScaler().fit(xi), rows_i, floats
    xm = xi.copy()
    xm[::7, 1] = np.nan
    yield "simple_imputer", "imputers", impute.SimpleImputer().fit(xm), {"input": xm[:4]}, floats
    colours = np.array([["red", "s"], ["green", "m"], ["blue", "l"], ["red", "l"], ["green", "s"]], dtype=object)
    yield ("onehot_encoder", "one-hot encoders (string inputs)", preprocessing.OneHotEncoder().fit(colours),
           {"input": colours[:4]}, [("input", StringTensorType([None, 2]))])
    pipe = pipeline.make_pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression(max_iter=500))
    yield "pipeline_scaler_logistic", "pipelines + ZipMap", pipe.fit(xi, yi), rows_i, floats


def helper_cnn(rng) -> onnx.ModelProto:
    """A small CNN (Conv-Relu-MaxPool-Flatten-Gemm, dynamic batch) for the external-data copy."""
    def init(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)

    nodes = [
        helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [init("conv_w", 4, 1, 3, 3), init("conv_b", 4), init("fc_w", 10, 64), init("fc_b", 10)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def helper_models(rng):
    """The tensor forms exporters write, each in a graph of its own (onnx helper API)."""
    # A scalar (rank-0) output, FP16 and INT8 tensors, and the oldest and newest opsets (7, the first with numpy broadcasting; 21, the newest this
    # onnxruntime runs in-process).
    vi = helper.make_tensor_value_info
    def small(name, nodes, x, y, opset, ir, inputs, family):
        graph = helper.make_graph(nodes, name, [x], [y])
        return name, family, helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir), inputs, None
    yield small("scalar_output", [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0)],
                vi("x", TensorProto.FLOAT, ["batch", 3]), vi("total", TensorProto.FLOAT, []), 13, 7,
                {"x": rng.standard_normal((2, 3)).astype(np.float32)}, "scalar (rank-0) output")
    yield small("fp16_tensors", [helper.make_node("Mul", ["x", "x"], ["y"])],
                vi("x", TensorProto.FLOAT16, ["batch", 4]), vi("y", TensorProto.FLOAT16, ["batch", 4]), 13, 7,
                {"x": rng.standard_normal((2, 4)).astype(np.float16)}, "FP16 inputs and outputs")
    yield small("int8_tensors", [helper.make_node("Neg", ["x"], ["y"])],
                vi("x", TensorProto.INT8, ["batch", 4]), vi("y", TensorProto.INT8, ["batch", 4]), 13, 7,
                {"x": np.array([[1, -2, 127, -127], [0, 5, -5, 64]], np.int8)}, "INT8 inputs and outputs")
    for opset, ir in ((7, 3), (21, 10)):
        nodes = [helper.make_node("Add", ["x", "x"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
        yield small(f"opset{opset}", nodes, vi("x", TensorProto.FLOAT, ["batch", 4]), vi("y", TensorProto.FLOAT, ["batch", 4]),
                    opset, ir, {"x": rng.standard_normal((2, 4)).astype(np.float32)}, f"opset {opset} (IR {ir})")


def to_json(value) -> dict:
    array = np.asarray(value)
    if array.dtype == object or array.dtype.kind in "US":
        return {"datatype": "BYTES", "shape": list(array.shape), "data": [str(v) for v in array.ravel()]}
    names = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "int32": "INT32", "float16": "FP16",
             "int8": "INT8", "uint8": "UINT8", "bool": "BOOL"}
    return {"datatype": names[str(array.dtype)], "shape": list(array.shape), "data": array.ravel().tolist()}


def expected(path: Path, inputs: dict) -> dict:
    """ONNX Runtime's answers in-process; a ZipMap's list of dicts becomes the [N, C] tensor."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    results = session.run(None, inputs)
    outputs = {}
    for meta, value in zip(session.get_outputs(), results):
        if isinstance(value, list) and value and isinstance(value[0], dict):
            keys = list(value[0].keys())
            value = np.array([[row[k] for k in keys] for row in value], dtype=np.float32)
        outputs[meta.name] = to_json(value)
    return {"inputs": {k: to_json(v) for k, v in inputs.items()}, "outputs": outputs}


def torch_python() -> str:
    python = os.environ.get("FERROSERVE_TORCH_PYTHON") or str(HERE.parent.parent / ".venv-torch" / "bin" / "python")
    if not Path(python).exists():
        raise SystemExit(f"build_corpus: no torch venv ({python}): run scripts/setup-test-env.sh, "
                         "or set FERROSERVE_TORCH_PYTHON to a Python with tests/exporters/requirements-torch.txt")
    return python


def torch_models(out: Path):
    """(name, family, exporter, folder as torch wrote it, samples: [(inputs, torch's outputs)])."""
    subprocess.run([torch_python(), str(HERE / "torch_models.py"), str(out)], check=True)
    for meta_path in sorted(out.glob("*.json")):
        meta = json.loads(meta_path.read_text())
        folder = out / meta_path.stem
        samples = [tuple({k: as_numpy(v) for k, v in sample[part].items()} for part in ("inputs", "outputs"))
                   for sample in meta["samples"]]
        base = meta_path.stem.removeprefix("torch_").removesuffix("_torchscript")
        family = TORCH_FAMILIES[base]
        if any(f.name != "model.onnx" for f in folder.iterdir()):
            family += " + external data"
        yield meta_path.stem, family, f"{meta['exporter']}, torch {meta['torch']}", folder, samples


def check_against_torch(name: str, reference: dict, torch_outputs: dict) -> None:
    """ONNX Runtime on torch's file answers like torch itself (else the export is wrong)."""
    for out, want in torch_outputs.items():
        have = as_numpy(reference["outputs"][out])
        np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(want))),
                                   err_msg=f"{name}/{out}: ONNX Runtime differs from torch")


def as_numpy(tensor: dict) -> np.ndarray:
    return np.array(tensor["data"], dtype=np.float32).reshape(tensor["shape"])


def write(repo: Path, name: str, model: onnx.ModelProto | Path, with_config: bool, external: bool = False) -> Path:
    """NAME (no config, or tract's with --with-config) and one copy per engine; `model` is a
    ModelProto to save, or a folder whose files (an exporter's output) are copied as they are."""
    first = None
    # With --with-config, NAME stands in for `auto` with the first engine support.json lists.
    auto = SUPPORT.get(name, ENGINES)[0] if with_config else None
    for target, backend in [(name, auto)] + [(f"{name}-{e}", e) for e in ENGINES]:
        version = repo / target / "1"
        version.mkdir(parents=True)
        if isinstance(model, Path):
            for file in model.iterdir():
                shutil.copyfile(file, version / file.name)
        elif external:
            # save_model moves the weights out of `model` itself: save a copy each time.
            onnx.save_model(copy.deepcopy(model), version / "model.onnx", save_as_external_data=True,
                            all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0)
        else:
            onnx.save_model(model, version / "model.onnx")
        first = first or version / "model.onnx"
        if backend:
            lines = [f'backend = "{backend}"']
            if with_config:
                lines.append("max_batch_size = 0")
            (repo / target / "config.toml").write_text("\n".join(lines) + "\n")
    return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--with-config", action="store_true")
    args = parser.parse_args()
    repo, exp = args.out / "repo", args.out / "expected"
    shutil.rmtree(args.out, ignore_errors=True)
    repo.mkdir(parents=True)
    exp.mkdir()
    rng = np.random.default_rng(SEED)
    families = {}
    for name, family, estimator, inputs, types in sklearn_models():
        model = to_onnx(estimator, initial_types=types)
        path = write(repo, name, model, args.with_config)
        families[name] = {"exporter": "skl2onnx", "family": family}
        (exp / f"{name}.json").write_text(json.dumps(expected(path, inputs)))
    for name, family, exporter, folder, samples in torch_models(args.out / "torch-export"):
        path = write(repo, name, folder, args.with_config)
        families[name] = {"exporter": exporter, "family": family}
        references = [expected(path, inputs) for inputs, _ in samples]
        for reference, (_, torch_outputs) in zip(references, samples):
            check_against_torch(name, reference, torch_outputs)
        (exp / f"{name}.json").write_text(json.dumps({"samples": references}))
    for name, family, model, inputs, _ in helper_models(rng):
        onnx.checker.check_model(model)
        path = write(repo, name, model, args.with_config)
        families[name] = {"exporter": "onnx helper", "family": family}
        (exp / f"{name}.json").write_text(json.dumps(expected(path, inputs)))
    # One model saved with external data by onnx itself (weights in model.onnx.data).
    cnn = helper_cnn(np.random.default_rng(SEED))
    path = write(repo, "cnn_external_data", cnn, args.with_config, external=True)
    families["cnn_external_data"] = {"exporter": "onnx.save_model(save_as_external_data=True)", "family": "external data"}
    inputs = {"image": np.random.default_rng(SEED + 1).standard_normal((2, 1, 8, 8)).astype(np.float32)}
    (exp / f"cnn_external_data.json").write_text(json.dumps(expected(path, inputs)))
    (args.out / "families.json").write_text(json.dumps(families, indent=1))
    print(f"{len(families)} models in {repo}")


if __name__ == "__main__":
    main()
