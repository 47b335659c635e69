#!/usr/bin/env python3
"""Cost of drift monitoring: mlp and dense throughput at c=32 with `[drift]` on vs off, in the
same run (the two servers measured alternately, ABBA, `--rounds` times), and the memory each
monitored feature takes.

    python3 benches/drift.py [--bin target/release/ferroserve] [--secs 3] [--warmup 1]
                             [--rounds 2] [--markdown out.md]

"On" monitors 32 input columns and the 10 logits of each model (42 features a row, a heavy
case: a tabular model usually has fewer), sampling every batch (`sample_rate = 1`), with the
reference built from the first 500 rows served (`baseline = "first: 500"`, reached in the
warm-up). The ratio is on/off of the median over rounds. Memory per feature is counted from the
data structures of `drift::window` (per bin: the open window's atomic counter, the drained
window, the cumulative count, the last closed window, the reference proportion and edge), for
the bins of the profile the server built. Only the Python standard library is used; run.py supplies the helpers.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench_run  # noqa: E402  (benches/run.py: Server, bench, repo_variant)

DRIFT = """
[drift]
features = [%s]
baseline = "first: 500"
window_seconds = 10
min_count = 1000
""" % ", ".join(str(i) for i in range(32))
MODELS = ["mlp", "dense"]
PROTOCOLS = ["http-binary", "grpc"]
# Bytes per bin: six 8-byte slots (the open window's atomic counter, the drained window, the
# cumulative count, the last closed window, the reference proportion and edge); per feature:
# its FeatureProfile and Feature structs, names, five vector headers and a window's scores.
PER_BIN = 6 * 8
PER_FEATURE = 400


def serve_cmd(binary, repo):
    return [binary, "serve", "--model-repository", repo, "--host", "127.0.0.1",
            "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]


def memory_per_feature(server, model):
    with urllib.request.urlopen(f"http://{server.http}/v2/models/{model}/drift", timeout=5) as r:
        report = json.load(r)
    feats = report["features"]
    if not feats:
        return None, 0
    bins = [len(f["reference"]) for f in feats]
    return statistics.mean(b * PER_BIN + PER_FEATURE for b in bins), len(feats)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=bench_run.BIN)
    ap.add_argument("--secs", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--markdown")
    args = ap.parse_args()
    bench_run.BIN = args.bin
    results, memory = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        off = bench_run.repo_variant(tmp, False)
        on = os.path.join(tmp, "drift")
        os.makedirs(on)
        for model in MODELS:
            src = os.path.join(off, model)
            dst = os.path.join(on, model)
            os.system(f"cp -r '{src}' '{dst}'")
            with open(os.path.join(dst, "config.toml"), "a") as f:
                f.write(DRIFT)
        sides = [("off", off), ("on", on)]
        for round_ in range(args.rounds):
            for side, repo in sides if round_ % 2 == 0 else sides[::-1]:
                server = bench_run.Server(serve_cmd(args.bin, repo))
                try:
                    for model in MODELS:
                        for protocol in PROTOCOLS:
                            r = bench_run.bench(server.url(protocol), protocol, model, 32,
                                                args.secs, args.warmup)
                            if r["errors_total"]:
                                raise RuntimeError(f"{side} {model} {protocol}: {r['errors_total']} errors")
                            results.setdefault((model, protocol, side), []).append(r["throughput_rps"])
                        if side == "on":
                            memory[model] = memory_per_feature(server, model)
                finally:
                    server.stop()
    lines = ["| model | protocol | c | drift off req/s | drift on req/s | on/off |",
             "|---|---|---:|---:|---:|---:|"]
    ratios = []
    for model in MODELS:
        for protocol in PROTOCOLS:
            a = statistics.median(results[(model, protocol, "off")])
            b = statistics.median(results[(model, protocol, "on")])
            ratios.append(b / a)
            lines.append(f"| {model} | {protocol} | 32 | {a:,.0f} | {b:,.0f} | {b / a:.3f} |")
    lines.append("")
    lines.append(f"Throughput on/off: geometric mean {statistics.geometric_mean(ratios):.3f}, "
                 f"min {min(ratios):.3f} (median of {args.rounds} interleaved rounds of {args.secs:g} s).")
    for model, (per, n) in memory.items():
        if per is None:
            lines.append(f"{model}: the baseline was not built during the run (no features yet).")
        else:
            lines.append(f"{model}: {n} monitored features, about {per:,.0f} bytes each.")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
