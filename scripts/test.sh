#!/usr/bin/env bash
# Builds ttpred and runs every test (unit, end to end, Slurm cluster, benchmark smoke).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
scripts/build.sh
ctest --test-dir "$BUILD_DIR" --output-on-failure --timeout 900 "$@"
