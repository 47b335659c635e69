"""A Kubernetes-style gRPC probe (`grpc.health.v1.Health`, grpcio's `grpcio-health-checking`
client) against the binary: SERVING when ready, NOT_SERVING from SIGTERM on (through the drain
delay, while requests are still served), a Watch stream seeing the flip and ending when the
listener closes, and the process exiting 0.

The kubelet's `grpc:` probe calls Check with the configured service name ("" by default) and
passes only on SERVING.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as grpcclient
from conftest import start_server
from grpc_health.v1 import health_pb2, health_pb2_grpc

DRAIN_DELAY_S = 3.0
TIMEOUT_S = 5.0
FLIP_WITHIN_S = 1.0  # the drain flip is pushed at once; this only bounds a loaded machine
EXIT_SLACK_S = 5.0

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def check(target: str, service: str = "") -> int:
    with grpc.insecure_channel(target) as ch:
        req = health_pb2.HealthCheckRequest(service=service)
        return health_pb2_grpc.HealthStub(ch).Check(req, timeout=2).status


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "server.log"


@pytest.mark.parametrize("service", ["", "inference.GRPCInferenceService", "mlp"])
def test_probe_reads_serving_when_ready(server, service):
    assert check(server.grpc_url, service) == SERVING


def test_probe_of_an_unknown_service_is_not_found(server):
    with pytest.raises(grpc.RpcError) as err:
        check(server.grpc_url, "no.such.Service")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_probe_flips_to_not_serving_on_sigterm(log_path: Path):
    srv = start_server(
        log_path,
        {
            "FERROSERVE_SHUTDOWN__DRAIN_DELAY": str(DRAIN_DELAY_S),
            "FERROSERVE_SHUTDOWN__TIMEOUT": str(TIMEOUT_S),
        },
    )
    watched: queue.Queue = queue.Queue()
    channel = grpc.insecure_channel(srv.grpc_url)

    def watch() -> None:
        stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        try:
            for msg in stream:
                watched.put(msg.status)
            watched.put("end")
        except grpc.RpcError as err:
            watched.put(("error", err.code()))

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        assert check(srv.grpc_url) == SERVING
        watcher.start()
        assert watched.get(timeout=10) == SERVING

        t_signal = time.monotonic()
        srv.process.send_signal(signal.SIGTERM)
        while check(srv.grpc_url) != NOT_SERVING:
            assert time.monotonic() - t_signal < FLIP_WITHIN_S, "Check still SERVING after SIGTERM"
            time.sleep(0.01)
        assert watched.get(timeout=FLIP_WITHIN_S) == NOT_SERVING
        # Still serving through the drain: the probe only takes the pod out of rotation.
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        assert client.is_server_live()
        assert not client.is_server_ready()
        client.close()

        # The close ends the Watch (no other status first), and the process exits 0.
        end = watched.get(timeout=DRAIN_DELAY_S + TIMEOUT_S)
        assert end != SERVING and end != NOT_SERVING, f"a status after NOT_SERVING: {end}"
        code = srv.process.wait(timeout=DRAIN_DELAY_S + TIMEOUT_S + EXIT_SLACK_S)
        assert code == 0, srv.log()
        assert "panicked" not in srv.log()
    finally:
        channel.close()
        if srv.process.poll() is None:
            srv.process.kill()
            srv.process.wait()
