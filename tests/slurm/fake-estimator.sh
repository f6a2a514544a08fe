#!/bin/bash
# Fake ttpred-estimate for the Slurm tests (fault injection). Same command line
# as the real one (--spec SPEC --json [--device D]); behaviour and numbers come
# from `fake_*:` lines in SPEC (see specs/*.yaml):
#   fake_mode: ok | fail | hang | garbage | partial | slow
#   fake_seconds, fake_seconds_lo, fake_seconds_hi,
#   fake_horizon_seconds, fake_horizon_lo, fake_horizon_hi,
#   fake_steps, fake_horizon_steps, fake_step_seconds,
#   fake_gpus (the JSON has "gpus" and "gpu_hours" only when given),
#   fake_step_source (step_seconds_source, default spec), fake_model (model.path, only when given)
spec=""
while [ $# -gt 0 ]; do
  case "$1" in
    --spec) spec="$2"; shift 2 ;;
    --spec=*) spec="${1#--spec=}"; shift ;;
    *) shift ;;
  esac
done
if [ ! -r "$spec" ]; then
  echo "ttpred-estimate: error: $spec:0: spec: cannot read the spec file" >&2
  exit 4
fi
get() { local v; v=$(sed -n "s/^fake_$1: *//p" "$spec" | head -n1); echo "${v:-$2}"; }
case "$(get mode ok)" in
  fail)    echo "ttpred-estimate: error: $spec:3: model.path: fake failure for tests" >&2; exit 3 ;;
  hang)    sleep 1000; exit 0 ;;
  garbage) echo "this is not JSON {"; exit 0 ;;
  partial) echo '{"schema": 1, "steps": 12}'; exit 0 ;;
  slow)    sleep "$(get sleep 2)" ;;
esac
s=$(get seconds 1200); slo=$(get seconds_lo 1000); shi=$(get seconds_hi 1500)
h=$(get horizon_seconds 3000); hlo=$(get horizon_lo 2800); hhi=$(get horizon_hi 3400)
gpus=$(get gpus '')
gpu_json="" model=$(get model '')
[ -n "$model" ] && gpu_json="\"model\": {\"path\": \"$model\"},"
if [ -n "$gpus" ]; then
  gpu_json="$gpu_json \"gpus\": $gpus, \"gpu_hours\": $(awk -v h="$h" -v g="$gpus" 'BEGIN{print h*g/3600}'),"
fi
cat <<JSON
{"schema": 1, "ttpred_version": "fake", "spec": "$spec", "device": "cpu",
 "steps": $(get steps 1200), "reached": true, "steps_band": [1000, 1500],
 "epochs": 1.5, "steps_per_epoch": 800, "horizon_steps": $(get horizon_steps 3000),
 "initial_loss": 2.3, "final_loss": 0.1, "final_loss_band": [0.09, 0.12],
 "step_seconds": $(get step_seconds 1), "step_seconds_source": "$(get step_source spec)",
 "seconds": $s, "seconds_band": [$slo, $shi],
 "horizon_seconds": $h, "horizon_seconds_band": [$hlo, $hhi], $gpu_json
 "warnings": [$(get warnings '')]}
JSON
