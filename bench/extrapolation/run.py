#!/usr/bin/python3
"""Extrapolation benchmark of ttpred: how the prediction of T(eps) degrades when
the Gram matrix Θ is computed on N0 < N samples.

Usage:
  /usr/bin/python3 bench/extrapolation/run.py [--quick] [--out DIR]
      [--estimate BIN] [--finetune BIN] [--scenario-dir DIR]
      [--scenarios NAME ...] [--only NAME] [--n0 N0 ...] [--steps T]
      [--extra-args "ARGS"] [--no-cache]

Builds the scenarios with make_scenarios.py into OUT/scenarios (unless
--scenario-dir names a prebuilt directory), then for every scenario:
  ground truth: ttpred-finetune --spec S --json -q --seeds 0 1 2 --log-every 2
                (T(eps) on the mean curve of the 3 seeds; cached in
                OUT/groundtruth/ keyed by the spec's and the model's bytes)
  predictions:  ttpred-estimate --spec S --json -q --subset N0 --epsilon EPS [ARGS]
                for every N0 (default N/20, N/10, N/4, N = 200 400 1000 4000;
                --quick: N = 2000, N0 = 100 200 500 2000, 2 epochs)
and records the predicted steps, steps_band, the `extrapolated` flag, the wall
seconds of the estimate process and its timing.total. Error = (pred - meas) / meas.

Outputs (OUT, default bench/extrapolation/out, --quick: out-quick):
  results.json  every call (rewritten after each one, "complete": false until
                the end) and the summary per N0/N
  results.md    the per-call table and the summary table (also printed)
  extrapolation.png  |error| % and cost against N0/N, one line per scenario

A failing call records its error string and the run goes on; the exit status is
0 unless nothing could be run at all (bad binary, make_scenarios.py failed).

--steps T overrides the horizon of both binaries (a short test run); --extra-args
is split like a shell line and appended to every estimate call, e.g.
  --extra-args "--relinearize 0".
The child processes get OMP_WAIT_POLICY=PASSIVE and, unless already set,
TTPRED_CACHE_MAX_BYTES=20000000000 so that the Θ of N0 = N (20 000 rows for
C = 5) fits in ttpred's Gram-matrix cache.
"""

import argparse
import hashlib
import importlib.util
import json
import os
import shlex
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# bench/accuracy/run.py: run_json (child env with OMP_WAIT_POLICY), t_eps,
# percentile, file_sha, the JSON field lists.
_spec = importlib.util.spec_from_file_location(
    "accuracy_run", os.path.join(ROOT, "bench", "accuracy", "run.py"))
acc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(acc)

SEEDS = acc.SEEDS          # 0 1 2
LOG_EVERY = 2
CACHE_MAX_BYTES = "20000000000"


def finite(v):
    return acc.finite(v)


def ground_truth(sc, a, cache_dir):
    """ttpred-finetune, 3 seeds, cached by spec + model bytes + arguments."""
    spec = sc["spec"]
    tail = ["--json", "--quiet", "--seeds"] + SEEDS + ["--log-every", str(LOG_EVERY)]
    if a.steps:
        tail += ["--steps", str(a.steps)]
    h = hashlib.sha256()
    with open(spec, "rb") as f:
        h.update(f.read())
    h.update(" ".join(tail).encode())
    acc.file_sha(os.path.join(os.path.dirname(spec), "..", "models", sc["model"]), h)
    path = os.path.join(cache_dir, "%s-%s.json" % (sc["name"], h.hexdigest()[:16]))
    if a.cache and os.path.exists(path):
        with open(path) as f:
            c = json.load(f)
        return c["finetune"], c["process_s"], True
    ft, wall = acc.run_json([a.finetune, "--spec", spec] + tail, acc.FT_FIELDS,
                            "ttpred-finetune")
    os.makedirs(cache_dir, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump({"spec": spec, "finetune": ft, "process_s": wall}, f)
    os.replace(path + ".tmp", path)
    return ft, wall, False


def estimate(sc, n0, a):
    cmd = [a.estimate, "--spec", sc["spec"], "--json", "-q", "--subset", str(n0),
           "--epsilon", repr(sc["epsilon"])]
    if a.steps:
        cmd += ["--steps", str(a.steps)]
    cmd += a.extra
    est, wall = acc.run_json(cmd, acc.EST_FIELDS, "ttpred-estimate")
    return est, wall, cmd


def record(sc, n0, gt, est, wall, cmd, err):
    r = {"name": sc["name"], "arch": sc["arch"], "loss": sc["loss"], "N": sc["N"],
         "N0": n0, "frac": n0 / sc["N"], "epsilon": sc["epsilon"], "L0": sc["L0"],
         "command": " ".join(shlex.quote(c) for c in cmd), "error": err,
         "meas_steps": gt["steps"] if gt else None,
         "pred_steps": None, "pred_steps_band": None, "extrapolated": None,
         "rel_error": None, "abs_rel_error": None, "meas_in_band": None,
         "cost_s": wall, "timing_total_s": None, "notes": []}
    if est is None:
        return r
    lo, hi = est["steps_band"]
    r.update({
        "pred_steps": est["steps"], "pred_steps_band": [lo, hi],
        "extrapolated": bool(est.get("extrapolated", False)),
        "diverged": bool(est.get("diverged", False)),
        "horizon_steps": est["horizon_steps"],
        "timing_total_s": est["timing"].get("total"), "timing": est["timing"],
        "pred_initial_loss": est["initial_loss"], "pred_final_loss": est["final_loss"],
        "relinearized_at": est.get("relinearized_at"), "drift": est.get("drift"),
        "lr_stability": est.get("lr_stability"), "gram": est["gram"],
        "gram_cached": bool(est["gram"].get("cached", False)),
        "subset_reported": (est.get("data") or {}).get("subset"),
        "warnings": est["warnings"],
    })
    if gt:
        ms = gt["steps"]
        r["rel_error"] = (est["steps"] - ms) / max(ms, 1)
        r["abs_rel_error"] = abs(r["rel_error"])
        r["meas_in_band"] = bool(lo <= ms <= hi)
        if est["horizon_steps"] != gt["horizon_steps"]:
            r["notes"].append("horizon mismatch: estimate %s, finetune %s"
                              % (est["horizon_steps"], gt["horizon_steps"]))
    if n0 == sc["N"] and finite(est["initial_loss"]) and \
            abs(est["initial_loss"] - sc["L0"]) > 0.01 * sc["L0"]:
        r["notes"].append("estimator L_0 %.4g != make_scenarios L_0 %.4g"
                          % (est["initial_loss"], sc["L0"]))
    return r


def summarize(rows, n0_list, N_of):
    """Per N0/N: median and 95th percentile of |err| over the scenarios, and
    per scenario err(N0) - err(N0 = N)."""
    ref = {r["name"]: r["rel_error"] for r in rows
           if r["N0"] == N_of[r["name"]] and r["rel_error"] is not None}
    fracs = sorted({r["frac"] for r in rows})
    out = []
    for fr in fracs:
        rs = [r for r in rows if r["frac"] == fr]
        errs = [r["abs_rel_error"] for r in rs if r["abs_rel_error"] is not None]
        costs = [r["cost_s"] for r in rs if r["error"] is None]
        delta = {r["name"]: r["rel_error"] - ref[r["name"]] for r in rs
                 if r["rel_error"] is not None and r["name"] in ref}
        out.append({
            "frac": fr, "N0": sorted({r["N0"] for r in rs}), "n": len(errs),
            "failed": sum(r["error"] is not None for r in rs),
            "median_abs_rel_error": acc.percentile(errs, 50) if errs else None,
            "p95_abs_rel_error": acc.percentile(errs, 95) if errs else None,
            "median_cost_s": acc.percentile(costs, 50) if costs else None,
            "error_minus_full": delta,
            "median_abs_error_minus_full": (acc.percentile([abs(v) for v in delta.values()], 50)
                                            if delta else None),
        })
    return out


def short_error(err):
    """'what failed (exit N)' and the last line of its stderr, for the console."""
    lines = [l for l in (err or "").splitlines() if l.strip()]
    if not lines:
        return ""
    head = lines[0].split(": ")[0]
    return (head + ": " + lines[-1] if len(lines) > 1 else lines[0])[:200]


def pct(v, spec="+.1f"):
    return (format(100 * v, spec) + " %") if v is not None and finite(v) else "—"


def markdown(rows, summ, names):
    out = ["| scenario | N0 | N0/N | predicted | band | measured | error % | cost s | extrap. "
           "| Θ cached |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["pred_steps"] is None:
            out.append("| %s | %d | %.3g | failed | — | %s | — | %s | — | — |" % (
                r["name"], r["N0"], r["frac"],
                r["meas_steps"] if r["meas_steps"] is not None else "—",
                "%.1f" % r["cost_s"] if r["cost_s"] is not None else "—"))
            continue
        out.append("| %s | %d | %.3g | %d%s | [%d, %d] | %s | %s | %.1f | %s | %s |" % (
            r["name"], r["N0"], r["frac"], r["pred_steps"],
            " (diverged)" if r.get("diverged") else "",
            r["pred_steps_band"][0], r["pred_steps_band"][1],
            r["meas_steps"] if r["meas_steps"] is not None else "—",
            pct(r["rel_error"]), r["cost_s"], "yes" if r["extrapolated"] else "no",
            "yes" if r["gram_cached"] else "no"))
    out += ["", "| N0/N | N0 | n | median \\|err\\| | 95th pct \\|err\\| | median cost s |"
            + "".join(" %s: err − err(N0=N) |" % n for n in names),
            "|---|---|---|---|---|---|" + "---|" * len(names)]
    for s in summ:
        out.append("| %.3g | %s | %d%s | %s | %s | %s |" % (
            s["frac"], " ".join(str(n) for n in s["N0"]), s["n"],
            " (+%d failed)" % s["failed"] if s["failed"] else "",
            pct(s["median_abs_rel_error"], ".1f"), pct(s["p95_abs_rel_error"], ".1f"),
            "%.1f" % s["median_cost_s"] if s["median_cost_s"] is not None else "—")
            + "".join(" %s |" % pct(s["error_minus_full"].get(n)) for n in names))
    return "\n".join(out) + "\n"


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = []
    for r in rows:
        if r["name"] not in names:
            names.append(r["name"])
    for i, n in enumerate(names):
        rs = sorted((r for r in rows if r["name"] == n), key=lambda r: r["frac"])
        e = [(r["frac"], 100 * r["abs_rel_error"]) for r in rs if r["abs_rel_error"] is not None]
        c = [(r["frac"], r["cost_s"]) for r in rs if r["error"] is None]
        if e:
            ax1.plot(*zip(*e), marker="o", color="C%d" % i, label=n)
        if c:
            ax2.plot(*zip(*c), marker="o", color="C%d" % i, label=n)
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xlabel("N0 / N")
        ax.grid(True, which="both", alpha=0.3)
    ax1.set_ylabel("|predicted − measured| / measured  (%)")
    ax1.set_ylim(bottom=0)
    ax1.set_title("error of T(eps) vs Gram subset")
    ax2.set_yscale("log")
    ax2.set_ylabel("ttpred-estimate wall seconds")
    ax2.set_title("cost of the prediction")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: N = 2000, N0 = 100 200 500 2000, 2 epochs")
    ap.add_argument("--out", default=None,
                    help="output directory (default bench/extrapolation/out[-quick])")
    ap.add_argument("--estimate", default=os.path.join(ROOT, "build", "cli", "ttpred-estimate"))
    ap.add_argument("--finetune", default=os.path.join(ROOT, "build", "cli", "ttpred-finetune"))
    ap.add_argument("--scenario-dir", default=None,
                    help="prebuilt make_scenarios.py directory (default: build into OUT/scenarios)")
    ap.add_argument("--scenarios", nargs="+", default=None, metavar="NAME",
                    help="run these scenarios (exact names)")
    ap.add_argument("--only", default=None, metavar="NAME",
                    help="run only this scenario (exact name, else those containing it)")
    ap.add_argument("--n0", nargs="+", type=int, default=None,
                    help="Gram subset sizes (default: scenarios.json's, N/20 N/10 N/4 N)")
    ap.add_argument("--strict", action="store_true",
                    help="exit 1 when a call failed or a prediction with N0 < N was not extrapolated "
                         "(for ctest's smoke run)")
    ap.add_argument("--steps", type=int, default=None,
                    help="override the horizon of both binaries (short test runs)")
    ap.add_argument("--extra-args", default="",
                    help="extra arguments for every ttpred-estimate call (one shell-like string)")
    ap.add_argument("--no-cache", dest="cache", action="store_false",
                    help="fine-tune even when OUT/groundtruth has the result")
    a = ap.parse_args()
    a.extra = shlex.split(a.extra_args)
    out = os.path.abspath(a.out or os.path.join(HERE, "out-quick" if a.quick else "out"))
    os.makedirs(out, exist_ok=True)
    os.environ.setdefault("TTPRED_CACHE_MAX_BYTES", CACHE_MAX_BYTES)  # inherited by acc.child_env()
    t_start = time.monotonic()

    for b in (a.estimate, a.finetune):
        if not os.access(b, os.X_OK):
            print("run.py: error: %s is not an executable" % b, file=sys.stderr)
            return 1
    scen_dir = a.scenario_dir or os.path.join(out, "scenarios")
    if a.scenario_dir is None and not acc.build_scenarios(os.path.join(HERE, "make_scenarios.py"), scen_dir,
                                                          ["--quick"] if a.quick else []):
        return 1
    with open(os.path.join(scen_dir, "scenarios.json")) as f:
        meta = json.load(f)
    scenarios = meta["scenarios"]
    all_names = [s["name"] for s in scenarios]
    if a.scenarios:
        unknown = set(a.scenarios) - set(all_names)
        if unknown:
            print("run.py: error: unknown scenarios %s (have: %s)"
                  % (" ".join(sorted(unknown)), " ".join(all_names)), file=sys.stderr)
            return 2
        scenarios = [s for s in scenarios if s["name"] in a.scenarios]
    if a.only:
        exact = [s for s in scenarios if s["name"] == a.only]
        scenarios = exact or [s for s in scenarios if a.only in s["name"]]
    if not scenarios:
        print("run.py: error: no scenario selected", file=sys.stderr)
        return 2
    n0_list = sorted(set(a.n0 or meta["n0"]))
    names = [s["name"] for s in scenarios]
    N_of = {s["name"]: s["N"] for s in scenarios}

    print("ttpred extrapolation benchmark: %d scenarios (N = %s), N0 = %s, eps = %g x L_0, "
          "seeds %s%s" % (len(scenarios), ", ".join(sorted({str(s["N"]) for s in scenarios})),
                          " ".join(map(str, n0_list)), meta["eps_fraction"], " ".join(SEEDS),
                          (", estimate args: " + " ".join(a.extra)) if a.extra else ""))
    hdr = "%-12s %5s %6s %6s %13s %6s %8s %8s %s" % (
        "scenario", "N0", "N0/N", "pred", "band", "meas", "error", "cost s", "")
    print(hdr)
    sys.stdout.flush()

    rows, gts = [], {}

    def write(complete):
        summ = summarize(rows, n0_list, N_of)
        doc = {"complete": complete, "estimate": a.estimate, "finetune": a.finetune,
               "extra_args": a.extra, "steps_override": a.steps, "quick": a.quick,
               "seeds": [int(s) for s in SEEDS], "log_every": LOG_EVERY,
               "eps_fraction": meta["eps_fraction"], "n0": n0_list,
               "models": meta.get("models"), "scenarios": scenarios,
               "groundtruth": gts, "summary": summ, "results": rows,
               "total_seconds": time.monotonic() - t_start}
        with open(os.path.join(out, "results.json.tmp"), "w") as f:
            json.dump(doc, f, indent=1)
        os.replace(os.path.join(out, "results.json.tmp"), os.path.join(out, "results.json"))
        md = markdown(rows, summ, names)
        with open(os.path.join(out, "results.md"), "w") as f:
            f.write(md)
        return md

    gt_cache = os.path.join(out, "groundtruth")
    for sc in scenarios:
        gt, gerr = None, None
        try:
            ft, ft_wall, hit = ground_truth(sc, a, gt_cache)
            mt = acc.t_eps(ft["curve"], sc["epsilon"])
            gt = {"steps": ft["steps"], "horizon_steps": ft["horizon_steps"],
                  "final_loss": ft["final_loss"], "initial_loss": ft["curve"][0][1],
                  "seconds_train": ft["seconds_train"], "process_s": ft_wall,
                  "cached": hit, "t_eps_of_curve": mt, "curve": ft["curve"]}
            if mt is None:
                gerr = "measured curve has non-finite values"
            elif mt != ft["steps"]:
                print("    note: %s: finetune steps %d != T(eps) of its curve %d"
                      % (sc["name"], ft["steps"], mt))
            print("%-12s ground truth: T(eps) = %d of %d steps, L %.4g -> %.4g (%s, %.0f s)"
                  % (sc["name"], ft["steps"], ft["horizon_steps"], ft["curve"][0][1],
                     ft["final_loss"], "cached" if hit else "fine-tuned", ft_wall))
        except (acc.PipelineError, OSError, KeyError, ValueError, TypeError) as e:
            gerr = "ground truth: %s" % e
        if gerr:
            print("%-12s ground truth FAILED: %s" % (sc["name"], short_error(gerr)))
            gt = None
        gts[sc["name"]] = gt if gt else {"error": gerr}
        sys.stdout.flush()
        for n0 in n0_list:
            est, wall, cmd, err = None, None, [], None
            try:
                t0 = time.monotonic()
                est, wall, cmd = estimate(sc, n0, a)
            except (acc.PipelineError, OSError) as e:
                wall = time.monotonic() - t0
                err = str(e)
            r = record(sc, n0, gt, est, wall, cmd, err)
            rows.append(r)
            if r["pred_steps"] is None:
                line = "%-12s %5d %6.3g %6s %13s %6s %8s %8.1f  FAILED: %s" % (
                    sc["name"][:12], n0, r["frac"], "—", "—",
                    r["meas_steps"] if r["meas_steps"] is not None else "—", "—",
                    wall, short_error(err))
            else:
                line = "%-12s %5d %6.3g %6d %13s %6s %8s %8.1f %s" % (
                    sc["name"][:12], n0, r["frac"], r["pred_steps"],
                    "[%d, %d]" % tuple(r["pred_steps_band"]),
                    r["meas_steps"] if r["meas_steps"] is not None else "—",
                    pct(r["rel_error"]), wall,
                    ("extrapolated " if r["extrapolated"] else "")
                    + ("Θ-cached " if r["gram_cached"] else "")
                    + ("diverged " if r.get("diverged") else ""))
            print(line)
            for n in r["notes"]:
                print("    note: %s" % n)
            sys.stdout.flush()
            write(False)

    md = write(True)
    print()
    print(md)
    try:
        plot(rows, os.path.join(out, "extrapolation.png"))
    except Exception as e:  # the numbers are written; the plot is a by-product
        print("run.py: warning: plot failed: %s" % e, file=sys.stderr)
    print("total benchmark time: %.0f s; wrote %s/results.json, results.md, extrapolation.png"
          % (time.monotonic() - t_start, out))
    if a.strict:
        bad = [r for r in rows if r["error"] is not None or (r["frac"] < 1 and not r["extrapolated"])]
        bad += [g for g in gts.values() if "error" in g and g.get("error")]
        if bad:
            print("run.py: error: %d failed or unextrapolated call(s)" % len(bad), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
