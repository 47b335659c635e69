"""Issue 15, item 5: Triton's model control with unmodified tritonclient.

`load_model(config=<JSON>, files={"file:1/model.onnx": bytes})` uploads a model over HTTP and
gRPC to a server started with `allow_model_upload` in explicit mode; the uploaded model answers
exactly what the repository's mlp (the same file) answers. Without `config` the upload is refused
with Triton's words; `unload_model(..., unload_dependents=True)` is accepted.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import REPO_ROOT, _stop, read_log, start_server

TOKEN = "model-control-e2e-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}  # lowercase: gRPC metadata keys must be
MLP_ONNX = REPO_ROOT / "models" / "mlp" / "1" / "model.onnx"

CONFIG = {
    "max_batch_size": 64,
    "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [64]}],
    "output": [{"name": "output", "data_type": "TYPE_FP32", "dims": [10]}],
    "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
}


@pytest.fixture(scope="module")
def upload_server():
    tmp = Path(tempfile.mkdtemp(prefix="ferroserve-upload-"))
    repo = tmp / "repo"
    repo.mkdir()
    shutil.copytree(REPO_ROOT / "models" / "mlp", repo / "mlp")
    env = {
        "FERROSERVE_ADMIN_TOKEN": TOKEN,
        "FERROSERVE_MODEL_CONTROL_MODE": "explicit",
        "FERROSERVE_LOAD_MODELS": "mlp",
        "FERROSERVE_ALLOW_MODEL_UPLOAD": "true",
    }
    srv = start_server(tmp / "server.log", env_overrides=env, repository=repo)
    try:
        yield srv, repo
    finally:
        _stop(srv.process)
        assert "panicked" not in read_log(tmp / "server.log")


def clients(srv, protocol):
    if protocol == "http":
        return httpclient, httpclient.InferenceServerClient(srv.http_url)
    return grpcclient, grpcclient.InferenceServerClient(srv.grpc_url)


def infer(module, client, model, x):
    inp = module.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return client.infer(model, [inp]).as_numpy("output")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_upload_with_config_and_files_serves_what_the_repository_model_serves(upload_server, protocol):
    srv, repo = upload_server
    module, client = clients(srv, protocol)
    name = f"uploaded_{protocol}"
    config = dict(CONFIG, name=name)
    client.load_model(name, headers=AUTH, config=json.dumps(config), files={"file:1/model.onnx": MLP_ONNX.read_bytes()})
    assert client.is_model_ready(name)
    assert (repo / name / "1" / "model.onnx").read_bytes() == MLP_ONNX.read_bytes()
    x = np.random.default_rng(7).uniform(-1, 1, size=(3, 64)).astype(np.float32)
    np.testing.assert_array_equal(infer(module, client, name, x), infer(module, client, "mlp", x))
    client.unload_model(name, headers=AUTH, unload_dependents=True)
    assert not client.is_model_ready(name)
    assert client.is_model_ready("mlp")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_upload_without_config_is_refused_in_tritons_words(upload_server, protocol):
    srv, repo = upload_server
    module, client = clients(srv, protocol)
    with pytest.raises(InferenceServerException) as err:
        client.load_model("noconfig", headers=AUTH, files={"file:1/model.onnx": MLP_ONNX.read_bytes()})
    assert "Load parameter 'config' must be specified for model file override" in str(err.value)
    assert not (repo / "noconfig").exists()
    x = np.zeros((1, 64), dtype=np.float32)
    assert infer(module, client, "mlp", x).shape == (1, 10)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_upload_without_the_token_is_refused(upload_server, protocol):
    srv, repo = upload_server
    _, client = clients(srv, protocol)
    with pytest.raises(InferenceServerException) as err:
        client.load_model("notoken", config=json.dumps(CONFIG), files={"file:1/model.onnx": b"x"})
    assert "Authorization" in str(err.value) or "token" in str(err.value)
    assert not (repo / "notoken").exists()
