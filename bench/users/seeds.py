"""A predictor at several estimator seeds against a base, on the same scored scenarios of bench/users.

Usage:
  /usr/bin/python3 bench/users/seeds.py --base A.json --base-modes t0,t1,t2 --new B.json --new-modes r0,r1,r2

A and B are run.py results.json files; each mode is one estimator seed, paired in order (the base's
first mode with the new one's first, ...). Over the scenarios scored in every mode of both, for all of
them and split by whether the measured T lies inside the real prefix (T <= K, the base's K):
  - median and 95th percentile of |error| by rank (sorted[n // 2], sorted[ceil(0.95 n) - 1]), max,
    mean |ln(meas/pred)|, in band, band's top below the truth;
  - the seed spread: root mean square over scenarios of the sample standard deviation of ln(pred);
  - the rms of ln(meas / geometric mean of the seeds' predictions): the error left after averaging
    the seeds (each job's own bias);
  - the paired difference of |ln(meas/pred)| (new - base), its mean and standard error over scenarios.
(Docs/accuracy.md, sessions 13 and 14.)
"""
import argparse
import json
import math
import statistics


def load(path, modes):
    with open(path) as f:
        d = json.load(f)["modes"]
    return [{r["name"]: r for r in d[m]["scenarios"] if r.get("meas") and r.get("pred") is not None} for m in modes]


def lnerr(r):
    return math.log(r["meas"] / max(1, r["pred"]))


def summary(sets, names):
    e = sorted(abs(s[n]["rel_error"]) for n in names for s in sets)
    ln = [abs(lnerr(s[n])) for n in names for s in sets]
    spread, seed_mean = [], []
    for n in names:
        lp = [math.log(max(1, s[n]["pred"])) for s in sets]
        if len(lp) > 1:
            spread.append(statistics.variance(lp))
        seed_mean.append(math.log(sets[0][n]["meas"]) - sum(lp) / len(lp))
    k = len(e)
    return ("n %d  median %.1f %%  p95 %.1f %%  max %.1f %%  mean|ln| %.3f  in band %d/%d  top below %d  "
            "seed spread %.3f  rms of seed-mean %.3f" % (
                k, 100 * e[k // 2], 100 * e[min(k - 1, math.ceil(0.95 * k) - 1)], 100 * e[-1], sum(ln) / k,
                sum(s[n]["in_band"] for n in names for s in sets), k,
                sum(s[n]["top_below"] for n in names for s in sets),
                math.sqrt(sum(spread) / len(spread)) if spread else 0.0,
                math.sqrt(sum(x * x for x in seed_mean) / len(seed_mean))))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True)
    ap.add_argument("--base-modes", required=True, help="comma-separated modes, one per seed")
    ap.add_argument("--new", required=True)
    ap.add_argument("--new-modes", required=True)
    a = ap.parse_args()
    base, new = load(a.base, a.base_modes.split(",")), load(a.new, a.new_modes.split(","))
    if len(base) != len(new):
        raise SystemExit("seeds.py: error: --base-modes and --new-modes must name as many modes")
    names = sorted(n for n in base[0] if all(n in s for s in base + new))
    inside = [n for n in names if base[0][n]["meas"] <= (base[0][n].get("relinearized_at") or 0)]
    for label, group in (("all", names), ("T <= K", inside), ("T > K", [n for n in names if n not in inside])):
        if group:
            print("%-7s base  %s" % (label, summary(base, group)))
            print("%-7s new   %s" % (label, summary(new, group)))
    per_job = [statistics.mean(abs(lnerr(nw[n])) - abs(lnerr(bs[n])) for bs, nw in zip(base, new)) for n in names]
    d = [abs(lnerr(nw[n])) - abs(lnerr(bs[n])) for n in names for bs, nw in zip(base, new)]
    print("paired |ln| new - base: mean %+.4f, standard error over %d scenarios %.4f" % (
        statistics.mean(d), len(names), statistics.stdev(per_job) / math.sqrt(len(per_job)) if len(per_job) > 1 else 0))


if __name__ == "__main__":
    main()
