#!/usr/bin/env python3
"""The method-error factors of the band (core/src/band.cpp kMethod*), from a run.py results.json.

For each mode, the ratios measured T / predicted T over the DEVELOPMENT half only, at the
split-conformal ranks of a two-sided 90 % band: the floor(0.05 (n+1))-th and ceil(0.95 (n+1))-th
smallest of the n ratios (the extremes when n < 19). The validation half is never read for these
numbers; its coverage is what docs/accuracy.md reports.

  bench/users/calibrate.py OUT/results.json
"""
import json
import math
import sys


def conformal(ratios):
    r = sorted(ratios)
    n = len(r)
    lo_rank = max(1, math.floor(0.05 * (n + 1)))
    hi_rank = min(n, math.ceil(0.95 * (n + 1)))
    return r[lo_rank - 1], r[hi_rank - 1], lo_rank, hi_rank


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        res = json.load(f)
    for mode, m in res["modes"].items():
        rows = [r for r in m["scenarios"] if r["half"] == "development" and r["pred"] > 0 and not r["diverged"]]
        if not rows:
            print("%s: no development scenarios" % mode)
            continue
        lo, hi, a, b = conformal([r["meas"] / r["pred"] for r in rows])
        print("%s: n = %d development scenarios: x[%.2f, %.2f] (ranks %d and %d of %d)" % (mode, len(rows), lo, hi, a, b, len(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
