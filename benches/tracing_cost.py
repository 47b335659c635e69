#!/usr/bin/env python3
"""What OpenTelemetry tracing costs: `mlp` at c=32 with tracing off, on at sample rate 0.01 and
on at 1.0, same run, against a local OTLP/HTTP collector that accepts every export.

    python3 benches/tracing_cost.py [--bin target/release/ferroserve] [--secs 5] [--warmup 1]
                                    [--rounds 3] [--protocol http-binary] [--markdown out.md]

The three servers are measured in turn within each round (the order rotates between rounds),
so drift of this shared machine hits all alike; the table gives the median over rounds and the
ratio to tracing off. The collector is a Python HTTP server answering `POST /v1/traces` with an
empty ExportTraceServiceResponse; it counts exports and bytes. Spans the server could not queue
or export are read from `ferroserve_trace_spans_dropped_total`. Only the Python standard
library is used; benches/run.py supplies the server and load-generator helpers.
"""

import argparse
import http.server
import os
import re
import statistics
import sys
import tempfile
import threading
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench_run  # noqa: E402  (benches/run.py: Server, bench, repo_variant)


class Collector:
    def __init__(self):
        self.exports = 0
        self.bytes = 0
        lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("content-length", 0))
                self.rfile.read(n)
                with lock:
                    outer.exports += 1
                    outer.bytes += n
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


MODES = {
    "off": {},
    "on, 0.01": {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"},
    "on, 1.0": {"OTEL_TRACES_SAMPLER": "always_on"},
}


def env_for(mode, collector):
    if mode == "off":
        return {}
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            **MODES[mode]}


def dropped(metrics_addr):
    with urllib.request.urlopen(f"http://{metrics_addr}/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(r"^ferroserve_trace_spans_dropped_total (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=bench_run.BIN)
    ap.add_argument("--secs", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--protocol", default="http-binary", choices=bench_run.PROTOCOLS)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--markdown", help="also write the table to this file")
    args = ap.parse_args()
    bench_run.BIN = args.bin
    collector = Collector()
    modes = list(MODES)
    results = {m: [] for m in modes}
    drops = {m: 0.0 for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        repo = bench_run.repo_variant(tmp, False)
        cmd = [args.bin, "serve", "--model-repository", repo, "--host", "127.0.0.1",
               "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]
        for round_ in range(args.rounds):
            order = modes[round_ % 3:] + modes[:round_ % 3]
            for mode in order:
                server = bench_run.Server(cmd, env=env_for(mode, collector))
                try:
                    log = open(server.log.name, errors="replace").read()
                    metrics = re.search(r"metrics_addr=(\S+)", log).group(1)
                    bench_run.log(f"round {round_ + 1}, tracing {mode}")
                    report = bench_run.bench(server.url(args.protocol), args.protocol, "mlp",
                                             args.concurrency, args.secs, args.warmup)
                    results[mode].append(report)
                    drops[mode] += dropped(metrics)
                finally:
                    server.stop()
    base = statistics.median(r["throughput_rps"] for r in results["off"])
    lines = [
        f"| tracing | throughput (req/s, median of {args.rounds}) | ratio to off | p50 (µs) | p99 (µs) | errors | spans dropped (all rounds) |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode in modes:
        rs = results[mode]
        rps = statistics.median(r["throughput_rps"] for r in rs)
        p50 = statistics.median(r["latency_us"]["p50"] for r in rs)
        p99 = statistics.median(r["latency_us"]["p99"] for r in rs)
        errors = sum(r["errors_total"] for r in rs)
        lines.append(f"| {mode} | {rps:.0f} | {rps / base:.3f} | {p50:.0f} | {p99:.0f} | {errors} | {drops[mode]:.0f} |")
    lines.append("")
    lines.append(f"Collector: {collector.exports} exports, {collector.bytes / 1e6:.1f} MB received.")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
