"""System shared memory with unmodified tritonclient, as Triton's simple_http_shm_client and
simple_grpc_shm_client examples use it (written here from their documented behaviour): the
`simple` model (INT32 [-1, 16] INPUT0 + INPUT1 -> OUTPUT0 sum, OUTPUT1 difference), both inputs
in one region, both outputs in another, results read back from the region.

The server runs with allow_shared_memory; register and unregister are control actions and carry
the suite's admin token (`headers=`, as every tritonclient call takes).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from onnx import TensorProto, helper
from tritonclient.utils import InferenceServerException

from conftest import _stop, read_log, start_server

SIMPLE_CONFIG = """backend = "tract"
max_batch_size = 8

[[input]]
name = "INPUT0"
datatype = "INT32"
dims = [16]

[[input]]
name = "INPUT1"
datatype = "INT32"
dims = [16]

[[output]]
name = "OUTPUT0"
datatype = "INT32"
dims = [16]

[[output]]
name = "OUTPUT1"
datatype = "INT32"
dims = [16]
"""


TOKEN = "e2e-suite-admin-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}  # lower case: a gRPC metadata key


def write_simple(repo: Path) -> None:
    """The `simple` model of Triton's examples, made with the onnx helper."""
    shape = ["N", 16]
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        "simple",
        [helper.make_tensor_value_info(n, TensorProto.INT32, shape) for n in ("INPUT0", "INPUT1")],
        [helper.make_tensor_value_info(n, TensorProto.INT32, shape) for n in ("OUTPUT0", "OUTPUT1")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    (repo / "simple" / "1").mkdir(parents=True)
    onnx.save(model, str(repo / "simple" / "1" / "model.onnx"))
    (repo / "simple" / "config.toml").write_text(SIMPLE_CONFIG)


@pytest.fixture(scope="module")
def shm_server():
    work = Path(tempfile.mkdtemp(prefix="ferroserve-shm-"))
    write_simple(work / "repo")
    env = {"FERROSERVE_ALLOW_SHARED_MEMORY": "true", "FERROSERVE_ADMIN_TOKEN": TOKEN}
    srv = start_server(work / "server.log", env_overrides=env, repository=work / "repo")
    try:
        yield srv
    finally:
        _stop(srv.process)
        log = read_log(srv.log_path)
        assert "panicked" not in log, log
        shutil.rmtree(work, ignore_errors=True)


def _key(what: str) -> str:
    return f"/ferroserve_e2e_{what}_{os.getpid()}"


def _run_simple(client, module) -> None:
    """Registers an input and an output region, infers with tensors by region, checks the
    results read back from the output region, the status, and unregisters."""
    client.unregister_system_shared_memory(headers=AUTH)
    input0 = np.arange(16, dtype=np.int32).reshape(1, 16)
    input1 = np.ones((1, 16), dtype=np.int32)
    size = input0.nbytes

    out_handle = shm.create_shared_memory_region("output_data", _key("out"), size * 2)
    in_handle = shm.create_shared_memory_region("input_data", _key("in"), size * 2)
    try:
        client.register_system_shared_memory("output_data", _key("out"), size * 2, headers=AUTH)
        shm.set_shared_memory_region(in_handle, [input0, input1])
        client.register_system_shared_memory("input_data", _key("in"), size * 2, headers=AUTH)

        inputs = [module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_shared_memory("input_data", size)
        inputs[1].set_shared_memory("input_data", size, offset=size)
        outputs = [module.InferRequestedOutput("OUTPUT0"), module.InferRequestedOutput("OUTPUT1")]
        outputs[0].set_shared_memory("output_data", size)
        outputs[1].set_shared_memory("output_data", size, offset=size)

        results = client.infer("simple", inputs, outputs=outputs)
        for name, offset, want in (("OUTPUT0", 0, input0 + input1), ("OUTPUT1", size, input0 - input1)):
            assert results.get_output(name) is not None, name
            got = shm.get_contents_as_numpy(out_handle, np.int32, [1, 16], offset=offset)
            np.testing.assert_array_equal(got, want, err_msg=name)

        status = client.get_system_shared_memory_status()
        names = [r["name"] for r in status] if isinstance(status, list) else list(status.regions)
        assert sorted(names) == ["input_data", "output_data"], status

        client.unregister_system_shared_memory("input_data", headers=AUTH)
        client.unregister_system_shared_memory("output_data", headers=AUTH)
        with pytest.raises(InferenceServerException, match="Unable to find shared memory region: 'input_data'"):
            client.infer("simple", inputs, outputs=outputs)
    finally:
        shm.destroy_shared_memory_region(in_handle)
        shm.destroy_shared_memory_region(out_handle)
    client.unregister_system_shared_memory(headers=AUTH)


def test_http_shared_memory_like_simple_http_shm_client(shm_server):
    _run_simple(httpclient.InferenceServerClient(shm_server.http_url), httpclient)


def test_grpc_shared_memory_like_simple_grpc_shm_client(shm_server):
    _run_simple(grpcclient.InferenceServerClient(shm_server.grpc_url), grpcclient)


def test_status_of_an_unregistered_region_names_it(shm_server):
    client = httpclient.InferenceServerClient(shm_server.http_url)
    with pytest.raises(InferenceServerException, match="Unable to find system shared memory region: 'nope'"):
        client.get_system_shared_memory_status("nope")


def test_unregister_all_with_none_registered_succeeds(shm_server):
    httpclient.InferenceServerClient(shm_server.http_url).unregister_system_shared_memory(headers=AUTH)
    grpcclient.InferenceServerClient(shm_server.grpc_url).unregister_system_shared_memory(headers=AUTH)


def test_register_without_the_token_is_refused(shm_server):
    client = httpclient.InferenceServerClient(shm_server.http_url)
    with pytest.raises(InferenceServerException, match="Authorization"):
        client.register_system_shared_memory("r", _key("none"), 64)
