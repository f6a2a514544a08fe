#!/usr/bin/env bash
# The main job on the embedded default, the whole story: start a throwaway
# local Slurm cluster with the ttpred plugins, submit the demo fine-tuning job
# (the bundled CNN pre-trained on Fashion-MNIST 0-4, fine-tuned on 5-9) with
# `sbatch --ttpred`, show the prediction and the time limit the policy set, then
# the job's actual run time beside the prediction.
# Without root or Slurm it falls back to: predict, then fine-tune for real.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
BUILD_DIR=${BUILD_DIR:-build}
BUILD_QUIET=1 scripts/build.sh  # quiet, but a failing build shows its errors
EST="$repo/$BUILD_DIR/cli/ttpred-estimate"
FT="$repo/$BUILD_DIR/cli/ttpred-finetune"
SPEC="$repo/assets/default/spec.yaml"

if [ "$(id -u)" != 0 ] || ! command -v slurmctld >/dev/null 2>&1 && ! [ -x /usr/sbin/slurmctld ]; then
  echo "demo: no root or no Slurm: showing the prediction and the real fine-tuning without a cluster"
  "$EST" --spec "$SPEC"
  "$FT" --spec "$SPEC" --log-every 31
  exit 0
fi

work=$(mktemp -d /tmp/ttpred-demo.XXXXXX)
chmod 755 "$work"  # munged runs as user munge
cleanup() { TTPRED_PLUGIN_DIR="$repo/$BUILD_DIR/plugin" scripts/local-cluster.sh stop "$work/cluster" >/dev/null 2>&1 || true; }
trap cleanup EXIT
echo "== Starting a throwaway Slurm cluster in $work/cluster (policy: configs/policies/default.yaml)"
TTPRED_PLUGIN_DIR="$repo/$BUILD_DIR/plugin" TTPRED_ESTIMATOR="$EST" TTPRED_DEVICE=cpu \
  TTPRED_POLICY_FILE="$repo/configs/policies/default.yaml" \
  scripts/local-cluster.sh start "$work/cluster" 2>&1 | sed 's/^/   /'
export SLURM_CONF="$work/cluster/slurm.conf"

cat >"$work/finetune.sh" <<JOB
#!/bin/bash
#SBATCH --job-name=ttpred-demo
#SBATCH --ttpred=$SPEC
#SBATCH --output=$work/job.out
# The fine-tuning job itself: ttpred's reference fine-tuner on the same spec, 3 seeds
# (T(eps) is measured on their mean curve, as bench/accuracy does).
exec "$FT" --spec "$SPEC" --seeds 0 1 2 --log-every 8 --quiet --json
JOB

echo
echo "== sbatch $work/finetune.sh   (the script has: #SBATCH --ttpred=$SPEC)"
t0=$(date +%s)
out=$(cd "$work" && TTPRED_SAVE_JSON="$work/prediction.json" sbatch "$work/finetune.sh" 2>&1) || { echo "$out"; exit 1; }
echo "$out" | sed 's/^/   /'
job=$(echo "$out" | sed -n 's/^Submitted batch job \([0-9]*\).*/\1/p')
echo "   (the estimator ran on the submit host in $(( $(date +%s) - t0 )) s)"
echo
echo "== scontrol show job $job"
scontrol show job "$job" | grep -oE '(JobState|TimeLimit)=[^ ]+' | sed 's/^/   /'

echo
echo "== Waiting for the job to finish ..."
for _ in $(seq 1 600); do
  state=$(scontrol show job "$job" 2>/dev/null | grep -oE 'JobState=[A-Z]+' | cut -d= -f2 || true)
  case "$state" in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | "") break ;; esac
  sleep 1
done
run=$(scontrol show job "$job" | grep -oE 'RunTime=[^ ]+' | cut -d= -f2)
echo "   job $job: $state after $run (limit $(scontrol show job "$job" | grep -oE 'TimeLimit=[^ ]+' | cut -d= -f2))"
echo
/usr/bin/python3 - "$work/prediction.json" "$work/job.out" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
try:
    m = json.load(open(sys.argv[2]))
except Exception as e:
    print("   (no measurement: %s)" % e); sys.exit(0)
print("== Prediction vs. the job's real fine-tuning")
fmt = "   {:<28} {:>12} {:>12}"
print(fmt.format("", "predicted", "measured"))
print(fmt.format("steps to converge T(eps)", p["steps"], m["steps"]))
print(fmt.format("  (band)", "%d..%d" % tuple(p["steps_band"]), ""))
print(fmt.format("seconds to converge", "%.1f" % p["seconds"], "%.1f" % m["seconds"]))
print(fmt.format("seconds, whole horizon", "%.1f" % p["horizon_seconds"], "%.1f" % m["seconds_train"]))
print(fmt.format("final training loss", "%.4f" % p["final_loss"], "%.4f" % m["final_loss"]))
print(fmt.format("prediction cost (s)", "%.1f" % p["timing"]["total"], ""))
err = (p["steps"] - m["steps"]) / max(1, m["steps"])
print("   relative error of T(eps): %+.0f%%" % (100 * err))
print("   (measured: mean curve of 3 seeds, loss logged every 8 steps; seconds exclude the loss evaluations)")
PY
