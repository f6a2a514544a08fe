#!/usr/bin/python3
"""The users' benchmark: ttpred's prediction on jobs like the ones users bring.

Usage:
  /usr/bin/python3 bench/users/run.py [--out DIR] [--scenarios DIR] [--reduced]
      [--truth-only] [--modes NAME:ARGS ...] [--only SUBSTR] [--half development|validation]
      [--estimate BIN] [--finetune BIN] [--truth-dir DIR] [--strict]

make_scenarios.py builds 48 scenarios (6 architectures x 8 optimizer settings,
split into a development and a validation half by a hash of the name, fixed
before any result). For each, run.py

1. fine-tunes it for real (`ttpred-finetune --seeds 0 1 2 --log-every K`,
   K = max(1, T // 100)): the ground truth, cached by content (spec text, model
   and data bytes, arguments) in bench/users/truth/ (committed: a rerun or the
   next machine does not recompute it);
2. derives the scenario's target from its rule and the measured mean curve
   (eps2L0: epsilon = 2 % of L0; eps5drop: 5 % of the measured drop L0 - L_T;
   loss: the loss at 70 % of the drop; accuracy: the accuracy at 70 % of the
   gain) and the measured T for it;
3. runs `ttpred-estimate --spec S --json --quiet` with that target (and each
   mode's extra arguments) and scores it: relative error of T, whether the
   measured T is inside `steps_band`, whether the band's top is below it.

It prints a table per mode and a summary per half, and writes OUT/results.json
and OUT/summary.md. Exit status 0 whatever the figures (1 when the pipeline
breaks; with --strict also when a prediction is missing).
"""

import argparse
import hashlib
import json
import math
import os
import shlex
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "bench", "accuracy"))
from run import PipelineError, run_json, percentile, finite, file_sha, build_scenarios  # noqa: E402

SEEDS = ["0", "1", "2"]
# A scenario whose real run has nothing to time is excluded (and listed): its
# measured T below MIN_STEPS, or its loss drop below MIN_DROP of L0. Fixed with
# the split, before any result.
MIN_STEPS, MIN_DROP = 5, 0.05
# The real runs log the whole-training-set loss LOG_POINTS times; T is the
# crossing interpolated linearly between the two logged steps around it.
LOG_POINTS = 40
# ...and where T falls in a logged interval longer than REFINE_REL x T, that
# interval is measured again densely (refined()).
REFINE_REL = 0.05


def first_crossing(points, below):
    """Index of the first point [(t, v)] with v <= 0 (below) / v >= 0; None when never."""
    for j, (_, v) in enumerate(points):
        if (v <= 0) if below else (v >= 0):
            return j
    return None


def crossing(points, below):
    """First t where the piecewise-linear curve through points [(t, v)] reaches
    v <= 0 (below) / v >= 0, interpolated; None when never."""
    j = first_crossing(points, below)
    if j is None or j == 0:
        return None if j is None else points[0][0]
    (t0, v0), (t, v) = points[j - 1], points[j]
    return t0 + (t - t0) * v0 / (v0 - v) if v0 != v else t


EST_FIELDS = ["steps", "steps_band", "horizon_steps", "final_loss", "warnings", "timing", "drift"]
FT_FIELDS = ["curve", "accuracy_curve", "final_loss", "horizon_steps", "runs", "seconds_train"]


def truth_path(sc, a):
    """The cache file of the scenario's ground truth: keyed by the spec text, the
    model and data bytes and the seeds (any logging interval). The model bytes are
    stable from run to run because make_scenarios.py scripts every architecture
    in one process in a fixed order (TorchScript's mangled class names depend on
    it: a --reduced build has other bytes, and its own truth directory)."""
    h = hashlib.sha256()
    with open(sc["spec"], "rb") as f:
        h.update(f.read())
    h.update(" ".join(SEEDS).encode())
    sdir = os.path.dirname(sc["spec"])
    for rel in ("../models/%s.pt" % sc["arch"], "../data/%s" % sc["data"]):
        file_sha(os.path.join(sdir, rel), h)
    return os.path.join(a.truth_dir, "%s-%s.json" % (sc["name"], h.hexdigest()[:16]))


def truth(sc, a, cached_only=False):
    """Real fine-tuning of the scenario, cached in a.truth_dir by content (truth_path)."""
    k = max(1, sc["steps"] // LOG_POINTS)
    tail = ["--json", "--quiet", "--seeds"] + SEEDS + ["--log-every", str(k)]
    path = truth_path(sc, a)
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)["finetune"], True
    if cached_only:
        return None, False
    ft, wall = run_json([a.finetune, "--spec", sc["spec"]] + tail, FT_FIELDS, "ttpred-finetune")
    keep = {k2: ft[k2] for k2 in ("curve", "accuracy_curve", "final_loss", "final_accuracy", "horizon_steps",
                                  "runs", "seconds_train", "step_seconds")}
    os.makedirs(a.truth_dir, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump({"scenario": sc["name"], "command": "ttpred-finetune --spec specs/%s.yaml %s" % (
            sc["name"], " ".join(tail)), "process_s": wall, "finetune": keep}, f)
    os.replace(path + ".tmp", path)
    return keep, False


def rule_of(sc, ft):
    """(estimator flag, value, points [(t, v)], below) for the scenario's rule:
    the measured T is the first crossing of v through 0 (downwards when below)."""
    loss = [(t, l) for t, l in ft["curve"]]
    acc = [(t, v) for t, v in ft["accuracy_curve"]]
    l0, lt = loss[0][1], loss[-1][1]
    rule = sc["rule"]
    if rule in ("eps2L0", "eps5drop"):
        eps = sc["epsilon_2L0"] if rule == "eps2L0" else 0.05 * (l0 - lt)
        return "--epsilon", eps, [(t, abs(l - lt) - eps) for t, l in loss], True
    if rule == "loss":
        v = lt + 0.3 * (l0 - lt)
        return "--target-loss", v, [(t, l - v) for t, l in loss], True
    a0, at = acc[0][1], acc[-1][1]
    v = a0 + 0.7 * (at - a0)
    return "--target-accuracy", v, [(t, x - v) for t, x in acc], False


def target_of(sc, ft):
    """(estimator flag, value, measured T) for the scenario's rule."""
    flag, value, points, below = rule_of(sc, ft)
    t = crossing(points, below)
    return flag, value, None if t is None else round(t)


def refined(sc, a, ft):
    """The truth with its crossing placed by the measured shape of the curve where
    the coarse log cannot place it: when T lies between two logged steps t0 < t1
    more than REFINE_REL x T (and 1 step) apart, the same seeds are run again up
    to t1 (`--stop-after`, the schedule's horizon unchanged), logged about 20 times
    between t0 and t1 (`--log-from`), and that stretch, mapped affinely onto the
    truth's own values at t0 and t1, replaces the straight line between them.
    Linear interpolation across a coarse interval of a convex loss curve puts T
    late (up to 2x in the first interval). The logged points and the target
    values (L0, L_T, A0, A_T) do not change. The re-run is the same run when the
    binary is (same seeds, same batches); a truth from an earlier binary whose
    draw ordered the same N samples otherwise is a statistically equal run, so
    only its shape is used. Cached by content beside the truth."""
    _, _, points, below = rule_of(sc, ft)
    j = first_crossing(points, below)
    if not j:  # never, or at step 0
        return ft, False
    t0, t1 = int(points[j - 1][0]), int(points[j][0])
    if t1 - t0 <= max(1.0, REFINE_REL * crossing(points, below)):
        return ft, False
    every = max(1, round((t1 - t0) / 20))
    tail = ["--json", "--quiet", "--seeds"] + SEEDS + ["--log-every", str(every), "--log-from", str(t0),
                                                       "--stop-after", str(t1)]
    path = truth_path(sc, a).replace(".json", "-refine-%d-%d-%d.json" % (t0, t1, every))
    if os.path.exists(path):
        with open(path) as f:
            dense = json.load(f)["finetune"]
    else:
        dense, wall = run_json([a.finetune, "--spec", sc["spec"]] + tail, ["curve", "accuracy_curve", "steps_trained"],
                               "ttpred-finetune")
        dense = {k: dense[k] for k in ("curve", "accuracy_curve", "steps_trained")}
        with open(path + ".tmp", "w") as f:
            json.dump({"scenario": sc["name"], "command": "ttpred-finetune --spec specs/%s.yaml %s" % (
                sc["name"], " ".join(tail)), "process_s": wall, "finetune": dense}, f)
        os.replace(path + ".tmp", path)
    out = dict(ft)
    diff = 0.0
    for key in ("curve", "accuracy_curve"):
        coarse = dict((p[0], p[1]) for p in ft[key])
        d = dict((p[0], p[1]) for p in dense[key])
        if t0 not in d or t1 not in d:
            raise PipelineError("%s: the dense re-run did not log steps %d and %d" % (sc["name"], t0, t1))
        c0, c1, d0, d1 = coarse[t0], coarse[t1], d[t0], d[t1]
        diff = max(diff, abs(d1 - c1) / max(abs(c1), 1e-6))
        scale = (c1 - c0) / (d1 - d0) if d1 != d0 else None
        inside = [[u, c0 + (v - d0) * scale] if scale is not None else [u, c0 + (c1 - c0) * (u - t0) / (t1 - t0)]
                  for u, v in dense[key] if t0 < u < t1]
        out[key] = [p for p in ft[key] if p[0] <= t0] + inside + [p for p in ft[key] if p[0] >= t1]
    out["refined"] = {"from": t0, "to": t1, "every": every, "rel_diff_at_end": diff}
    return out, True


def estimate(sc, a, mode, flag, value):
    cmd = [a.estimate, "--spec", sc["spec"], "--json", "--quiet", flag, "%.6g" % value] + mode[1]
    est, wall = run_json(cmd, EST_FIELDS, "ttpred-estimate")
    if est["horizon_steps"] != sc["steps"]:
        raise PipelineError("%s: horizon %s != %d" % (sc["name"], est["horizon_steps"], sc["steps"]))
    return est, wall


def judge(pred, band, meas):
    """The scored fields of a prediction against the measured T."""
    lo, hi = band
    return {"pred": pred, "band": [lo, hi], "meas": meas, "rel_error": (pred - meas) / max(meas, 1),
            "in_band": bool(lo <= meas <= hi), "top_below": bool(hi < meas)}


def score(sc, ft, est, wall, meas, flag, value, mode):
    return {"name": sc["name"], "half": sc["half"], "arch": sc["arch"], "mode": mode,
            "rule": sc["rule"], "target": [flag, value], "loss": sc["loss"], "lr": sc["lr"],
            "lr_fraction": sc["lr_fraction"], "momentum": sc["momentum"], "batch_size": sc["batch_size"],
            "weight_decay": sc["weight_decay"], "horizon": sc["steps"],
            **judge(est["steps"], est["steps_band"], meas),
            "seed_steps": [r.get("steps_measured") for r in ft["runs"]],
            "drift": est.get("drift"), "relinearized_at": est.get("relinearized_at"),
            "diverged": bool(est.get("diverged", False)), "reached": est.get("reached"),
            "pred_final_loss": est["final_loss"], "meas_final_loss": ft["final_loss"],
            "extrapolation": est.get("extrapolation"),
            "warnings": est["warnings"], "cost_s": wall, "timing": est["timing"],
            "finetune_one_seed_s": ft["seconds_train"]}


def summary(rows):
    if not rows:
        return None
    e = [abs(r["rel_error"]) for r in rows]
    n = len(rows)
    return {"n": n, "median_abs_err": percentile(e, 50), "p95_abs_err": percentile(e, 95), "max_abs_err": max(e),
            "within_20": sum(x <= 0.2 for x in e) / n, "coverage": sum(r["in_band"] for r in rows) / n,
            "top_below": sum(r["top_below"] for r in rows) / n,
            "median_signed": percentile([r["rel_error"] for r in rows], 50),
            "median_cost_s": percentile([r["cost_s"] for r in rows], 50)}


HALVES = ("development", "validation", "all")


def summaries(rows):
    """summary() of each half and of all rows."""
    s = {h: summary([r for r in rows if r["half"] == h]) for h in HALVES[:2]}
    s["all"] = summary(rows)
    if any(r["half"] == "holdout" for r in rows):  # the fresh set (make_scenarios.py --set fresh)
        s["holdout"] = summary([r for r in rows if r["half"] == "holdout"])
    return s


def halves_of(s):
    """The rows of a summary table: HALVES, and "holdout" when the rows have one."""
    return HALVES + (("holdout",) if "holdout" in s else ())


def mode_markdown(heading, s, rows):
    """A mode's summary table (s = summaries(rows)) and its per-scenario rows."""
    md = [heading, "", SUMMARY_HEAD] + [fmt_summary(h, s[h]) for h in halves_of(s)]
    md += ["", "| scenario | half | rule | pred | band | meas | err |", "|---|---|---|---|---|---|---|"]
    md += ["| %s | %s | %s | %d | %d–%d | %d | %+.1f %%%s |" % (
        r["name"], r["half"][:3], r["rule"], r["pred"], r["band"][0], r["band"][1], r["meas"],
        100 * r["rel_error"], "" if r["in_band"] else " (out)") for r in rows] + [""]
    return md


def fmt_summary(name, s):
    if not s:
        return "| %s | 0 | | | | | | | |" % name
    return "| %s | %d | %.1f %% | %.1f %% | %.1f %% | %.0f %% | %.0f %% | %.0f %% | %.1f s |" % (
        name, s["n"], 100 * s["median_abs_err"], 100 * s["p95_abs_err"], 100 * s["max_abs_err"],
        100 * s["within_20"], 100 * s["coverage"], 100 * s["top_below"], s["median_cost_s"])


SUMMARY_HEAD = ("| half | n | median \\|err\\| | 95th pct | max | within 20 % | meas. T in band | band top below truth "
                "| median cost |\n|---|---|---|---|---|---|---|---|---|")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    ap.add_argument("--scenarios", help="prebuilt make_scenarios.py output (default: build into OUT/scenarios)")
    ap.add_argument("--reduced", action="store_true")
    ap.add_argument("--truth-only", action="store_true", help="fine-tune (fill the cache) only")
    ap.add_argument("--truth-dir", default=os.path.join(HERE, "truth"))
    ap.add_argument("--modes", nargs="*", default=["default:"], help="NAME:ARGS, e.g. 'linear:--no-training'")
    ap.add_argument("--only", default="")
    ap.add_argument("--arch", nargs="*", help="only these architectures, in this order")
    ap.add_argument("--half", choices=["development", "validation", "holdout"])
    ap.add_argument("--estimate", default=os.path.join(ROOT, "build", "cli", "ttpred-estimate"))
    ap.add_argument("--finetune", default=os.path.join(ROOT, "build", "cli", "ttpred-finetune"))
    ap.add_argument("--strict", action="store_true")
    ap.add_argument("--cached-only", action="store_true", help="skip scenarios whose ground truth is not cached")
    a = ap.parse_args()
    modes = []
    for m in a.modes:
        name, _, args = m.partition(":")
        modes.append((name, shlex.split(args)))
    os.makedirs(a.out, exist_ok=True)
    scen = a.scenarios or os.path.join(a.out, "scenarios")
    if not a.scenarios and not build_scenarios(os.path.join(HERE, "make_scenarios.py"), scen,
                                               ["--reduced"] if a.reduced else []):
        return 1
    with open(os.path.join(scen, "scenarios.json")) as f:
        meta = json.load(f)
    scs = [s for s in meta["scenarios"] if a.only in s["name"] and (not a.half or s["half"] == a.half)
           and (not a.arch or s["arch"] in a.arch)]
    if a.arch:
        scs.sort(key=lambda s: (a.arch.index(s["arch"]), s["steps"]))
    for s in scs:
        s["data"] = meta["models"][s["arch"]]["data"]
    results = {m[0]: [] for m in modes}
    excluded = []
    t_begin = time.monotonic()
    try:
        for i, sc in enumerate(scs):
            t0 = time.monotonic()
            ft, cached = truth(sc, a, a.cached_only)
            if ft is None:
                continue
            line = "[%2d/%d] %-24s %-11s truth %s" % (i + 1, len(scs), sc["name"], sc["half"][:3],
                                                        "cached" if cached else "%.0f s" % (time.monotonic() - t0))
            coarse = target_of(sc, ft)[2]
            ft, dense = refined(sc, a, ft)
            if dense:
                line += " (T %s refined to %s)" % (coarse, target_of(sc, ft)[2])
            if a.truth_only:
                print(line, flush=True)
                continue
            flag, value, meas = target_of(sc, ft)
            drop = ft["curve"][0][1] - ft["curve"][-1][1]
            if meas is None or meas < MIN_STEPS or drop < MIN_DROP * ft["curve"][0][1]:
                print(line + "  excluded: the real run %s" % (
                    "does not reach the target" if meas is None else "has nothing to time (T %d, drop %.1f %% of L0)"
                    % (meas, 100 * drop / ft["curve"][0][1])), flush=True)
                excluded.append(sc["name"])
                continue
            for mode in modes:
                est, wall = estimate(sc, a, mode, flag, value)
                r = score(sc, ft, est, wall, meas, flag, value, mode[0])
                results[mode[0]].append(r)
                line += "  %s: pred %d [%d, %d] meas %d (%+.0f %%%s) %.0f s" % (
                    mode[0], r["pred"], r["band"][0], r["band"][1], meas, 100 * r["rel_error"],
                    "" if r["in_band"] else ", out", wall)
            print(line, flush=True)
    except PipelineError as e:
        print("run.py: error: %s" % e, file=sys.stderr)
        return 1
    if a.truth_only:
        print("run.py: ground truth of %d scenarios in %s (%.0f s)" % (len(scs), a.truth_dir, time.monotonic() - t_begin))
        return 0
    md = ["# bench/users results", "", "`%s`" % " ".join(["bench/users/run.py"] + sys.argv[1:]), ""]
    out = {"modes": {}, "excluded": excluded}
    if excluded:
        md += ["Excluded (nothing to time): " + ", ".join(excluded), ""]
    for name, rows in results.items():
        s = summaries(rows)
        out["modes"][name] = {"summary": s, "scenarios": rows}
        md += mode_markdown("## mode %s" % name, s, rows)
        print("\nmode %s:\n%s\n%s" % (name, SUMMARY_HEAD, "\n".join(fmt_summary(h, s[h]) for h in halves_of(s))))
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(out, f, indent=1)
    with open(os.path.join(a.out, "summary.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    if a.strict and any(len(rows) + len(excluded) < len(scs) for rows in results.values()):
        print("run.py: error: some scenarios have no prediction", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
