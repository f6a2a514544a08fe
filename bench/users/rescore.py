#!/usr/bin/env python3
"""Score stored predictions again against the ground truth as run.py measures it now.

When only the measurement of the truth changed (e.g. refined(): the start of a run
measured densely), the predictions stay valid: the estimator's inputs (the target
flag and value, from L0, L_T, A0, A_T of the coarse curve) are the same. This
re-measures T for every stored row (running the dense re-runs it needs, cached
beside the truth), and writes the results again, with the summaries.

  bench/users/rescore.py --scenarios DIR RESULTS.json OUT.json [OUT.md]

RESULTS.json: a run.py results.json ({"modes": ...}), or a combined file with one
such object per half ({"development": {...}, "validation": {...}}).
"""
import argparse
import importlib.util
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# bench/users/run.py, under another name (it imports bench/accuracy's run.py as `run`).
_spec = importlib.util.spec_from_file_location("users_run", os.path.join(HERE, "run.py"))
run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run)


def rescore_rows(rows, scs, a, log):
    for r in rows:
        sc = scs[r["name"]]
        ft, _ = run.truth(sc, a, cached_only=True)
        if ft is None:
            raise run.PipelineError("%s: no cached ground truth" % r["name"])
        old = r["meas"]
        ft, dense = run.refined(sc, a, ft)
        flag, value, meas = run.target_of(sc, ft)
        if abs(value - r["target"][1]) > 1e-9 * max(1.0, abs(value)):
            raise run.PipelineError("%s: target value %.6g != stored %.6g: the prediction is not valid for it"
                                    % (r["name"], value, r["target"][1]))
        r.update(run.judge(r["pred"], r["band"], meas))
        r["meas_refined"] = dense
        if meas != old:
            log.append("%-28s %-10s meas %d -> %d" % (r["name"], r["mode"], old, meas))


def rescore(res, scs, a, log):
    for name, m in res["modes"].items():
        rescore_rows(m["scenarios"], scs, a, log)
        m["summary"] = run.summaries(m["scenarios"])


def markdown(res, title):
    md = ["## %s" % title, ""]
    for name, m in res["modes"].items():
        md += run.mode_markdown("### mode %s" % name, m["summary"], m["scenarios"])
    return md


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", required=True, help="make_scenarios.py output")
    ap.add_argument("--truth-dir", default=os.path.join(HERE, "truth"))
    ap.add_argument("--finetune", default=os.path.join(run.ROOT, "build", "cli", "ttpred-finetune"))
    ap.add_argument("results")
    ap.add_argument("out")
    ap.add_argument("md", nargs="?")
    a = ap.parse_args()
    with open(os.path.join(a.scenarios, "scenarios.json")) as f:
        meta = json.load(f)
    scs = {}
    for s in meta["scenarios"]:
        s["data"] = meta["models"][s["arch"]]["data"]
        scs[s["name"]] = s
    with open(a.results) as f:
        res = json.load(f)
    parts = [("results", res)] if "modes" in res else [(k, v) for k, v in res.items() if isinstance(v, dict) and "modes" in v]
    log = []
    try:
        for _, part in parts:
            rescore(part, scs, a, log)
    except run.PipelineError as e:
        print("rescore.py: error: %s" % e, file=sys.stderr)
        return 1
    print("\n".join(log))
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    md = ["# bench/users, scored again", "", "`%s`" % " ".join(["bench/users/rescore.py"] + sys.argv[1:]), ""]
    for title, part in parts:
        md += markdown(part, title)
    if a.md:
        with open(a.md, "w") as f:
            f.write("\n".join(md) + "\n")
    else:
        print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
