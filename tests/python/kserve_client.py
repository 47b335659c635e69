"""The kserve SDK's v2 clients against a running server, in a process of their own.

kserve's generated protobuf module and tritonclient's both register `inference.*` messages in
protobuf's default descriptor pool, so the two cannot be imported into one interpreter ("duplicate
symbol 'inference.ServerLiveRequest'"). tests/python/test_kserve_sdk.py runs this script and
checks what it prints: one JSON object, each observation by name (a failed call as
{"error": "..."}).

usage: kserve_client.py HTTP_ADDR GRPC_ADDR REFERENCE_JSON
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.rest.v2_datamodels import (
    ModelMetadataResponse,
    ModelReadyResponse,
    ServerMetadataResponse,
)


def request(x: np.ndarray) -> InferRequest:
    inp = InferInput(name="input", shape=list(x.shape), datatype="FP32")
    inp.set_data_from_numpy(x, binary_data=False)
    return InferRequest(model_name="mlp", infer_inputs=[inp])


def output(response) -> list:
    (out,) = [o for o in response.outputs if o.name == "output"]
    return out.as_numpy().astype(np.float64).flatten().tolist()


async def observe(http: str, grpc_addr: str, x: np.ndarray) -> dict:
    base = f"http://{http}"
    seen: dict = {}

    async def note(name: str, make):
        try:
            seen[name] = await make()
        except Exception as e:  # noqa: BLE001 - the test reads the failure
            seen[name] = {"error": f"{type(e).__name__}: {e}"}

    def get(path: str) -> dict:
        with urllib.request.urlopen(f"{base}{path}", timeout=10) as resp:
            return json.loads(resp.read())

    async def parsed(model, path):
        return model.model_validate(get(path)).model_dump()

    rest = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
    try:
        await note("rest_live", lambda: rest.is_server_live(base))
        await note("rest_ready", lambda: rest.is_server_ready(base))
        await note("rest_model_ready", lambda: rest.is_model_ready(base, "mlp"))
        await note("rest_unknown_model_ready", lambda: rest.is_model_ready(base, "no-such-model"))
        await note("rest_infer", lambda: _then(rest.infer(base, request(x), model_name="mlp"), output))
    finally:
        await rest.close()
    await note("rest_server_metadata", lambda: parsed(ServerMetadataResponse, "/v2"))
    await note("rest_model_metadata", lambda: parsed(ModelMetadataResponse, "/v2/models/mlp"))
    await note("rest_model_ready_body", lambda: parsed(ModelReadyResponse, "/v2/models/mlp/ready"))

    client = InferenceGRPCClient(url=grpc_addr, retries=0, timeout=30)
    try:
        await note("grpc_live", client.is_server_live)
        await note("grpc_ready", client.is_server_ready)
        await note("grpc_model_ready", lambda: client.is_model_ready("mlp"))
        await note("grpc_infer", lambda: _then(client.infer(request(x)), output))
        # The SDK has no metadata call; its generated stub does.
        await note(
            "grpc_model_metadata",
            lambda: _then(
                client._client_stub.ModelMetadata(pb.ModelMetadataRequest(name="mlp"), timeout=30),
                lambda m: {
                    "name": m.name,
                    "inputs": [[t.name, t.datatype, list(t.shape)] for t in m.inputs],
                    "outputs": [[t.name, t.datatype, list(t.shape)] for t in m.outputs],
                },
            ),
        )
    finally:
        await client.close()
    return seen


async def _then(awaitable, f):
    return f(await awaitable)


def main() -> None:
    http, grpc_addr, reference = sys.argv[1:4]
    with open(reference, encoding="utf-8") as f:
        ref = json.load(f)
    x = np.asarray(ref["inputs"]["input"]["data"], dtype=np.float32).reshape(ref["inputs"]["input"]["shape"])
    print(json.dumps(asyncio.run(observe(http, grpc_addr, x))))


if __name__ == "__main__":
    main()
