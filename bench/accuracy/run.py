#!/usr/bin/python3
"""Accuracy benchmark of ttpred: predicted vs measured fine-tuning time.

Usage:
  /usr/bin/python3 bench/accuracy/run.py [--reduced] [--out DIR]
      [--estimate BIN] [--finetune BIN] [--scenarios DIR] [--only SUBSTR]
      [--skip NAME ...] [--modes NAME:ARGS ...] [--no-cache]

For every scenario built by make_scenarios.py (into OUT/scenarios unless
--scenarios names a prebuilt directory), runs
  ttpred-estimate --spec S --json --quiet
  ttpred-finetune --spec S --json --quiet --seeds 0 1 2 --log-every K
(K = max(1, horizon // 100)), times both processes, prints a table and the
summary (median / 95th percentile of |relative error| of T(eps), share within
20 %, median cost ratio), and writes OUT/results.json and OUT/curves.png.

The cost ratio is the prediction's wall-clock (the whole ttpred-estimate
process) over one seed's fine-tuning of the whole horizon (`seconds_train` of
ttpred-finetune: training steps only, no loss evaluations).

Modes (--modes): each NAME:ARGS runs the estimator once more per scenario with
the extra arguments ARGS (split like a shell line), e.g.
  --modes "linear:--diagnose-steps 0" "diagnose:" \
          "relin10:--relinearize-frac 0.1" "relin20:--relinearize-frac 0.2"
`--relinearize-frac F` is run.py's own: it becomes `--relinearize K` with
K = max(1, round(F * T)), T the scenario's horizon. If the estimator binary does
not know --diagnose-steps / --relinearize, they are passed as engine.* keys of a
derived spec instead (NAME.MODE.yaml next to the scenario's spec). The ground
truth is fine-tuned once per scenario and shared by all modes; it is cached in
OUT/groundtruth/ keyed by the spec file's content (and the model file's bytes)
and reused on re-runs (--no-cache: always fine-tune). Without --modes the
estimator runs once with no extra arguments (mode "default"), as before.

Exit status: 0 whatever the accuracy; 1 if the pipeline breaks (a binary
fails, its JSON is unparsable or lacks a field).
"""

import argparse
import hashlib
import json
import math
import re
import os
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SEEDS = ["0", "1", "2"]

EST_FIELDS = ["steps", "steps_band", "seconds", "step_seconds", "horizon_steps",
              "initial_loss", "final_loss", "curve", "curve_band", "warnings",
              "timing", "gram"]
FT_FIELDS = ["steps", "seconds", "step_seconds", "seconds_train", "curve",
             "final_loss", "horizon_steps", "runs"]


class PipelineError(Exception):
    pass


def child_env():
    env = dict(os.environ)
    env["OMP_WAIT_POLICY"] = "PASSIVE"   # avoids spinning OpenMP threads on a shared host
    return env


def build_scenarios(script, scen_dir, flags):
    """Runs a make_scenarios.py into scen_dir; False (after a message) when it fails."""
    p = subprocess.run([sys.executable, script, scen_dir] + flags, env=child_env())
    if p.returncode != 0:
        print("run.py: error: make_scenarios.py failed (exit %d)" % p.returncode, file=sys.stderr)
        return False
    return True


def run_json(cmd, fields, what):
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=child_env(), universal_newlines=True)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise PipelineError("%s failed (exit %d): %s\n%s" % (
            what, p.returncode, " ".join(cmd), p.stderr.strip()[-2000:]))
    try:
        out = json.loads(p.stdout)
    except ValueError as e:
        raise PipelineError("%s: unparsable JSON (%s): %s" % (what, e, " ".join(cmd)))
    missing = [f for f in fields if f not in out]
    if missing:
        raise PipelineError("%s: JSON lacks %s: %s" % (what, missing, " ".join(cmd)))
    return out, wall


def finite(v):
    return isinstance(v, (int, float)) and math.isfinite(v)


def t_eps(curve, eps):
    """First logged step with |L_t - L_T| < eps on a [[t, L], ...] curve."""
    pts = [(t, l) for t, l in curve if finite(l)]
    if not pts or len(pts) < len(curve):
        return None
    lt = curve[-1][1]
    for t, l in pts:
        if abs(l - lt) < eps:
            return t
    return None


def percentile(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q / 100.0
    lo, hi = int(math.floor(k)), int(math.ceil(k))
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def fmt(v, spec):
    return format(v, spec) if finite(v) else "nan"


def file_sha(path, h=None):
    h = h or hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h


def ground_truth(sc, a, cache_dir):
    """ttpred-finetune on the scenario, 3 seeds; cached by the spec's content."""
    spec = sc["spec"]
    k = max(1, sc["steps"] // 100)
    cmd_tail = ["--json", "--quiet", "--seeds"] + SEEDS + ["--log-every", str(k)]
    h = hashlib.sha256()
    with open(spec, "rb") as f:
        text = f.read()
    h.update(text)
    h.update(" ".join(cmd_tail).encode())
    m = re.search(rb"^model:\s*(\S+)\s*$", text, re.M)
    if m:
        mp = os.path.join(os.path.dirname(spec), m.group(1).decode())
        if os.path.exists(mp):
            file_sha(mp, h)
    path = os.path.join(cache_dir, "%s-%s.json" % (sc["name"], h.hexdigest()[:16]))
    if a.cache and os.path.exists(path):
        with open(path) as f:
            c = json.load(f)
        return c["finetune"], c["process_s"], True
    ft, ft_wall = run_json([a.finetune, "--spec", spec] + cmd_tail, FT_FIELDS, "ttpred-finetune")
    os.makedirs(cache_dir, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump({"spec": spec, "finetune": ft, "process_s": ft_wall}, f)
    os.replace(path + ".tmp", path)
    return ft, ft_wall, False


ENGINE_FLAGS = {"--diagnose-steps": "diagnose_steps", "--relinearize": "relinearize"}


def mode_command(sc, mode, a):
    """The ttpred-estimate command line of one mode on one scenario."""
    name, args = mode
    spec = sc["spec"]
    extra, engine = [], {}
    i = 0
    while i < len(args):
        arg, val = args[i], None
        if "=" in arg and arg.startswith("--"):
            arg, val = arg.split("=", 1)
        elif i + 1 < len(args):
            val = args[i + 1]
            i += 1
        if arg == "--relinearize-frac":
            if val is None:
                raise PipelineError("mode %s: --relinearize-frac needs a value" % name)
            arg, val = "--relinearize", str(max(1, int(math.floor(float(val) * sc["steps"] + 0.5))))
        if arg in ENGINE_FLAGS and not a.cli_engine_flags:
            engine[ENGINE_FLAGS[arg]] = int(val)
        else:
            extra += [arg] if val is None else [arg, val]
        i += 1
    if engine:
        with open(spec) as f:
            text = f.read()
        if re.search(r"^engine:", text, re.M):
            raise PipelineError("%s: spec already has an engine section" % spec)
        text = text.rstrip("\n") + "\nengine:\n" + "".join(
            "  %s: %d\n" % kv for kv in sorted(engine.items()))
        spec = os.path.join(os.path.dirname(spec), "%s.%s.yaml" % (sc["name"], name))
        with open(spec, "w") as f:
            f.write(text)
    shown = extra + ["engine.%s=%d" % kv for kv in sorted(engine.items())]
    return [a.estimate, "--spec", spec, "--json", "--quiet"] + extra, " ".join(shown)


def run_scenario(sc, a, mode, ft, ft_wall):
    horizon = sc["steps"]
    k = max(1, horizon // 100)
    cmd, shown = mode_command(sc, mode, a)
    est, est_wall = run_json(cmd, EST_FIELDS, "ttpred-estimate")
    if est["horizon_steps"] != horizon or ft["horizon_steps"] != horizon:
        raise PipelineError("%s: horizon mismatch: spec %d, estimate %s, finetune %s"
                            % (sc["name"], horizon, est["horizon_steps"],
                               ft["horizon_steps"]))
    ps, ms = est["steps"], ft["steps"]
    rel = (ps - ms) / max(ms, 1)
    rel_s = ((est["seconds"] - ft["seconds"]) / ft["seconds"]
             if finite(ft["seconds"]) and ft["seconds"] > 0 and finite(est["seconds"])
             else float("nan"))
    lo, hi = est["steps_band"]
    # Cross-checks of the binaries' own T(eps) against their curves.
    notes = []
    eps = sc["epsilon"]
    mt = t_eps(ft["curve"], eps)
    if mt is not None and mt != ms:
        notes.append("finetune steps %d != T(eps) of its curve %d" % (ms, mt))
    if mt is None:
        notes.append("measured curve has non-finite values")
    meas_range = (ft["curve"][0][1] - ft["final_loss"]) if finite(ft["final_loss"]) else float("nan")
    return {
        "name": sc["name"], "mode": mode[0], "mode_args": shown,
        "arch": sc["arch"], "loss": sc["loss"], "lr": sc["lr"],
        "momentum": sc["momentum"], "batch_size": sc["batch_size"],
        "weight_decay": sc["weight_decay"], "horizon_steps": horizon, "N": sc["N"],
        "epsilon": eps, "L0": sc["L0"], "log_every": k,
        "pred_steps": ps, "pred_steps_band": [lo, hi], "meas_steps": ms,
        "rel_error": rel, "abs_rel_error": abs(rel),
        "diverged": bool(est.get("diverged", False)), "reached": est.get("reached"),
        "drift": est.get("drift"), "drift_steps": est.get("drift_steps"),
        "relinearized_at": est.get("relinearized_at"),
        "meas_in_band": bool(lo <= ms <= hi),
        "pred_seconds": est["seconds"], "meas_seconds": ft["seconds"],
        "rel_error_seconds": rel_s,
        "pred_step_seconds": est["step_seconds"], "meas_step_seconds": ft["step_seconds"],
        "pred_initial_loss": est["initial_loss"], "pred_final_loss": est["final_loss"],
        "meas_final_loss": ft["final_loss"], "meas_loss_range": meas_range,
        "eps_over_range": eps / meas_range if finite(meas_range) and meas_range > 0 else float("nan"),
        "lr_stability": est.get("lr_stability"),
        "gram": est["gram"], "warnings": est["warnings"],
        "estimate_timing": est["timing"],
        "cost_prediction_s": est_wall, "cost_finetune_one_seed_s": ft["seconds_train"],
        "cost_ratio": est_wall / ft["seconds_train"] if ft["seconds_train"] > 0 else float("nan"),
        "finetune_process_s": ft_wall, "finetune_runs": ft["runs"],
        "notes": notes,
        "pred_curve": est["curve"], "pred_curve_band": est["curve_band"],
        "meas_curve": ft["curve"],
    }


HEADER = ("%-26s %6s %6s %8s %9s %9s %8s %8s %7s %6s" % (
    "scenario", "pred", "meas", "rel.err", "pred s", "meas s", "pred c.", "ft c.",
    "ratio", "lrstab"))


def row(r):
    return "%-26s %6d %6d %+7.1f%% %9s %9s %8.2f %8.2f %7.2f %6s%s" % (
        r["name"][:26], r["pred_steps"], r["meas_steps"], 100 * r["rel_error"],
        fmt(r["pred_seconds"], ".3f"), fmt(r["meas_seconds"], ".3f"),
        r["cost_prediction_s"], r["cost_finetune_one_seed_s"], r["cost_ratio"],
        fmt(r["lr_stability"], ".2f") if r["lr_stability"] is not None else "-",
        "" if r["meas_in_band"] else "  (out of band)")


def summary(results):
    errs = [r["abs_rel_error"] for r in results]
    ok = [r["abs_rel_error"] for r in results if not r.get("diverged")]
    costs = [r["cost_prediction_s"] for r in results]
    errs_s = [abs(r["rel_error_seconds"]) for r in results if finite(r["rel_error_seconds"])]
    ratios = [r["cost_ratio"] for r in results if finite(r["cost_ratio"])]
    return {
        "scenarios": len(results),
        "median_abs_rel_error": percentile(errs, 50),
        "p95_abs_rel_error": percentile(errs, 95),
        "share_within_20pct": sum(e <= 0.2 for e in errs) / len(errs) if errs else float("nan"),
        "share_in_band": sum(r["meas_in_band"] for r in results) / len(results) if results else float("nan"),
        "median_abs_rel_error_seconds": percentile(errs_s, 50),
        "median_cost_ratio": percentile(ratios, 50),
        "diverged": len(results) - len(ok),
        "median_abs_rel_error_excl_diverged": percentile(ok, 50),
        "p95_abs_rel_error_excl_diverged": percentile(ok, 95),
        "share_within_20pct_excl_diverged": sum(e <= 0.2 for e in ok) / len(ok) if ok else float("nan"),
        "median_cost_prediction_s": percentile(costs, 50),
        "total_cost_prediction_s": sum(costs),
    }


def plot(results, path, max_panels=6):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if not results:
        return
    if len(results) <= max_panels:
        pick = results
    else:  # spread over the list (it is grouped by architecture and loss)
        idx = sorted({round(i * (len(results) - 1) / (max_panels - 1)) for i in range(max_panels)})
        pick = [results[i] for i in idx]
    cols = 3 if len(pick) > 2 else len(pick)
    rows_ = (len(pick) + cols - 1) // cols
    fig, axes = plt.subplots(rows_, cols, figsize=(5 * cols, 3.6 * rows_), squeeze=False)
    for ax in axes.flat[len(pick):]:
        ax.axis("off")
    for ax, r in zip(axes.flat, pick):
        nan = float("nan")
        band = [[b[0]] + [v if finite(v) else nan for v in b[1:]] for b in r["pred_curve_band"]]
        pc = [(t, l if finite(l) else nan) for t, l in r["pred_curve"]]
        ax.fill_between([b[0] for b in band], [b[1] for b in band], [b[2] for b in band],
                        color="C0", alpha=0.25, label="predicted 5-95 %")
        ax.plot([p[0] for p in pc], [p[1] for p in pc],
                color="C0", label="predicted mean")
        mc = [(t, l) for t, l in r["meas_curve"] if finite(l)]
        ax.plot([p[0] for p in mc], [p[1] for p in mc], color="C3", lw=1,
                label="measured (mean of 3 seeds)")
        ax.axvline(r["pred_steps"], color="C0", ls="--", lw=1)
        ax.axvline(r["meas_steps"], color="C3", ls=":", lw=1)
        ax.set_yscale("log")
        ys = [l for _, l in mc] + [l for _, l in pc if finite(l)]
        top = 3 * max([l for _, l in mc] + [r["pred_curve"][0][1]])
        ax.set_ylim(0.5 * min(ys), top)  # a diverging prediction does not squash the plot
        ax.set_title("%s\nT pred %d / meas %d (%+.0f%%)" % (
            r["name"], r["pred_steps"], r["meas_steps"], 100 * r["rel_error"]), fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.tick_params(labelsize=8)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_modes(specs):
    if not specs:
        return [("default", [])]
    modes = []
    for m in specs:
        name, sep, args = m.partition(":")
        if not sep or not re.match(r"^[A-Za-z0-9_.-]+$", name):
            raise SystemExit("run.py: error: --modes entries are NAME:ARGS, got %r" % m)
        if name in [n for n, _ in modes]:
            raise SystemExit("run.py: error: mode %s given twice" % name)
        modes.append((name, shlex.split(args)))
    return modes


def print_summary(s, n):
    print("median |rel. error| of T(eps): %.1f %%  (%.1f %% without the %d diverged)" % (
        100 * s["median_abs_rel_error"], 100 * s["median_abs_rel_error_excl_diverged"],
        s["diverged"]))
    print("95th percentile |rel. error|:  %.1f %%  (%.1f %% without the diverged)" % (
        100 * s["p95_abs_rel_error"], 100 * s["p95_abs_rel_error_excl_diverged"]))
    print("share within 20 %%:             %.0f %% (%d/%d)" % (
        100 * s["share_within_20pct"], round(s["share_within_20pct"] * n), n))
    print("measured T inside steps_band:  %.0f %%" % (100 * s["share_in_band"]))
    print("median |rel. error| of seconds: %.1f %%" % (100 * s["median_abs_rel_error_seconds"]))
    print("median prediction cost: %.2f s" % s["median_cost_prediction_s"])
    print("median cost ratio (prediction / one fine-tuning run): %.2f"
          % s["median_cost_ratio"])


def mode_tables(modes, by_mode, names):
    """Markdown: per-mode summary and per-scenario errors (docs/accuracy.md)."""
    out = ["| mode | estimator args | n | diverged | median \\|err\\| excl. div. | "
           "95th pct excl. div. | median \\|err\\| incl. div. | 95th pct incl. div. | "
           "within 20 % | meas. T in band | median cost s | median cost ratio |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, args in modes:
        s = summary(by_mode[name])
        n = len(by_mode[name])
        out.append("| %s | `%s` | %d | %d | %.1f %% | %.0f %% | %.1f %% | %.0f %% | %.0f %% (%d/%d) | "
                   "%.0f %% (%d/%d) | %.1f | %.1f |" % (
                       name, " ".join(args) or "(none)", n, s["diverged"],
                       100 * s["median_abs_rel_error_excl_diverged"],
                       100 * s["p95_abs_rel_error_excl_diverged"],
                       100 * s["median_abs_rel_error"], 100 * s["p95_abs_rel_error"],
                       100 * s["share_within_20pct"], round(s["share_within_20pct"] * n), n,
                       100 * s["share_in_band"], round(s["share_in_band"] * n), n,
                       s["median_cost_prediction_s"], s["median_cost_ratio"]))
    out.append("")
    head = "| scenario | T | meas T |" + "".join(" %s pred (err) |" % n for n, _ in modes)
    head += "".join(" %s cost s |" % n for n, _ in modes) + " drift |"
    out += [head, "|" + "---|" * (3 + 2 * len(modes) + 1)]
    idx = {name: {r["name"]: r for r in by_mode[name]} for name, _ in modes}
    for sc in names:
        rs = [idx[n].get(sc) for n, _ in modes]
        first = next(r for r in rs if r)
        line = "| %s | %d | %d |" % (sc, first["horizon_steps"], first["meas_steps"])
        for r in rs:
            if r is None:
                line += " — |"
            elif r.get("diverged"):
                line += " diverged |"
            else:
                line += " %d (%+.0f %%)%s |" % (r["pred_steps"], 100 * r["rel_error"],
                                               "" if r["meas_in_band"] else "°")
        for r in rs:
            line += " — |" if r is None else " %.1f |" % r["cost_prediction_s"]
        drifts = [r["drift"] for r in rs if r and finite(r.get("drift")) and r.get("drift_steps")]
        line += " %s |" % (fmt(drifts[0], ".2f") if drifts else "—")
        out.append(line)
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reduced", action="store_true", help="3 short CI scenarios")
    ap.add_argument("--out", default=None,
                    help="output directory (default: bench/accuracy/out[-reduced])")
    ap.add_argument("--estimate", default=os.path.join(ROOT, "build", "cli", "ttpred-estimate"))
    ap.add_argument("--finetune", default=os.path.join(ROOT, "build", "cli", "ttpred-finetune"))
    ap.add_argument("--scenarios", default=None,
                    help="prebuilt make_scenarios.py directory (default: build into OUT/scenarios)")
    ap.add_argument("--only", default=None, help="run the scenarios whose name contains this")
    ap.add_argument("--skip", nargs="+", default=[], metavar="NAME",
                    help="leave out these scenarios (exact names)")
    ap.add_argument("--modes", nargs="+", default=None, metavar="NAME:ARGS",
                    help="estimator modes, each NAME:EXTRA_ARGS (see above)")
    ap.add_argument("--no-cache", dest="cache", action="store_false",
                    help="fine-tune even when OUT/groundtruth has the result")
    a = ap.parse_args()
    modes = parse_modes(a.modes)
    out = os.path.abspath(a.out or os.path.join(HERE, "out-reduced" if a.reduced else "out"))
    os.makedirs(out, exist_ok=True)
    t_start = time.monotonic()

    for b in (a.estimate, a.finetune):
        if not os.access(b, os.X_OK):
            print("run.py: error: %s is not an executable" % b, file=sys.stderr)
            return 1
    a.cli_engine_flags = True
    if any(arg in ENGINE_FLAGS or arg == "--relinearize-frac" for _, args in modes for arg in args):
        h = subprocess.run([a.estimate, "--help"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, universal_newlines=True).stdout
        a.cli_engine_flags = all(f in h for f in ENGINE_FLAGS)
        if not a.cli_engine_flags:
            print("note: %s has no --diagnose-steps/--relinearize options: passing them as "
                  "engine.* keys of derived specs" % a.estimate)
    scen_dir = a.scenarios or os.path.join(out, "scenarios")
    if a.scenarios is None and not build_scenarios(os.path.join(HERE, "make_scenarios.py"), scen_dir,
                                                   ["--reduced"] if a.reduced else []):
        return 1
    with open(os.path.join(scen_dir, "scenarios.json")) as f:
        meta = json.load(f)
    scenarios = meta["scenarios"]
    if a.only:
        scenarios = [s for s in scenarios if a.only in s["name"]]
    unknown = set(a.skip) - {s["name"] for s in scenarios}
    if unknown:
        print("run.py: warning: --skip names no scenario: %s" % " ".join(sorted(unknown)),
              file=sys.stderr)
    scenarios = [s for s in scenarios if s["name"] not in a.skip]
    multi = a.modes is not None

    print("ttpred accuracy benchmark: %d scenarios, eps = %g x L_0, seeds %s%s"
          % (len(scenarios), meta["eps_fraction"], " ".join(SEEDS),
             "" if not multi else ", modes " + " ".join(n for n, _ in modes)))
    print("steps: predicted / measured T(eps); s: seconds to T(eps); "
          "c.: cost in s (prediction process / one seed's fine-tuning)")
    print(("%-8s " % "mode" if multi else "") + HEADER)
    sys.stdout.flush()
    by_mode = {n: [] for n, _ in modes}
    gt_cache = os.path.join(out, "groundtruth")
    cached = 0
    try:
        for sc in scenarios:
            ft, ft_wall, hit = ground_truth(sc, a, gt_cache)
            cached += hit
            for mode in modes:
                r = run_scenario(sc, a, mode, ft, ft_wall)
                r["finetune_cached"] = hit
                by_mode[mode[0]].append(r)
                print(("%-8s " % mode[0][:8] if multi else "") + row(r)
                      + ("  (diverged)" if r["diverged"] else "")
                      + ("  drift %.2f" % r["drift"] if multi and finite(r.get("drift"))
                         and r.get("drift_steps") else ""))
                for n in r["notes"]:
                    print("    note: %s" % n)
                sys.stdout.flush()
            if multi:  # partial results survive an interrupted run
                with open(os.path.join(out, "results-partial.json"), "w") as f:
                    json.dump({"modes": [[n, args] for n, args in modes],
                               "results": by_mode}, f)
    except PipelineError as e:
        print("run.py: error: %s" % e, file=sys.stderr)
        return 1

    total = time.monotonic() - t_start
    summaries = {}
    for name, args in modes:
        results = by_mode[name]
        s = summary(results)
        s["total_seconds"] = total
        s["finetune_cached"] = cached
        summaries[name] = s
        print()
        if multi:
            print("== mode %s (%s) ==" % (name, " ".join(args) or "no extra arguments"))
        print_summary(s, len(results))
    print("total benchmark time: %.0f s (ground truth cached for %d of %d scenarios)"
          % (total, cached, len(scenarios)))

    results = by_mode[modes[0][0]]
    warn_counts = {}
    for r in results:
        for w in r["warnings"]:
            key = re.sub(r"[0-9][0-9.e+-]*", "#", w)[:90]
            warn_counts[key] = warn_counts.get(key, 0) + 1
    if warn_counts:
        print("estimate warnings (scenarios%s):" % (", mode " + modes[0][0] if multi else ""))
        for w, c in sorted(warn_counts.items(), key=lambda kv: -kv[1]):
            print("  %2d x %s" % (c, w))

    doc = {"summary": summaries[modes[0][0]], "eps_fraction": meta["eps_fraction"],
           "models": meta.get("models"), "estimate": a.estimate,
           "finetune": a.finetune, "seeds": [int(x) for x in SEEDS],
           "skipped": a.skip, "scenarios": results}
    if multi:
        doc["modes"] = {name: {"args": args, "summary": summaries[name],
                               "scenarios": by_mode[name]} for name, args in modes}
        md = mode_tables(modes, by_mode, [s["name"] for s in scenarios])
        with open(os.path.join(out, "modes.md"), "w") as f:
            f.write(md)
        print()
        print(md)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(doc, f, indent=1)
    try:
        plot(results, os.path.join(out, "curves.png"))
    except Exception as e:  # the plot is a by-product; the numbers are written
        print("run.py: error: plot failed: %s" % e, file=sys.stderr)
        return 1
    print("wrote %s and %s%s" % (os.path.join(out, "results.json"),
                                 os.path.join(out, "curves.png"),
                                 " and " + os.path.join(out, "modes.md") if multi else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
