"""Helpers of scripts/gpu-check.sh, standard library only (a fresh GPU machine has no curl,
numpy or requests): HTTP calls, model configs, output comparison and the results table.

    gpu_check.py free-ports N                      N free TCP ports on 127.0.0.1
    gpu_check.py http METHOD URL [BODY]            prints the status line, then the body
    gpu_check.py wait URL PATH SECS                until GET URL+PATH answers 200 (exit 1 if not)
    gpu_check.py write-config SRC DST [--drop TABLE] KEY=VALUE...
    gpu_check.py compare URL DATA.json TOL MODEL [MODEL...]
    gpu_check.py compare-random URL DATA.json TOL ROWS SEQ MODEL_A MODEL_B
    gpu_check.py stats URL MODEL                   "<inference_count> <execution_count>"
    gpu_check.py table POINTS.jsonl                the measurements as markdown
"""

import json
import random
import socket
import sys
import time
import urllib.error
import urllib.request


def http(method, url, body=None, timeout=60.0):
    """(status, parsed JSON or text) of one request; never raises on an HTTP error status."""
    data = None if body is None else body.encode() if isinstance(body, str) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait(url, path, secs):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        try:
            if http("GET", url + path, timeout=5)[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.25)
    return False


def write_config(src, dst, args):
    """Copies a model's config.toml with top-level keys set (put first, so they stay top-level)
    and whole tables dropped; KEY=VALUE takes VALUE as TOML text."""
    drop, keys = set(), {}
    it = iter(args)
    for arg in it:
        if arg == "--drop":
            drop.add(next(it))
        else:
            key, value = arg.split("=", 1)
            keys[key] = value
    out, table = [f"{k} = {v}" for k, v in keys.items()], None
    for line in open(src, encoding="utf-8").read().splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            table = stripped.strip("[]").strip()
        if table in drop:
            continue
        if table is None and stripped.split("=", 1)[0].strip() in keys:
            continue
        out.append(line)
    open(dst, "w", encoding="utf-8").write("\n".join(out) + "\n")


def infer(url, model, inputs):
    """{output name: flat data} of a JSON inference, or raises with the server's answer."""
    body = {"inputs": [{"name": n, **t} for n, t in inputs.items()]}
    status, answer = http("POST", f"{url}/v2/models/{model}/infer", body)
    if status != 200:
        raise RuntimeError(f"{model}: HTTP {status}: {answer}")
    return {o["name"]: o["data"] for o in answer["outputs"]}


def max_diff(a, b):
    if len(a) != len(b):
        return float("inf")
    return max((abs(float(x) - float(y)) for x, y in zip(a, b)), default=0.0)


def compare(url, data_path, tol, models):
    """Every model's outputs for the reference inputs, against the reference and each other."""
    ref = json.load(open(data_path, encoding="utf-8"))
    got = {m: infer(url, m, ref["inputs"]) for m in models}
    ok, report = True, {"data": data_path, "tolerance": tol, "max_abs_diff": {}}
    for name, expected in ref["outputs"].items():
        pairs = [(f"{m} vs reference", got[m][name], expected["data"]) for m in models]
        pairs += [(f"{models[0]} vs {m}", got[models[0]][name], got[m][name]) for m in models[1:]]
        for label, a, b in pairs:
            d = max_diff(a, b)
            report["max_abs_diff"][f"{name}: {label}"] = d
            ok &= d <= tol
    return ok, report


def compare_random(url, data_path, tol, rows, seq, model_a, model_b):
    """Two models on one fixed pseudo-random batch shaped like the reference inputs."""
    ref = json.load(open(data_path, encoding="utf-8"))
    rng, inputs = random.Random(7), {}
    for name, t in ref["inputs"].items():
        shape = [rows] + ([seq] * (len(t["shape"]) - 1) if "INT" in t["datatype"] else t["shape"][1:])
        count = 1
        for d in shape:
            count *= d
        if "mask" in name:
            data = [1] * count
        elif "INT" in t["datatype"]:
            data = [rng.randrange(1000, 30000) for _ in range(count)]
        else:
            data = [rng.uniform(-1.0, 1.0) for _ in range(count)]
        inputs[name] = {"datatype": t["datatype"], "shape": shape, "data": data}
    a, b = infer(url, model_a, inputs), infer(url, model_b, inputs)
    diffs = {f"{n}: {model_a} vs {model_b} ({rows}x{seq})": max_diff(a[n], b[n]) for n in a}
    return all(d <= tol for d in diffs.values()), {"tolerance": tol, "max_abs_diff": diffs}


def stats(url, model):
    _, answer = http("GET", f"{url}/v2/models/{model}/stats")
    per = answer.get("model_stats", []) if isinstance(answer, dict) else []
    return sum(s["inference_count"] for s in per), sum(s["execution_count"] for s in per)


def interpolate(points, batch):
    """rows/s of the one-request-at-a-time points at `batch` (linear between measured sizes)."""
    pts = sorted(points.items())
    if not pts:
        return None
    if batch <= pts[0][0]:
        return pts[0][1]
    for (b0, r0), (b1, r1) in zip(pts, pts[1:]):
        if batch <= b1:
            return r0 + (r1 - r0) * (batch - b0) / (b1 - b0)
    return pts[-1][1]


def table(points_path):
    rows = [json.loads(line) for line in open(points_path, encoding="utf-8") if line.strip()]
    single = {r["batch_size"]: r["rows_per_sec"] for r in rows if r["kind"] == "single"}
    out = [
        "| kind | protocol | batch | concurrency | avg batch run | rows/s | vs one-at-a-time at that batch"
        " | p50 µs | p99 µs | errors | server CPU µs/req |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ref = interpolate(single, r["avg_batch"]) if r["kind"] == "served" else None
        ratio = f"{r['rows_per_sec'] / ref:.2f}x" if ref else "-"
        out.append(
            f"| {r['kind']} | {r['protocol']} | {r['batch_size']} | {r['concurrency']} | {r['avg_batch']:.1f}"
            f" | {r['rows_per_sec']:.0f} | {ratio} | {r['latency_us']['p50']} | {r['latency_us']['p99']}"
            f" | {r['errors_total'] + r['rejected']} | {r['server_cpu_us_per_req']:.0f} |"
        )
    return "\n".join(out)


def main(argv):
    cmd, args = argv[0], argv[1:]
    if cmd == "free-ports":
        print(" ".join(map(str, free_ports(int(args[0])))))
    elif cmd == "http":
        status, body = http(args[0], args[1], args[2] if len(args) > 2 else None)
        print(status)
        print(body if isinstance(body, str) else json.dumps(body, separators=(",", ":")))
    elif cmd == "wait":
        return 0 if wait(args[0], args[1], float(args[2])) else 1
    elif cmd == "write-config":
        write_config(args[0], args[1], args[2:])
    elif cmd in ("compare", "compare-random"):
        try:
            if cmd == "compare":
                ok, report = compare(args[0], args[1], float(args[2]), args[3:])
            else:
                ok, report = compare_random(args[0], args[1], float(args[2]), int(args[3]), int(args[4]), *args[5:7])
        except (RuntimeError, OSError, KeyError) as err:
            print(f"inference failed: {err}")
            return 1
        print(json.dumps(report, indent=1))
        return 0 if ok else 1
    elif cmd == "stats":
        print(*stats(args[0], args[1]))
    elif cmd == "table":
        print(table(args[0]))
    else:
        sys.exit(f"unknown command {cmd!r}\n{__doc__}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
