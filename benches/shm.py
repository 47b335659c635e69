"""A 64 MiB FP32 tensor through system shared memory vs binary HTTP vs gRPC (issue 15).

    python benches/shm.py --bin target/release/ferroserve [--iters 20] [--mib 64] [--out BENCHMARKS.md]

An identity model (made with the onnx package, FP32 [1, N]) served by a separate ferroserve
process with allow_shared_memory; the same tensor goes in and comes back out, timed per request
with tritonclient (the Python client Triton users have), after two warm-up requests:
- shm: input and output by region (`tritonclient.utils.shared_memory`), no tensor bytes on the
  socket; the result is read from the output region (counted);
- HTTP: the binary tensor extension both ways (`binary_data=True`);
- gRPC: `raw_input_contents` / `raw_output_contents`.
Writes its section of BENCHMARKS.md (benches/run.py keeps it) and prints the table.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benches"))
from run import SHM_HEADING, splice_section  # noqa: E402

ADDR = re.compile(r'\b(http|grpc)_addr="?(\d{1,3}(?:\.\d{1,3}){3}:\d+)"?')


def write_identity(repo: Path, n: int) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
        "identity",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, [1, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    (repo / "identity" / "1").mkdir(parents=True)
    onnx.save(model, str(repo / "identity" / "1" / "model.onnx"))
    (repo / "identity" / "config.toml").write_text('backend = "tract"\nmax_batch_size = 0\n')


def start(binary: str, repo: Path, log: Path, limit: int) -> tuple[subprocess.Popen, dict]:
    env = dict(os.environ, FERROSERVE_ALLOW_SHARED_MEMORY="true",
               FERROSERVE_ALLOW_UNAUTHENTICATED_ADMIN="true",
               FERROSERVE_MAX_REQUEST_BYTES=str(limit), FERROSERVE_MAX_INFLIGHT_BYTES=str(4 * limit),
               NO_COLOR="1")
    env.pop("FERROSERVE_ADMIN_TOKEN", None)
    cmd = [binary, "serve", "--model-repository", str(repo), "--host", "127.0.0.1",
           "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]
    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    addrs: dict = {}
    while time.monotonic() < deadline and len(addrs) < 2:
        if proc.poll() is not None:
            sys.exit(f"ferroserve exited:\n{log.read_text()}")
        addrs = dict(ADDR.findall(log.read_text(errors="replace")))
        time.sleep(0.05)
    client = httpclient.InferenceServerClient(addrs["http"])
    while time.monotonic() < deadline:
        try:
            if client.is_model_ready("identity"):
                return proc, addrs
        except Exception:
            pass
        time.sleep(0.1)
    sys.exit(f"ferroserve did not get ready:\n{log.read_text()}")


def timed(fn, iters: int) -> list[float]:
    for _ in range(2):
        fn()
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "ferroserve"))
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--note", default="", help="a line said above the table (build, machine)")
    args = ap.parse_args()

    n = args.mib * 1024 * 1024 // 4
    size = n * 4
    data = np.random.default_rng(0).random((1, n), dtype=np.float32)
    work = Path(tempfile.mkdtemp(prefix="ferroserve-shm-bench-"))
    write_identity(work / "repo", n)
    proc, addrs = start(args.bin, work / "repo", work / "server.log", 2 * size + (1 << 20))
    rows = []
    try:
        http = httpclient.InferenceServerClient(addrs["http"], network_timeout=600, connection_timeout=600)
        grpc = grpcclient.InferenceServerClient(addrs["grpc"])

        # Shared memory: both tensors by region.
        key_in, key_out = f"/ferroserve_bench_in_{os.getpid()}", f"/ferroserve_bench_out_{os.getpid()}"
        h_in = shm.create_shared_memory_region("bench_in", key_in, size)
        h_out = shm.create_shared_memory_region("bench_out", key_out, size)
        try:
            http.unregister_system_shared_memory()
            http.register_system_shared_memory("bench_in", key_in, size)
            http.register_system_shared_memory("bench_out", key_out, size)

            def via_shm(client, module):
                def run():
                    shm.set_shared_memory_region(h_in, [data])
                    i = module.InferInput("INPUT0", [1, n], "FP32")
                    i.set_shared_memory("bench_in", size)
                    o = module.InferRequestedOutput("OUTPUT0")
                    o.set_shared_memory("bench_out", size)
                    client.infer("identity", [i], outputs=[o])
                    got = shm.get_contents_as_numpy(h_out, np.float32, [1, n])
                    assert got[0, -1] == data[0, -1]
                return run

            rows.append(("system shared memory, HTTP control", timed(via_shm(http, httpclient), args.iters)))
            rows.append(("system shared memory, gRPC control", timed(via_shm(grpc, grpcclient), args.iters)))
            http.unregister_system_shared_memory()
        finally:
            shm.destroy_shared_memory_region(h_in)
            shm.destroy_shared_memory_region(h_out)

        def via_http():
            i = httpclient.InferInput("INPUT0", [1, n], "FP32")
            i.set_data_from_numpy(data, binary_data=True)
            o = httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)
            r = http.infer("identity", [i], outputs=[o])
            assert r.as_numpy("OUTPUT0")[0, -1] == data[0, -1]

        def via_grpc():
            i = grpcclient.InferInput("INPUT0", [1, n], "FP32")
            i.set_data_from_numpy(data)
            r = grpc.infer("identity", [i])
            assert r.as_numpy("OUTPUT0")[0, -1] == data[0, -1]

        rows.append(("binary HTTP", timed(via_http, args.iters)))
        rows.append(("gRPC raw contents", timed(via_grpc, args.iters)))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)

    lines = [f"{SHM_HEADING} vs binary HTTP vs gRPC: a {args.mib} MiB FP32 tensor in and out (issue 15)\n",
             "`python benches/shm.py --bin BINARY` (tritonclient 2.48, one client, sequential requests, "
             f"{args.iters} timed after 2 warm-ups; an identity model, the {args.mib} MiB tensor sent and "
             "received; shm rows include writing the input into its region and reading the output back).",
             ""]
    if args.note:
        lines += [args.note, ""]
    lines += ["| path | p50 ms | p90 ms | min ms | GiB/s each way (p50) |", "|---|---:|---:|---:|---:|"]
    for name, t in rows:
        t = sorted(t)
        p50, p90 = statistics.median(t), t[int(0.9 * (len(t) - 1))]
        lines.append(f"| {name} | {p50 * 1e3:.1f} | {p90 * 1e3:.1f} | {t[0] * 1e3:.1f} | "
                     f"{size / p50 / 2**30:.2f} |")
    section = "\n".join(lines) + "\n"
    print(section)
    splice_section(args.out, SHM_HEADING, section)


if __name__ == "__main__":
    main()
