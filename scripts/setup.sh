#!/usr/bin/env bash
# Installs what ttpred needs to build, test and demo, from Debian 12's packages.
# Idempotent; run as root or with sudo available.
set -euo pipefail
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
PKGS=(
  build-essential cmake ninja-build pkg-config git
  libtorch-dev libopenblas0-pthread python3-torch python3-torchvision
  libeigen3-dev libyaml-cpp-dev libfmt-dev doctest-dev libcli11-dev nlohmann-json3-dev zlib1g-dev
  libslurm-dev slurmctld slurmd slurm-client munge slurmdbd mariadb-server
  clang libclang-rt-14-dev
  dataset-fashion-mnist python3-sklearn python3-matplotlib python3-yaml
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The daemons must not run from their package scripts: tests start their own.
for svc in slurmctld slurmd slurmdbd munge mariadb; do
  command -v systemctl >/dev/null 2>&1 && $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
done
echo "setup: all packages present" >&2
