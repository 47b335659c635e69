"""Writes tests/data/drift_golden.json: PSI, Jensen-Shannon distance and chi-square p-values of
fixed (reference proportions, window counts) pairs, computed with numpy and scipy on the same
bins, for tests/drift_stats.rs to compare ferroserve's drift statistics against.

PSI uses ferroserve's smoothing (1e-4 added to every proportion, renormalised); JS distance is
scipy.spatial.distance.jensenshannon(base=2) of the raw proportions; the p-value is
scipy.stats.chisquare over the bins the reference gives mass, reported only when every expected
count is at least 5 (None otherwise).

Run: /work/main/.venv/bin/python tests/data/make_drift_golden.py   (scipy 1.17.1, numpy 1.26.4)
"""
import json
from pathlib import Path

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import chisquare, norm

EPS = 1e-4


def psi(p, q):
    k = len(p)
    p = (np.asarray(p) + EPS) / (1 + k * EPS)
    q = (np.asarray(q) + EPS) / (1 + k * EPS)
    return float(np.sum((q - p) * np.log(q / p)))


def p_value(ref, counts):
    ref, counts = np.asarray(ref, float), np.asarray(counts, float)
    keep = ref > 0
    if keep.sum() < 2 or counts[keep].sum() == 0:
        return None
    expected = ref[keep] / ref[keep].sum() * counts[keep].sum()
    if (expected < 5).any():
        return None
    return float(chisquare(counts[keep], expected).pvalue)


def case(name, ref, counts):
    ref = [float(x) for x in ref]
    counts = [int(c) for c in counts]
    q = np.asarray(counts, float) / max(sum(counts), 1)
    return {
        "name": name,
        "reference": ref,
        "counts": counts,
        "psi": psi(ref, q),
        "js_distance": float(jensenshannon(ref, q, base=2)),
        "p_value": p_value(ref, counts),
    }


def normal_bins(shift, n, rng):
    """Decile bins of N(0, 1) plus under/overflow; counts of n draws of N(shift, 1)."""
    edges = norm.ppf(np.linspace(0.01, 0.99, 11))
    ref = np.diff(np.concatenate([[0.0], norm.cdf(edges), [1.0]]))
    x = rng.normal(shift, 1.0, n)
    idx = np.searchsorted(edges, x, side="right")
    return ref, np.bincount(idx, minlength=len(ref))


rng = np.random.default_rng(17)
cases = [
    case("identical", [0.25, 0.25, 0.5], [25, 25, 50]),
    case("categorical_50_50_to_70_30", [0.5, 0.5, 0.0], [700, 300, 0]),
    case("empty_reference_bin", [0.0, 0.5, 0.5, 0.0], [3, 40, 50, 7]),
    case("small_window_no_p_value", [0.2, 0.3, 0.5], [1, 2, 3]),
    case("normal_same", *normal_bins(0.0, 1000, rng)),
    case("normal_shift_0_5", *normal_bins(0.5, 1000, rng)),
]
out = Path(__file__).with_name("drift_golden.json")
out.write_text(json.dumps(cases, indent=1) + "\n")
print(f"wrote {out}: {len(cases)} cases")
