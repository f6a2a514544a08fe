"""Two predictors side by side on the same scored scenarios of bench/users.

Usage:
  /usr/bin/python3 bench/users/compare.py --base A.json [A2.json ...] --new B.json [B2.json ...] [--mode default]

Each file is a run.py results.json (or the session-9 note format, {"scenarios": {name: row}}).
Per half, over the scenarios scored in both: n, median / 95th percentile / max of |error|,
mean |ln(meas/pred)| and the signed median, as run.py computes them (its percentile()).
"""
import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "accuracy"))
from run import percentile  # noqa: E402  (bench/accuracy/run.py)


def rows_of(paths, mode):
    out = {}
    for p in paths:
        with open(p) as f:
            d = json.load(f)
        if "modes" in d:
            for r in d["modes"][mode]["scenarios"]:
                if r.get("meas") and r.get("pred") is not None:
                    out[r["name"]] = (r["half"], r["pred"], r["meas"])
        else:
            for name, r in d["scenarios"].items():
                if r.get("meas") and r.get("pred") is not None:
                    out[name] = (r["half"], r["pred"], r["meas"])
    return out


def summary(errors):
    a = [abs(e) for e in errors]
    return ("n %d  median %.1f %%  p95 %.1f %%  max %.1f %%  mean|ln| %.3f  signed median %+.1f %%" %
            (len(errors), 100 * percentile(a, 50), 100 * percentile(a, 95), 100 * max(a),
             sum(abs(math.log(1 + e)) for e in errors) / len(errors), 100 * percentile(errors, 50)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", nargs="+", required=True)
    ap.add_argument("--new", nargs="+", required=True)
    ap.add_argument("--mode", default="default")
    a = ap.parse_args()
    base, new = rows_of(a.base, a.mode), rows_of(a.new, a.mode)
    for half in ("development", "validation", "holdout"):
        names = sorted(n for n in base if n in new and base[n][0] == half)
        if not names:
            continue
        for label, rows in (("base", base), ("new", new)):
            print("%-11s %-4s %s" % (half, label, summary([(rows[n][1] - rows[n][2]) / rows[n][2] for n in names])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
