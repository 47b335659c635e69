#!/usr/bin/env python3
"""Model sources, measured (BENCHMARKS.md "Model sources"): a repository on SeaweedFS (`weed mini`).

1. Time from upload to the first answer from the new version: a new version of `mlp` is
   uploaded (its model, then its `ready` marker); the clock runs from the marker's PUT until an
   unpinned request is answered by that version. Repeated --repeats times; with a poll period P
   the expectation is about P/2 (the poll's phase) + download + load + warm-up.
2. The cost of a poll of an unchanged repository of --models models (three objects each):
   the server's `ferroserve_model_source_list_duration_seconds` (one LIST) over the polls, and
   the server process's CPU seconds per poll while nothing changes.

    python3 benches/sources.py --ferroserve target/release/ferroserve --weed .venv/bin/weed

3. With --mlflow-python (an interpreter with mlflow, e.g. .venv-mlflow/bin/python): time from
   an alias move (`champion` 1 -> 2, through MLflow's client) to the first answer from version 2,
   against a real `mlflow server` (SQLite, --serve-artifacts), --repeats moves back and forth.

Uploads go through SeaweedFS's filer (the bucket is the filer's /buckets/<name>), so this needs
nothing but the standard library. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "models" / "mlp" / "1" / "model.onnx"
KEY, SECRET = "benchKEYID0001", "bench-secret-0123456789abcdef"
ADDR = re.compile(r'http_addr="?(\d+\.\d+\.\d+\.\d+:\d+)"?.*metrics_addr="?(\d+\.\d+\.\d+\.\d+:\d+)"?')


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_weed(weed: str, work: Path) -> tuple[subprocess.Popen, int, int]:
    p = free_ports(12)
    (work / "s3.json").write_text(json.dumps({"identities": [{"name": "bench", "credentials": [
        {"accessKey": KEY, "secretKey": SECRET}], "actions": ["Admin", "Read", "Write", "List"]}]}))
    names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
             "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc",
             "s3.port.iceberg", "s3.port.lance"]
    cmd = [weed, "mini", f"-dir={work / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           "-master.telemetry=false", "-admin.ui=false", "-webdav=false", "-master.volumeSizeLimitMB=64",
           "-volume.max=8", "-bucket=models", f"-s3.config={work / 's3.json'}"]
    cmd += [f"-{n}={port}" for n, port in zip(names, p)]
    proc = subprocess.Popen(cmd, stdout=open(work / "weed.log", "wb"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    filer = p[4]
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{filer}/buckets/", timeout=2)
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, (work / "weed.log").read_text()
            time.sleep(0.1)
    return proc, filer, p[6]


def put(filer: int, key: str, data: bytes) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{filer}/buckets/models/{key}", data=data, method="PUT")
    urllib.request.urlopen(req, timeout=30).read()


def upload_model(filer: int, name: str, version: int, model: bytes, ready: bool = True) -> None:
    put(filer, f"{name}/{version}/model.onnx", model)
    if ready:
        put(filer, f"{name}/{version}/ready", b"")


def variant(model: bytes, i: int) -> bytes:
    # Same graph, another ETag: ModelProto.doc_string (field 6) appended; the last one wins.
    return model + bytes([0x32, 0x01, 0x30 + (i % 10)])


def start_server(binary: str, work: Path, s3_port: int, poll: float) -> tuple[subprocess.Popen, str, str]:
    env = dict(os.environ, AWS_ENDPOINT_URL=f"http://127.0.0.1:{s3_port}", AWS_ACCESS_KEY_ID=KEY,
               AWS_SECRET_ACCESS_KEY=SECRET, AWS_REGION="us-east-1", NO_COLOR="1",
               FERROSERVE_ADMIN_TOKEN="bench-admin-token-0123456789")
    cmd = [binary, "serve", "--model-repository", "s3://models", "--model-cache-dir", str(work / "cache"),
           "--model-control-mode", "poll", "--repository-poll-secs", str(poll), "--host", "127.0.0.1",
           "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]
    log = work / "server.log"
    proc = subprocess.Popen(cmd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while True:
        m = ADDR.search(re.sub(r"\x1b\[[0-9;]*m", "", log.read_text(errors="replace")))
        if m:
            http, metrics = m.group(1), m.group(2)
            try:
                if urllib.request.urlopen(f"http://{http}/v2/health/ready", timeout=2).status == 200:
                    return proc, http, metrics
            except OSError:
                pass
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


def answered_version(http: str) -> str:
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64],
                                   "data": [0.5] * 64}]}).encode()
    req = urllib.request.Request(f"http://{http}/v2/models/mlp/infer", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["model_version"]


def metric(metrics: str, name: str) -> float:
    text = urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


MLFLOW_CLIENT = r"""
import sys, time, onnx, mlflow
from mlflow import MlflowClient
mlflow.set_tracking_uri(sys.argv[1])
client = MlflowClient()
if sys.argv[2] == "setup":
    for _ in range(2):
        # Loaded each time: log_model turns the proto's weights into external data in place.
        m = onnx.load(sys.argv[3])
        with mlflow.start_run():
            mlflow.onnx.log_model(m, name="model", registered_model_name="bench")
    client.set_registered_model_alias("bench", "champion", "1")
else:
    client.set_registered_model_alias("bench", "champion", sys.argv[2])
    print(time.time())
"""


def bench_mlflow(args, work: Path) -> dict:
    port = free_ports(1)[0]
    url = f"http://127.0.0.1:{port}"
    mlf = subprocess.Popen([args.mlflow_python, "-m", "mlflow", "server", "--backend-store-uri",
                            f"sqlite:///{work}/mlflow.sqlite", "--artifacts-destination", str(work / "art"),
                            "--serve-artifacts", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                           cwd=work, stdout=open(work / "mlflow.log", "wb"), stderr=subprocess.STDOUT)
    server = None
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                assert mlf.poll() is None and time.monotonic() < deadline
                time.sleep(0.25)
        subprocess.run([args.mlflow_python, "-c", MLFLOW_CLIENT, url, "setup", str(MLP)], check=True,
                       capture_output=True)
        repo = work / "mlflow-repo" / "mlp"
        repo.mkdir(parents=True)
        (repo / "config.toml").write_text(f'max_batch_size = 64\n[source]\nmlflow = "{url}"\nregistered_model = "bench"\n')
        env = dict(os.environ, NO_COLOR="1", FERROSERVE_ADMIN_TOKEN="bench-admin-token-0123456789")
        log = work / "mlflow-server.log"
        server = subprocess.Popen([args.ferroserve, "serve", "--model-repository", str(repo.parent),
                                   "--model-cache-dir", str(work / "mlflow-cache"), "--model-control-mode", "poll",
                                   "--repository-poll-secs", str(args.poll), "--host", "127.0.0.1",
                                   "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"],
                                  env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
        while not (m := ADDR.search(re.sub(r"\x1b\[[0-9;]*m", "", log.read_text(errors="replace")))):
            assert server.poll() is None, log.read_text()
            time.sleep(0.05)
        http = m.group(1)
        while True:
            try:
                if answered_version(http) == "1":
                    break
            except OSError:
                time.sleep(0.1)
        moves = []
        for r in range(args.repeats):
            target = "2" if r % 2 == 0 else "1"
            out = subprocess.run([args.mlflow_python, "-c", MLFLOW_CLIENT, url, target], check=True,
                                 capture_output=True, text=True)
            moved_at = float(out.stdout.strip().splitlines()[-1])
            while answered_version(http) != target:
                assert time.time() - moved_at < 120, "the alias move never served"
                time.sleep(0.005)
            moves.append(time.time() - moved_at)
        return {"median": round(statistics.median(moves), 3), "min": round(min(moves), 3),
                "max": round(max(moves), 3)}
    finally:
        if server:
            server.terminate()
            server.wait(timeout=30)
        mlf.terminate()
        mlf.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ferroserve", default=str(ROOT / "target" / "release" / "ferroserve"))
    ap.add_argument("--weed", default=str(ROOT / ".venv" / "bin" / "weed"))
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--poll", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--idle-secs", type=float, default=20.0)
    ap.add_argument("--mlflow-python", default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ferroserve-sources-bench-"))
    weed, filer, s3 = start_weed(args.weed, work)
    server = None
    try:
        model = MLP.read_bytes()
        config = b"max_batch_size = 64\nversion_policy = { latest = 1 }\n"
        for i in range(args.models - 1):
            put(filer, f"m{i:03}/config.toml", config)
            upload_model(filer, f"m{i:03}", 1, model)
        put(filer, "mlp/config.toml", config)
        upload_model(filer, "mlp", 1, model)
        t0 = time.monotonic()
        server, http, metrics = start_server(args.ferroserve, work, s3, args.poll)
        start_s = time.monotonic() - t0
        first = []
        for r in range(args.repeats):
            v = r + 2
            upload_model(filer, "mlp", v, variant(model, v), ready=False)
            t = time.monotonic()
            put(filer, f"mlp/{v}/ready", b"")
            while answered_version(http) != str(v):
                assert time.monotonic() - t < 120, f"version {v} never answered"
                time.sleep(0.005)
            first.append(time.monotonic() - t)
        lists, syncs = [], []
        c0, s0 = cpu_seconds(server.pid), metric(metrics, "ferroserve_model_source_last_sync_timestamp_seconds")
        end = time.monotonic() + args.idle_secs
        while time.monotonic() < end:
            lists.append(metric(metrics, "ferroserve_model_source_list_duration_seconds"))
            syncs.append(metric(metrics, "ferroserve_model_source_last_sync_timestamp_seconds"))
            time.sleep(args.poll)
        polls = max(1, round((syncs[-1] - s0) / args.poll))
        cpu = cpu_seconds(server.pid) - c0
        alias = bench_mlflow(args, work) if args.mlflow_python else None
        print(json.dumps({
            "alias_move_to_first_answer_s": alias,
            "models": args.models, "objects": 3 * args.models, "poll_secs": args.poll,
            "start_to_ready_s": round(start_s, 3),
            "upload_to_first_answer_s": {"median": round(statistics.median(first), 3),
                                         "min": round(min(first), 3), "max": round(max(first), 3)},
            "list_duration_ms": {"median": round(1000 * statistics.median(lists), 2),
                                 "max": round(1000 * max(lists), 2)},
            "idle_polls": polls, "server_cpu_ms_per_idle_poll": round(1000 * cpu / polls, 2),
        }, indent=1))
    finally:
        if server:
            server.terminate()
            server.wait(timeout=30)
        weed.terminate()
        weed.wait(timeout=30)


if __name__ == "__main__":
    main()
