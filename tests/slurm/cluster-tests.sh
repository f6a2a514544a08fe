#!/bin/bash
# Cluster tests of the ttpred Slurm integration, one ctest test per subcommand
# (registered in tests/slurm/CMakeLists.txt, label `slurm`):
#   setup | cleanup                  fixture: scripts/local-cluster.sh start|stop
#   plugins_loaded time_limit_fake sbatch_directive converge_account warn reject
#   estimator_fails estimator_hangs forged_env broken_policy real_estimator stress
#   budget_policy budget_forged          budgets without slurmdbd (policy tally)
#   trust_forged_marker trust_rejected trust_band trust_step_seconds trust_update
#   trust_array trust_flood trust_misc   issue 13: what a user cannot get around
#   acct_setup | acct_cleanup            fixture: a second cluster with MariaDB +
#                                        slurmdbd (TTPRED_ACCOUNTING=1), 4 fake GPUs
#   acct_budget_shown acct_budget_warn acct_budget_reject acct_user_limit acct_usage
#   acct_trust_rejected
#   job_mode job_mode_fails job_mode_cancel job_mode_array job_mode_cache job_mode_budget
#                                        issue 17: mode=job
# Exit 0 = pass, 1 = fail, 77 = skipped (not root, Slurm not installed, no real
# estimator in this build).
#
# Environment (set by CMake): TTPRED_REPO, TTPRED_TEST_SRC, TTPRED_CLUSTER_STATE
# (file holding the cluster dir), TTPRED_PLUGIN_DIR, TTPRED_FORGE (libslurm
# client), TTPRED_REAL_ESTIMATOR, TTPRED_REAL_SPEC, TTPRED_ACCT_STATE (file holding
# the accounting cluster's dir).
set -uo pipefail

: "${TTPRED_REPO:?}" "${TTPRED_TEST_SRC:?}" "${TTPRED_CLUSTER_STATE:?}"
export PATH="/usr/sbin:/usr/bin:/bin:$PATH"
SPECS="$TTPRED_TEST_SRC/specs"
FAKE="$TTPRED_TEST_SRC/fake-estimator.sh"
FAKE_TIMEOUT=5          # plugstack.conf timeout= for the fake estimator
PARTITIONS="debug warnp rejectp stepp"

skip() { echo "SKIP: $*"; exit 77; }
pass() { echo "PASS: $*"; }
fail() {
  echo "FAIL: $*"
  if [ -n "${dir:-}" ]; then
    echo "--- last slurmctld log lines ---"; tail -n 20 "$dir/log/slurmctld.log" 2>/dev/null
  fi
  exit 1
}

load_cluster() {
  local state=$TTPRED_CLUSTER_STATE
  if [ "${1:-}" = --acct ]; then
    shift
    state=${TTPRED_ACCT_STATE:?}
    [ -s "$state" ] || skip "no accounting cluster (slurm.acct_setup skipped or failed)"
  fi
  [ -s "$state" ] || skip "no cluster (slurm.cluster_setup skipped or failed)"
  dir=$(cat "$state")
  export SLURM_CONF="$dir/slurm.conf"
  work="$dir/work/$1"
  mkdir -p "$work"
  cd "$work" || fail "cd $work"
}

# submit ARGS...: runs sbatch; sets rc, jobid, out (stdout file), err (stderr file),
# elapsed (seconds). Jobs are held unless the caller passes --no-hold first.
n_sub=0
submit() {
  local hold=--hold
  if [ "${1:-}" = --no-hold ]; then hold=""; shift; fi
  n_sub=$((n_sub + 1))
  out="$work/sbatch.$n_sub.out"; err="$work/sbatch.$n_sub.err"
  local t0 t1
  t0=$(date +%s.%N)
  sbatch $hold -o /dev/null "$@" >"$out" 2>"$err"
  rc=$?
  t1=$(date +%s.%N)
  elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')
  jobid=$(sed -n 's/^Submitted batch job \([0-9]*\).*/\1/p' "$out")
  echo "\$ sbatch $* -> rc=$rc job=${jobid:-none} (${elapsed}s)"
  sed 's/^/  | /' "$err"
}

limit_of() { scontrol show job -o "$1" | grep -o 'TimeLimit=[^ ]*' | cut -d= -f2; }

# Slurm's display of a limit in minutes: MM:SS / HH:MM:SS / D-HH:MM:SS.
fmt_minutes() {
  local m=$1
  if [ "$m" -ge 1440 ]; then printf '%d-%02d:%02d:00' $((m / 1440)) $((m % 1440 / 60)) $((m % 60))
  else printf '%02d:%02d:00' $((m / 60)) $((m % 60)); fi
}

expect_submitted() { [ "$rc" = 0 ] && [ -n "$jobid" ] || fail "$1: submission failed (rc=$rc)"; }
expect_limit() { # jobid expected what
  local got; got=$(limit_of "$1")
  [ "$got" = "$2" ] || fail "$3: TimeLimit=$got, expected $2"
  echo "  TimeLimit=$got as expected ($3)"
}
expect_err() { grep -qF -- "$1" "$err" || fail "sbatch stderr lacks: $1"; }
expect_no_err() { ! grep -qF -- "$1" "$err" || fail "sbatch stderr unexpectedly has: $1"; }
ctld_log_has() { grep -qF -- "$1" "$dir/log/slurmctld.log"; }
# The controller's pid: its pidfile's, or, when that names no live process, the process
# started with this cluster's slurm.conf (Slurm 24.11 re-executes slurmctld on
# `scontrol reconfigure`, and the pidfile can be left stale or removed meanwhile).
ctld_pid() {
  local p f
  p=$(cat "$dir/slurmctld.pid" 2>/dev/null)
  if [[ "$p" =~ ^[0-9]+$ ]] && kill -0 "$p" 2>/dev/null; then echo "$p"; return 0; fi
  for f in /proc/[0-9]*/cmdline; do
    if tr '\0' ' ' 2>/dev/null < "$f" | grep -qF "slurmctld -f $dir/slurm.conf "; then
      p=${f#/proc/}
      echo "${p%/cmdline}"
      return 0
    fi
  done
  return 1
}
# The policy is reloaded at the first ttpred job submitted at least one second
# after the reconfigure (slurm_conf.last_update has a one-second resolution).
reconfigure() { scontrol reconfigure || fail "scontrol reconfigure failed"; sleep 1.1; }
ctld_alive() { kill -0 "$(ctld_pid)" 2>/dev/null && scontrol ping | grep -q UP; }

# ---------------------------------------------------------------------------
t_setup() {
  [ "$(id -u)" = 0 ] || skip "needs root (starts munged, slurmctld, slurmd)"
  for b in /usr/sbin/slurmctld /usr/sbin/slurmd /usr/sbin/munged /usr/bin/sbatch; do
    [ -x "$b" ] || skip "$b not installed"
  done
  if [ -s "$TTPRED_CLUSTER_STATE" ]; then  # leftover from an interrupted run
    "$TTPRED_REPO/scripts/local-cluster.sh" stop "$(cat "$TTPRED_CLUSTER_STATE")" || true
  fi
  dir=$(mktemp -d /tmp/ttpred-slurm.XXXXXX) || fail mktemp
  echo "$dir" > "$TTPRED_CLUSTER_STATE"
  TTPRED_ESTIMATOR="$FAKE" TTPRED_ESTIMATOR_TIMEOUT=$FAKE_TIMEOUT TTPRED_DEVICE=cpu \
  TTPRED_POLICY_FILE="$TTPRED_TEST_SRC/policies/test.yaml" TTPRED_PARTITIONS="$PARTITIONS" \
  TTPRED_GPUS_PER_NODE=4 TTPRED_GPU_TYPE=tgpu \
    "$TTPRED_REPO/scripts/local-cluster.sh" start "$dir" || fail "cluster did not start"
  # Loopback only (issue 13): nothing of this cluster listens on a wildcard address.
  local pids p
  pids="$(cat "$dir/slurmctld.pid") $(cat "$dir/slurmd.pid")"
  for p in $pids; do
    if ss -Htlnp 2>/dev/null | grep "pid=$p," | awk '{print $4}' | grep -Ev '^(127\.0\.0\.1|\[::1\]):' | grep . >/dev/null; then
      ss -Htlnp | grep "pid=$p,"
      fail "a daemon of the test cluster listens on a non-loopback address"
    fi
  done
  pass "cluster up in $dir (slurmctld and slurmd on 127.0.0.1 only)"
}

t_cleanup() {
  [ -s "$TTPRED_CLUSTER_STATE" ] || skip "no cluster"
  dir=$(cat "$TTPRED_CLUSTER_STATE")
  local alive=1
  ctld_pid >/dev/null || alive=0
  "$TTPRED_REPO/scripts/local-cluster.sh" stop "$dir"
  mkdir -p "$(dirname "$TTPRED_CLUSTER_STATE")/cluster-logs"
  cp "$dir"/log/*.log "$dir/munge/munged.log" "$(dirname "$TTPRED_CLUSTER_STATE")/cluster-logs/" 2>/dev/null
  rm -f "$TTPRED_CLUSTER_STATE"
  rm -rf "$dir"
  [ $alive = 1 ] || fail "slurmctld had died before cleanup (logs in $(dirname "$TTPRED_CLUSTER_STATE")/cluster-logs)"
  pass "cluster stopped, logs kept in $(dirname "$TTPRED_CLUSTER_STATE")/cluster-logs"
}

t_plugins_loaded() {
  load_cluster plugins_loaded
  ctld_log_has "job_submit/ttpred: loaded policy $dir/ttpred.yaml (5 rules)" \
    || fail "slurmctld did not load job_submit/ttpred with the policy next to slurm.conf"
  # grep without -q reads all of it: with pipefail, an early exit would SIGPIPE sbatch
  sbatch --help 2>&1 | grep -- '--ttpred=SPEC' >/dev/null || fail "sbatch --help does not list --ttpred"
  pass "job_submit/ttpred loaded by slurmctld, --ttpred registered in sbatch"
}

t_time_limit_fake() {
  load_cluster time_limit_fake
  # fake prediction: horizon band hi 3400 s -> ceil((3400 * 1.2 + 120) / 60) = 70 min
  submit --ttpred="$SPECS/ok.yaml" --wrap 'sleep 1'
  expect_submitted "fake estimator"
  expect_limit "$jobid" "$(fmt_minutes 70)" "policy from the prediction"
  expect_err "sbatch: ttpred: converges in 1200 steps, 20m00s (5-95%: 16m40s-25m00s); full horizon 3000 steps, 50m00s"
  expect_err "sbatch: ttpred: estimator warning: fake warning for tests"
  expect_err "sbatch: ttpred: time limit set to 70 min"
  # a user limit within range is kept, silently
  submit -t 60 --ttpred="$SPECS/ok.yaml" --wrap 'sleep 1'
  expect_submitted "user limit"
  expect_limit "$jobid" "01:00:00" "user limit kept"
  expect_no_err "ttpred: warning"
  # no --ttpred: untouched
  submit --wrap 'sleep 1'
  expect_submitted "plain job"
  expect_limit "$jobid" "UNLIMITED" "job without --ttpred untouched"
  pass "time limit set from the prediction"
}

t_sbatch_directive() {
  load_cluster sbatch_directive
  cat > job.sh <<EOF
#!/bin/bash
#SBATCH --ttpred=$SPECS/ok.yaml
#SBATCH -o $work/job.out
env | grep '^TTPRED_' | sort
EOF
  submit --no-hold -o "$work/job.out" job.sh
  expect_submitted "#SBATCH --ttpred"
  expect_limit "$jobid" "01:10:00" "#SBATCH --ttpred"
  expect_err "sbatch: ttpred: time limit set to 70 min"
  local i
  for i in $(seq 1 60); do
    grep -q TTPRED_HORIZON_SECONDS "$work/job.out" 2>/dev/null && break
    sleep 0.5
  done
  grep -qx 'TTPRED_HORIZON_SECONDS=3000' "$work/job.out" \
    || fail "the batch job does not see TTPRED_HORIZON_SECONDS=3000: $(cat "$work/job.out" 2>&1)"
  pass "#SBATCH --ttpred works; the job sees TTPRED_* in its environment"
}

t_converge_account() {
  load_cluster converge_account
  # rule converge-account: converge point 1200 s x 1.5 + 0 = 30 min
  submit -A conv-lab --ttpred="$SPECS/ok.yaml" --wrap 'sleep 1'
  expect_submitted "account conv-lab"
  expect_limit "$jobid" "00:30:00" "rule matched on account (basis converge)"
  expect_err "predicted time to converge 20m00s"
  pass "account match and converge basis"
}

t_warn() {
  load_cluster warn
  submit -p warnp -t 10 --ttpred="$SPECS/ok.yaml" --wrap 'sleep 1'
  expect_submitted "warn under"
  expect_limit "$jobid" "00:10:00" "user limit kept"
  expect_err "sbatch: ttpred: warning: your time limit 10m00s is below the predicted run time of the full training horizon 50m00s (5-95%: 46m40s-56m40s)"
  expect_err "suggested --time=70"
  submit -p warnp -t 1000 --ttpred="$SPECS/ok.yaml" --wrap 'sleep 1'
  expect_submitted "warn over"
  expect_err "sbatch: ttpred: warning: your time limit 16h40m00s is more than 4x the predicted"
  submit -p warnp --ttpred="$SPECS/ok.yaml" --wrap 'sleep 1'
  expect_submitted "warn rule without set_time_limit"
  expect_limit "$jobid" "UNLIMITED" "set_time_limit: false"
  pass "warnings below and far above the prediction"
}

t_reject() {
  load_cluster reject
  submit -p rejectp -t 10 --ttpred="$SPECS/ok.yaml" --wrap 'sleep 1'
  [ "$rc" != 0 ] && [ -z "$jobid" ] || fail "limit below the prediction was not rejected"
  expect_err "sbatch: error: ttpred: job rejected: your time limit 10m00s is below the predicted"
  submit -p rejectp -t 1000 --ttpred="$SPECS/ok.yaml" --wrap 'sleep 1'
  [ "$rc" != 0 ] || fail "limit 10x above the prediction was not rejected"
  expect_err "is more than 10x the predicted"
  submit -p rejectp --ttpred="$SPECS/long.yaml" --wrap 'sleep 1'
  [ "$rc" != 0 ] || fail "prediction above the cap was not rejected"
  expect_err "exceeds the 5h00m00s allowed by policy rule 'reject-partition'"
  submit -p rejectp -t 60 --ttpred="$SPECS/ok.yaml" --wrap 'sleep 1'
  expect_submitted "reasonable limit in rejectp"
  expect_limit "$jobid" "01:00:00" "accepted"
  pass "rejections with the reason"
}

t_estimator_fails() {
  load_cluster estimator_fails
  local spec
  for spec in fail garbage partial missing; do
    submit --ttpred="$SPECS/$spec.yaml" --wrap 'sleep 1'
    expect_submitted "estimator $spec"
    expect_err "sbatch: error: ttpred: warning: no time prediction"
    expect_err "submitting the job without it"
    expect_limit "$jobid" "UNLIMITED" "no prediction, job untouched"
  done
  expect_err "spec: cannot read the spec file"
  pass "failing estimator: warning, job submitted unchanged"
}

t_estimator_hangs() {
  load_cluster estimator_hangs
  submit --ttpred="$SPECS/hang.yaml" --wrap 'sleep 1'
  expect_submitted "hanging estimator"
  expect_err "ttpred: warning: no time prediction (estimator timed out after $FAKE_TIMEOUT s)"
  awk -v e="$elapsed" -v t=$FAKE_TIMEOUT 'BEGIN{exit !(e < t + 4)}' \
    || fail "sbatch took ${elapsed}s with timeout=${FAKE_TIMEOUT}s"
  expect_limit "$jobid" "UNLIMITED" "no prediction"
  sleep 0.3
  if ps -eo args | grep -v grep | grep -qF "$SPECS/hang.yaml"; then
    fail "the hanging estimator was not killed"
  fi
  pass "hanging estimator killed after ${FAKE_TIMEOUT}s, sbatch returned in ${elapsed}s"
}

t_forged_env() {
  load_cluster forged_env
  [ -n "${TTPRED_FORGE:-}" ] && [ -x "$TTPRED_FORGE" ] || skip "ttpred_forge_submit not built"
  local o
  o=$("$TTPRED_FORGE" -H TTPRED_HORIZON_SECONDS=nan TTPRED_SECONDS=-5) || fail "forged submit failed: $o"
  echo "$o"
  jobid=$(echo "$o" | sed -n 's/^job //p')
  expect_limit "$jobid" UNLIMITED "NaN/negative ignored"
  o=$("$TTPRED_FORGE" -H 'SPANK_TTPRED_HORIZON_SECONDS=$(reboot)' TTPRED_SECONDS_HI=1e400) || fail "$o"
  jobid=$(echo "$o" | sed -n 's/^job //p')
  expect_limit "$jobid" UNLIMITED "garbage ignored"
  o=$("$TTPRED_FORGE" -H TTPRED_HORIZON_SECONDS=1e9) || fail "$o"
  jobid=$(echo "$o" | sed -n 's/^job //p')
  expect_limit "$jobid" UNLIMITED "absurd value (above limits.max_seconds) ignored"
  # a plausible forged value is used, but the policy's max_minutes still caps it
  o=$("$TTPRED_FORGE" -H TTPRED_HORIZON_SECONDS=800000) || fail "$o"
  jobid=$(echo "$o" | sed -n 's/^job //p')
  expect_limit "$jobid" "$(fmt_minutes 1440)" "clamped to max_minutes"
  sleep 0.2
  ctld_log_has "job_submit/ttpred: uid 0 job 'ttpred-forged': invalid prediction value: TTPRED_HORIZON_SECONDS='nan' is not a finite number: ignored" \
    || fail "NaN not logged"
  ctld_log_has "TTPRED_SECONDS='-5' is negative: ignored" || fail "negative not logged"
  ctld_log_has "TTPRED_HORIZON_SECONDS='1e9' is above the limit 864000: ignored" || fail "absurd not logged"
  ctld_alive || fail "slurmctld not responding"
  pass "forged spank_job_env values ignored or clamped, and logged"
}

t_broken_policy() {
  load_cluster broken_policy
  cp "$dir/ttpred.yaml" "$work/good.yaml"
  trap 'cp "$work/good.yaml" "$dir/ttpred.yaml"; scontrol reconfigure >/dev/null 2>&1; sleep 1.1' EXIT
  printf 'version: 1\nrules:\n  - name: broken\n    time_limit:\n      safety_factor: lots\n' > "$dir/ttpred.yaml"
  reconfigure
  submit --ttpred="$SPECS/ok.yaml" --wrap 'sleep 1'
  expect_submitted "broken policy"
  expect_limit "$jobid" UNLIMITED "broken policy: job passes unchanged"
  ctld_alive || fail "slurmctld died after reconfigure with a broken policy"
  ctld_log_has "error: job_submit/ttpred: policy error: $dir/ttpred.yaml:5: rules[0].time_limit.safety_factor: expected a number in [1, 100], got 'lots'" \
    || fail "no one-line policy error naming file, line and key"
  printf 'rules: [\n' > "$dir/ttpred.yaml"
  reconfigure
  submit --ttpred="$SPECS/ok.yaml" --wrap 'sleep 1'
  expect_submitted "YAML syntax error"
  expect_limit "$jobid" UNLIMITED "syntax error: job passes"
  rm -f "$dir/ttpred.yaml"
  reconfigure
  submit --ttpred="$SPECS/ok.yaml" --wrap 'sleep 1'
  expect_submitted "missing policy"
  expect_limit "$jobid" UNLIMITED "missing policy: job passes"
  ctld_log_has "$dir/ttpred.yaml:0: (file): cannot open policy file" || fail "missing file not logged"
  cp "$work/good.yaml" "$dir/ttpred.yaml"
  reconfigure
  submit --ttpred="$SPECS/ok.yaml" --wrap 'sleep 1'
  expect_limit "$jobid" "01:10:00" "policy restored after reconfigure"
  trap - EXIT
  ctld_alive || fail "slurmctld not responding"
  pass "broken/missing policy: slurmctld up, jobs pass, fixed policy reloaded"
}

# scripts/local-cluster.sh finds its daemons when a pidfile names no live process
# (Slurm 24.11 re-executes slurmctld on reconfigure): status reports them, stop would
# otherwise leave the controller running.
t_stale_pidfile() {
  load_cluster stale_pidfile
  local real out
  real=$(ctld_pid) || fail "no slurmctld"
  cp "$dir/slurmctld.pid" "$work/slurmctld.pid"
  trap 'cp "$work/slurmctld.pid" "$dir/slurmctld.pid"' EXIT
  echo 999999999 > "$dir/slurmctld.pid"
  out=$("$TTPRED_REPO/scripts/local-cluster.sh" status "$dir" 2>&1) || fail "status failed with a stale pidfile: $out"
  grep -q "^slurmctld: running (pid $real)" <<<"$out" || fail "status did not find slurmctld $real: $out"
  cp "$work/slurmctld.pid" "$dir/slurmctld.pid"
  trap - EXIT
  pass "local-cluster.sh status finds slurmctld ($real) past a stale pidfile"
}

t_real_estimator() {
  load_cluster real_estimator
  local est="${TTPRED_REAL_ESTIMATOR:-}" spec="${TTPRED_REAL_SPEC:-}"
  [ -n "$est" ] && [ -x "$est" ] || skip "real ttpred-estimate not built here ('$est')"
  [ -r "$spec" ] || skip "spec $spec missing"
  local plugdir
  plugdir=$(sed -n 's/^optional \([^ ]*\)\/spank_ttpred.so.*/\1/p' "$dir/plugstack.conf")
  echo "optional $plugdir/spank_ttpred.so estimator=$est timeout=300 device=auto" > "$dir/plugstack-real.conf"
  sed "s|^PlugStackConfig=.*|PlugStackConfig=$dir/plugstack-real.conf|" "$dir/slurm.conf" > "$dir/slurm-real.conf"
  SLURM_CONF="$dir/slurm-real.conf" TTPRED_SAVE_JSON="$work/prediction.json" \
    submit --ttpred="$spec" --wrap 'sleep 1'
  expect_submitted "real estimator"
  expect_err "sbatch: ttpred: converges in"
  [ -s "$work/prediction.json" ] || fail "TTPRED_SAVE_JSON not written"
  # Policy rule everything-else: horizon, upper band, x1.2 + 2 min, in [1, 1440].
  local hi expected
  hi=$(jq -r '(.horizon_seconds_band[1] // .horizon_seconds) | tostring' "$work/prediction.json")
  expected=$(awk -v s="$hi" 'BEGIN { m = (s * 1.2 + 120) / 60 - 1e-9; c = int(m); if (c < m) c++;
                                    if (c < 1) c = 1; if (c > 1440) c = 1440; print c }')
  echo "  horizon_seconds upper band = $hi s -> expected $expected min"
  expect_limit "$jobid" "$(fmt_minutes "$expected")" "real estimator + embedded spec"
  expect_err "sbatch: ttpred: time limit set to $expected min"
  pass "real estimator end to end: TimeLimit $expected min"
}

t_stress() {
  load_cluster stress
  local rss0 rss1 n=500 t0 t1 i
  [ -n "${TTPRED_FORGE:-}" ] && [ -x "$TTPRED_FORGE" ] || skip "ttpred_forge_submit not built"
  "$TTPRED_FORGE" -n 20 -H TTPRED_HORIZON_SECONDS=600 TTPRED_HORIZON_SECONDS_HI=700 >/dev/null || fail "warm-up"
  rss0=$(awk '/VmRSS/{print $2}' "/proc/$(ctld_pid)/status")
  t0=$(date +%s.%N)
  "$TTPRED_FORGE" -n $n -H TTPRED_HORIZON_SECONDS=600 TTPRED_HORIZON_SECONDS_HI=700 \
    TTPRED_SECONDS=300 TTPRED_HORIZON_SECONDS_LO=500 > "$work/forge.out" || fail "forged submissions failed"
  t1=$(date +%s.%N)
  [ "$(grep -c '^job ' "$work/forge.out")" = $n ] || fail "not all $n jobs submitted"
  grep -c 'time limit set to 16 min' "$work/forge.out" | grep -qx $n || fail "not every job got its limit"
  for i in $(seq 1 30); do   # through sbatch + SPANK + fake estimator as well
    sbatch --hold -o /dev/null --ttpred="$SPECS/ok.yaml" --wrap 'sleep 1' >/dev/null 2>&1 || fail "sbatch $i failed"
  done
  scancel -u root 2>/dev/null
  sleep 1
  rss1=$(awk '/VmRSS/{print $2}' "/proc/$(ctld_pid)/status")
  local tp0 tp1
  tp0=$(date +%s.%N); scontrol ping | grep -q UP || fail "slurmctld not responding"; tp1=$(date +%s.%N)
  echo "  $n libslurm submissions in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')s; 30 sbatch --ttpred"
  echo "  slurmctld RSS: ${rss0} kB -> ${rss1} kB ($(( (rss1 - rss0) )) kB for $((n + 30)) jobs); ping $(awk -v a="$tp0" -v b="$tp1" 'BEGIN{printf "%.2f", b-a}')s"
  [ $((rss1 - rss0)) -lt 32768 ] || fail "slurmctld RSS grew by more than 32 MB"
  awk -v a="$tp0" -v b="$tp1" 'BEGIN{exit !(b - a < 2)}' || fail "slurmctld slow to answer"
  pass "stress: $((n + 30)) submissions, controller responsive"
}

# --- budgets (issue 7 part 3) ----------------------------------------------
# gpu4.yaml: horizon 3000 s x 4 GPUs = 3.33 GPU-hours; gpu4-long.yaml: 4 h x 4 = 16 GPU-hours.

t_budget_policy() {  # policy budget (in-memory tally) on the cluster without slurmdbd
  load_cluster budget_policy
  # cost = the limit set (70 min) x the 4 GPUs the job requests = 4.67 GPU-hours
  submit -A budget-lab --gpus=4 --ttpred="$SPECS/gpu4.yaml" --wrap 'sleep 1'
  expect_submitted "first budget-lab job"
  expect_err "sbatch: ttpred: converges in 1200 steps, 20m00s (5-95%: 16m40s-25m00s); full horizon 3000 steps, 50m00s (46m40s-56m40s); 1 s/step; cost 3.33 GPU-hours (4 GPUs)"
  expect_err "sbatch: ttpred: cost 4.67 GPU-hours (4 GPUs from the job request x time limit 1h10m00s); account budget-lab (policy budget, this month) has 5 of 5 GPU-hours left"
  expect_no_err "GrpTRESMins"
  expect_limit "$jobid" "01:10:00" "time limit still set"
  submit -A budget-lab --gpus=4 --ttpred="$SPECS/gpu4.yaml" --wrap 'sleep 1'
  expect_submitted "second budget-lab job: over the budget, warned"
  expect_err "account budget-lab (policy budget, this month) has 0.333 of 5 GPU-hours left"
  expect_err "sbatch: ttpred: warning: the cost 4.67 GPU-hours exceeds the 0.333 GPU-hours left to account budget-lab (policy budget, this month)"
  submit -p rejectp -t 60 -A budget-lab --gpus=4 --ttpred="$SPECS/gpu4.yaml" --wrap 'sleep 1'
  [ "$rc" != 0 ] && [ -z "$jobid" ] || fail "over-budget job in rejectp was not rejected"
  expect_err "sbatch: error: ttpred: job rejected: the cost 4 GPU-hours exceeds the 0 GPU-hours left to account budget-lab (policy budget, this month) (policy rule 'reject-partition')"
  expect_err "Job violates accounting/QOS policy"
  # no budget for other accounts; no GPU request: no cost (the spec's GPUs do not count)
  submit -A other-lab --gpus=4 --ttpred="$SPECS/gpu4.yaml" --wrap 'sleep 1'
  expect_submitted "account without budget"
  expect_no_err "ttpred: cost"
  expect_err "cost 3.33 GPU-hours (4 GPUs)"
  submit -A budget-lab --ttpred="$SPECS/gpu4.yaml" --wrap 'sleep 1'
  expect_submitted "no GPU request"
  expect_no_err "ttpred: cost"
  ctld_alive || fail "slurmctld not responding"
  pass "policy budget: cost and what is left shown, warning, rejection (no slurmdbd: fail open)"
}

t_budget_forged() {
  load_cluster budget_forged
  [ -n "${TTPRED_FORGE:-}" ] && [ -x "$TTPRED_FORGE" ] || skip "ttpred_forge_submit not built"
  local o
  o=$("$TTPRED_FORGE" -H -A forged-lab TTPRED_HORIZON_SECONDS=600 'TTPRED_SLURM_BUDGET=$(reboot):1:2:' TTPRED_GPUS=1e9) \
    || fail "forged submit failed: $o"
  echo "$o"
  jobid=$(echo "$o" | sed -n 's/^job //p')
  expect_limit "$jobid" "00:14:00" "garbage budget ignored, prediction used"
  # a plausible forged Slurm budget is only advisory: shown, never charged
  o=$("$TTPRED_FORGE" -H -A forged-lab -g "$(gres_gpu 2)" TTPRED_HORIZON_SECONDS=3600 TTPRED_GPUS=2 'TTPRED_SLURM_BUDGET=*forged-lab:1:1:') \
    || fail "forged submit failed: $o"
  echo "$o"
  echo "$o" | grep -qF "msg: ttpred: cost 2.47 GPU-hours (2 GPUs from the job request x time limit 1h14m00s); account forged-lab (Slurm GrpTRESMins) has 1 of 1 GPU-hours left" \
    || fail "forged budget not shown as given"
  sleep 0.2
  ctld_log_has "invalid TTPRED_SLURM_BUDGET (invalid account name): ignored" || fail "invalid budget not logged"
  ctld_log_has "TTPRED_GPUS='1e9' is above the limit 100000: ignored" || fail "absurd GPU count not logged"
  ctld_alive || fail "slurmctld not responding"
  pass "forged TTPRED_SLURM_BUDGET / TTPRED_GPUS ignored or advisory, and logged"
}

# --- issue 13: budgets and rejections a user cannot get around ---------------
# test.yaml gives each trust_* test its own 10-GPU-hour policy budget. The main
# cluster has 4 fake GPUs (TTPRED_GPUS_PER_NODE=4) and no slurmdbd.

need_forge() { [ -n "${TTPRED_FORGE:-}" ] && [ -x "$TTPRED_FORGE" ] || skip "ttpred_forge_submit not built"; }
# gres string of one GPU count in this Slurm's tres_per_node syntax
gres_gpu() {
  local v; v=$(sbatch --version | grep -oE '[0-9]+\.[0-9]+' | head -n1)
  if [[ "$v" < "23.02" ]]; then echo "gres:gpu:$1"; else echo "gres/gpu:$1"; fi
}
forge() { "$TTPRED_FORGE" "$@" 2>&1; }
log_size() { stat -c %s "$dir/log/slurmctld.log"; }

t_trust_forged_marker() {
  load_cluster trust_forged_marker
  need_forge
  local o
  # No --account, a forged default-account marker naming victim-lab: the account
  # is not resolvable (no associations), so no budget is checked or charged.
  o=$(forge -H -g "$(gres_gpu 4)" -t 600 TTPRED_HORIZON_SECONDS=600 'TTPRED_SLURM_BUDGET=*victim-lab:0:-1:')
  echo "$o"
  echo "$o" | grep -q '^job ' || fail "forged-marker job not submitted"
  echo "$o" | grep -q 'victim-lab' && fail "the forged '*victim-lab' marker was used"
  o=$(forge -H -g "$(gres_gpu 4)" -t 600 TTPRED_HORIZON_SECONDS=600 'TTPRED_SLURM_BUDGET=*victim-lab:0:1:victim-lab')
  echo "$o" | grep -q 'victim-lab' && fail "the forged Slurm budget of victim-lab was used"
  # victim-lab's own job still has its whole budget
  o=$(forge -H -A victim-lab -g "$(gres_gpu 1)" -t 60 TTPRED_HORIZON_SECONDS=600)
  echo "$o"
  echo "$o" | grep -qF "account victim-lab (policy budget, this month) has 10 of 10 GPU-hours left" \
    || fail "victim-lab's budget was charged by a job that was not its own"
  sleep 0.2
  ctld_log_has "account unresolved (no --account and no enforced associations)" || fail "unresolved account not logged"
  pass "a forged '*' default-account marker charges nobody else's budget"
}

t_trust_rejected() {
  load_cluster trust_rejected
  need_forge
  local o
  # slurmctld rejects the job after job_submit (no such partition): nothing charged
  o=$(forge -H -p nosuch -A reject-lab -g "$(gres_gpu 4)" -t 120 TTPRED_HORIZON_SECONDS=600)
  echo "$o"
  echo "$o" | grep -q '^job ' && fail "a job to a partition that does not exist was accepted"
  # a job the policy itself rejects charges nothing either (rejectp: budget reject)
  o=$(forge -H -p rejectp -A reject-lab -g "$(gres_gpu 4)" -t 240 TTPRED_HORIZON_SECONDS=6000)
  echo "$o" | grep -qF "job rejected: the cost 16 GPU-hours exceeds the 10 GPU-hours left" \
    || fail "over-budget job not rejected: $o"
  o=$(forge -H -A reject-lab -g "$(gres_gpu 1)" -t 60 TTPRED_HORIZON_SECONDS=600)
  echo "$o"
  echo "$o" | grep -qF "account reject-lab (policy budget, this month) has 10 of 10 GPU-hours left" \
    || fail "a rejected job was charged"
  pass "rejected jobs (by slurmctld or by the policy) charge nothing"
}

t_trust_band() {
  load_cluster trust_band
  need_forge
  local o jobid
  # point 1 s, band up to 10 days: the reject rule uses the upper band
  o=$(forge -H -p rejectp -A band-lab -g "$(gres_gpu 4)" TTPRED_HORIZON_SECONDS=1 TTPRED_HORIZON_SECONDS_HI=864000)
  echo "$o"
  echo "$o" | grep -q '^job ' && fail "forged wide band passed the above_minutes rule"
  echo "$o" | grep -qF "exceeds the 5h00m00s allowed by policy rule 'reject-partition'" || fail "wrong reason: $o"
  # without a reject rule: the limit comes from the top of the band, and so does the cost
  o=$(forge -H -A band-lab -g "$(gres_gpu 4)" TTPRED_HORIZON_SECONDS=1 TTPRED_HORIZON_SECONDS_HI=864000)
  echo "$o"
  jobid=$(echo "$o" | sed -n 's/^job //p')
  expect_limit "$jobid" "1-00:00:00" "limit from the upper band (max_minutes 1440)"
  echo "$o" | grep -qF "cost 96 GPU-hours (4 GPUs from the job request x time limit 1d00h00m)" \
    || fail "the cost is not limit x GPUs"
  echo "$o" | grep -qF "warning: the cost 96 GPU-hours exceeds the 10 GPU-hours left to account band-lab" \
    || fail "no over-budget warning"
  pass "forged wide band: rejected by above_minutes, costs its limit (96 GPU-h, not 0.001)"
}

t_trust_step_seconds() {
  load_cluster trust_step_seconds
  # hardware.step_seconds 1e-6 in the user's spec: the stepp bound (0.05 s/step)
  # scales everything x 5e4: horizon 150 s, upper band 170 s, so
  # ceil((170 x 1.2 + 120) / 60) = 6 min (3 min without the bound)
  submit -p stepp -A step-lab --gpus=1 --ttpred="$SPECS/tiny-step.yaml" --wrap 'sleep 1'
  expect_submitted "tiny step_seconds"
  expect_limit "$jobid" "00:06:00" "step time bound of the policy"
  expect_err "outside the policy bound [0.05, inf] s"
  expect_err "cost 0.1 GPU-hours (1 GPU from the job request x time limit 6m00s)"
  # and the limit cannot then be raised past the budget with scontrol update
  local o
  o=$(scontrol update jobid="$jobid" TimeLimit=1440 2>&1) && fail "TimeLimit=1440 accepted: $o"
  echo "  scontrol update TimeLimit=1440 -> $o"
  expect_limit "$jobid" "00:06:00" "TimeLimit unchanged"
  pass "a tiny hardware.step_seconds is bounded by the policy"
}

t_trust_update() {
  load_cluster trust_update
  local id o
  # rejectp (budget reject; reject over 10x): 60 min x 4 GPUs = 4 GPU-hours of 10
  submit -p rejectp -t 60 -A modify-lab --gpus=4 --ttpred="$SPECS/ok.yaml" --wrap 'sleep 1'
  expect_submitted "job to update"
  id=$jobid
  # 1440 min: more than 10x the prediction (reject.over_factor)
  o=$(scontrol update jobid="$id" TimeLimit=1440 2>&1) && fail "TimeLimit=1440 accepted: $o"
  echo "  scontrol update TimeLimit=1440 -> $o"
  expect_limit "$id" "01:00:00" "TimeLimit unchanged after a refused update"
  # 400 min x 4 GPUs = 26.7 GPU-hours > the 10 of modify-lab
  o=$(scontrol update jobid="$id" TimeLimit=400 2>&1) && fail "TimeLimit=400 accepted: $o"
  echo "  scontrol update TimeLimit=400 -> $o"
  echo "$o" | grep -q "accounting/QOS policy" || fail "refused for another reason: $o"
  expect_limit "$id" "01:00:00" "TimeLimit unchanged"
  # more GPUs on the same limit: 60 min x 16 GPUs... the node has 4; gres=gpu:4 per node
  # stays, 90 min x 4 = 6 GPU-hours: accepted, the charge moves from 4 to 6
  scontrol update jobid="$id" TimeLimit=90 || fail "TimeLimit=90 refused"
  expect_limit "$id" "01:30:00" "TimeLimit raised within the budget"
  sleep 0.2
  ctld_log_has "job $id: uid 0 update: rule 'reject-partition'" || fail "update not re-checked in the log"
  ctld_log_has "cost 6 GPU-h (was 4), update accepted" || fail "accepted update not logged"
  submit -A modify-lab --gpus=1 -t 60 --ttpred="$SPECS/ok.yaml" --wrap 'sleep 1'
  expect_err "account modify-lab (policy budget, this month) has 4 of 10 GPU-hours left"
  # A job without --ttpred that carries the first job's TTPRED_TICKET (copied, or
  # inherited from inside a ttpred job): blanked at submission, so updating it
  # cannot move the first job's charge (10 - 6 - 1 = 3 GPU-hours left).
  local key
  key=$(tr '\0' '\n' < "$dir/state/hash.$((id % 10))/job.$id/environment" | sed -n 's/^TTPRED_TICKET=//p')
  [ -n "$key" ] || fail "no TTPRED_TICKET in the environment of job $id"
  submit -A modify-lab --gpus=4 -t 60 --export=ALL,TTPRED_TICKET="$key" --wrap 'sleep 1'
  expect_submitted "job with a copied ticket"
  scontrol update jobid="$jobid" TimeLimit=1 || fail "update of the plain job refused"
  submit -A modify-lab --gpus=1 -t 60 --ttpred="$SPECS/ok.yaml" --wrap 'sleep 1'
  expect_err "account modify-lab (policy budget, this month) has 3 of 10 GPU-hours left"
  pass "scontrol update cannot raise what job_submit would not grant"
}

t_trust_array() {
  load_cluster trust_array
  need_forge
  local o
  # 100 tasks x 1 GPU x 10 min = 16.7 GPU-hours > 10 (rejectp: budget reject)
  o=$(forge -H -p rejectp -t 10 -a 0-99 -A array-lab -g "$(gres_gpu 1)" TTPRED_HORIZON_SECONDS=300)
  echo "$o"
  echo "$o" | grep -q '^job ' && fail "a 100-task array was charged as one task"
  echo "$o" | grep -qF "the cost 16.67 GPU-hours exceeds the 10 GPU-hours left" || fail "wrong reason: $o"
  o=$(forge -H -p rejectp -t 10 -a 0-9 -A array-lab -g "$(gres_gpu 1)" TTPRED_HORIZON_SECONDS=300)
  echo "$o"
  echo "$o" | grep -qF "cost 1.67 GPU-hours (1 GPU from the job request x time limit 10m00s x 10 array tasks)" \
    || fail "array cost"
  pass "job arrays cost every task"
}

t_trust_flood() {
  load_cluster trust_flood
  need_forge
  local s0 s1 n0 n1 o t0 t1
  sleep 0.2
  s0=$(log_size); n0=$(grep -c 'job_submit/ttpred' "$dir/log/slurmctld.log")
  # 1M TTPRED_SECONDS=x entries and a 50 KB name with a newline in it
  t0=$(date +%s.%N)
  o=$(forge -H -F 1000000 -J 'flood\nerror: forged log line' -L 50000 TTPRED_HORIZON_SECONDS=600 | cut -c1-300)
  t1=$(date +%s.%N)
  echo "$o" | head -3
  sleep 0.3
  s1=$(log_size); n1=$(grep -c 'job_submit/ttpred' "$dir/log/slurmctld.log")
  echo "  slurmctld log: +$((s1 - s0)) bytes, +$((n1 - n0)) ttpred lines; submission $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')s"
  [ $((n1 - n0)) -le 6 ] || fail "$((n1 - n0)) log lines for one job"
  [ $((s1 - s0)) -lt 16384 ] || fail "log grew by $((s1 - s0)) bytes for one job"
  ! grep -q '^error: forged log line' "$dir/log/slurmctld.log" || fail "a newline in the job name forged a log line"
  grep -q '^\[[^]]*\] error: forged log line' "$dir/log/slurmctld.log" && fail "forged line at the start of a log line"
  ctld_log_has "job 'flood?error: forged log line" || fail "sanitized name not in the log"
  ctld_log_has "parsing stopped after" || fail "bounded parsing not logged"
  # a newline in a job name through sbatch too
  submit -J $'two\nlines' --ttpred="$SPECS/ok.yaml" --wrap 'sleep 1'
  expect_submitted "newline in the name"
  sleep 0.2
  ctld_log_has "job 'two?lines'" || fail "sbatch name with a newline not sanitized"
  ctld_alive || fail "slurmctld not responding"
  pass "env flood and newline in the name: bounded, sanitized log"
}

t_trust_misc() {
  load_cluster trust_misc
  # --time-min without --time: the limit set is at least time-min (Slurm requires it)
  submit --time-min=100 --ttpred="$SPECS/ok.yaml" --wrap 'sleep 1'
  expect_submitted "--time-min without --time"
  expect_limit "$jobid" "01:40:00" "limit raised to --time-min"
  # GPU counting: gpu:0 is 0 (no cost, no budget line), -N 1-2 counts 2 nodes
  submit -A count-lab --gres=gpu:0 -t 60 --ttpred="$SPECS/gpu4.yaml" --wrap 'sleep 1'
  expect_submitted "gpu:0"
  expect_no_err "ttpred: cost"
  submit -A count-lab -N 1-2 --gpus-per-node=1 -t 30 --ttpred="$SPECS/gpu4.yaml" --wrap 'sleep 1'
  expect_submitted "-N 1-2"
  expect_err "cost 1 GPU-hours (2 GPUs from the job request x time limit 30m00s)"
  pass "--time-min respected; gpu:0 is 0; -N a-b counts b"
}

t_acct_setup() {
  [ "$(id -u)" = 0 ] || skip "needs root"
  local b
  for b in /usr/sbin/slurmctld /usr/sbin/slurmd /usr/sbin/munged /usr/sbin/slurmdbd /usr/sbin/mariadbd \
           /usr/bin/mariadb-install-db /usr/bin/mariadb /usr/bin/sacctmgr; do
    [ -x "$b" ] || skip "$b not installed (apt-get install slurmdbd mariadb-server)"
  done
  id mysql >/dev/null 2>&1 || skip "user mysql missing"
  if [ -s "$TTPRED_ACCT_STATE" ]; then
    "$TTPRED_REPO/scripts/local-cluster.sh" stop "$(cat "$TTPRED_ACCT_STATE")" || true
  fi
  dir=$(mktemp -d /tmp/ttpred-acct.XXXXXX) || fail mktemp
  echo "$dir" > "$TTPRED_ACCT_STATE"
  TTPRED_ACCOUNTING=1 TTPRED_ACCOUNTING_SETUP="$TTPRED_TEST_SRC/accounting-setup.txt" TTPRED_GPUS_PER_NODE=4 \
  TTPRED_ESTIMATOR="$FAKE" TTPRED_ESTIMATOR_TIMEOUT=$FAKE_TIMEOUT TTPRED_DEVICE=cpu \
  TTPRED_POLICY_FILE="$TTPRED_TEST_SRC/policies/test.yaml" TTPRED_PARTITIONS="debug rejectp" \
    "$TTPRED_REPO/scripts/local-cluster.sh" start "$dir" || fail "accounting cluster did not start"
  export SLURM_CONF="$dir/slurm.conf"
  local p
  for p in "$(cat "$dir/slurmctld.pid")" "$(cat "$dir/slurmd.pid")" "$(cat "$dir/slurmdbd.pid")" \
           "$(cat "$dir/mysql/mysqld.pid")"; do
    if ss -Htlnp 2>/dev/null | grep "pid=$p," | awk '{print $4}' | grep -Ev '^(127\.0\.0\.1|\[::1\]):' | grep . >/dev/null; then
      ss -Htlnp | grep "pid=$p,"
      fail "a daemon of the accounting cluster listens on a non-loopback address"
    fi
  done
  local i
  for i in $(seq 1 50); do  # sacctmgr changes reach slurmctld asynchronously
    scontrol show assoc_mgr accounts=physics flags=assoc 2>/dev/null | grep -q 'gres/gpu=600(' && break
    sleep 0.2
  done
  scontrol show assoc_mgr accounts=physics flags=assoc | grep -q 'gres/gpu=600(' \
    || fail "slurmctld does not see GrpTRESMins=gres/gpu=600 on physics"
  # Real GPU usage for slurm.acct_usage: 4 GPUs for 75 s in usage-lab (not a ttpred
  # job). priority/multifactor charges running jobs at each PriorityCalcPeriod (1 min).
  sbatch -A usage-lab --gpus=4 -t 3 -o /dev/null --wrap 'sleep 75' || fail "usage job not submitted"
  pass "accounting cluster up in $dir"
}

t_acct_cleanup() {
  [ -s "$TTPRED_ACCT_STATE" ] || skip "no accounting cluster"
  dir=$(cat "$TTPRED_ACCT_STATE")
  local alive=1 logs
  kill -0 "$(cat "$dir/slurmctld.pid" 2>/dev/null)" 2>/dev/null || alive=0
  "$TTPRED_REPO/scripts/local-cluster.sh" stop "$dir"
  logs="$(dirname "$TTPRED_ACCT_STATE")/acct-cluster-logs"
  mkdir -p "$logs"
  cp "$dir"/log/*.log "$dir/mysql/mysqld.log" "$logs/" 2>/dev/null
  rm -f "$TTPRED_ACCT_STATE"
  rm -rf "$dir"
  [ $alive = 1 ] || fail "slurmctld had died before cleanup (logs in $logs)"
  pass "accounting cluster stopped, logs kept in $logs"
}

t_acct_budget_shown() {
  load_cluster --acct acct_budget_shown
  # no -A: the default account (physics), found by the SPANK plugin
  # the account as slurmctld resolves it (root's default account physics)
  submit --gpus=4 --ttpred="$SPECS/gpu4.yaml" --wrap 'sleep 1'
  expect_submitted "default account"
  expect_err "cost 3.33 GPU-hours (4 GPUs)"
  expect_err "sbatch: ttpred: cost 4.67 GPU-hours (4 GPUs from the job request x time limit 1h10m00s); account physics (Slurm GrpTRESMins) has 10 of 10 GPU-hours left"
  expect_no_err "warning"
  expect_limit "$jobid" "01:10:00" "time limit set as before"
  # the job's own GPU request is what counts
  submit -A physics --gpus=2 --ttpred="$SPECS/gpu4.yaml" --wrap 'sleep 1'
  expect_submitted "--gpus=2"
  expect_err "sbatch: ttpred: cost 2.33 GPU-hours (2 GPUs from the job request x time limit 1h10m00s); account physics (Slurm GrpTRESMins) has 10 of 10 GPU-hours left"
  submit -A physics -N 1 --gres=gpu:3 --ttpred="$SPECS/gpu4.yaml" --wrap 'sleep 1'
  expect_submitted "--gres=gpu:3"
  expect_err "cost 3.5 GPU-hours (3 GPUs from the job request x time limit 1h10m00s)"
  # the limit reaches the controller's log too
  sleep 0.2
  ctld_log_has "account physics (Slurm GrpTRESMins) left 10/10, cost 4.67 GPU-h" || fail "budget not logged"
  ctld_log_has "account 'physics', 4 GPUs" || fail "resolved account not logged"
  pass "cost and the Slurm GrpTRESMins budget left shown at sbatch"
}

t_acct_budget_warn() {
  load_cluster --acct acct_budget_warn
  submit -A physics --gpus=4 --ttpred="$SPECS/gpu4-long.yaml" --wrap 'sleep 1'
  expect_submitted "over budget, warning only"
  expect_err "sbatch: ttpred: cost 19.87 GPU-hours (4 GPUs from the job request x time limit 4h58m00s); account physics (Slurm GrpTRESMins) has 10 of 10 GPU-hours left"
  expect_err "sbatch: ttpred: warning: the cost 19.87 GPU-hours exceeds the 10 GPU-hours left to account physics (Slurm GrpTRESMins): the job may stay pending (AssocGrpGRESMinutes) or be stopped"
  expect_limit "$jobid" "$(fmt_minutes 298)" "time limit still set"
  pass "job predicted to exceed the Slurm budget: warned"
}

t_acct_budget_reject() {
  load_cluster --acct acct_budget_reject
  submit -p rejectp -t 300 -A physics --gpus=4 --ttpred="$SPECS/gpu4-long.yaml" --wrap 'sleep 1'
  [ "$rc" != 0 ] && [ -z "$jobid" ] || fail "over-budget job in rejectp was not rejected"
  expect_err "sbatch: error: ttpred: job rejected: the cost 20 GPU-hours exceeds the 10 GPU-hours left to account physics (Slurm GrpTRESMins) (policy rule 'reject-partition')"
  expect_err "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy"
  submit -p rejectp -t 60 -A physics --gpus=4 --ttpred="$SPECS/gpu4.yaml" --wrap 'sleep 1'
  expect_submitted "within budget in rejectp"
  expect_err "account physics (Slurm GrpTRESMins) has 10 of 10 GPU-hours left"
  pass "job predicted to exceed the Slurm budget: rejected where the policy says so"
}

t_acct_user_limit() {
  load_cluster --acct acct_user_limit
  # chem: no account limit, 2 GPU-hours on root's own association
  submit -A chem --gpus=4 --ttpred="$SPECS/gpu4.yaml" --wrap 'sleep 1'
  expect_submitted "chem"
  expect_err "account chem (Slurm GrpTRESMins of chem/root) has 2 of 2 GPU-hours left"
  expect_err "warning: the cost 4.67 GPU-hours exceeds the 2 GPU-hours left to account chem (Slurm GrpTRESMins of chem/root)"
  # budget-lab: no Slurm limit, only the policy budget
  submit -A budget-lab --gpus=1 --ttpred="$SPECS/gpu4.yaml" --wrap 'sleep 1'
  expect_submitted "budget-lab"
  expect_err "ttpred: cost 1.17 GPU-hours (1 GPU from the job request x time limit 1h10m00s); account budget-lab (policy budget, this month) has 5 of 5 GPU-hours left"
  expect_no_err "GrpTRESMins"
  pass "user-level GrpTRESMins and accounts without a Slurm limit"
}

t_acct_trust_rejected() {
  load_cluster --acct acct_trust_rejected
  need_forge
  local o nobody
  nobody=$(id -u nobody) || skip "no user nobody"
  # root is not a member of victim-lab: slurmctld rejects the job; nothing is charged
  o=$(forge -H -A victim-lab -g "$(gres_gpu 4)" -t 600 TTPRED_HORIZON_SECONDS=600)
  echo "$o"
  echo "$o" | grep -q '^job ' && fail "slurmctld accepted a job in an account root is not a member of"
  # a forged '*victim-lab' marker without --account: root's default account is used
  o=$(forge -H -g "$(gres_gpu 4)" -t 60 TTPRED_HORIZON_SECONDS=600 'TTPRED_SLURM_BUDGET=*victim-lab:0:-1:')
  echo "$o"
  echo "$o" | grep -q '^job ' || fail "default-account job not submitted"
  echo "$o" | grep -q 'victim-lab' && fail "the forged marker was used"
  # victim-lab's own member still has the whole budget
  o=$(forge -H -u "$nobody" -A victim-lab -g "$(gres_gpu 1)" -t 60 TTPRED_HORIZON_SECONDS=600)
  echo "$o"
  echo "$o" | grep -qF "account victim-lab (policy budget, this month) has 10 of 10 GPU-hours left" \
    || fail "victim-lab was charged by jobs that were not its own"
  sleep 0.2
  ctld_log_has "no association for this user and account: slurmctld rejects the job" || fail "unresolved account not logged"
  pass "a rejected job and a forged default-account marker charge nothing to victim-lab"
}

t_acct_usage() {
  load_cluster --acct acct_usage
  # The 4-GPU job of slurm.acct_setup runs in usage-lab (GrpTRESMins=gres/gpu=60);
  # priority/multifactor adds its usage every PriorityCalcPeriod (1 min).
  local i used=""
  for i in $(seq 1 150); do
    used=$(scontrol show assoc_mgr accounts=usage-lab flags=assoc 2>/dev/null |
           sed -n 's/.*GrpTRESMins=.*gres\/gpu=60(\([0-9]*\)).*/\1/p' | head -n1)
    [ -n "$used" ] && [ "$used" -gt 0 ] && break
    sleep 1
  done
  [ -n "$used" ] && [ "$used" -gt 0 ] || fail "no GPU usage recorded for usage-lab after 150 s"
  echo "  usage-lab used $used GPU-minutes of 60"
  submit -A usage-lab --gpus=4 --ttpred="$SPECS/gpu4.yaml" --wrap 'sleep 1'
  expect_submitted "usage-lab"
  local left
  left=$(sed -n 's/.*account usage-lab (Slurm GrpTRESMins) has \([0-9.]*\) of 1 GPU-hours left.*/\1/p' "$err")
  [ -n "$left" ] || fail "no budget line for usage-lab"
  awk -v l="$left" 'BEGIN{exit !(l > 0 && l < 1)}' || fail "usage not subtracted: $left of 1 left"
  expect_err "warning: the cost 4.67 GPU-hours exceeds the $left GPU-hours left to account usage-lab"
  pass "real usage from Slurm accounting: $left of 1 GPU-hours left"
}

# --- job mode (issue 17): the prediction runs as a Slurm job, sbatch returns at once ---
JOB_TIMEOUT=5   # plugstack timeout= of the job-mode tests (the estimator's limit in the prediction job)

# Switches this test's sbatch to a plugstack.conf with mode=job (a copy of
# slurm.conf that points to it; the daemons keep theirs). Extra plugstack args: $@.
use_job_mode() {
  local jd="$work/jobmode" so
  mkdir -p "$jd"
  so=$(awk '/spank_ttpred.so/ {print $2; exit}' "$dir/plugstack.conf")
  sed "s|^PlugStackConfig=.*|PlugStackConfig=$jd/plugstack.conf|" "$dir/slurm.conf" > "$jd/slurm.conf"
  local f; for f in gres.conf cgroup.conf; do [ -e "$dir/$f" ] && ln -sf "$dir/$f" "$jd/$f"; done
  echo "optional $so estimator=$FAKE device=cpu timeout=$JOB_TIMEOUT mode=job predictor=$TTPRED_REPO/plugin/ttpred-predict-job.sh output=$work/predict-%j.out $*" \
    > "$jd/plugstack.conf"
  export SLURM_CONF="$jd/slurm.conf"
}
pred_job() { sed -n 's/.*ttpred: predicting in job \([0-9]*\) (mode=job[;)].*/\1/p' "$err" | head -n1; }
comment_of() { squeue -h -t all -j "$1" -o %k 2>/dev/null | head -n1; }
state_of() { squeue -h -t all -j "$1" -o %T 2>/dev/null | head -n1; }
# wait_gone JOB SECONDS: until JOB has left the queue (finished), else fail
wait_done() {
  local i
  for i in $(seq 1 $(($2 * 5))); do
    case "$(state_of "$1")" in COMPLETED|FAILED|CANCELLED|TIMEOUT|"") return 0 ;; esac
    sleep 0.2
  done
  fail "job $1 still $(state_of "$1") after $2 s"
}
# wait_running JOB SECONDS: 0 once the job is RUNNING, 1 if it is not by then.
wait_running() {
  local i
  for i in $(seq 1 $(($2 * 5))); do
    [ "$(state_of "$1")" = RUNNING ] && return 0
    sleep 0.2
  done
  return 1
}
# No job of this test is left waiting for a prediction that will not come.
expect_none_waiting() {
  local w
  w=$(squeue -h -t PD -o '%i %r %k' | grep 'ttpred: predicting' | grep -v JobHeld || true)
  [ -z "$w" ] || fail "jobs left waiting: $w"
}

t_job_mode() {
  load_cluster job_mode
  use_job_mode timeout=30
  # The estimator takes 6 s; sbatch only submits the prediction job.
  submit --no-hold -o "$work/main.out" --ttpred="$SPECS/slow.yaml" \
    --wrap 'squeue -h -j $SLURM_JOB_ID -o "limit=%l"; echo "comment=$(squeue -h -j $SLURM_JOB_ID -o %k)"'
  expect_submitted "job mode"
  awk -v e="$elapsed" 'BEGIN{exit !(e < 3)}' || fail "sbatch took ${elapsed}s in job mode (estimator: 6 s)"
  local p; p=$(pred_job)
  [ -n "$p" ] || fail "no prediction job announced"
  expect_err "sbatch: ttpred: the job waits for its prediction (job $p); time limit 1440 min until then"
  expect_limit "$jobid" "1-00:00:00" "fallback until the prediction reports"
  [ "$(state_of "$jobid")" = PENDING ] || fail "job $jobid is $(state_of "$jobid") while its prediction runs"
  [ "$(comment_of "$jobid")" = "ttpred: predicting (job $p); time limit 1440 min until it reports" ] \
    || fail "comment while predicting: $(comment_of "$jobid")"
  squeue -h -j "$jobid" -o %E | grep -q "afterany:$p" || fail "no dependency on $p: $(squeue -h -j "$jobid" -o %E)"
  wait_done "$p" 40
  wait_done "$jobid" 30
  local c; c=$(comment_of "$jobid")
  [ "$c" = "ttpred: 70 min (predicted horizon 50m00s, 5-95%: 46m40s-56m40s; rule 'everything-else'); step 1 s from the spec's hardware.step_seconds" ] \
    || fail "comment after the prediction: $c"
  grep -qx 'limit=1:10:00' "$work/main.out" || fail "the job did not start with its predicted limit: $(cat "$work/main.out")"
  ctld_log_has "report of prediction job $p: rule 'everything-else'" || fail "no report in slurmctld's log"
  pass "sbatch returned in ${elapsed}s; job $jobid waited for prediction job $p and started with 70 min"
}

t_job_mode_fails() {
  load_cluster job_mode_fails
  use_job_mode
  # estimator fails: released with the fallback and the reason in its comment
  submit --no-hold --ttpred="$SPECS/fail.yaml" --wrap 'true'
  expect_submitted "failing estimator"
  local j1=$jobid p1; p1=$(pred_job)
  # estimator hangs past the timeout (5 s): killed, reported
  submit --no-hold --ttpred="$SPECS/hang.yaml" --wrap 'true'
  expect_submitted "hanging estimator"
  local j2=$jobid p2; p2=$(pred_job)
  # the prediction job is cancelled (as when it reaches its own time limit: SIGTERM)
  submit --no-hold --ttpred="$SPECS/hang.yaml" --wrap 'true'
  expect_submitted "cancelled prediction"
  local j3=$jobid p3; p3=$(pred_job)
  wait_running "$p3" 10 || true  # cancelled pending or running: both are the path under test
  sleep 0.5
  scancel "$p3"
  for j in "$p1" "$p2" "$p3"; do wait_done "$j" 40; done
  for j in "$j1" "$j2" "$j3"; do wait_done "$j" 30; done
  local c
  c=$(comment_of "$j1")
  [[ "$c" == "ttpred: no prediction (estimator exit 3: ttpred-estimate: error: "*"fake failure for tests); time limit 1440 min (policy fallback)" ]] \
    || fail "comment of the failed prediction: $c"
  c=$(comment_of "$j2")
  [ "$c" = "ttpred: no prediction (estimator timed out after $JOB_TIMEOUT s); time limit 1440 min (policy fallback)" ] \
    || fail "comment of the hanging prediction: $c"
  c=$(comment_of "$j3")
  [ "$c" = "ttpred: no prediction (prediction job $p3 cancelled or past its time limit); time limit 1440 min (policy fallback)" ] \
    || fail "comment of the cancelled prediction: $c"
  for j in "$j1" "$j2" "$j3"; do
    [ "$(state_of "$j")" = COMPLETED ] || fail "job $j is $(state_of "$j")"
    expect_limit "$j" "1-00:00:00" "fallback"
  done
  expect_none_waiting
  # the prediction job itself is refused (no such partition): the job goes on without it
  use_job_mode partition=nosuchpart
  submit --ttpred="$SPECS/ok.yaml" --wrap 'true'
  expect_submitted "prediction job refused"
  expect_err "sbatch: error: ttpred: warning: no time prediction (the prediction job was refused: Invalid partition name specified); submitting the job without it"
  expect_limit "$jobid" "UNLIMITED" "no prediction"
  pass "failing, hanging and cancelled predictions: jobs released with the fallback and the reason"
}

t_job_mode_cancel() {
  load_cluster job_mode_cancel
  use_job_mode timeout=60
  # the user cancels the waiting job: the prediction job stops at once
  submit --no-hold --ttpred="$SPECS/slow30.yaml" --wrap 'true'
  expect_submitted "to be cancelled"
  local p; p=$(pred_job)
  local i
  for i in $(seq 1 100); do grep -q "job $jobid waits for this prediction" "$work/predict-$p.out" 2>/dev/null && break; sleep 0.2; done
  scancel "$jobid"
  wait_done "$p" 15
  ps -eo args | grep -v grep | grep -qF "$SPECS/slow30.yaml" && fail "the estimator still runs"
  grep -q "no longer waits (cancelled?): prediction stopped" "$work/predict-$p.out" \
    || fail "prediction job output: $(cat "$work/predict-$p.out")"
  # a report a user sends by hand: accepted only while awaited, once, alone
  submit --ttpred="$SPECS/ok.yaml" --wrap 'true'   # held: stays pending
  expect_submitted "held job"
  p=$(pred_job)
  wait_done "$p" 30
  [[ "$(comment_of "$jobid")" == "ttpred: 70 min "* ]] || fail "comment: $(comment_of "$jobid")"
  scontrol update jobid="$jobid" comment='ttpred-result:{"seconds": 60, "horizon_seconds": 60}' 2>"$work/upd.err" \
    && fail "a second report was accepted"
  expect_limit "$jobid" "01:10:00" "second report refused"
  submit --wrap 'true'   # no --ttpred
  scontrol update jobid="$jobid" comment='ttpred-failed:x' 2>>"$work/upd.err" && fail "a report on a job without ticket was accepted"
  ctld_log_has "refused: the job does not await a prediction" || fail "refusals not logged"
  scancel "$jobid"
  pass "cancelling the waiting job stops its prediction; forged reports refused"
}

t_job_mode_array() {
  load_cluster job_mode_array
  use_job_mode
  submit --no-hold --wrap 'sleep 1'   # a plain job the array also depends on
  local dep=$jobid
  submit --no-hold --array=0-2 -d "afterok:$dep" -o "$work/arr-%a.out" --ttpred="$SPECS/ok.yaml" \
    --wrap 'squeue -h -j $SLURM_JOB_ID -o "limit=%l"'
  expect_submitted "array"
  local p; p=$(pred_job)
  squeue -h -j "$jobid" -o %E | grep -q "afterok:$dep" || fail "the user's dependency was lost: $(squeue -h -j "$jobid" -o %E)"
  wait_done "$p" 30
  local i t
  for i in $(seq 1 150); do
    [ "$(squeue -h -j "$jobid" | wc -l)" = 0 ] && break
    sleep 0.2
  done
  for t in 0 1 2; do
    grep -qx 'limit=1:10:00' "$work/arr-$t.out" 2>/dev/null || fail "array task $t: $(cat "$work/arr-$t.out" 2>&1)"
  done
  expect_none_waiting
  pass "array (3 tasks) with the user's own dependency: every task ran with 70 min after the prediction"
}

# The prediction job reaches its own Slurm time limit (lowered to 1 min while its
# estimator hangs): slurmctld kills it (SIGTERM), it reports, the job is released.
t_job_mode_timelimit() {
  load_cluster job_mode_timelimit
  use_job_mode timeout=300
  submit --no-hold --ttpred="$SPECS/hang.yaml" --wrap 'true'
  expect_submitted "prediction past its time limit"
  local p; p=$(pred_job)
  [ -n "$p" ] || fail "no prediction job announced"
  wait_running "$p" 20 || fail "prediction job $p is $(state_of "$p")"
  scontrol update jobid="$p" TimeLimit=1 || fail "cannot lower the prediction job's limit"
  wait_done "$p" 150
  [ "$(state_of "$p")" = TIMEOUT ] || fail "prediction job $p ended $(state_of "$p"), not TIMEOUT"
  wait_done "$jobid" 30
  local c; c=$(comment_of "$jobid")
  [ "$c" = "ttpred: no prediction (prediction job $p cancelled or past its time limit); time limit 1440 min (policy fallback)" ] \
    || fail "comment after the prediction job's time limit: $c"
  [ "$(state_of "$jobid")" = COMPLETED ] || fail "job $jobid is $(state_of "$jobid")"
  expect_limit "$jobid" "1-00:00:00" "fallback"
  expect_none_waiting
  pass "prediction job $p killed at its Slurm time limit: job $jobid released with the fallback and the reason"
}

# follow_job=yes: the prediction job runs where the job will, on one GPU of its type
# (the cluster's 4 fake GPUs are of type tgpu), read from the command line and script.
t_job_mode_follow() {
  load_cluster job_mode_follow
  use_job_mode follow_job=yes partition=debug gres=gpu:1
  local script="$work/follow.sh" p tres
  printf '#!/bin/sh\n#SBATCH -p stepp   # where the job runs\n#SBATCH --gres=gpu:tgpu:1\ntrue\n' > "$script"
  submit --no-hold --ttpred="$SPECS/ok.yaml" "$script"
  expect_submitted "typed GPU job (script)"
  p=$(pred_job)
  [ -n "$p" ] || fail "no prediction job announced"
  expect_err "sbatch: ttpred: predicting in job $p (mode=job; partition stepp, gres gpu:tgpu:1, as the job asks)"
  [ "$(squeue -h -t all -j "$p" -o %P)" = stepp ] || fail "prediction job in $(squeue -h -t all -j "$p" -o %P), not stepp"
  tres=$(scontrol show job -o "$p" | grep -o 'TresPerNode=[^ ]*')
  [[ "$tres" == *gpu:tgpu:1 ]] || fail "prediction job's GPUs: $tres"
  local j1=$jobid p1=$p
  # the command line wins over the script (sbatch's precedence)
  submit --no-hold -p warnp --ttpred="$SPECS/ok.yaml" "$script"
  expect_submitted "typed GPU job, -p on the command line"
  p=$(pred_job)
  [ "$(squeue -h -t all -j "$p" -o %P)" = warnp ] || fail "prediction job in $(squeue -h -t all -j "$p" -o %P), not warnp"
  local j2=$jobid p2=$p
  # an untyped job with no partition: the plugstack's defaults
  submit --no-hold --gpus=1 --ttpred="$SPECS/ok.yaml" --wrap 'true'
  expect_submitted "untyped GPU job"
  p=$(pred_job)
  expect_err "sbatch: ttpred: predicting in job $p (mode=job)"
  [ "$(squeue -h -t all -j "$p" -o %P)" = debug ] || fail "prediction job in $(squeue -h -t all -j "$p" -o %P), not debug"
  tres=$(scontrol show job -o "$p" | grep -o 'TresPerNode=[^ ]*')
  [[ "$tres" == *gpu:1 && "$tres" != *tgpu* ]] || fail "prediction job's GPUs: $tres"
  local j
  for j in "$p1" "$p2" "$p" "$j1" "$j2" "$jobid"; do wait_done "$j" 40; done
  for j in "$j1" "$j2" "$jobid"; do [ "$(state_of "$j")" = COMPLETED ] || fail "job $j is $(state_of "$j")"; done
  expect_none_waiting
  pass "follow_job=yes: prediction jobs in stepp/warnp on gpu:tgpu:1 as the jobs ask; plugstack defaults otherwise"
}

t_job_mode_cache() {
  load_cluster job_mode_cache
  [ -n "${TTPRED_REAL_ESTIMATOR:-}" ] && [ -x "$TTPRED_REAL_ESTIMATOR" ] || skip "no real estimator in this build"
  [ -r "${TTPRED_TEST_MODELS:-}/mlp.pt" ] || skip "no test models (tests/models) in this build"
  use_job_mode estimator="$TTPRED_REAL_ESTIMATOR" cache_dir="$work/cache" timeout=120
  # the small real job of tests/unit/test_cli.cpp (mlp.pt on 64 samples)
  cat > spec.yaml <<EOF
model: $TTPRED_TEST_MODELS/mlp.pt
data: {path: $TTPRED_TEST_MODELS/vec_train.pt}
loss: cross_entropy
optimizer: {lr: 0.1, momentum: 0.5, batch_size: 8}
training: {steps: 20000}
target: {epsilon: 0.01}
engine: {runs: 2}
hardware: {step_seconds: 0.5}
EOF
  local p1 p2 j1 j2 c1 c2
  submit --ttpred=spec.yaml --wrap true
  expect_submitted "first"
  j1=$jobid p1=$(pred_job)
  wait_done "$p1" 100
  c1=$(comment_of "$j1")
  [[ "$c1" == "ttpred: "*" min (predicted horizon "* ]] || fail "first prediction: $c1 ($(cat "$work/predict-$p1.out"))"
  grep -q "prediction from the cache" "$work/predict-$p1.out" && fail "the first prediction came from the cache"
  submit --ttpred=spec.yaml --wrap true
  expect_submitted "second"
  j2=$jobid p2=$(pred_job)
  wait_done "$p2" 60
  c2=$(comment_of "$j2")
  grep -q "prediction from the cache $work/cache/" "$work/predict-$p2.out" \
    || fail "the second prediction was not served from the cache: $(cat "$work/predict-$p2.out")"
  [ "$c1" = "$c2" ] || fail "cached prediction differs: '$c1' vs '$c2'"
  [ "$(limit_of "$j1")" = "$(limit_of "$j2")" ] || fail "limits differ"
  scancel "$j1" "$j2"
  pass "real estimator in job mode; the identical second submission was served from the cache ($c2)"
}

t_job_mode_budget() {
  load_cluster job_mode_budget
  use_job_mode
  # rule step-partition rejects over-budget jobs; jobmode-lab has 1 GPU-hour
  submit -p stepp -A jobmode-lab --gres=gpu:1 --ttpred="$SPECS/ok.yaml" --wrap true
  expect_submitted "first job"
  local j1=$jobid p1; p1=$(pred_job)
  wait_done "$p1" 30
  local c; c=$(comment_of "$j1")
  [[ "$c" == "ttpred: prediction not applied (job rejected: the cost 1.17 GPU-hours exceeds the 1 GPU-hours left to account jobmode-lab"*"; time limit 1440 min (policy fallback)" ]] \
    || fail "comment of the over-budget report: $c"
  # its fallback charge (24 GPU-hours) exhausts the budget: the next job is refused at once
  submit -p stepp -A jobmode-lab --gres=gpu:1 --ttpred="$SPECS/ok.yaml" --wrap true
  [ "$rc" != 0 ] || fail "a job-mode job with an exhausted budget was accepted"
  expect_err "ttpred: job rejected: even its smallest limit costs 0.017 GPU-hours, more than the 0 GPU-hours left to account jobmode-lab (policy budget, this month) (policy rule 'step-partition')"
  expect_err "Job violates accounting/QOS policy"
  scancel "$j1"
  pass "job mode and budgets: an over-budget report keeps the fallback (charged), an exhausted budget refuses at sbatch"
}

t_step_table() {
  load_cluster step_table
  # Sync mode: a step time measured on the submit host is replaced by the policy's
  # table entry for the model (test.yaml: table-net*.pt, 0.25 s): horizon band hi
  # 3400 s x 0.25 = 850 s -> ceil((850 x 1.2 + 120) / 60) = 19 min (70 without the table).
  submit --ttpred="$SPECS/table-measured.yaml" --wrap true
  expect_submitted "measured on the submit host"
  expect_limit "$jobid" "00:19:00" "step time from the policy table"
  expect_err "sbatch: ttpred: step 0.25 s from the policy's step_seconds table (line"
  expect_err "1 s measured by the estimator on the submit host not used)"
  local c; c=$(comment_of "$jobid")
  [[ "$c" == "ttpred: 19 min (rule 'everything-else'); step 0.25 s from the policy's step_seconds table"* ]] \
    || fail "comment of the sync job: $c"
  # The user's own hardware.step_seconds for the same model: kept (bounded only).
  submit --ttpred="$SPECS/table-spec.yaml" --wrap true
  expect_submitted "user's step time"
  expect_limit "$jobid" "01:10:00" "the user's step time kept"
  expect_err "sbatch: ttpred: step 1 s from the spec's hardware.step_seconds"
  [[ "$(comment_of "$jobid")" == *"step 1 s from the spec's hardware.step_seconds" ]] \
    || fail "comment: $(comment_of "$jobid")"
  # Job mode: the same measured step time was timed on the node: kept.
  use_job_mode timeout=30
  submit --ttpred="$SPECS/table-measured.yaml" --wrap true
  expect_submitted "job mode"
  local p; p=$(pred_job)
  [ -n "$p" ] || fail "no prediction job announced"
  wait_done "$p" 30
  expect_limit "$jobid" "01:10:00" "the node's step time kept"
  [[ "$(comment_of "$jobid")" == "ttpred: 70 min "*"; step 1 s timed on the prediction job's node" ]] \
    || fail "comment in job mode: $(comment_of "$jobid")"
  scancel "$jobid"
  expect_none_waiting
  pass "step time: policy table in sync mode (19 min), the user's and the node's kept (70 min), source shown"
}

t_max_seconds() {
  load_cluster max_seconds
  local est="${TTPRED_REAL_ESTIMATOR:-}" spec="${TTPRED_REAL_SPEC:-}"
  [ -n "$est" ] && [ -x "$est" ] || skip "real ttpred-estimate not built here ('$est')"
  [ -r "$spec" ] || skip "spec $spec missing"
  local plugdir
  plugdir=$(sed -n 's/^optional \([^ ]*\)\/spank_ttpred.so.*/\1/p' "$dir/plugstack.conf")
  # A budget no prediction can meet: the estimator says so at once (exit 7), well
  # before the 300 s timeout, and the job is submitted without a prediction.
  echo "optional $plugdir/spank_ttpred.so estimator=$est timeout=300 device=cpu max_seconds=0.001" > "$dir/plugstack-budget.conf"
  sed "s|^PlugStackConfig=.*|PlugStackConfig=$dir/plugstack-budget.conf|" "$dir/slurm.conf" > "$dir/slurm-budget.conf"
  SLURM_CONF="$dir/slurm-budget.conf" submit --ttpred="$spec" --wrap true
  expect_submitted "impossible budget"
  expect_err "no time prediction (estimator exit code 7: ttpred-estimate: error: "
  expect_err "engine.max_seconds: the prediction cannot fit in 0.001 s: even data.subset = 16 needs"
  awk -v e="$elapsed" 'BEGIN{exit !(e < 60)}' || fail "sbatch took ${elapsed}s: the estimator did not stop at once"
  expect_limit "$jobid" "UNLIMITED" "no prediction, no limit"
  scancel "$jobid"
  pass "plugstack max_seconds=: an impossible budget fails at once (${elapsed}s), the job is submitted without a prediction"
}

case "${1:-}" in
  setup) t_setup ;;
  cleanup) t_cleanup ;;
  plugins_loaded|time_limit_fake|sbatch_directive|converge_account|warn|reject|estimator_fails|\
  estimator_hangs|forged_env|broken_policy|stale_pidfile|real_estimator|stress|budget_policy|budget_forged|\
  acct_setup|acct_cleanup|acct_budget_shown|acct_budget_warn|acct_budget_reject|acct_user_limit|\
  acct_usage|trust_forged_marker|trust_rejected|trust_band|trust_step_seconds|trust_update|\
  trust_array|trust_flood|trust_misc|acct_trust_rejected|job_mode|job_mode_fails|job_mode_cancel|\
  job_mode_array|job_mode_follow|job_mode_timelimit|job_mode_cache|job_mode_budget|step_table|max_seconds) "t_$1" ;;
  *) echo "usage: $0 setup|cleanup|TEST" >&2; exit 2 ;;
esac
