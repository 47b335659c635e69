"""What Triton's client example programs do (`src/python/examples` of triton-inference-server/
client), written here from their documented behaviour, against ferroserve with unmodified
tritonclient: each test is one example, its requests and the checks it makes (values, the error
texts it matches), with the models of the shapes the examples expect (`triton_models.py`, made
at test time with the onnx helper).

The server runs as a Triton user would run it for these programs: `server_name = "triton"`
(they check it), system shared memory on, and no admin token with `allow_unauthenticated_admin`
(the examples send none). Model control runs on its own server in explicit mode with
`allow_model_upload`, on its own copy of the repository.
"""

from __future__ import annotations

import asyncio
import os
import queue
import shutil
import tempfile
from functools import partial
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio
import tritonclient.utils.shared_memory as shm
from tritonclient import utils
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from conftest import _stop, read_log, start_server
from triton_models import write_repository

AS_TRITON = {
    "FERROSERVE_SERVER_NAME": "triton",
    "FERROSERVE_ALLOW_SHARED_MEMORY": "true",
    "FERROSERVE_ALLOW_UNAUTHENTICATED_ADMIN": "true",
}
NO_TOKEN = ("FERROSERVE_ADMIN_TOKEN",)
WAIT_S = 30  # the bound on waiting for an async answer

INPUT0 = np.arange(16, dtype=np.int32).reshape(1, 16)
INPUT1 = np.ones((1, 16), dtype=np.int32)


def _serve(prefix: str, env: dict[str, str]):
    work = Path(tempfile.mkdtemp(prefix=prefix))
    write_repository(work / "repo")
    srv = start_server(work / "server.log", env_overrides=env, repository=work / "repo", unset_env=NO_TOKEN)
    return work, srv


def _finish(work: Path, srv) -> None:
    _stop(srv.process)
    log = read_log(srv.log_path)
    shutil.rmtree(work, ignore_errors=True)
    assert "panicked" not in log, log


@pytest.fixture(scope="module")
def triton():
    work, srv = _serve("ferroserve-examples-", AS_TRITON)
    try:
        yield srv
    finally:
        _finish(work, srv)


@pytest.fixture(scope="module")
def control():
    env = dict(AS_TRITON, FERROSERVE_MODEL_CONTROL_MODE="explicit", FERROSERVE_ALLOW_MODEL_UPLOAD="true")
    work, srv = _serve("ferroserve-examples-control-", env)
    try:
        yield srv
    finally:
        _finish(work, srv)


def assert_sum_and_difference(out0, out1, in0=INPUT0, in1=INPUT1) -> None:
    """The check every `simple` example makes, element by element."""
    assert out0 is not None and out1 is not None
    np.testing.assert_array_equal(out0, in0 + in1)
    np.testing.assert_array_equal(out1, in0 - in1)


def simple_inputs(module, binary=(None, None)):
    inputs = [module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]
    for inp, data, b in zip(inputs, (INPUT0, INPUT1), binary):
        if b is None:
            inp.set_data_from_numpy(data)
        else:
            inp.set_data_from_numpy(data, binary_data=b)
    return inputs


# ---- simple_http_infer_client.py / simple_http_aio_infer_client.py ----------------------------

COMPRESSIONS = [None, "gzip", "deflate"]


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_simple_http_infer_client(triton, compression):
    client = httpclient.InferenceServerClient(triton.http_url)
    # INPUT0 as JSON, INPUT1 binary; OUTPUT0 asked binary, OUTPUT1 as JSON; query parameters.
    inputs = simple_inputs(httpclient, binary=(False, True))
    outputs = [
        httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
        httpclient.InferRequestedOutput("OUTPUT1", binary_data=False),
    ]
    kw = dict(request_compression_algorithm=compression, response_compression_algorithm=compression)
    results = client.infer("simple", inputs, outputs=outputs, query_params={"test_1": 1, "test_2": 2}, **kw)
    stats = client.get_inference_statistics(model_name="simple")
    assert len(stats["model_stats"]) == 1, stats
    assert_sum_and_difference(results.as_numpy("OUTPUT0"), results.as_numpy("OUTPUT1"))

    # No outputs named: all of them come back.
    results = client.infer("simple", inputs, outputs=None, query_params={"test_1": 1, "test_2": 2}, **kw)
    assert_sum_and_difference(results.as_numpy("OUTPUT0"), results.as_numpy("OUTPUT1"))

    with pytest.raises(InferenceServerException) as err:
        client.infer("wrong_model_name", inputs, outputs=outputs, **kw)
    assert err.value.message().startswith("Request for unknown model"), err.value.message()


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_simple_http_aio_infer_client(triton, compression):
    async def main():
        client = httpaio.InferenceServerClient(triton.http_url)
        try:
            kw = dict(request_compression_algorithm=compression, response_compression_algorithm=compression)
            inputs = simple_inputs(httpaio, binary=(False, True))
            outputs = [
                httpaio.InferRequestedOutput("OUTPUT0", binary_data=True),
                httpaio.InferRequestedOutput("OUTPUT1", binary_data=False),
            ]
            results = await client.infer("simple", inputs, outputs=outputs, **kw)
            stats = await client.get_inference_statistics(model_name="simple")
            assert len(stats["model_stats"]) == 1, stats
            assert_sum_and_difference(results.as_numpy("OUTPUT0"), results.as_numpy("OUTPUT1"))
            with pytest.raises(InferenceServerException) as err:
                await client.infer("wrong_model_name", inputs, outputs=outputs, **kw)
            assert err.value.message().startswith("Request for unknown model"), err.value.message()
            # Two requests at once, no outputs named.
            both = await asyncio.gather(*(client.infer("simple", inputs, **kw) for _ in range(2)))
            for r in both:
                assert_sum_and_difference(r.as_numpy("OUTPUT0"), r.as_numpy("OUTPUT1"))
        finally:
            await client.close()

    asyncio.run(main())


# ---- simple_http_async_infer_client.py -----------------------------------------------------------


def test_simple_http_async_infer_client(triton):
    request_count = 2
    client = httpclient.InferenceServerClient(triton.http_url, concurrency=request_count)
    inputs = simple_inputs(httpclient, binary=(True, True))
    outputs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in ("OUTPUT0", "OUTPUT1")]
    pending = [client.async_infer("simple", inputs, outputs=outputs) for _ in range(request_count)]
    for request in pending:
        result = request.get_result(timeout=WAIT_S)
        assert_sum_and_difference(result.as_numpy("OUTPUT0"), result.as_numpy("OUTPUT1"))


# ---- simple_grpc_infer_client.py / simple_grpc_custom_args_client.py / keepalive -----------------


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_simple_grpc_infer_client(triton, compression):
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    inputs = simple_inputs(grpcclient)
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("OUTPUT1")]
    results = client.infer(
        "simple", inputs, outputs=outputs, client_timeout=WAIT_S, headers={"test": "1"},
        compression_algorithm=compression,
    )
    stats = client.get_inference_statistics(model_name="simple")
    assert len(stats.model_stats) == 1, stats
    assert_sum_and_difference(results.as_numpy("OUTPUT0"), results.as_numpy("OUTPUT1"))
    results = client.infer("simple", inputs, outputs=None, compression_algorithm=compression)
    assert_sum_and_difference(results.as_numpy("OUTPUT0"), results.as_numpy("OUTPUT1"))


def test_simple_grpc_custom_args_client(triton):
    channel_args = [
        ("grpc.max_send_message_length", 1024 * 1024),
        ("grpc.max_receive_message_length", 1024 * 1024),
        ("grpc.keepalive_time_ms", 2**31 - 1),
        ("grpc.keepalive_timeout_ms", 20000),
        ("grpc.keepalive_permit_without_calls", False),
        ("grpc.http2.max_pings_without_data", 2),
        ("grpc.dns_enable_srv_queries", 1),
    ]
    client = grpcclient.InferenceServerClient(triton.grpc_url, channel_args=channel_args)
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("OUTPUT1")]
    results = client.infer("simple", simple_inputs(grpcclient), outputs=outputs, headers={"test": "1"})
    assert_sum_and_difference(results.as_numpy("OUTPUT0"), results.as_numpy("OUTPUT1"))


def test_simple_grpc_keepalive_client(triton):
    # The example's defaults, and pings every 10 s allowed without calls.
    keepalive = grpcclient.KeepAliveOptions(
        keepalive_time_ms=10_000,
        keepalive_timeout_ms=20_000,
        keepalive_permit_without_calls=True,
        http2_max_pings_without_data=2,
    )
    client = grpcclient.InferenceServerClient(triton.grpc_url, keepalive_options=keepalive)
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("OUTPUT1")]
    results = client.infer("simple", simple_inputs(grpcclient), outputs=outputs, headers={"test": "1"})
    assert_sum_and_difference(results.as_numpy("OUTPUT0"), results.as_numpy("OUTPUT1"))


# ---- simple_grpc_async_infer_client.py / simple_grpc_aio_infer_client.py -------------------------


def test_simple_grpc_async_infer_client(triton):
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    answers: queue.Queue = queue.Queue()

    def callback(answers, result, error):
        answers.put(error if error else result)

    outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("OUTPUT1")]
    client.async_infer(
        "simple", simple_inputs(grpcclient), callback=partial(callback, answers), outputs=outputs,
        client_timeout=WAIT_S,
    )
    result = answers.get(timeout=WAIT_S)
    assert not isinstance(result, InferenceServerException), result
    assert_sum_and_difference(result.as_numpy("OUTPUT0"), result.as_numpy("OUTPUT1"))


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_simple_grpc_aio_infer_client(triton, compression):
    async def main():
        client = grpcaio.InferenceServerClient(triton.grpc_url)
        try:
            inputs = simple_inputs(grpcaio)
            outputs = [grpcaio.InferRequestedOutput("OUTPUT0"), grpcaio.InferRequestedOutput("OUTPUT1")]
            results = await client.infer(
                "simple", inputs, outputs=outputs, client_timeout=WAIT_S, headers={"test": "1"},
                compression_algorithm=compression,
            )
            stats = await client.get_inference_statistics(model_name="simple")
            assert len(stats.model_stats) == 1, stats
            assert_sum_and_difference(results.as_numpy("OUTPUT0"), results.as_numpy("OUTPUT1"))
            both = await asyncio.gather(
                *(client.infer("simple", inputs, outputs=None, compression_algorithm=compression) for _ in range(2))
            )
            for r in both:
                assert_sum_and_difference(r.as_numpy("OUTPUT0"), r.as_numpy("OUTPUT1"))
        finally:
            await client.close()

    asyncio.run(main())


# ---- simple_http_health_metadata.py / simple_grpc_health_metadata.py ------------------------------


def test_simple_http_health_metadata(triton):
    client = httpclient.InferenceServerClient(triton.http_url)
    assert client.is_server_live(query_params={"test_1": 1, "test_2": 2})
    assert client.is_server_ready()
    assert client.is_model_ready("simple")
    assert client.get_server_metadata()["name"] == "triton"
    assert client.get_model_metadata("simple", query_params={"test_1": 1, "test_2": 2})["name"] == "simple"
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("wrong_model_name")
    assert "Request for unknown model" in err.value.message()


def test_simple_grpc_health_metadata(triton):
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    headers = {"test": "1", "dummy": "2"}
    assert client.is_server_live(headers=headers)
    assert client.is_server_ready()
    assert client.is_model_ready("simple")
    assert client.get_server_metadata().name == "triton"
    assert client.get_model_metadata("simple", headers=headers).name == "simple"
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("wrong_model_name")
    assert "Request for unknown model" in err.value.message()
    assert client.get_model_config("simple").config.name == "simple"


# ---- simple_http_string_infer_client.py / simple_grpc_string_infer_client.py ---------------------


def as_bytes(a: np.ndarray) -> np.ndarray:
    return np.array([str(x).encode("utf-8") for x in a.reshape(a.size)], dtype=np.object_).reshape(a.shape)


IDENTITY_DATA = {
    # Strings with NUL characters in them, as objects; raw bytes as a numpy bytes array.
    "null_chars": np.array(["he\x00llo".encode("utf-8")] * 16, dtype=np.object_).reshape(1, 16),
    "np_bytes": np.array([b"\x00\x01\x02\x03"] * 16, dtype=np.bytes_).reshape(1, 16),
}


def run_string_example(module, client, http: bool) -> None:
    """simple_string: decimal strings in, their sum and difference out as strings (HTTP: INPUT0
    and OUTPUT0 binary, INPUT1 and OUTPUT1 JSON, as the example sends them); then
    simple_identity round trips (HTTP: binary and JSON)."""
    mixed = ({"binary_data": True}, {"binary_data": False}) if http else ({}, {})
    inputs = [module.InferInput("INPUT0", [1, 16], "BYTES"), module.InferInput("INPUT1", [1, 16], "BYTES")]
    inputs[0].set_data_from_numpy(as_bytes(INPUT0), **mixed[0])
    inputs[1].set_data_from_numpy(as_bytes(INPUT1), **mixed[1])
    outputs = [module.InferRequestedOutput("OUTPUT0", **mixed[0]), module.InferRequestedOutput("OUTPUT1", **mixed[1])]
    results = client.infer("simple_string", inputs, outputs=outputs)
    out0, out1 = results.as_numpy("OUTPUT0"), results.as_numpy("OUTPUT1")
    for i in range(16):
        assert int(out0[0][i]) == INPUT0[0][i] + INPUT1[0][i]
        assert int(out1[0][i]) == INPUT0[0][i] - INPUT1[0][i]

    for name, data in IDENTITY_DATA.items():
        for binary in (True, False) if http else (None,):
            kw = {} if binary is None else {"binary_data": binary}
            inp = module.InferInput("INPUT0", list(data.shape), "BYTES")
            inp.set_data_from_numpy(data, **kw)
            got = client.infer(
                "simple_identity", [inp], outputs=[module.InferRequestedOutput("OUTPUT0", **kw)]
            ).as_numpy("OUTPUT0")
            if data.dtype != np.object_:
                got = np.char.encode(got.astype(str))
            elif binary is False:
                # JSON answers strings: the example encodes them back to compare.
                got = np.array([bytes(str(x), encoding="utf-8") for x in got.flatten()], dtype=np.object_)
                got = got.reshape([1, 16])
            assert np.array_equal(data, got), (name, binary, got)


def test_simple_http_string_infer_client(triton):
    run_string_example(httpclient, httpclient.InferenceServerClient(triton.http_url), http=True)


def test_simple_grpc_string_infer_client(triton):
    run_string_example(grpcclient, grpcclient.InferenceServerClient(triton.grpc_url), http=False)


# ---- grpc_client.py and grpc_explicit_*_content_client.py: the raw generated stubs ---------------


@pytest.fixture
def stub(triton):
    channel = grpc.insecure_channel(triton.grpc_url)
    try:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    finally:
        channel.close()


def outputs_of(response, dtype):
    """The example's decoding: each output's raw bytes, in its shape."""
    out = []
    for i, output in enumerate(response.outputs):
        raw = response.raw_output_contents[i]
        values = utils.deserialize_bytes_tensor(raw) if dtype is None else np.frombuffer(raw, dtype=dtype)
        out.append(np.resize(values, list(output.shape)))
    return out


def test_grpc_client_with_the_raw_stubs(stub):
    assert stub.ServerLive(service_pb2.ServerLiveRequest()).live
    assert stub.ServerReady(service_pb2.ServerReadyRequest()).ready
    assert stub.ModelReady(service_pb2.ModelReadyRequest(name="simple", version="")).ready
    assert stub.ServerMetadata(service_pb2.ServerMetadataRequest()).name == "triton"
    meta = stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="simple", version=""))
    assert [i.name for i in meta.inputs] == ["INPUT0", "INPUT1"]
    assert [(o.name, o.datatype, list(o.shape)) for o in meta.outputs] == [
        ("OUTPUT0", "INT32", [-1, 16]),
        ("OUTPUT1", "INT32", [-1, 16]),
    ]
    config = stub.ModelConfig(service_pb2.ModelConfigRequest(name="simple", version=""))
    assert (config.config.name, config.config.max_batch_size) == ("simple", 8)

    request = service_pb2.ModelInferRequest(model_name="simple", model_version="", id="my request id")
    for name in ("INPUT0", "INPUT1"):
        tensor = service_pb2.ModelInferRequest().InferInputTensor(name=name, datatype="INT32", shape=[1, 16])
        request.inputs.extend([tensor])
    for name in ("OUTPUT0", "OUTPUT1"):
        request.outputs.extend([service_pb2.ModelInferRequest().InferRequestedOutputTensor(name=name)])
    request.raw_input_contents.extend([INPUT0.tobytes(), INPUT1.tobytes()])
    response = stub.ModelInfer(request)
    assert (response.model_name, response.id) == ("simple", "my request id")
    out0, out1 = outputs_of(response, np.int32)
    assert_sum_and_difference(out0, out1)


def explicit_request(model, datatype, values0, values1, field):
    request = service_pb2.ModelInferRequest(model_name=model, model_version="")
    for name, values in (("INPUT0", values0), ("INPUT1", values1)):
        tensor = service_pb2.ModelInferRequest().InferInputTensor(name=name, datatype=datatype, shape=[1, 16])
        getattr(tensor.contents, field)[:] = values
        request.inputs.extend([tensor])
    for name in ("OUTPUT0", "OUTPUT1"):
        request.outputs.extend([service_pb2.ModelInferRequest().InferRequestedOutputTensor(name=name)])
    return request


def test_grpc_explicit_byte_content_client(stub):
    request = explicit_request(
        "simple_string", "BYTES", [str(i).encode() for i in range(16)], [b"1"] * 16, "bytes_contents"
    )
    results = outputs_of(stub.ModelInfer(request), None)
    assert len(results) == 2
    for i in range(16):
        assert int(results[0][0][i]) == i + 1
        assert int(results[1][0][i]) == i - 1


def test_grpc_explicit_int_content_client(stub):
    in0, in1 = list(range(16)), [1] * 16
    request = explicit_request("simple", "INT32", in0, in1, "int_contents")
    out0, out1 = outputs_of(stub.ModelInfer(request), np.int32)
    assert_sum_and_difference(out0, out1)

    # contents and raw_input_contents together: refused in Triton's words.
    request.raw_input_contents.extend([np.array(in0[0:8], dtype=np.int32).tobytes()])
    request.inputs[0].contents.int_contents[:] = in0[8:]
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        "contents field must not be specified when using raw_input_contents for 'INPUT0' for model 'simple'"
        in str(err.value)
    )


def test_grpc_explicit_int8_content_client(stub):
    in0, in1 = list(range(16)), [1] * 16
    request = explicit_request("simple_int8", "INT8", in0, in1, "int_contents")
    out0, out1 = outputs_of(stub.ModelInfer(request), np.int8)
    assert out0.dtype == np.int8
    assert_sum_and_difference(out0, out1, np.array([in0], dtype=np.int8), np.array([in1], dtype=np.int8))

    request.model_version = "wrong_specification"
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "failed to get model version from specified version string 'wrong_specification'" in str(err.value)


# ---- simple_http_shm_client.py / simple_grpc_shm_client.py ---------------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_simple_shm_client(triton, protocol):
    module = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(triton.http_url if protocol == "http" else triton.grpc_url)
    # The examples start by clearing any registration, system and CUDA alike.
    client.unregister_system_shared_memory()
    client.unregister_cuda_shared_memory()

    in0, in1 = INPUT0.reshape(16), INPUT1.reshape(16)
    size = in0.nbytes
    tag = f"{protocol}_{os.getpid()}"
    out_handle = shm.create_shared_memory_region("output_data", f"/output_simple_{tag}", size * 2)
    in_handle = shm.create_shared_memory_region("input_data", f"/input_simple_{tag}", size * 2)
    try:
        client.register_system_shared_memory("output_data", f"/output_simple_{tag}", size * 2)
        shm.set_shared_memory_region(in_handle, [in0])
        shm.set_shared_memory_region(in_handle, [in1], offset=size)
        client.register_system_shared_memory("input_data", f"/input_simple_{tag}", size * 2)

        inputs = [module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_shared_memory("input_data", size)
        inputs[1].set_shared_memory("input_data", size, offset=size)
        outputs = [module.InferRequestedOutput(n) for n in ("OUTPUT0", "OUTPUT1")]
        outputs[0].set_shared_memory("output_data", size)
        outputs[1].set_shared_memory("output_data", size, offset=size)
        results = client.infer("simple", inputs, outputs=outputs)

        got = []
        for name, offset in (("OUTPUT0", 0), ("OUTPUT1", size)):
            output = results.get_output(name)
            assert output is not None, name
            if protocol == "http":
                datatype, shape = output["datatype"], output["shape"]
            else:
                datatype, shape = output.datatype, list(output.shape)
            assert (datatype, shape) == ("INT32", [1, 16]), output
            got.append(shm.get_contents_as_numpy(out_handle, utils.triton_to_np_dtype(datatype), shape, offset=offset))
        assert_sum_and_difference(*got)

        status = client.get_system_shared_memory_status()
        names = sorted(r["name"] for r in status) if protocol == "http" else sorted(status.regions)
        assert names == ["input_data", "output_data"], status
        client.unregister_system_shared_memory()
        assert len(shm.mapped_shared_memory_regions()) == 2
    finally:
        shm.destroy_shared_memory_region(in_handle)
        shm.destroy_shared_memory_region(out_handle)
    assert len(shm.mapped_shared_memory_regions()) == 0


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_one_input_by_region_beside_one_sent_inline(triton, protocol):
    """tritonclient sends gRPC raw contents only for the inputs not in shared memory."""
    module = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(triton.http_url if protocol == "http" else triton.grpc_url)
    key = f"/mixed_{protocol}_{os.getpid()}"
    handle = shm.create_shared_memory_region("mixed_in", key, INPUT0.nbytes)
    try:
        shm.set_shared_memory_region(handle, [INPUT0])
        client.register_system_shared_memory("mixed_in", key, INPUT0.nbytes)
        by_region = module.InferInput("INPUT0", [1, 16], "INT32")
        by_region.set_shared_memory("mixed_in", INPUT0.nbytes)
        inline = module.InferInput("INPUT1", [1, 16], "INT32")
        inline.set_data_from_numpy(INPUT1)
        results = client.infer("simple", [by_region, inline])
        assert_sum_and_difference(results.as_numpy("OUTPUT0"), results.as_numpy("OUTPUT1"))
        client.unregister_system_shared_memory("mixed_in")
    finally:
        shm.destroy_shared_memory_region(handle)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_infer_from_an_unregistered_region_is_not_found(triton, protocol):
    module = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(triton.http_url if protocol == "http" else triton.grpc_url)
    inp = module.InferInput("INPUT0", [1, 16], "INT32")
    inp.set_shared_memory("never_registered", 64)
    other = module.InferInput("INPUT1", [1, 16], "INT32")
    other.set_data_from_numpy(INPUT1)
    with pytest.raises(InferenceServerException) as err:
        client.infer("simple", [inp, other])
    assert err.value.status() == ("404" if protocol == "http" else "StatusCode.NOT_FOUND"), err.value
    assert err.value.message() == "Unable to find shared memory region: 'never_registered'"


# ---- simple_http_model_control.py / simple_grpc_model_control.py ---------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_simple_model_control(control, protocol):
    module = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(control.http_url if protocol == "http" else control.grpc_url)

    index = client.get_model_repository_index()
    names = [m["name"] for m in index] if protocol == "http" else [m.name for m in index.models]
    assert sorted(names) == ["simple", "simple_identity", "simple_int8", "simple_string"], index

    client.load_model("simple")
    assert client.is_model_ready("simple")

    # An override that is not JSON: Triton's words.
    with pytest.raises(InferenceServerException) as err:
        client.load_model("simple", config='"parameters": {"config": {{"max_batch_size": "16"}}}')
    assert "failed to load" in err.value.message(), err.value.message()

    client.load_model("simple", config='{"max_batch_size":"16"}')
    config = client.get_model_config("simple")
    max_batch_size = config["max_batch_size"] if protocol == "http" else config.config.max_batch_size
    assert max_batch_size == 16

    client.unload_model("simple")
    assert not client.is_model_ready("simple")

    if protocol == "grpc":
        # An override file whose name no file system takes: INTERNAL, Triton's words.
        with pytest.raises(InferenceServerException) as err:
            client.load_model("simple", config="{}", files={"file:" + "A" * 256: b"a"})
        assert err.value.status() == "StatusCode.INTERNAL", err.value
        assert "failed to poll from model repository" in err.value.message(), err.value.message()
        assert client.is_server_live()

    with pytest.raises(InferenceServerException) as err:
        client.load_model("wrong_model_name")
    assert "failed to load" in err.value.message(), err.value.message()
