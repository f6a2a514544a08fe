#!/bin/bash
# sbatch wall time: plain `sbatch` vs `sbatch --ttpred` in mode=job (issue 17),
# side by side in one run (interleaved, N each, median and spread), on a private
# local cluster (scripts/local-cluster.sh, needs root and the Slurm packages).
# The estimator is tests/slurm/fake-estimator.sh sleeping 20 s: in job mode sbatch
# must not wait for it, whatever it costs (a real model only makes the prediction
# job longer). With --sync also 3 sync-mode submissions of the same estimator
# (each waits the 20 s) for contrast.
#   bench/sbatch/run.sh [--n N] [--sync] [--build BUILD_DIR] [--out FILE.md]
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
n=20 sync=0 build="$repo/build" out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --n) n=$2; shift 2 ;;
    --sync) sync=1; shift ;;
    --build) build=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 [--n N] [--sync] [--build DIR] [--out FILE.md]" >&2; exit 2 ;;
  esac
done
[ -n "$out" ] && out=$(realpath -m "$out")
[ "$(id -u)" = 0 ] || { echo "bench/sbatch: needs root (starts a private cluster)" >&2; exit 77; }
dir=$(mktemp -d /tmp/ttpred-bench-sbatch.XXXXXX)
trap '"$repo/scripts/local-cluster.sh" stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
fake="$repo/tests/slurm/fake-estimator.sh"
TTPRED_PLUGIN_DIR="$build/plugin" TTPRED_ESTIMATOR="$fake" TTPRED_ESTIMATOR_TIMEOUT=60 TTPRED_DEVICE=cpu \
TTPRED_POLICY_FILE="$repo/tests/slurm/policies/test.yaml" \
  "$repo/scripts/local-cluster.sh" start "$dir" >/dev/null
so=$(awk '/spank_ttpred.so/ {print $2; exit}' "$dir/plugstack.conf")
mkdir -p "$dir/job"
sed "s|^PlugStackConfig=.*|PlugStackConfig=$dir/job/plugstack.conf|" "$dir/slurm.conf" > "$dir/job/slurm.conf"
echo "optional $so estimator=$fake device=cpu timeout=60 mode=job predictor=$repo/plugin/ttpred-predict-job.sh" \
  > "$dir/job/plugstack.conf"
printf 'fake_mode: slow\nfake_sleep: 20\n' > "$dir/spec.yaml"
cd "$dir"

now() { date +%s.%N; }
timed() { # CONF ARGS...: prints the wall seconds of one sbatch
  local conf=$1; shift
  local t0 t1
  t0=$(now)
  SLURM_CONF=$conf sbatch --hold -o /dev/null "$@" --wrap true >/dev/null 2>"$dir/last.err" \
    || { cat "$dir/last.err" >&2; exit 1; }
  t1=$(now)
  awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.4f\n", b - a}'
}
stats() { sort -g | awk '{v[NR]=$1} END{m = NR % 2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2;
  printf "%.3f | %.3f | %.3f", m, v[1], v[NR]}'; }

: > plain.txt; : > job.txt
for i in $(seq 1 "$n"); do
  timed "$dir/slurm.conf" >> plain.txt
  timed "$dir/job/slurm.conf" --ttpred="$dir/spec.yaml" >> job.txt
  grep -q 'predicting in job' "$dir/last.err" || { echo "job mode did not submit a prediction job" >&2; exit 1; }
done
{
  echo "# sbatch wall time, plain vs --ttpred mode=job ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  echo "Command: \`bench/sbatch/run.sh --n $n$([ $sync = 1 ] && echo ' --sync')\` on $(nproc) CPUs, Slurm $(SLURM_CONF=$dir/slurm.conf sbatch -V | cut -d' ' -f2),"
  echo "local single-node cluster, estimator: fake, sleeps 20 s; jobs held (--hold), interleaved."
  echo
  echo "| submission | n | median s | min s | max s |"
  echo "|---|---|---|---|---|"
  echo "| plain \`sbatch\` | $n | $(stats < plain.txt) |"
  echo "| \`sbatch --ttpred\` mode=job | $n | $(stats < job.txt) |"
  if [ $sync = 1 ]; then
    : > sync.txt
    for i in 1 2 3; do timed "$dir/slurm.conf" --ttpred="$dir/spec.yaml" >> sync.txt; done
    echo "| \`sbatch --ttpred\` mode=sync (same estimator) | 3 | $(stats < sync.txt) |"
  fi
} | if [ -n "$out" ]; then tee "$out"; else cat; fi
scancel --name=ttpred-predict >/dev/null 2>&1 || true
