"""Compression with the unmodified Triton clients (issue 15 item 1).

tritonclient's HTTP options `request_compression_algorithm` (Content-Encoding gzip / deflate on
the request body) and `response_compression_algorithm` (Accept-Encoding), and gRPC's
`compression_algorithm` (grpc-encoding), over the sync, async (callback / gevent) and asyncio
clients. Every answer is the exact reference output of the mlp model.
"""

from __future__ import annotations

import asyncio
import queue
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio

ALGORITHMS = ("gzip", "deflate")
FLOAT_ATOL = 1e-5


@pytest.fixture(scope="module")
def mlp(references):
    ref = references["mlp"]
    x = np.asarray(ref["inputs"]["input"]["data"], dtype=np.float32).reshape(ref["inputs"]["input"]["shape"])
    want = np.asarray(ref["outputs"]["output"]["data"], dtype=np.float32).reshape(ref["outputs"]["output"]["shape"])
    return x, want


def http_inputs(x: np.ndarray, binary: bool) -> list:
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    return [inp]


def grpc_inputs(x: np.ndarray) -> list:
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return [inp]


def assert_reference(result, want: np.ndarray) -> None:
    got = result.as_numpy("output")
    assert got is not None, "no output tensor in the answer"
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=FLOAT_ATOL, rtol=0)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_http_infer_with_compressed_request_and_response(server, mlp, algorithm, binary):
    x, want = mlp
    client = httpclient.InferenceServerClient(url=server.http_url)
    try:
        result = client.infer(
            "mlp",
            http_inputs(x, binary),
            outputs=[httpclient.InferRequestedOutput("output", binary_data=binary)],
            request_compression_algorithm=algorithm,
            response_compression_algorithm=algorithm,
        )
        assert_reference(result, want)
    finally:
        client.close()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_http_async_infer_with_compression(server, mlp, algorithm):
    x, want = mlp
    client = httpclient.InferenceServerClient(url=server.http_url, concurrency=2)
    try:
        pending = client.async_infer(
            "mlp",
            http_inputs(x, True),
            request_compression_algorithm=algorithm,
            response_compression_algorithm=algorithm,
        )
        assert_reference(pending.get_result(timeout=30), want)
    finally:
        client.close()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_http_asyncio_infer_with_compression(server, mlp, algorithm):
    x, want = mlp

    async def run():
        client = httpaio.InferenceServerClient(url=server.http_url)
        try:
            return await client.infer(
                "mlp",
                http_inputs(x, True),
                request_compression_algorithm=algorithm,
                response_compression_algorithm=algorithm,
            )
        finally:
            await client.close()

    assert_reference(asyncio.run(run()), want)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_http_answer_is_compressed_when_accepted(server, mlp, algorithm):
    """tritonclient decodes whatever comes back; this checks the server did compress."""
    x, _ = mlp
    body = b'{"inputs":[{"name":"input","datatype":"FP32","shape":[8,64],"data":%s}]}' % (
        str(x.flatten().tolist()).encode()
    )
    req = urllib.request.Request(
        f"http://{server.http_url}/v2/models/mlp/infer",
        data=body,
        headers={"Content-Type": "application/json", "Accept-Encoding": algorithm},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Encoding"] == algorithm


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_grpc_infer_with_compression(server, mlp, algorithm):
    x, want = mlp
    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        result = client.infer("mlp", grpc_inputs(x), compression_algorithm=algorithm)
        assert_reference(result, want)
    finally:
        client.close()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_grpc_async_infer_with_compression(server, mlp, algorithm):
    x, want = mlp
    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    done: queue.Queue = queue.Queue()
    try:
        client.async_infer(
            "mlp",
            grpc_inputs(x),
            callback=lambda result, error: done.put((result, error)),
            compression_algorithm=algorithm,
        )
        result, error = done.get(timeout=30)
        assert error is None, error
        assert_reference(result, want)
    finally:
        client.close()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_grpc_asyncio_infer_with_compression(server, mlp, algorithm):
    x, want = mlp

    async def run():
        client = grpcaio.InferenceServerClient(url=server.grpc_url)
        try:
            return await client.infer("mlp", grpc_inputs(x), compression_algorithm=algorithm)
        finally:
            await client.close()

    assert_reference(asyncio.run(run()), want)
