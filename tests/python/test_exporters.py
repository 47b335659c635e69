"""The exporter corpus (tests/exporters/build_corpus.py, made here by the pinned exporters) served
by a second ferroserve process and queried with tritonclient over HTTP and gRPC: every model on
every engine tests/exporters/support.json lists answers like ONNX Runtime run in-process on the
same file (integers, booleans and strings equal, floats within 1e-5 relative, see
assert_like_onnxruntime); every engine it does
not list refuses to load the model (so the list, and README's table, stay true). The results go
to $FERROSERVE_EXPORTER_RESULTS (default: the corpus dir's results.json) for
tests/exporters/table.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from conftest import REPO_ROOT, _stop, read_log, start_server

EXPORTERS = REPO_ROOT / "tests" / "exporters"
SUPPORT = {k: v for k, v in json.loads((EXPORTERS / "support.json").read_text()).items() if not k.startswith("_")}
ENGINES = ("tract", "onnxruntime")
# NAME is served with no config.toml at all (`backend = "auto"`, issue 14 item 4); pass
# ["--with-config"] to write a config.toml for every copy instead.
CORPUS_ARGS: list[str] = []
RESULTS: dict[str, dict] = {}


@pytest.fixture(scope="module")
def corpus() -> Path:
    out = Path(tempfile.mkdtemp(prefix="ferroserve-corpus-"))
    subprocess.run([sys.executable, str(EXPORTERS / "build_corpus.py"), str(out), *CORPUS_ARGS], check=True)
    yield out
    results = Path(os.environ.get("FERROSERVE_EXPORTER_RESULTS", out / "results.json"))
    results.write_text(json.dumps(RESULTS, indent=1, sort_keys=True))


@pytest.fixture(scope="module")
def corpus_server(corpus: Path):
    log_path = corpus / "server.log"
    # Some copies do not load on purpose: readiness must not wait for every model.
    srv = start_server(log_path, {"FERROSERVE_STRICT_READINESS": "false"}, repository=corpus / "repo")
    try:
        yield srv
    finally:
        _stop(srv.process)
        log = read_log(log_path)
        assert "panicked" not in log, f"ferroserve panicked serving the corpus:\n{log}"


@pytest.fixture(scope="module")
def index(corpus_server) -> dict[str, dict]:
    req = urllib.request.Request(f"http://{corpus_server.http_url}/v2/repository/index", method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return {row["name"]: row for row in json.load(resp)}


def expected(corpus: Path, model: str) -> dict:
    return json.loads((corpus / "expected" / f"{model}.json").read_text())


def as_numpy(tensor: dict) -> np.ndarray:
    if tensor["datatype"] == "BYTES":
        return np.array([s.encode() for s in tensor["data"]], dtype=np.object_).reshape(tensor["shape"])
    dtypes = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32, "FP16": np.float16,
              "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_}
    return np.array(tensor["data"], dtype=dtypes[tensor["datatype"]]).reshape(tensor["shape"])


def query(protocol: str, url: str, model: str, ref: dict) -> dict[str, np.ndarray]:
    client_mod = httpclient if protocol == "http" else grpcclient
    client = client_mod.InferenceServerClient(url=url)
    inputs = []
    for name, tensor in ref["inputs"].items():
        data = as_numpy(tensor)
        inp = client_mod.InferInput(name, list(data.shape), tensor["datatype"])
        inp.set_data_from_numpy(data)
        inputs.append(inp)
    outputs = [client_mod.InferRequestedOutput(name) for name in ref["outputs"]]
    result = client.infer(model, inputs, outputs=outputs)
    return {name: result.as_numpy(name) for name in ref["outputs"]}


def assert_like_onnxruntime(model: str, got: dict[str, np.ndarray], ref: dict) -> None:
    for name, tensor in ref["outputs"].items():
        want, have = as_numpy(tensor), got[name]
        assert have is not None, f"{model}: no output {name}"
        assert list(have.shape) == tensor["shape"], f"{model}/{name}: shape {have.shape}, want {tensor['shape']}"
        if tensor["datatype"] in ("FP32", "FP64", "FP16"):
            # 1e-5 relative to each element, or to the tensor's largest element for elements near
            # zero (a LayerNorm output of 0.0185 among values of 2 differs by 1.4e-5 of itself).
            scale = float(np.max(np.abs(want))) if want.size else 0.0
            np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-5 * scale, err_msg=f"{model}/{name}")
        else:
            np.testing.assert_array_equal(have, want, err_msg=f"{model}/{name}")


CASES = [(m, e) for m in SUPPORT for e in ("auto", *ENGINES)]


@pytest.mark.parametrize("model,engine", CASES, ids=[f"{m}-{e}" for m, e in CASES])
def test_exporter_model_serves_like_onnxruntime(corpus, corpus_server, index, model, engine):
    served = model if engine == "auto" else f"{model}-{engine}"
    row = index.get(served, {})
    state, reason = row.get("state"), row.get("reason", "")
    supported = engine == "auto" or engine in SUPPORT[model]
    family = json.loads((corpus / "families.json").read_text())[model]
    RESULTS[served] = {"model": model, "engine": engine, "ok": False, "reason": reason, **family}
    if not supported:
        assert state == "UNAVAILABLE", (
            f"{served} is {state}: support.json says {engine} cannot run {model}; update it (and README's table)")
        assert reason, f"{served} failed to load without a reason"
        return
    assert state == "READY", f"{served}: {state} {reason}"
    ref = expected(corpus, model)
    # The torch models have several samples (other sizes on their dynamic axes), the others one.
    for sample in ref.get("samples", [ref]):
        shapes = [t["shape"] for t in sample["inputs"].values()]
        for protocol, url in (("http", corpus_server.http_url), ("grpc", corpus_server.grpc_url)):
            got = query(protocol, url, served, sample)
            assert_like_onnxruntime(f"{served} over {protocol} at {shapes}", got, sample)
    RESULTS[served]["ok"] = True


def test_corpus_server_still_answers_health(corpus_server, index):
    assert index, "the corpus server lists no models"
    client = httpclient.InferenceServerClient(url=corpus_server.http_url)
    assert client.is_server_live()
