#!/usr/bin/env python3
"""RSS per version swap: does a server that swaps versions for months grow?

    python3 benches/swap_rss.py [--swaps 1000] [--clients 8] [--warmup-swaps 50]
        [--bin target/release/ferroserve] [--json-out FILE]

Starts `ferroserve serve` in explicit mode on a copy of `mlp`, keeps `--clients` closed-loop
HTTP JSON clients inferring on it, and swaps versions `--swaps` times: add version N+1, load it
(the latest-1 policy retires N), remove N's directory. Every 50 swaps it samples the server's
RSS (/proc/<pid>/status VmRSS) and the `/metrics` lines of `mlp` and their versions. Reports
the RSS after the warm-up swaps and at the end, the least-squares slope in KiB per swap after
the warm-up, the metric lines at the end, the versions with series, and failed requests.
"""

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench_run  # noqa: E402  (benches/run.py: Server)

TOKEN = "swap-rss-admin-token-0123456789"
MLP = os.path.join(bench_run.ROOT, "models", "mlp")
BODY = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64],
                               "data": [0.5] * 64}]}).encode()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(l for l in f if l.startswith("VmRSS:")).split()[1])


def post(url, body=b"", token=None):
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"content-type": "application/json"})
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, r.read()


def client(url, stop, counts):
    while not stop.is_set():
        try:
            status, _ = post(url, BODY)
            ok = status == 200
        except Exception:
            ok = False
        counts["ok" if ok else "failed"] += 1


def mlp_series(metrics_url):
    with urllib.request.urlopen(metrics_url, timeout=10) as r:
        text = r.read().decode()
    lines = [l for l in text.splitlines() if not l.startswith("#") and 'model="mlp"' in l]
    versions = sorted({m.group(1) for l in lines for m in [re.search(r'version="(\d+)"', l)] if m},
                      key=int)
    return len(lines), versions


def slope(points):
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--swaps", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--warmup-swaps", type=int, default=50)
    ap.add_argument("--sample-every", type=int, default=50)
    ap.add_argument("--bin", default=os.environ.get("FERROSERVE_BIN", bench_run.BIN))
    ap.add_argument("--json-out")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="swap-rss-")
    repo = os.path.join(tmp, "repo")
    shutil.copytree(MLP, os.path.join(repo, "mlp"))
    cmd = [args.bin, "serve", "--model-repository", repo, "--host", "127.0.0.1",
           "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
           "--model-control-mode", "explicit", "--load-model", "mlp", "--admin-token", TOKEN]
    server = bench_run.Server(cmd)
    with open(server.log.name, errors="replace") as f:
        metrics_addr = re.search(r"metrics_addr=(\S+)", f.read()).group(1)
    metrics_url = f"http://{metrics_addr}/metrics"
    infer_url = f"http://{server.http}/v2/models/mlp/infer"
    load_url = f"http://{server.http}/v2/repository/models/mlp/load"
    pid = server.proc.pid

    stop, counts = threading.Event(), {"ok": 0, "failed": 0}
    threads = [threading.Thread(target=client, args=(infer_url, stop, counts), daemon=True)
               for _ in range(args.clients)]
    for t in threads:
        t.start()
    samples, t0 = [], time.time()
    try:
        samples.append((0, rss_kib(pid), *mlp_series(metrics_url)))
        for n in range(1, args.swaps + 1):
            v = n + 1
            shutil.copytree(os.path.join(MLP, "1"), os.path.join(repo, "mlp", str(v)))
            status, body = post(load_url, token=TOKEN)
            if status != 200:
                raise RuntimeError(f"load of version {v}: {status} {body!r}")
            shutil.rmtree(os.path.join(repo, "mlp", str(v - 1)))
            if n % args.sample_every == 0 or n == args.warmup_swaps or n == args.swaps:
                samples.append((n, rss_kib(pid), *mlp_series(metrics_url)))
                bench_run.log(f"swap {n}: RSS {samples[-1][1]} KiB, {samples[-1][2]} mlp metric "
                              f"lines, {len(samples[-1][3])} versions with series")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        elapsed = time.time() - t0
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    warm = [(n, r) for n, r, _, _ in samples if n >= args.warmup_swaps]
    at_warm = next(r for n, r, _, _ in samples if n >= args.warmup_swaps)
    result = {
        "swaps": args.swaps,
        "clients": args.clients,
        "binary": args.bin,
        "seconds": round(elapsed, 1),
        "rss_kib_start": samples[0][1],
        "rss_kib_after_warmup": at_warm,
        "rss_kib_end": samples[-1][1],
        "kib_per_swap_after_warmup": round(slope(warm), 3),
        "mlp_metric_lines_start": samples[0][2],
        "mlp_metric_lines_end": samples[-1][2],
        "versions_with_series_end": samples[-1][3],
        "requests_ok": counts["ok"],
        "requests_failed": counts["failed"],
        "samples": [{"swap": n, "rss_kib": r, "mlp_lines": l} for n, r, l, _ in samples],
    }
    print(f"{args.swaps} swaps, {args.clients} clients, {elapsed:.0f} s ({args.bin})")
    print(f"RSS: start {result['rss_kib_start']} KiB, after {args.warmup_swaps} swaps {at_warm} KiB, "
          f"end {result['rss_kib_end']} KiB; slope after warm-up "
          f"{result['kib_per_swap_after_warmup']:+.3f} KiB/swap")
    versions = result["versions_with_series_end"]
    shown = versions if len(versions) <= 6 else versions[:3] + ["..."] + versions[-3:]
    print(f"mlp metric lines: start {result['mlp_metric_lines_start']}, end "
          f"{result['mlp_metric_lines_end']}; {len(versions)} versions with series at the end: "
          f"{', '.join(shown)}")
    print(f"requests: {counts['ok']} ok, {counts['failed']} failed")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
