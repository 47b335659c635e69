#!/usr/bin/env python3
"""A/B of two server builds on the same points, interleaved, for "this change costs nothing".

    python3 benches/ab.py --before /tmp/ferroserve-before [--after target/release/ferroserve]
                          [--secs 3] [--warmup 1] [--rounds 2] [--markdown out.md]

For each point (mlp and dense; HTTP binary, HTTP JSON, gRPC; c=1 and c=32; dense also batching
on at c=64) the two servers are measured alternately (ABBA...), `--rounds` times each, with one load
generator (the `--after` binary's `bench`), so drift of this shared machine hits both alike. The
ratio is after/before of the median over rounds: throughput above 1.0 and p50 below 1.0 mean
the change is faster. Only the Python standard library is used; run.py supplies the helpers.
"""

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench_run  # noqa: E402  (benches/run.py: Server, bench, repo_variant)

POINTS = [
    # (model, protocol, concurrency, batching)
    *[(m, p, c, False) for m in ("mlp", "dense") for p in bench_run.PROTOCOLS for c in (1, 32)],
    *[("dense", p, 64, True) for p in bench_run.PROTOCOLS],
]


def serve_cmd(binary, repo):
    return [binary, "serve", "--model-repository", repo, "--host", "127.0.0.1",
            "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="server binary before the change")
    ap.add_argument("--after", default=bench_run.BIN, help="server binary after the change")
    ap.add_argument("--secs", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--markdown", help="also write the table to this file")
    ap.add_argument("--model", help="only this model's points")
    ap.add_argument("--protocol", help="only this protocol's points")
    ap.add_argument("--concurrency", type=int, help="only points at this concurrency")
    args = ap.parse_args()
    points = [pt for pt in POINTS
              if (args.model is None or pt[0] == args.model)
              and (args.protocol is None or pt[1] == args.protocol)
              and (args.concurrency is None or pt[2] == args.concurrency)]
    bench_run.BIN = args.after  # the load generator for every point

    results = {}  # (point, side) -> list of reports
    with tempfile.TemporaryDirectory() as tmp:
        repos = {b: bench_run.repo_variant(tmp, b) for b in (False, True)}
        for batching in (False, True):
            batch_points = [pt for pt in points if pt[3] == batching]
            if not batch_points:
                continue
            for round_ in range(args.rounds):
                sides = [("before", args.before), ("after", args.after)]
                # Alternate which goes first, so a drift within a round favours neither.
                for side, binary in sides if round_ % 2 == 0 else sides[::-1]:
                    server = bench_run.Server(serve_cmd(binary, repos[batching]))
                    try:
                        for pt in batch_points:
                            model, protocol, c, _ = pt
                            r = bench_run.bench(server.url(protocol), protocol, model, c,
                                                args.secs, args.warmup)
                            if r["errors_total"]:
                                raise RuntimeError(f"{side} {pt}: {r['errors_total']} errors")
                            results.setdefault((pt, side), []).append(r)
                    finally:
                        server.stop()

    lines = ["| model | protocol | c | batching | before req/s | after req/s | ratio | before p50 µs "
             "| after p50 µs | ratio |", "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for pt in points:
        b, a = results[(pt, "before")], results[(pt, "after")]
        rb = statistics.median(r["throughput_rps"] for r in b)
        ra = statistics.median(r["throughput_rps"] for r in a)
        pb = statistics.median(r["latency_us"]["p50"] for r in b)
        pa = statistics.median(r["latency_us"]["p50"] for r in a)
        model, protocol, c, batching = pt
        lines.append(f"| {model} | {protocol} | {c} | {'on' if batching else 'off'} | {rb:,.0f} | "
                     f"{ra:,.0f} | {ra / rb:.2f} | {pb:,.0f} | {pa:,.0f} | {pa / pb:.2f} |")
    ratios = [statistics.median(r["throughput_rps"] for r in results[(pt, "after")])
              / statistics.median(r["throughput_rps"] for r in results[(pt, "before")]) for pt in points]
    lines.append("")
    lines.append(f"Throughput ratio after/before: geometric mean "
                 f"{statistics.geometric_mean(ratios):.3f}, min {min(ratios):.2f}, max {max(ratios):.2f} "
                 f"({len(points)} points, median of {args.rounds} interleaved rounds of {args.secs:g} s).")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
