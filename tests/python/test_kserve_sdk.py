"""ferroserve against the kserve SDK's v2 clients (issue 15 item 3): health and readiness parse
the KServe v2 bodies (`{"live": true}`, `{"ready": true}`), metadata and model readiness have the
shape of KServe's own data models, and inference over REST and gRPC answers the reference output.

The SDK runs in a subprocess (tests/python/kserve_client.py says why) that prints what it saw.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA_DIR

HERE = Path(__file__).resolve().parent
FLOAT_ATOL = 1e-5


@pytest.fixture(scope="module")
def seen(server) -> dict:
    out = subprocess.run(
        [sys.executable, str(HERE / "kserve_client.py"), server.http_url, server.grpc_url, str(DATA_DIR / "mlp.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, f"kserve_client.py failed:\n{out.stderr}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def assert_reference(values, references) -> None:
    assert not isinstance(values, dict), values
    want = np.asarray(references["mlp"]["outputs"]["output"]["data"], dtype=np.float64).flatten()
    np.testing.assert_allclose(np.asarray(values), want, atol=FLOAT_ATOL, rtol=0)


def test_rest_is_server_live(seen):
    assert seen["rest_live"] is True


def test_rest_is_server_ready(seen):
    assert seen["rest_ready"] is True


def test_rest_is_model_ready(seen):
    assert seen["rest_model_ready"] is True


def test_rest_unknown_model_is_not_ready(seen):
    assert seen["rest_unknown_model_ready"] is False


def test_rest_model_ready_body_is_kserve_model_ready_response(seen):
    assert seen["rest_model_ready_body"] == {"name": "mlp", "ready": True}


def test_rest_server_metadata_parses_as_kserve_model(seen):
    meta = seen["rest_server_metadata"]
    assert meta.get("name") == "ferroserve", meta
    assert meta["version"]


def test_rest_model_metadata_parses_as_kserve_model(seen):
    meta = seen["rest_model_metadata"]
    assert meta.get("name") == "mlp", meta
    assert [(t["name"], t["datatype"], t["shape"][-1]) for t in meta["inputs"]] == [("input", "FP32", 64)]
    assert [(t["name"], t["datatype"]) for t in meta["outputs"]] == [("output", "FP32")]


def test_rest_infer(seen, references):
    assert_reference(seen["rest_infer"], references)


def test_grpc_is_server_live_and_ready(seen):
    assert (seen["grpc_live"], seen["grpc_ready"]) == (True, True)


def test_grpc_is_model_ready(seen):
    assert seen["grpc_model_ready"] is True


def test_grpc_model_metadata(seen):
    meta = seen["grpc_model_metadata"]
    assert meta.get("name") == "mlp", meta
    assert [(n, d) for n, d, _ in meta["inputs"]] == [("input", "FP32")]
    assert [(n, d) for n, d, _ in meta["outputs"]] == [("output", "FP32")]


def test_grpc_infer(seen, references):
    assert_reference(seen["grpc_infer"], references)
