#!/usr/bin/env bash
# The main job on the embedded default: predict how long fine-tuning the bundled
# CNN (pre-trained on Fashion-MNIST classes 0-4) to classes 5-9 takes, then
# fine-tune it for real and compare.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
[ -x "$BUILD_DIR/cli/ttpred-estimate" ] || scripts/build.sh
SPEC=assets/default/spec.yaml
echo "== Prediction (no training): $BUILD_DIR/cli/ttpred-estimate --spec $SPEC"
"$BUILD_DIR/cli/ttpred-estimate" --spec "$SPEC"
echo
echo "== Ground truth (real fine-tuning, 1 seed): $BUILD_DIR/cli/ttpred-finetune --spec $SPEC --log-every 4"
"$BUILD_DIR/cli/ttpred-finetune" --spec "$SPEC" --log-every 4
