#!/usr/bin/env python3
"""The method-error factors of the band (core/src/band.cpp kMethod*), from a run.py results.json.

For each mode, the ratios measured T / predicted T over the DEVELOPMENT half only, at the
split-conformal ranks of a two-sided 90 % band: the floor(0.05 (n+1))-th and ceil(0.95 (n+1))-th
smallest of the n ratios (the extremes when n < 19). The validation half is never read for these
numbers; its coverage is what docs/accuracy.md reports.

  bench/users/calibrate.py OUT/results.json [MORE.json ...] [--all]

Several results files are pooled (e.g. the development and the validation run). --all uses
both halves: once the validation half has been scored, the factors a release ships may be
calibrated on every scored job, and the coverage of that band is then in-sample (say so).
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
    args = [a for a in argv[1:] if a != "--all"]
    halves = ("development", "validation") if "--all" in argv[1:] else ("development",)
    if not args:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    rows_by_mode = {}
    for path in args:
        with open(path) as f:
            res = json.load(f)
        for mode, m in res["modes"].items():
            rows_by_mode.setdefault(mode, []).extend(
                r for r in m["scenarios"] if r["half"] in halves and r["pred"] > 0 and not r["diverged"])
    for mode, rows in rows_by_mode.items():
        if not rows:
            print("%s: no %s scenarios" % (mode, " or ".join(halves)))
            continue
        lo, hi, a, b = conformal([r["meas"] / r["pred"] for r in rows])
        print("%s: n = %d %s scenarios: x[%.2f, %.2f] (ranks %d and %d of %d)" % (
            mode, len(rows), "+".join(halves), lo, hi, a, b, len(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
