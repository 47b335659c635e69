"""`ferroserve predict` on a scikit-learn pipeline with a string column (skl2onnx, made here):
its CSV predictions equal, bit for bit, what the server answers over HTTP for the same rows.

The pipeline one-hot encodes `colour` (a BYTES input) and passes `x1`, `x2` (FP32 inputs)
through to a logistic regression; each input is one CSV column of the same name, so predict
maps them by name. tract has no OneHotEncoder kernel: `backend = "auto"` serves it with ONNX
Runtime, in predict and in the server alike.
"""

from __future__ import annotations

import csv
import json
import os
import struct
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, _server_binary, _stop, start_server

COLOURS = ["red", "green", "blue", "violet"]
ROWS = 150


def _pipeline_model(path: Path) -> None:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "colour": rng.choice(COLOURS, 200),
            "x1": rng.normal(size=200).astype(np.float32),
            "x2": rng.normal(size=200).astype(np.float32),
        }
    )
    y = (frame["colour"].isin(["red", "blue"]) ^ (frame["x1"] > 0)).astype(int)
    model = Pipeline(
        [
            ("prep", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), ["colour"]),
                                        ("num", "passthrough", ["x1", "x2"])])),
            ("clf", LogisticRegression()),
        ]
    ).fit(frame, y)
    onx = to_onnx(
        model,
        initial_types=[
            ("colour", StringTensorType([None, 1])),
            ("x1", FloatTensorType([None, 1])),
            ("x2", FloatTensorType([None, 1])),
        ],
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    path.parent.mkdir(parents=True)
    path.write_bytes(onx.SerializeToString())


def _f32_bits(text_or_number) -> int:
    return struct.unpack("<I", struct.pack("<f", np.float32(float(text_or_number))))[0]


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_a_string_column_pipeline_predicts_as_the_server_answers(tmp_path):
    repo = tmp_path / "repo"
    _pipeline_model(repo / "pipe" / "1" / "model.onnx")
    rng = np.random.default_rng(1)
    rows = [
        (f"id{i}", str(rng.choice(COLOURS)), float(np.float32(rng.normal())), float(np.float32(rng.normal())))
        for i in range(ROWS)
    ]
    data = tmp_path / "in.csv"
    with open(data, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "colour", "x1", "x2"])
        for r in rows:
            w.writerow([r[0], r[1], repr(np.float32(r[2]).item()), repr(np.float32(r[3]).item())])
    out = tmp_path / "out.csv"
    done = subprocess.run(
        [str(_server_binary()), "predict", "--model-repository", str(repo), "--model", "pipe",
         "--input", str(data), "--output", str(out), "--keep", "id"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )
    assert done.returncode == 0, done.stderr
    with open(out, newline="") as f:
        got = list(csv.DictReader(f))
    assert [g["id"] for g in got] == [r[0] for r in rows]

    server = start_server(tmp_path / "server.log", repository=repo)
    try:
        base = f"http://{server.http_url}/v2/models/pipe"
        with urllib.request.urlopen(base + "/config", timeout=10) as resp:
            batch = json.loads(resp.read())["max_batch_size"]
        assert batch >= 1
        want: list[dict] = []
        for start in range(0, ROWS, batch):
            chunk = rows[start:start + batch]
            n = len(chunk)
            answer = _post(base + "/infer", {"inputs": [
                {"name": "colour", "datatype": "BYTES", "shape": [n, 1], "data": [r[1] for r in chunk]},
                {"name": "x1", "datatype": "FP32", "shape": [n, 1], "data": [r[2] for r in chunk]},
                {"name": "x2", "datatype": "FP32", "shape": [n, 1], "data": [r[3] for r in chunk]},
            ]})
            cols: dict[str, list] = {}
            for o in answer["outputs"]:
                width = int(np.prod(o["shape"][1:])) if len(o["shape"]) > 1 else 1
                for c in range(width):
                    name = o["name"] if width == 1 else f"{o['name']}_{c}"
                    cols[name] = [o["data"][r * width + c] for r in range(n)]
            want.extend({k: v[i] for k, v in cols.items()} for i in range(n))
    finally:
        _stop(server.process)
    assert set(got[0]) - {"id"} == set(want[0]), (got[0], want[0])
    for i, (g, w) in enumerate(zip(got, want)):
        for name, value in w.items():
            if isinstance(value, float):
                assert _f32_bits(g[name]) == _f32_bits(value), (i, name, g[name], value)
            else:
                assert str(value) == g[name], (i, name, g[name], value)
    label = next(k for k in got[0] if k.endswith("label"))
    labels = {g[label] for g in got}
    assert labels == {"0", "1"}, "both classes appear: the string column matters"


def test_predict_reads_the_parquet_pandas_writes_and_pandas_reads_its_output(tmp_path, server):
    """pandas' default Parquet (pyarrow, snappy, float64 columns, a string column) scored by
    predict equals the server's HTTP answers; pandas reads predict's Parquet output back."""
    import pandas as pd

    rng = np.random.default_rng(2)
    n = 130
    frame = pd.DataFrame({
        "id": [f"k{i}" for i in range(n)],
        "sepal_length": rng.uniform(4.3, 7.9, n).round(1),
        "sepal_width": rng.uniform(2.0, 4.4, n).round(1),
        "petal_length": rng.uniform(1.0, 6.9, n).round(1),
        "petal_width": rng.uniform(0.1, 2.5, n).round(1),
        "species": rng.choice(["setosa", "versicolor"], n),
    })
    data = tmp_path / "in.parquet"
    frame.to_parquet(data)
    out = tmp_path / "out.parquet"
    done = subprocess.run(
        [str(_server_binary()), "predict", "--model-repository", "models", "--model", "iris",
         "--input", str(data), "--output", str(out), "--keep", "id"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    got = pd.read_parquet(out)
    assert list(got.columns) == ["id", "label", "probabilities_0", "probabilities_1", "probabilities_2"]
    assert got["probabilities_0"].dtype == np.float32 and got["label"].dtype == np.int64
    assert list(got["id"]) == list(frame["id"])

    features = frame[["sepal_length", "sepal_width", "petal_length", "petal_width"]].to_numpy()
    for start in range(0, n, 64):
        chunk = features[start:start + 64]
        answer = _post(f"http://{server.http_url}/v2/models/iris/infer", {"inputs": [
            {"name": "input", "datatype": "FP32", "shape": list(chunk.shape),
             "data": chunk.flatten().tolist()}]})
        outputs = {o["name"]: o["data"] for o in answer["outputs"]}
        rows = got.iloc[start:start + len(chunk)]
        assert list(rows["label"]) == outputs["label"]
        probs = np.array(outputs["probabilities"], dtype=np.float32).reshape(len(chunk), 3)
        mine = rows[["probabilities_0", "probabilities_1", "probabilities_2"]].to_numpy()
        assert mine.tobytes() == probs.tobytes(), start
