"""Server reflection seen from grpcio's own reflection client (`grpcio-reflection`), with no proto
files on the client side: the services are listed, and ServerLive, ModelMetadata and ModelInfer
are called with message classes built from the descriptors the server sent (what grpcurl does;
grpcurl itself is not packaged in Debian bookworm).
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

SERVICE = "inference.GRPCInferenceService"
OURS = {
    SERVICE,
    "ferroserve.admin.v1.TrafficAdmin",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}


@pytest.fixture()
def channel(server):
    with grpc.insecure_channel(server.grpc_url) as ch:
        yield ch


@pytest.fixture()
def pool(channel) -> descriptor_pool.DescriptorPool:
    """A descriptor pool that asks the server for every file it needs."""
    return descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))


def call(channel, pool, method: str, request: dict):
    """Calls SERVICE/method with a request built from the reflected descriptors."""
    desc = pool.FindServiceByName(SERVICE).FindMethodByName(method)
    req_cls = message_factory.GetMessageClass(desc.input_type)
    resp_cls = message_factory.GetMessageClass(desc.output_type)
    stub = channel.unary_unary(
        f"/{SERVICE}/{method}",
        request_serializer=req_cls.SerializeToString,
        response_deserializer=resp_cls.FromString,
    )
    return stub(req_cls(**request), timeout=10)


def test_reflection_lists_our_services(channel):
    services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert services == OURS


def test_reflection_describes_the_inference_service_methods(pool):
    methods = {m.name for m in pool.FindServiceByName(SERVICE).methods}
    assert {"ServerLive", "ServerReady", "ModelMetadata", "ModelInfer"} <= methods


def test_server_live_called_through_reflection_answers_live(channel, pool):
    assert call(channel, pool, "ServerLive", {}).live is True


def test_model_metadata_called_through_reflection_names_the_model(channel, pool):
    meta = call(channel, pool, "ModelMetadata", {"name": "mlp"})
    assert meta.name == "mlp"
    assert [i.name for i in meta.inputs] == ["input"]


def test_unknown_model_through_reflection_is_not_found(channel, pool):
    with pytest.raises(grpc.RpcError) as err:
        call(channel, pool, "ModelMetadata", {"name": "no_such_model"})
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_model_infer_called_through_reflection_matches_the_reference(channel, pool, references):
    ref = references["mlp"]
    (name, spec), = ref["inputs"].items()
    data = np.asarray(spec["data"], dtype=np.float32).reshape(spec["shape"])
    req = {
        "model_name": "mlp",
        "inputs": [{"name": name, "datatype": "FP32", "shape": list(data.shape)}],
        "raw_input_contents": [data.tobytes()],
    }
    resp = call(channel, pool, "ModelInfer", req)
    (out_name, out_spec), = ref["outputs"].items()
    assert [o.name for o in resp.outputs] == [out_name]
    got = np.frombuffer(resp.raw_output_contents[0], dtype=np.float32)
    want = np.asarray(out_spec["data"], dtype=np.float32).reshape(-1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
