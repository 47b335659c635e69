"""The ClusterServingRuntime of k8s/kserve/ runs the binary with its own container arguments, as
KServe would: `{{.Name}}` replaced by the InferenceService's name, a bare model.onnx at
/mnt/models (here a temporary directory), the ports moved to 0 so tests run side by side. The
model answers under that name over HTTP and gRPC (tritonclient), as version 1.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml
from conftest import REPO_ROOT, load_reference, start_server

RUNTIME = REPO_ROOT / "k8s" / "kserve" / "cluster-serving-runtime.yaml"
ISVC = REPO_ROOT / "k8s" / "kserve" / "inference-service.yaml"
# A model with no config.toml batches up to 4 rows (derived from its graph).
ROWS = 4


def runtime_args(name: str, mount: Path) -> list[str]:
    """The runtime container's `serve` arguments as KServe would pass them, on local ports."""
    (runtime,) = [d for d in yaml.safe_load_all(RUNTIME.read_text()) if d]
    (container,) = runtime["spec"]["containers"]
    assert container["command"] == ["ferroserve"]
    args = container["args"]
    assert args[0] == "serve"
    out = []
    for arg in args[1:]:
        arg = arg.replace("{{.Name}}", name).replace("/mnt/models", str(mount))
        flag = arg.split("=", 1)[0]
        if flag in ("--http-port", "--grpc-port", "--metrics-port"):
            arg = f"{flag}=0"
        elif flag == "--host":
            arg = "--host=127.0.0.1"
        out.append(arg)
    return out


@pytest.fixture
def isvc_name() -> str:
    (isvc,) = [d for d in yaml.safe_load_all(ISVC.read_text()) if d]
    return isvc["metadata"]["name"]


@pytest.fixture
def kserve_server(tmp_path: Path, isvc_name: str):
    mount = tmp_path / "mnt-models"
    mount.mkdir()
    shutil.copy(REPO_ROOT / "models" / "mlp" / "1" / "model.onnx", mount / "model.onnx")
    srv = start_server(tmp_path / "server.log", serve_args=runtime_args(isvc_name, mount))
    try:
        yield srv
    finally:
        srv.process.terminate()
        srv.process.wait(timeout=30)
        assert "panicked" not in srv.log()


def reference_rows():
    ref = load_reference("mlp")
    (name, spec), = ref["inputs"].items()
    x = np.asarray(spec["data"], dtype=np.float32).reshape(spec["shape"])[:ROWS]
    (out_name, out), = ref["outputs"].items()
    want = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])[:ROWS]
    return name, x, out_name, want


def test_runtime_args_serve_a_bare_model_as_the_inference_service_name_over_http(kserve_server, isvc_name):
    client = httpclient.InferenceServerClient(kserve_server.http_url)
    assert client.is_model_ready(isvc_name, "1")
    assert client.get_model_metadata(isvc_name)["versions"] == ["1"]
    name, x, out_name, want = reference_rows()
    inp = httpclient.InferInput(name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    got = client.infer(isvc_name, [inp]).as_numpy(out_name)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_runtime_args_serve_the_inference_service_name_over_grpc(kserve_server, isvc_name):
    client = grpcclient.InferenceServerClient(kserve_server.grpc_url)
    assert client.is_server_ready()
    name, x, out_name, want = reference_rows()
    inp = grpcclient.InferInput(name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    got = client.infer(isvc_name, [inp]).as_numpy(out_name)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_single_model_server_does_not_know_other_names(kserve_server):
    client = httpclient.InferenceServerClient(kserve_server.http_url)
    assert not client.is_model_ready("mlp-other")
