"""Does the linearization's error over the second half of the real prefix predict the tail's error?

Usage:
  /usr/bin/python3 bench/users/midwarp.py --scenarios /tmp/scen \
      --results bench/users/results/2026-12-07-s13-dev-stratified.json --mode t0 [--all] [--out DIR]

For each development scenario of the results file whose measured T lies past the real prefix (T > K;
--all: every one), the estimator runs twice at the default settings: as shipped (re-linearized at K)
and re-linearized at M = round(K / 2). Over [M, K] the first curve is real training, the second the
linearization at w_M continued with the machinery the tail uses (stratified N0, extrapolation). The
ratio r = (t - M) / (K - M), with t the step where the w_M curve reaches the real loss at K, says how
much faster (r < 1) or slower (r > 1) the linearized model moved than the network over the last half
of the prefix. If the tail after K errs the same way, 1 / r would track meas / pred of the shipped
prediction. Session 15 (docs/accuracy.md): it does not.
"""
import argparse
import importlib.util
import json
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# bench/users/run.py under another name: its own `from run import` is bench/accuracy/run.py.
_spec = importlib.util.spec_from_file_location("users_run", os.path.join(HERE, "run.py"))
_users_run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_users_run)
crossing = _users_run.crossing


def interp(c, t):
    for (a, x), (b, y) in zip(c, c[1:]):
        if a <= t <= b:
            return x + (y - x) * (t - a) / max(b - a, 1e-9)
    return c[-1][1]


def first_below(c, level, t0):
    """First t >= t0 where the curve c reaches level (run.py's crossing())."""
    return crossing([(t0, interp(c, t0) - level)] + [(t, v - level) for t, v in c if t > t0], True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--mode", default="t0")
    ap.add_argument("--all", action="store_true")
    ap.add_argument("--estimate", default=os.path.join(ROOT, "build", "cli", "ttpred-estimate"))
    ap.add_argument("--out", default="/tmp/midwarp")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    with open(a.results) as f:
        rows = json.load(f)["modes"][a.mode]["scenarios"]

    def run(sc, extra, tag):
        out = os.path.join(a.out, "%s-%s.json" % (sc["name"], tag))
        if not os.path.exists(out):
            cmd = [a.estimate, "--spec", os.path.join(a.scenarios, "specs", sc["name"] + ".yaml"), "--json",
                   "--quiet", sc["target"][0], "%.6g" % sc["target"][1]] + extra
            with open(out, "w") as f:
                f.write(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        with open(out) as f:
            return json.load(f)

    for sc in rows:
        K = sc.get("relinearized_at") or 0
        if sc.get("half") != "development" or K < 2 or (sc["meas"] <= K and not a.all):
            continue
        M = max(1, round(K / 2))
        full, mid = run(sc, [], "K"), run(sc, ["--relinearize", str(M)], "M")
        LK = interp(full["curve"], K)
        t = first_below(mid["curve"], LK, M)
        r = (t - M) / (K - M) if t is not None else float("nan")
        inv = 1 / r if r == r and r > 0 else float("nan")
        print("%-28s K=%4d M=%4d  w_M curve reaches L(K) at %6s  r=%.2f  1/r=%.2f | meas/pred=%.2f (pred %d, meas %d)"
              % (sc["name"], K, M, "-" if t is None else "%.1f" % t, r, inv, sc["meas"] / full["steps"],
                 full["steps"], sc["meas"]), flush=True)


if __name__ == "__main__":
    main()
