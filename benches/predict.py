#!/usr/bin/env python3
"""`ferroserve predict` on 1,000,000 `iris` rows, from CSV and from Parquet: rows/s and the
process's peak RSS, against the in-process limit of the same model at the same batch size
(`cargo bench --bench inprocess -- iris --batch 64 --backend tract`). A run on 100,000 rows
beside it shows whether the peak RSS depends on the file's size (it should not: the input is
streamed in batches).

    python3 benches/predict.py [--bin target/release/ferroserve] [--rows 1000000]
                               [--example target/release/examples/dataio_convert]
                               [--skip-inprocess] [--json-out FILE]

Build first: `cargo build --release --bin ferroserve --example dataio_convert`. The Parquet
input is written from the CSV by examples/dataio_convert.rs (snappy, row groups of 64Ki rows).
Peak RSS is the child's ru_maxrss (os.wait4). Only the Python standard library is used.
Numbers must come from a release build; a debug build only checks that the script works.
"""

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_csv(path, rows):
    rng = random.Random(0)
    with open(path, "w") as f:
        f.write("id,sepal_length,sepal_width,petal_length,petal_width\n")
        for i in range(rows):
            f.write("r%d,%.1f,%.1f,%.1f,%.1f\n" % (
                i, rng.uniform(4.3, 7.9), rng.uniform(2.0, 4.4), rng.uniform(1.0, 6.9), rng.uniform(0.1, 2.5)))


def run(cmd):
    """(wall seconds, peak RSS MiB, stderr) of one child process."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{' '.join(cmd)} exited {code}:\n{err}")
    return wall, usage.ru_maxrss / 1024.0, err


def predict(binary, inp, out):
    wall, rss, err = run([binary, "predict", "--model-repository", "models", "--model", "iris",
                          "--input", inp, "--output", out, "--keep", "id"])
    m = re.search(r"(\d+) rows in (\d+) batches, ([\d.]+) s, (\d+) rows/s", err)
    if not m:
        sys.exit(f"no summary line in:\n{err}")
    return {"rows": int(m.group(1)), "batches": int(m.group(2)), "secs": float(m.group(3)),
            "rows_per_s": float(m.group(4)), "wall_s": wall, "peak_rss_mib": rss,
            "output_mib": os.path.getsize(out) / 2**20}


def inprocess():
    out = subprocess.run(["cargo", "bench", "--bench", "inprocess", "--", "iris", "--batch", "64",
                          "--backend", "tract", "--secs", "3", "--json-out", "-"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    doc = json.loads(out[out.index("{"):])
    return doc["points"][0]["rows_per_s"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/ferroserve"))
    ap.add_argument("--example", default=os.path.join(ROOT, "target/release/examples/dataio_convert"))
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--skip-inprocess", action="store_true")
    ap.add_argument("--json-out")
    args = ap.parse_args()
    results = {"rows": args.rows, "cpus": os.cpu_count(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="predict-bench-") as tmp:
        for rows in (args.rows // 10, args.rows):
            csv_in = os.path.join(tmp, f"iris-{rows}.csv")
            pq_in = os.path.join(tmp, f"iris-{rows}.parquet")
            write_csv(csv_in, rows)
            run([args.example, csv_in, pq_in])
            for fmt, inp in (("csv", csv_in), ("parquet", pq_in)):
                r = predict(args.bin, inp, os.path.join(tmp, f"out-{rows}.{fmt}"))
                r.update(format=fmt, input_mib=os.path.getsize(inp) / 2**20)
                results["runs"].append(r)
                print(f"{fmt:8} {rows:>9} rows  {r['rows_per_s']:>10.0f} rows/s  "
                      f"peak RSS {r['peak_rss_mib']:.1f} MiB  (input {r['input_mib']:.1f} MiB)")
            os.remove(csv_in)
            os.remove(pq_in)
    if not args.skip_inprocess:
        limit = inprocess()
        results["inprocess_rows_per_s"] = limit
        print(f"in-process limit (tract, batch 64): {limit:.0f} rows/s")
        for r in results["runs"]:
            r["fraction_of_inprocess"] = r["rows_per_s"] / limit
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
