"""README's table of which exporter / operator families run on tract, on ONNX Runtime, or on
neither, made from the results tests/python/test_exporters.py writes (so it stays true).

    FERROSERVE_EXPORTER_RESULTS=/tmp/results.json python -m pytest tests/python/test_exporters.py
    python tests/exporters/table.py /tmp/results.json [--readme README.md]

Without --readme the table is printed; with it, the text between README's
`<!-- exporter-table:begin -->` and `<!-- exporter-table:end -->` lines is replaced.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

BEGIN, END = "<!-- exporter-table:begin -->", "<!-- exporter-table:end -->"
ENGINES = (("tract", "tract"), ("onnxruntime", "ONNX Runtime"))


def short(reason: str) -> str:
    """The engine's own words, without the path prefix, clipped for a table cell."""
    reason = re.sub(r"^cannot load \S+: ", "", reason).replace("|", "\\|").replace("\n", " ")
    return reason if len(reason) <= 90 else reason[:87] + "..."


def table(results: dict) -> str:
    rows = {}
    for entry in results.values():
        if entry["engine"] in dict(ENGINES):
            rows.setdefault(entry["model"], {})[entry["engine"]] = entry
    lines = [
        "| exporter | model | operator family | tract | ONNX Runtime | runs on |",
        "|---|---|---|---|---|---|",
    ]
    for model in sorted(rows, key=lambda m: (next(iter(rows[m].values()))["exporter"], m)):
        cells = rows[model]
        first = next(iter(cells.values()))
        marks, runs = [], []
        for engine, label in ENGINES:
            entry = cells.get(engine)
            if entry is None:
                marks.append("not tested")
            elif entry["ok"]:
                marks.append("yes")
                runs.append(label)
            else:
                marks.append(f"no: {short(entry['reason'])}")
        lines.append(f"| {first['exporter']} | `{model}` | {first['family']} | {marks[0]} | {marks[1]} | "
                     f"{' and '.join(runs) or 'neither'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    parser.add_argument("--readme", type=Path)
    args = parser.parse_args()
    text = table(json.loads(args.results.read_text()))
    if args.readme is None:
        print(text)
        return
    readme = args.readme.read_text()
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    args.readme.write_text(readme[:start] + "\n" + text + "\n" + readme[end:])


if __name__ == "__main__":
    main()
