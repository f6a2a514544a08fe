#!/usr/bin/python3
"""Sweep benchmark of ttpred (issue 7): what pricing a hyper-parameter sweep costs
next to one prediction, and what the sweep's shared kernel does to each row.

Usage:
  /usr/bin/python3 bench/sweep/run.py [--spec SPEC] [--out DIR] [--repeat R]
      [--truth] [--steps T] [--extra-args "ARGS"] [--strict]
      [--estimate BIN] [--finetune BIN]

SPEC (default configs/specs/fmnist-sweep.yaml) must have a `sweep:` section.
The run writes three copies of it to OUT/specs with absolute paths: the spec
without its sweep (the single prediction), the sweep as given (rows share one
re-linearization: engine.sweep_kernel: shared, the default) and the sweep with
engine.sweep_kernel: each (every row re-linearized with its own values). Then,
R times, interleaved so that they see the same load, it times with --no-cache:

  single           ttpred-estimate --spec base.yaml --json -q --no-cache
  sweep shared     ttpred-estimate --spec sweep-shared.yaml ...
  sweep each       ttpred-estimate --spec sweep-each.yaml ...
  single  --no-training, sweep --no-training   (the paper's training-free mode)

and reports each one's wall seconds (median over R), the ratio to the single
prediction, and the marginal cost of a row: (sweep - single) / (rows - 1).

--truth also fine-tunes every row for real (ttpred-finetune --seeds 0 1 2
--log-every 2 with the row's --lr/--batch-size/--momentum/--weight-decay/--size;
cached in OUT/groundtruth by the spec's bytes and the arguments) and reports
each row's error, shared and each: (predicted - measured) / measured.

--steps T sets a horizon of T steps everywhere (a short test run); --extra-args
is split like a shell line and appended to every ttpred-estimate call (e.g.
"--subset 100 --size 400"). --strict (the ctest smoke) exits 1 unless every
call succeeded, every sweep has one row per combination and the row of the
spec's own configuration equals the single prediction.

Outputs: OUT/results.json, OUT/results.md (also printed).
"""

import argparse
import hashlib
import importlib.util
import json
import os
import shlex
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

import yaml  # noqa: E402  (python3-yaml, installed by scripts/setup.sh)

# bench/accuracy/run.py: run_json (child env with OMP_WAIT_POLICY), file_sha.
_spec = importlib.util.spec_from_file_location(
    "accuracy_run", os.path.join(ROOT, "bench", "accuracy", "run.py"))
acc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(acc)

FT_TAIL = ["--json", "--quiet", "--seeds"] + acc.SEEDS + ["--log-every", "2"]


def absolute_spec(path):
    """The spec as a dict with model and data paths made absolute."""
    with open(path) as f:
        s = yaml.safe_load(f)
    base = os.path.dirname(os.path.abspath(path))
    fix = lambda p: p if os.path.isabs(p) else os.path.normpath(os.path.join(base, p))
    s["model"] = fix(s["model"])
    for k in ("path", "images", "labels"):
        if k in s.get("data", {}):
            s["data"][k] = fix(s["data"][k])
    return s


def write(path, obj):
    with open(path, "w") as f:
        yaml.safe_dump(obj, f, sort_keys=False)
    return path


def estimate(a, spec, extra=()):
    cmd = [a.estimate, "--spec", spec, "--json", "-q", "--no-cache"] + list(extra) + a.extra
    if a.steps:
        cmd += ["--steps", str(a.steps)]
    try:
        out, wall = acc.run_json(cmd, [], "ttpred-estimate")
        return out, wall, None
    except acc.PipelineError as e:
        return None, None, str(e)


def truth(a, base_spec, row, cache_dir):
    """Real fine-tuning of one row, 3 seeds; cached."""
    args = ["--lr", repr(row["lr"]), "--batch-size", str(row["batch_size"]),
            "--momentum", repr(row["momentum"]), "--weight-decay", repr(row["weight_decay"]),
            "--size", str(row["size"])]
    if a.steps:
        args += ["--steps", str(a.steps)]
    elif row.get("epochs_horizon"):
        args += ["--epochs", repr(row["epochs_horizon"])]
    h = hashlib.sha256()
    with open(base_spec, "rb") as f:
        h.update(f.read())
    h.update(" ".join(args + FT_TAIL).encode())
    path = os.path.join(cache_dir, h.hexdigest()[:20] + ".json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    ft, _ = acc.run_json([a.finetune, "--spec", base_spec] + args + FT_TAIL, acc.FT_FIELDS,
                         "ttpred-finetune")
    os.makedirs(cache_dir, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(ft, f)
    os.replace(path + ".tmp", path)
    return ft


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", default=os.path.join(ROOT, "configs", "specs", "fmnist-sweep.yaml"))
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--truth", action="store_true")
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--extra-args", default="")
    ap.add_argument("--strict", action="store_true")
    ap.add_argument("--estimate", default=os.path.join(ROOT, "build", "cli", "ttpred-estimate"))
    ap.add_argument("--finetune", default=os.path.join(ROOT, "build", "cli", "ttpred-finetune"))
    a = ap.parse_args()
    a.extra = shlex.split(a.extra_args)
    os.makedirs(os.path.join(a.out, "specs"), exist_ok=True)

    s = absolute_spec(a.spec)
    if not s.get("sweep"):
        sys.exit("bench/sweep: %s has no sweep: section" % a.spec)
    single = dict(s)
    single.pop("sweep")
    base = write(os.path.join(a.out, "specs", "base.yaml"), single)
    shared = write(os.path.join(a.out, "specs", "sweep-shared.yaml"), s)
    each_spec = json.loads(json.dumps(s))
    each_spec.setdefault("engine", {})["sweep_kernel"] = "each"
    each = write(os.path.join(a.out, "specs", "sweep-each.yaml"), each_spec)
    combos = 1
    for v in s["sweep"].values():
        combos *= len(v)

    calls = [("single", base, []), ("sweep shared", shared, []), ("sweep each", each, []),
             ("single --no-training", base, ["--no-training"]),
             ("sweep --no-training", shared, ["--no-training"])]
    walls = {c[0]: [] for c in calls}
    outs, errors = {}, []
    for rep in range(a.repeat):
        for name, spec, extra in calls:
            out, wall, err = estimate(a, spec, extra)
            if err:
                errors.append("%s: %s" % (name, err))
                print("FAILED %s: %s" % (name, err.splitlines()[0] if err else ""), file=sys.stderr)
                continue
            walls[name].append(wall)
            outs[name] = out
            print("%-22s %7.1f s" % (name, wall), file=sys.stderr)

    med = {k: statistics.median(v) for k, v in walls.items() if v}
    cost = []
    for name, _, _ in calls:
        if name not in med:
            continue
        ref = med.get("single --no-training" if "no-training" in name else "single")
        rows = combos if name.startswith("sweep") else 1
        cost.append({"call": name, "rows": rows, "wall_s": med[name], "runs": walls[name],
                     "ratio_to_single": med[name] / ref if ref else None,
                     "per_extra_row_s": (med[name] - ref) / (rows - 1) if ref and rows > 1 else None})

    # Rows: shared vs each (vs measured).
    rows = []
    sh = (outs.get("sweep shared") or {}).get("runs", [])
    ea = (outs.get("sweep each") or {}).get("runs", [])
    for i, r in enumerate(sh):
        e = ea[i] if i < len(ea) else None
        row = {k: r[k] for k in ("lr", "batch_size", "momentum", "weight_decay", "size")}
        row["epochs_horizon"] = r.get("epochs_horizon")
        row["shared"] = r["steps"]
        row["shared_band"] = r["steps_band"]
        row["relinearized_with"] = r.get("relinearized_with")
        row["each"] = e["steps"] if e else None
        row["each_band"] = e["steps_band"] if e else None
        row["measured"] = None
        if a.truth:
            try:
                row["measured"] = truth(a, base, row, os.path.join(a.out, "groundtruth"))["steps"]
            except acc.PipelineError as ex:
                errors.append("truth row %d: %s" % (i, ex))
        for k in ("shared", "each"):
            m = row["measured"]
            row[k + "_error"] = (row[k] - m) / m if m and row[k] is not None else None
        rows.append(row)

    if a.strict:
        bad = list(errors)
        for name in ("sweep shared", "sweep each", "sweep --no-training"):
            if name in outs and len(outs[name]["runs"]) != combos:
                bad.append("%s: %d rows, expected %d" % (name, len(outs[name]["runs"]), combos))
        own = [r for r in sh if r["lr"] == s["optimizer"]["lr"] and r["batch_size"] == s["optimizer"]["batch_size"]
               and r["momentum"] == s["optimizer"].get("momentum", 0.0)
               and r["weight_decay"] == s["optimizer"].get("weight_decay", 0.0)]
        if "single" in outs and own and own[0]["steps"] != outs["single"]["steps"]:
            bad.append("the spec's own row predicts %d, the single prediction %d"
                       % (own[0]["steps"], outs["single"]["steps"]))

    md = ["| call | rows | wall s (median of %d) | × single | s per extra row |" % a.repeat,
          "|---|---|---|---|---|"]
    for c in cost:
        md.append("| %s | %d | %.1f | %s | %s |" % (
            c["call"], c["rows"], c["wall_s"],
            "%.2f×" % c["ratio_to_single"] if c["ratio_to_single"] else "—",
            "%.2f" % c["per_extra_row_s"] if c["per_extra_row_s"] is not None else "—"))
    md += ["", "| lr | batch | momentum | w.decay | N | shared kernel | each row's own | measured "
           "| shared err | each err |", "|---|---|---|---|---|---|---|---|---|---|"]
    pct = lambda v: "%+.1f %%" % (100 * v) if v is not None else "—"
    for r in rows:
        md.append("| %g | %d | %g | %g | %d | %s %s | %s %s | %s | %s | %s |" % (
            r["lr"], r["batch_size"], r["momentum"], r["weight_decay"], r["size"],
            r["shared"], r["shared_band"], r["each"], r["each_band"],
            r["measured"] if r["measured"] is not None else "—",
            pct(r["shared_error"]), pct(r["each_error"])))
    errs = {k: [abs(r[k + "_error"]) for r in rows if r[k + "_error"] is not None] for k in ("shared", "each")}
    if errs["shared"]:
        md += ["", "median |error|: shared %.1f %%, each %.1f %%; max: shared %.1f %%, each %.1f %%" % (
            100 * statistics.median(errs["shared"]), 100 * statistics.median(errs["each"]),
            100 * max(errs["shared"]), 100 * max(errs["each"]))]
    if errors:
        md += ["", "failures:"] + ["- " + e.splitlines()[0] for e in errors]
    text = "\n".join(md) + "\n"
    print(text)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"spec": os.path.abspath(a.spec), "combinations": combos, "cost": cost,
                   "rows": rows, "errors": errors, "extra_args": a.extra, "steps": a.steps}, f, indent=1)
    if a.strict and bad:
        print("bench/sweep: FAILED: " + "; ".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
