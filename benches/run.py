#!/usr/bin/env python3
"""One command for every benchmark; writes BENCHMARKS.md.

    python3 benches/run.py [--secs 5] [--warmup 1] [--out BENCHMARKS.md] [--only overload]

(a) the in-process limit: the backend called directly (cargo bench --bench inprocess);
(b) served: `ferroserve bench` (the project's load generator) against the no-op transport floor
    (examples/noop_server.rs) and against `ferroserve serve`, over HTTP binary, HTTP JSON and gRPC
    at concurrency 1, 8, 32, 64, with dynamic batching off and on, for `mlp` and `dense`; at c=1
    also batching on with `row_invariant = false`, and `dense` at c=32/64 with a 2 ms delay;
(c) criterion micro-benchmarks of the batch queue and tensor concat/split;
(d) engines: tract vs ONNX Runtime in-process at batch 1 and 32 on every bundled model;
(e) the heavy model (models-heavy/minilm, ONNX Runtime, built by scripts/build-heavy-model.sh):
    served with batching on and off vs in-process batched, sequence length 128.

(d) and (e) need the ONNX Runtime library (ORT_DYLIB_PATH or .cache/onnxruntime, as
scripts/fetch-onnxruntime.sh leaves it); (e) also needs the heavy model. Missing either, the
section says so and is skipped;
(f) overload: `dense` behind bounded admission, open loop at 80% and at 10x its capacity;
    refusals' latency, admitted requests' latency, and the server's RSS sampled from /proc.
    `--only overload` runs this section alone and rewrites only its section of the output.

Servers and the load generator run as separate processes sharing this machine's cores, so every
ratio is quoted from one run of this script. Only the Python standard library is used.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "ferroserve")
NOOP = os.path.join(ROOT, "target", "release", "examples", "noop_server")
PROTOCOLS = ["http-binary", "http-json", "grpc"]
CONCURRENCY = [1, 8, 32, 64]
MODELS = ["mlp", "dense"]
ENGINE_MODELS = ["iris", "digits", "mlp", "dense"]
HEAVY = os.path.join(ROOT, "models-heavy", "minilm")
HEAVY_SEQ = 128
HEAVY_CONCURRENCY = [1, 32, 64]
# Batching "on": take whatever is queued when the instance frees up (no added delay).
BATCHING_ON = "\n[dynamic_batching]\nmax_queue_delay_us = 0\n"
# The same without row invariance: a lone row runs as itself instead of padded to two.
BATCHING_LOOSE = "\n[dynamic_batching]\nmax_queue_delay_us = 0\nrow_invariant = false\n"
# Throughput setting for the compute-bound model: wait up to 2 ms for a full batch of 64.
BATCHING_DELAY = "\n[dynamic_batching]\nmax_queue_delay_us = 2000\npreferred_batch_sizes = [64]\n"


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    log("$ " + " ".join(cmd))
    return subprocess.run(cmd, cwd=ROOT, check=True, **kw)


class Server:
    """A server process whose stderr announces `http_addr=... grpc_addr=...`."""

    def __init__(self, cmd, env=None):
        self.log = tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.log,
                                     env={**os.environ, **(env or {})})
        deadline = time.time() + 60
        self.http = self.grpc = None
        while time.time() < deadline and not (self.http and self.grpc):
            time.sleep(0.05)
            with open(self.log.name, errors="replace") as f:
                text = f.read()
            m_http, m_grpc = re.search(r"http_addr=(\S+)", text), re.search(r"grpc_addr=(\S+)", text)
            self.http = m_http and m_http.group(1)
            self.grpc = m_grpc and m_grpc.group(1)
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {text}")
        if not (self.http and self.grpc):
            raise RuntimeError(f"server did not announce its addresses: {cmd}")
        self.wait_ready()

    def wait_ready(self):
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"http://{self.http}/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except Exception:
                pass
            time.sleep(0.05)
        raise RuntimeError("server not ready")

    def url(self, protocol):
        return self.grpc if protocol == "grpc" else self.http

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.unlink(self.log.name)


def bench(url, protocol, model, concurrency, secs, warmup, batch_size=1, rate=None, max_in_flight=None,
          seq_len=1):
    """Closed loop at `concurrency`, or open loop at `rate` requests/s when it is given."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    load = (["--rate", f"{rate:.1f}", "--max-in-flight", str(max_in_flight or 256)] if rate
            else ["--concurrency", str(concurrency)])
    cmd = [BIN, "bench", "--url", url, "--protocol", protocol, "--model", model,
           "--batch-size", str(batch_size), "--seq-len", str(seq_len), *load,
           "--warmup-secs", str(warmup), "--duration-secs", str(secs), "--json-out", out]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        report = json.load(f)
    os.unlink(out)
    lat = report["latency_us"]
    label = f"r={rate:.0f}/s" if rate else f"c={concurrency}"
    log(f"{protocol:11} {model:6} {label:<9} {report['throughput_rps']:>9.0f} req/s "
        f"p50={lat['p50']}us p99={lat['p99']}us errors={report['errors_total']} "
        f"rejected={report.get('rejected', 0)} (p99 {report.get('rejected_latency_us', {}).get('p99')}us)")
    return report


def repo_variant(tmp, batching):
    """A model repository with mlp and dense; batching False (off), True (delay 0), "loose"
    (delay 0, row_invariant = false) or "2ms"."""
    path = os.path.join(tmp, {False: "off", True: "on", "loose": "loose", "2ms": "2ms"}[batching])
    for model in MODELS:
        src = os.path.join(ROOT, "models", model)
        dst = os.path.join(path, model)
        shutil.copytree(src, dst)
        if batching:
            with open(os.path.join(dst, "config.toml"), "a") as f:
                f.write({True: BATCHING_ON, "loose": BATCHING_LOOSE, "2ms": BATCHING_DELAY}[batching])
    return path


def serve_cmd(repo):
    return [BIN, "serve", "--model-repository", repo, "--host", "127.0.0.1",
            "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]


def in_process(secs, models=MODELS, batches="1,64", extra=("--backend", "tract")):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    run(["cargo", "bench", "--bench", "inprocess", "--", *models, "--batch", batches,
         "--secs", str(secs), "--json-out", out, *extra], stdout=subprocess.DEVNULL)
    with open(out) as f:
        data = json.load(f)
    os.unlink(out)
    return data["points"]


def onnxruntime_library():
    """Where the server and the in-process bench find ONNX Runtime, or None."""
    path = os.environ.get("ORT_DYLIB_PATH") or os.path.join(ROOT, ".cache", "onnxruntime", "libonnxruntime.so")
    return path if os.path.exists(path) else None


def heavy(secs, warmup):
    """The heavy model: in-process batched (ONNX Runtime) vs served with batching on and off."""
    points = in_process(3, models=["minilm"], batches="1,32",
                        extra=("--backend", "onnxruntime", "--seq-len", str(HEAVY_SEQ)))
    served = []
    with tempfile.TemporaryDirectory() as tmp:
        for batching in (True, False):
            repo = os.path.join(tmp, "on" if batching else "off")
            dst = os.path.join(repo, "minilm")
            os.makedirs(dst)
            os.symlink(os.path.join(HEAVY, "1"), os.path.join(dst, "1"))
            with open(os.path.join(HEAVY, "config.toml")) as f:
                config = f.read()
            if not batching:
                config = config.split("[dynamic_batching]")[0]
            with open(os.path.join(dst, "config.toml"), "w") as f:
                f.write(config)
            server = Server(serve_cmd(repo))
            for p in ("http-binary", "grpc"):
                for c in HEAVY_CONCURRENCY:
                    r = bench(server.url(p), p, "minilm", c, secs, max(warmup, 2), seq_len=HEAVY_SEQ)
                    r["batching"] = batching
                    served.append(r)
            server.stop()
    return {"inprocess": points, "served": served}


def micro():
    proc = run(["cargo", "bench", "--bench", "micro"], capture_output=True, text=True)
    lines, name = [], None
    for line in proc.stdout.splitlines():
        m = re.match(r"^(\S.*?)\s+time:\s+\[(.*)\]", line)
        if m:
            lines.append((m.group(1).strip(), m.group(2)))
            continue
        if line.strip() and not line.startswith(" ") and "time:" not in line:
            name = line.strip()
        m = re.match(r"^\s+time:\s+\[(.*)\]", line)
        if m and name:
            lines.append((name, m.group(1)))
    return lines


# (f) Overload: one instance of `dense` (no batching, 32 rows per request, a few milliseconds of
# compute) admitting one request at a time (as many as compute at once: nothing waits behind the
# running one, so admitted latency stays the compute time); refusals are 429 at once.
OVERLOAD_MODEL = "dense"
OVERLOAD_ROWS = 32
OVERLOAD_CONFIG = "\ninstance_count = 1\nmax_concurrent_requests = 1\n"
OVERLOAD_FACTORS = [0.8, 10]
OVERLOAD_MAX_IN_FLIGHT = 64
OVERLOAD_ADMITTED = 1


class RssSampler:
    """Samples a process's VmRSS (KiB) from /proc every `period` seconds on a thread, with the
    time of each sample."""

    def __init__(self, pid, period=0.1):
        import threading
        self.pid, self.period, self.samples = pid, period, []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def read(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return None

    def run(self):
        while not self.stop_event.is_set():
            try:
                v = self.read()
            except OSError:
                return
            if v is not None:
                self.samples.append((time.monotonic(), v))
            self.stop_event.wait(self.period)

    def stop(self):
        self.stop_event.set()
        self.thread.join()
        return self.samples


def overload(secs, warmup):
    with tempfile.TemporaryDirectory() as tmp:
        repo = os.path.join(tmp, "overload")
        dst = os.path.join(repo, OVERLOAD_MODEL)
        shutil.copytree(os.path.join(ROOT, "models", OVERLOAD_MODEL), dst)
        with open(os.path.join(dst, "config.toml"), "a") as f:
            f.write(OVERLOAD_CONFIG)
        server = Server(serve_cmd(repo))
        try:
            url = server.url("http-binary")
            # Capacity: closed loop with exactly as many workers as the model admits.
            cap = bench(url, "http-binary", OVERLOAD_MODEL, OVERLOAD_ADMITTED, secs, warmup,
                        batch_size=OVERLOAD_ROWS)
            capacity = cap["throughput_rps"]
            points = []
            for factor in OVERLOAD_FACTORS:
                rss = RssSampler(server.proc.pid)
                t0 = time.monotonic()
                r = bench(url, "http-binary", OVERLOAD_MODEL, None, secs, warmup, batch_size=OVERLOAD_ROWS,
                          rate=capacity * factor, max_in_flight=OVERLOAD_MAX_IN_FLIGHT)
                # The measured window only: connections open and buffers grow during warm-up.
                samples = [v for t, v in rss.stop() if t >= t0 + warmup + 0.3]
                r["factor"] = factor
                r["rss_kib"] = {"first": samples[0], "last": samples[-1], "min": min(samples),
                                "max": max(samples), "samples": len(samples)} if samples else None
                points.append(r)
        finally:
            server.stop()
    # The transport floor at the 10x rate: the no-op server answers every request at once, so its
    # latency is what this machine adds to any immediate answer (wake-ups, loopback, client).
    noop = Server([NOOP, "--http-port", "0", "--grpc-port", "0"])
    try:
        floor = bench(noop.url("http-binary"), "http-binary", "mlp", None, secs, warmup,
                      rate=capacity * max(OVERLOAD_FACTORS), max_in_flight=OVERLOAD_MAX_IN_FLIGHT)
    finally:
        noop.stop()
    return {"capacity": cap, "points": points, "floor": floor, "config": OVERLOAD_CONFIG.strip().replace("\n", ", "),
            "rows": OVERLOAD_ROWS, "model": OVERLOAD_MODEL, "secs": secs, "warmup": warmup}


OVERLOAD_HEADING = "## (f) Overload: bounded admission at 10x capacity"
PROFILE_HEADING = "## (g) Where the time goes"
AB_HEADING = "## (h) Restructuring A/B"
HOSTILE_HEADING = "## (i) Hostile requests"
CONNECTIONS_HEADING = "## (j) Connections under attack"
SHM_HEADING = "## (s) System shared memory"  # benches/shm.py writes it
KEPT_HEADINGS = (PROFILE_HEADING, AB_HEADING, HOSTILE_HEADING, CONNECTIONS_HEADING, SHM_HEADING)


def render_overload(o, started, machine, command):
    out = []
    w = out.append
    w(f"{OVERLOAD_HEADING}\n")
    w(f"Generated by `{command}` on {started} ({machine}). `{o['model']}` with `{o['config']}` (no "
      f"dynamic batching), {o['rows']} rows per request, HTTP binary. Capacity: closed loop with "
      f"{OVERLOAD_ADMITTED} worker(s) (what the model admits) = {o['capacity']['throughput_rps']:,.0f} req/s. Then open loop "
      f"(`ferroserve bench --rate`, at most {OVERLOAD_MAX_IN_FLIGHT} in flight) at 80% and at 10x that rate, "
      f"{o['warmup']:g} s warm-up + {o['secs']:g} s measured each; latency from the intended send time. "
      "Admitted = answered 200; rejected = answered 429 (`Retry-After: 1`). RSS: the server's VmRSS "
      "sampled every 100 ms from /proc during the measured window. Server, load generator and "
      "anything else on the machine share its cores. Latencies in microseconds.\n")
    w("| load | offered req/s | admitted req/s | admitted p50 | p99 | p99.9 | max | rejected req/s | "
      "rejected p50 | p99 | p99.9 | max | other errors | dropped by client | RSS first / max / last (MiB) |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in o["points"]:
        a, x = r["latency_us"], r["rejected_latency_us"]
        other = r["errors_total"] - r["rejected"]
        rss = r.get("rss_kib")
        rss_s = (f"{rss['first'] / 1024:.1f} / {rss['max'] / 1024:.1f} / {rss['last'] / 1024:.1f}"
                 if rss else "-")
        w(f"| {r['factor']:g}x | {r['rate']:,.0f} | {r['throughput_rps']:,.0f} | {a['p50']} | {a['p99']} | "
          f"{a['p999']} | {a['max']} | {r['rejected'] / max(r['duration_secs'], 1e-9):,.0f} | "
          f"{x['p50']} | {x['p99']} | {x['p999']} | {x['max']} | {other} | {r['dropped_by_client']} | {rss_s} |")
    w("")
    floor = o.get("floor")
    if floor:
        f = floor["latency_us"]
        w(f"Transport floor at the 10x rate: the no-op server (`examples/noop_server.rs`, answers every "
          f"request at once, 200) at {floor['rate']:,.0f} req/s, 1-row `mlp` requests: p50 {f['p50']}, "
          f"p90 {f['p90']}, p99 {f['p99']}, p99.9 {f['p999']}, max {f['max']} µs. An immediate answer cannot "
          "be faster than this on this machine.\n")
    low = next((r for r in o["points"] if r["factor"] < 1), None)
    high = next((r for r in o["points"] if r["factor"] >= 10), None)
    if low and high:
        def mark(ok):
            return "yes" if ok else "**no**"
        rej = high["rejected_latency_us"]["p99"]
        ratio = high["latency_us"]["p99"] / max(low["latency_us"]["p99"], 1)
        rss = high.get("rss_kib")
        w("| target | measured | met |")
        w("|---|---|---|")
        x = high["rejected_latency_us"]
        w(f"| at 10x, excess requests rejected within 1 ms (p99) | {high['rejected']:,} rejected: p50 {x['p50']}, "
          f"p90 {x['p90']}, p99 {rej}, max {x['max']} µs"
          + (f" (no-op floor p99 {floor['latency_us']['p99']} µs)" if floor else "")
          + f" | {mark(high['rejected'] > 0 and rej <= 1000)} |")
        w(f"| admitted p99 at 10x within 2x of p99 at 80% | {high['latency_us']['p99']} vs "
          f"{low['latency_us']['p99']} µs = {ratio:.2f}x | {mark(ratio <= 2)} |")
        if rss:
            growth = (rss["last"] - rss["first"]) / 1024
            w(f"| RSS flat at 10x | first {rss['first'] / 1024:.1f} MiB, max {rss['max'] / 1024:.1f} MiB, "
              f"last {rss['last'] / 1024:.1f} MiB ({growth:+.1f} MiB over {rss['samples']} samples) | "
              f"{mark(rss['max'] - rss['first'] <= max(0.1 * rss['first'], 8 * 1024))} |")
        w("")
    return "\n".join(out) + "\n"


def splice_section(path, heading, section):
    """Replaces the section under `heading` (up to the next `## `) in `path`, or appends it."""
    text = open(path).read() if os.path.exists(path) else "# ferroserve benchmarks\n\n"
    start = text.find(heading)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
    with open(path, "w") as f:
        f.write(text)


def fmt_us(v):
    return f"{v:,}" if isinstance(v, int) else f"{v:,.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--secs", type=float, default=5.0, help="measured seconds per served point")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--out", default=os.path.join(ROOT, "BENCHMARKS.md"))
    ap.add_argument("--json", default=os.path.join(ROOT, "target", "benchmarks.json"))
    ap.add_argument("--only", choices=["overload"],
                    help="run one section alone and rewrite only its part of --out")
    args = ap.parse_args()

    run(["cargo", "build", "--release", "--bin", "ferroserve", "--example", "noop_server"])
    results = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
               "secs": args.secs, "warmup": args.warmup}
    command = "python3 benches/run.py" + "".join(
        f" --{k} {v}" for k, v in (("secs", args.secs), ("warmup", args.warmup), ("only", args.only))
        if v is not None and not (k == "secs" and v == 5.0) and not (k == "warmup" and v == 1.0))

    if args.only == "overload":
        log("(f) overload")
        results["overload"] = overload(args.secs, args.warmup)
        os.makedirs(os.path.dirname(args.json), exist_ok=True)
        path = args.json.replace(".json", "-overload.json")
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
        splice_section(args.out, OVERLOAD_HEADING,
                       render_overload(results["overload"], results["started"], results["machine"], command))
        log(f"rewrote the overload section of {args.out}; wrote {path}")
        return

    log("(a) in-process limit")
    results["inprocess"] = in_process(3)
    ort = onnxruntime_library()
    if ort:
        log("(d) engines: tract vs ONNX Runtime in-process")
        results["engines"] = in_process(2, models=ENGINE_MODELS, batches="1,32",
                                        extra=("--backend", "both", "--intra-op-threads", "1"))
    else:
        results["engines_skipped"] = "no ONNX Runtime library (run scripts/fetch-onnxruntime.sh)"

    log("(b) no-op transport floor")
    noop = Server([NOOP, "--http-port", "0", "--grpc-port", "0"])
    results["noop"] = [bench(noop.url(p), p, "mlp", c, args.secs, args.warmup)
                       for p in PROTOCOLS for c in CONCURRENCY]
    noop.stop()

    log("(b) ferroserve")
    served = []
    with tempfile.TemporaryDirectory() as tmp:
        for batching in (False, True):
            server = Server(serve_cmd(repo_variant(tmp, batching)))
            for model in MODELS:
                for p in PROTOCOLS:
                    for c in CONCURRENCY:
                        r = bench(server.url(p), p, model, c, args.secs, args.warmup)
                        r["batching"] = batching
                        served.append(r)
            server.stop()
        server = Server(serve_cmd(repo_variant(tmp, "2ms")))
        for p in PROTOCOLS:
            for c in (32, 64):
                r = bench(server.url(p), p, "dense", c, args.secs, args.warmup)
                r["batching"] = "2ms"
                served.append(r)
        server.stop()
        server = Server(serve_cmd(repo_variant(tmp, "loose")))
        for model in MODELS:
            for p in PROTOCOLS:
                r = bench(server.url(p), p, model, 1, args.secs, args.warmup)
                r["batching"] = "loose"
                served.append(r)
        server.stop()
    results["served"] = served

    if not ort:
        results["heavy_skipped"] = "no ONNX Runtime library (run scripts/fetch-onnxruntime.sh)"
    elif not os.path.exists(os.path.join(HEAVY, "1", "model.onnx")):
        results["heavy_skipped"] = "models-heavy/minilm is not built (run scripts/build-heavy-model.sh)"
    else:
        log("(e) heavy model")
        results["heavy"] = heavy(args.secs, args.warmup)

    log("(c) micro-benchmarks")
    results["micro"] = micro()

    log("(f) overload")
    results["overload"] = overload(args.secs, args.warmup)
    results["command"] = command

    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1)
    # Sections written by other scripts (benches/profile.py's, benches/ab.py's) are kept.
    kept = ""
    if os.path.exists(args.out):
        text = open(args.out).read()
        for heading in KEPT_HEADINGS:
            start = text.find(heading)
            if start >= 0:
                end = text.find("\n## ", start + len(heading))
                kept += "\n" + text[start:end + 1 if end >= 0 else len(text)]
    with open(args.out, "w") as f:
        f.write(render(results) + kept)
    log(f"wrote {args.out} and {args.json}")


def find(rows, **kw):
    for r in rows:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def render(res):
    out = []
    w = out.append
    w("# ferroserve benchmarks\n")
    w(f"Generated by `python3 benches/run.py` on {res['started']} ({res['machine']}). One run; the "
      "machine is shared and noisy, so compare ratios within this file, not with other runs. Server "
      "and load generator (`ferroserve bench`, a separate process) share the same cores. "
      f"Each served point: {res['warmup']:g} s warm-up, then {res['secs']:g} s measured, closed loop, "
      "1 row per request. Latencies in microseconds.\n")

    w("## (a) In-process limit: the backend called directly\n")
    w("| model | engine | batch | calls/s | rows/s | mean µs/call | p50 µs | p99 µs |")
    w("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in res["inprocess"]:
        w(f"| {r['model']} | {r.get('backend', 'tract')} | {r['batch']} | {r['calls_per_s']:,.0f} | "
          f"{r['rows_per_s']:,.0f} | "
          f"{r['mean_us']:,.1f} | {fmt_us(r['p50_us'])} | {fmt_us(r['p99_us'])} |")
    w("")

    w("## (b) Served\n")
    w("### No-op transport floor (`examples/noop_server.rs`: parses the request, answers a fixed "
      "`mlp`-shaped response)\n")
    table(w, res["noop"], extra=False)
    for model in MODELS:
        for batching in (False, True):
            rows = [r for r in res["served"] if r["model"] == model and r["batching"] == batching]
            label = "on (`max_queue_delay_us = 0`)" if batching else "off"
            w(f"### `{model}`, dynamic batching {label}\n")
            table(w, rows, extra=True)
    rows = [r for r in res["served"] if r["batching"] == "2ms"]
    if rows:
        w("### `dense`, dynamic batching on, `max_queue_delay_us = 2000`, `preferred_batch_sizes = [64]`\n")
        table(w, rows, extra=True)
    for model in MODELS:
        rows = [r for r in res["served"] if r["batching"] == "loose" and r["model"] == model]
        if rows:
            w(f"### `{model}`, dynamic batching on, `max_queue_delay_us = 0`, `row_invariant = false`\n")
            table(w, rows, extra=True)

    w("## Targets\n")
    w("| target | measured | met |")
    w("|---|---|---|")
    for line in targets(res):
        w(line)
    w("")

    w("## (c) Micro-benchmarks (criterion; [low estimate high])\n")
    w("| benchmark | time |")
    w("|---|---|")
    for name, t in res["micro"]:
        w(f"| {name} | {t} |")
    w("")

    w("## (d) Engines: tract vs ONNX Runtime in-process\n")
    if "engines" in res:
        w("Each engine called directly on one thread (ONNX Runtime `intra_op_threads = 1`, as one "
          "server instance with that setting; tract always runs on the calling thread). Rows per second.\n")
        w("| model | batch | tract rows/s | ONNX Runtime rows/s | ONNX Runtime / tract |")
        w("|---|---:|---:|---:|---:|")
        for model in ENGINE_MODELS:
            for batch in (1, 32):
                t = find(res["engines"], model=model, batch=batch, backend="tract")
                o = find(res["engines"], model=model, batch=batch, backend="onnxruntime")
                if t and o:
                    w(f"| {model} | {batch} | {t['rows_per_s']:,.0f} | {o['rows_per_s']:,.0f} | "
                      f"{o['rows_per_s'] / max(t['rows_per_s'], 1):.2f}x |")
        w("")
    else:
        w(f"Skipped: {res.get('engines_skipped')}.\n")

    w(f"## (e) Heavy model: `minilm` (all-MiniLM-L6-v2, ONNX Runtime), sequence length {HEAVY_SEQ}\n")
    if "heavy" in res:
        h = res["heavy"]
        w("In-process (ONNX Runtime, the model config's session options):\n")
        w("| batch | calls/s | rows/s | mean µs/call | p50 µs | p99 µs |")
        w("|---:|---:|---:|---:|---:|---:|")
        for r in h["inprocess"]:
            w(f"| {r['batch']} | {r['calls_per_s']:,.0f} | {r['rows_per_s']:,.0f} | {r['mean_us']:,.1f} | "
              f"{fmt_us(r['p50_us'])} | {fmt_us(r['p99_us'])} |")
        w("")
        for batching in (True, False):
            label = ("on (`max_batch_size = 32`, `preferred_batch_sizes = [8, 16, 32]`, "
                     "`max_queue_delay_us = 2000`)") if batching else "off"
            w(f"Served, dynamic batching {label}, 1 row per request:\n")
            table(w, [r for r in h["served"] if r["batching"] == batching], extra=True)
        limit = find(h["inprocess"], batch=32)
        if limit:
            w("| served (batching on) | rows/s | of in-process batch 32 |")
            w("|---|---:|---:|")
            for r in h["served"]:
                if r["batching"] and r["concurrency"] >= 32:
                    w(f"| {r['protocol']} c={r['concurrency']} | {r['throughput_rps']:,.0f} | "
                      f"{r['throughput_rps'] / max(limit['rows_per_s'], 1):.0%} |")
            w("")
    else:
        w(f"Skipped: {res.get('heavy_skipped')}.\n")

    if res.get("overload"):
        w(render_overload(res["overload"], res["started"], res["machine"], res.get("command", "python3 benches/run.py")))
    return "\n".join(out) + "\n"


def table(w, rows, extra):
    w("| protocol | c | req/s | p50 | p90 | p99 | p99.9 | max | errors | client CPU µs/req |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        lat = r["latency_us"]
        w(f"| {r['protocol']} | {r['concurrency']} | {r['throughput_rps']:,.0f} | {lat['p50']} | "
          f"{lat['p90']} | {lat['p99']} | {lat['p999']} | {lat['max']} | {r['errors_total']} | "
          f"{r.get('client_cpu_us_per_request', 0):.1f} |")
    w("")


def targets(res):
    lines = []
    noop, served = res["noop"], res["served"]

    def mark(ok):
        return "yes" if ok else "**no**"

    for p in PROTOCOLS:
        base1, s1 = find(noop, protocol=p, concurrency=1), find(served, protocol=p, concurrency=1, model="mlp", batching=False)
        if base1 and s1:
            ratio = s1["latency_us"]["p50"] / max(base1["latency_us"]["p50"], 1)
            lines.append(f"| `mlp` c=1 p50 within 1.3x of no-op ({p}) | {s1['latency_us']['p50']} vs "
                         f"{base1['latency_us']['p50']} µs = {ratio:.2f}x | {mark(ratio <= 1.3)} |")
        base32 = find(noop, protocol=p, concurrency=32)
        best32 = max((r for r in served if r["protocol"] == p and r["concurrency"] == 32 and r["model"] == "mlp"),
                     key=lambda r: r["throughput_rps"], default=None)
        if base32 and best32:
            ratio = best32["throughput_rps"] / max(base32["throughput_rps"], 1)
            lines.append(f"| `mlp` c=32 throughput >= 70% of no-op ({p}) | {best32['throughput_rps']:,.0f} vs "
                         f"{base32['throughput_rps']:,.0f} req/s = {ratio:.0%} (batching "
                         f"{'on' if best32['batching'] else 'off'}) | {mark(ratio >= 0.7)} |")
    limit = find(res["inprocess"], model="dense", batch=64, backend="tract")
    for p in PROTOCOLS:
        off = find(served, protocol=p, concurrency=64, model="dense", batching=False)
        on = max((r for r in served if r["protocol"] == p and r["concurrency"] == 64 and r["model"] == "dense"
                  and r["batching"] is not False), key=lambda r: r["throughput_rps"], default=None)
        if limit and on:
            ratio = on["throughput_rps"] / max(limit["rows_per_s"], 1)
            delay = "2 ms" if on["batching"] == "2ms" else "0"
            lines.append(f"| `dense` batching on, c=64: >= 80% of in-process batched ({p}) | "
                         f"{on['throughput_rps']:,.0f} vs {limit['rows_per_s']:,.0f} rows/s = {ratio:.0%} "
                         f"(delay {delay}) | {mark(ratio >= 0.8)} |")
        if on and off:
            ratio = on["throughput_rps"] / max(off["throughput_rps"], 1)
            lines.append(f"| `dense` c=64: batching on >= 3x off ({p}) | {on['throughput_rps']:,.0f} vs "
                         f"{off['throughput_rps']:,.0f} req/s = {ratio:.1f}x | {mark(ratio >= 3)} |")
    for model in MODELS:
        for p in PROTOCOLS:
            on, off = (find(served, protocol=p, concurrency=1, model=model, batching=b) for b in (True, False))
            if on and off:
                ratio = on["latency_us"]["p50"] / max(off["latency_us"]["p50"], 1)
                lines.append(f"| `{model}` c=1, `max_queue_delay_us = 0`: p50 no worse than batching off ({p}) | "
                             f"{on['latency_us']['p50']} vs {off['latency_us']['p50']} µs = {ratio:.2f}x | "
                             f"{mark(ratio <= 1.05)} |")
            loose = find(served, protocol=p, concurrency=1, model=model, batching="loose")
            if loose and off:
                ratio = loose["latency_us"]["p50"] / max(off["latency_us"]["p50"], 1)
                lines.append(f"| `{model}` c=1, `max_queue_delay_us = 0`, `row_invariant = false`: p50 no worse "
                             f"than batching off ({p}) | {loose['latency_us']['p50']} vs "
                             f"{off['latency_us']['p50']} µs = {ratio:.2f}x | {mark(ratio <= 1.05)} |")
    return lines


if __name__ == "__main__":
    main()
