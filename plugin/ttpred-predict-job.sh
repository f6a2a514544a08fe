#!/bin/bash
# ttpred-predict-job: the prediction job of `sbatch --ttpred` in mode=job
# (plugstack.conf; docs/admin-guide.md "Job mode"). Submitted by spank_ttpred.so,
# it runs as the user on a compute node:
#   1. runs ESTIMATOR --spec SPEC --json --device DEV [--cache-dir DIR]
#      [--max-seconds S], killed
#      after TIMEOUT seconds;
#   2. finds the job that waits for it (the user's pending job with the
#      dependency afterany:$SLURM_JOB_ID, which job_submit/ttpred added);
#   3. reports to slurmctld: scontrol update jobid=JOB comment=ttpred-result:JSON
#      (or comment=ttpred-failed:REASON); job_submit/ttpred validates the report
#      (untrusted, like any user input), applies the site policy and replaces the
#      comment with the result ("ttpred: 70 min (predicted ...)").
# When this job ends, however it ends, the dependency is satisfied and the job is
# released: with the policy's limit, or with the fallback limit it was given at
# submission. SIGTERM (scancel, or this job's time limit) reports the failure first.
# If the waiting job disappears (scancel), the estimator is stopped at once.
set -u
export PATH="$PATH:/usr/bin:/bin"
est="" spec="" device=auto timeout=60 cache="" max_seconds=""
while [ $# -gt 0 ]; do
  case "$1" in
    --estimator) est=$2; shift 2 ;;
    --spec) spec=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --cache-dir) cache=$2; shift 2 ;;
    --max-seconds) max_seconds=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "ttpred-predict-job: error: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
: "${SLURM_JOB_ID:?ttpred-predict-job: not inside a Slurm job}"
me=$SLURM_JOB_ID
user=${SLURM_JOB_USER:-$(id -un)}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ttpred-predict.XXXXXX") || exit 1
est_pid=""
main=""
reported=0

log() { echo "ttpred-predict-job[$me]: $*" >&2; }

# The job waiting for this one (its pending part: for an array, the array job id).
find_main() {
  squeue -h -u "$user" -t PD -o '%i|%E' 2>/dev/null |
    awk -F'|' -v d="afterany:$me" '{ n = split($2, a, ","); for (i = 1; i <= n; i++) { sub(/\(.*/, "", a[i]); if (a[i] == d) { id = $1; sub(/_.*/, "", id); print id; exit } } }'
}

report() { # COMMENT
  [ $reported = 1 ] && return 0
  reported=1
  if [ -z "$main" ]; then log "no job waits for this prediction: nothing to report"; return 0; fi
  if scontrol update jobid="$main" comment="$1" 2>"$tmp/update.err"; then
    log "reported to job $main"
  else
    log "report to job $main refused: $(tail -n 1 "$tmp/update.err")"
  fi
}

finish() { rm -rf "$tmp"; exit "${1:-0}"; }

on_term() {
  [ -n "$est_pid" ] && kill -TERM -- "-$est_pid" 2>/dev/null
  report "ttpred-failed:prediction job $me cancelled or past its time limit"
  finish 143
}
trap on_term TERM INT

# The waiting job is submitted right after this one: it normally exists already.
for _ in $(seq 1 50); do
  main=$(find_main)
  [ -n "$main" ] && break
  sleep 0.2 & wait $!
done
if [ -z "$main" ]; then
  log "no job waits for this prediction (cancelled, or refused at submission): nothing to do"
  finish 0
fi
log "job $main waits for this prediction: running $est"

# Run the estimator in its own process group (setsid), so that it can be killed whole.
args=(--spec "$spec" --json --device "$device")
[ -n "$cache" ] && args+=(--cache-dir "$cache")
[ -n "$max_seconds" ] && args+=(--max-seconds "$max_seconds")
setsid "$est" "${args[@]}" >"$tmp/out" 2>"$tmp/err" </dev/null &
est_pid=$!
start=$SECONDS
next_check=$((SECONDS + 2))
status=""
while kill -0 "$est_pid" 2>/dev/null; do
  if [ $((SECONDS - start)) -ge "$timeout" ]; then
    kill -TERM -- "-$est_pid" 2>/dev/null; sleep 1; kill -KILL -- "-$est_pid" 2>/dev/null
    status="timeout"
    break
  fi
  if [ "$SECONDS" -ge "$next_check" ]; then
    next_check=$((SECONDS + 2))
    if ! squeue -h -j "$main" -t PD -o %i 2>/dev/null | grep -q .; then
      kill -TERM -- "-$est_pid" 2>/dev/null
      log "job $main no longer waits (cancelled?): prediction stopped"
      finish 0
    fi
  fi
  sleep 0.2 & wait $!
done
wait "$est_pid" 2>/dev/null
rc=$?
est_pid=""

last_err() { grep -v '^[[:space:]]*$' "$tmp/err" | tail -n 1 | tr -d '\r' | cut -c1-200; }
log "estimator ended: ${status:-exit $rc}; $(last_err)"
if [ "$status" = timeout ]; then
  report "ttpred-failed:estimator timed out after ${timeout} s"
elif [ "$rc" != 0 ]; then
  report "ttpred-failed:estimator exit $rc: $(last_err)"
elif [ "$(wc -c <"$tmp/out")" -gt 60000 ]; then
  report "ttpred-failed:estimator output too large"
else
  report "ttpred-result:$(tr -d '\n\r' <"$tmp/out")"
fi
finish 0
