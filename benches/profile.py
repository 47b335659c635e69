#!/usr/bin/env python3
"""Where the time goes at one served benchmark point: CPU by thread and the hottest symbols.

    python3 benches/profile.py --model dense --protocol grpc --concurrency 64 --batching on
        [--secs 5] [--warmup 1] [--no-perf]

Starts `ferroserve serve` on a repository variant of benches/run.py (batching off, on = delay 0,
2ms), drives it with `ferroserve bench` (closed loop), and over the measured window reads:
- CPU seconds per second of every server thread, grouped by thread name (instance threads
  `inst-*`, tokio workers, ...), and of the load generator, from /proc/<pid>/task/*/stat;
- with `perf` on PATH (root or perf_event_paranoid <= 1): `perf record -g` of the server, then
  the top symbols by self time, and by inclusive time for the server's own functions.
The machine's two cores are shared by server and load generator, so the CPU table shows which
of them is saturated: a compute thread near 1.0 is the model; the two processes summing to ~2.0
is the machine.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench_run  # noqa: E402  (benches/run.py: Server, repo_variant, serve_cmd)

TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid):
    """{tid: (name, cpu seconds)} for every thread of `pid`."""
    out = {}
    base = f"/proc/{pid}/task"
    for tid in os.listdir(base):
        try:
            with open(f"{base}/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[tid] = (name, (int(fields[11]) + int(fields[12])) / TICKS)
    return out


def process_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def model_stats(server, model):
    """(inferences, executions) of `model` from the statistics extension."""
    with urllib.request.urlopen(f"http://{server.http}/v2/models/{model}/stats", timeout=5) as r:
        stats = json.load(r)["model_stats"]
    return (sum(s["inference_count"] for s in stats), sum(s["execution_count"] for s in stats))


def group(name):
    """Thread names with their numbers dropped, so instances and workers add up."""
    return name.rstrip("0123456789-#").rstrip("-_ ") or name


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="dense")
    ap.add_argument("--protocol", default="grpc", choices=bench_run.PROTOCOLS)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--batching", default="on", choices=["off", "on", "loose", "2ms"])
    ap.add_argument("--secs", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--no-perf", action="store_true")
    args = ap.parse_args()
    batching = {"off": False, "on": True, "loose": "loose", "2ms": "2ms"}[args.batching]
    use_perf = not args.no_perf and shutil.which("perf")

    with tempfile.TemporaryDirectory() as tmp:
        server = bench_run.Server(bench_run.serve_cmd(bench_run.repo_variant(tmp, batching)))
        pid = server.proc.pid
        report_path = os.path.join(tmp, "report.json")
        load = subprocess.Popen(
            [bench_run.BIN, "bench", "--url", server.url(args.protocol), "--protocol", args.protocol,
             "--model", args.model, "--concurrency", str(args.concurrency),
             "--warmup-secs", str(args.warmup), "--duration-secs", str(args.secs),
             "--json-out", report_path], stdout=subprocess.DEVNULL)
        time.sleep(args.warmup + 0.2)
        t0, before, load0 = time.time(), thread_cpu(pid), process_cpu(load.pid)
        stats0 = model_stats(server, args.model)
        perf_data = os.path.join(tmp, "perf.data")
        window = max(args.secs - 0.5, 0.5)
        if use_perf:
            subprocess.run(["perf", "record", "-F", "997", "-g", "-p", str(pid), "-o", perf_data, "--",
                            "sleep", str(window)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            time.sleep(window)
        t1, after, load1 = time.time(), thread_cpu(pid), process_cpu(load.pid)
        stats1 = model_stats(server, args.model)
        load.wait()
        with open(report_path) as f:
            report = json.load(f)

        wall = t1 - t0
        groups = {}
        for tid, (name, cpu) in after.items():
            used = cpu - before.get(tid, (name, 0.0))[1]
            g = groups.setdefault(group(name), [0, 0.0])
            g[0] += 1
            g[1] += used
        lat = report["latency_us"]
        print(f"## {args.model} {args.protocol} c={args.concurrency} batching {args.batching}: "
              f"{report['throughput_rps']:,.0f} req/s, p50 {lat['p50']} µs, p99 {lat['p99']} µs, "
              f"errors {report['errors_total']}")
        rows, calls = stats1[0] - stats0[0], stats1[1] - stats0[1]
        print(f"\nBackend calls in the window: {calls:,} for {rows:,} rows = "
              f"{rows / max(calls, 1):.1f} rows per call.\n")
        print("| process / thread group | threads | CPU s per s | CPU µs per request |")
        print("|---|---:|---:|---:|")
        rps = max(report["throughput_rps"], 1)
        total = 0.0
        for name, (n, used) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
            if used / wall < 0.005:
                continue
            total += used
            print(f"| server `{name}` | {n} | {used / wall:.2f} | {used / wall / rps * 1e6:.1f} |")
        lg = (load1 - load0) / wall
        print(f"| server, all threads | | {total / wall:.2f} | {total / wall / rps * 1e6:.1f} |")
        print(f"| load generator | | {lg:.2f} | {lg / rps * 1e6:.1f} |")
        print(f"| both (the machine has {os.cpu_count()}) | | {total / wall + lg:.2f} | |\n")

        if use_perf:
            for title, extra in (("thread and object (self time)", ["--no-children", "--sort", "comm,dso"]),
                                 ("self time", ["--no-children", "--sort", "comm,symbol"]),
                                 ("inclusive time", ["--children", "--sort", "comm,symbol"])):
                res = subprocess.run(
                    ["perf", "report", "-i", perf_data, "--stdio", *extra, "--percent-limit", "1.5",
                     "-g", "none"],
                    capture_output=True, text=True)
                rows = [line for line in res.stdout.splitlines() if line.strip() and not line.startswith("#")]
                print(f"Server samples by {title} (perf; [k] kernel, [.] user):\n")
                print("```")
                for line in rows[:25]:
                    print(line.rstrip()[:150])
                print("```\n")
        server.stop()


if __name__ == "__main__":
    main()
