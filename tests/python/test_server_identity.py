"""The name server metadata reports (issue 15 item 4): `FERROSERVE_SERVER_NAME=triton` for the
programs that check `server_metadata.name == "triton"`, seen by unmodified tritonclient over both
transports; the session server keeps the default `ferroserve`.
"""

from __future__ import annotations

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from conftest import _stop, read_log, start_server


@pytest.fixture(scope="module")
def triton_named(tmp_path_factory):
    log_path = tmp_path_factory.mktemp("identity") / "server.log"
    srv = start_server(log_path, {"FERROSERVE_SERVER_NAME": "triton"})
    try:
        yield srv
    finally:
        _stop(srv.process)
        assert "panicked" not in read_log(log_path)


def test_default_name_is_ferroserve(server):
    client = httpclient.InferenceServerClient(url=server.http_url)
    try:
        assert client.get_server_metadata()["name"] == "ferroserve"
    finally:
        client.close()


def test_configured_name_over_http(triton_named):
    client = httpclient.InferenceServerClient(url=triton_named.http_url)
    try:
        assert client.get_server_metadata()["name"] == "triton"
    finally:
        client.close()


def test_configured_name_over_grpc(triton_named):
    client = grpcclient.InferenceServerClient(url=triton_named.grpc_url)
    try:
        meta = client.get_server_metadata()
        assert meta.name == "triton"
        assert meta.version
    finally:
        client.close()
