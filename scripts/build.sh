#!/usr/bin/env bash
# Configures and builds ttpred into build/ (or $BUILD_DIR). Extra arguments go to cmake.
# BUILD_QUIET=1: print nothing on success; on failure the configure/build output is
# always shown (on stderr) -- ninja writes compiler errors on stdout, so a
# caller must never send this script's output to /dev/null to silence it.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
BUILD_QUIET=${BUILD_QUIET:-0}
log=$(mktemp "${TMPDIR:-/tmp}/ttpred-build.XXXXXX")
trap 'rm -f "$log"' EXIT
if ! cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >"$log" 2>&1; then
  cat "$log" >&2
  echo "build: cmake failed to configure $BUILD_DIR (output above)" >&2
  exit 1
fi
if [ "$BUILD_QUIET" = 1 ]; then
  if ! ninja -C "$BUILD_DIR" -j "$JOBS" >"$log" 2>&1; then
    cat "$log" >&2
    echo "build: ninja failed in $BUILD_DIR (output above)" >&2
    exit 1
  fi
else
  ninja -C "$BUILD_DIR" -j "$JOBS" || { echo "build: ninja failed in $BUILD_DIR (errors above)" >&2; exit 1; }
fi
