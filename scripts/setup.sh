#!/usr/bin/env bash
# Installs what ttpred needs to build, test and demo, from Debian's own packages
# (Debian 12 bookworm: Slurm 22.05, LibTorch 1.13; Debian 13 trixie: Slurm 24.11,
# LibTorch 2.6). The package names are picked per release from /etc/os-release.
# Idempotent; run as root or with sudo available. Non-interactive (CI, no stdin).
set -euo pipefail
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

. /etc/os-release
release=${VERSION_CODENAME:-}
[ -n "$release" ] || case "${VERSION_ID:-}" in 12) release=bookworm ;; 13) release=trixie ;; esac

# The same on every supported release.
PKGS=(
  build-essential cmake ninja-build pkg-config git
  libeigen3-dev libyaml-cpp-dev libfmt-dev doctest-dev libcli11-dev nlohmann-json3-dev zlib1g-dev
  libpng-dev libjpeg62-turbo-dev python3-numpy
  libslurm-dev slurmctld slurmd slurm-client munge slurmdbd mariadb-server
  clang libclang-rt-dev
  python3-sklearn python3-matplotlib python3-yaml
  # used by the scripts and the cluster tests: ss, ps, jq, hostname
  iproute2 procps jq hostname
)
case "$release" in
  bookworm) # Debian 12: LibTorch 1.13, torchvision 0.14
    PKGS+=(libtorch-dev libopenblas0-pthread python3-torch python3-torchvision dataset-fashion-mnist) ;;
  trixie)   # Debian 13: LibTorch 2.6, torchvision 0.21
    PKGS+=(libtorch-dev libopenblas0-pthread python3-torch python3-torchvision dataset-fashion-mnist) ;;
  *)
    echo "setup: warning: untested release '${PRETTY_NAME:-unknown}' (tested: Debian 12 and 13); trying Debian 13's names" >&2
    PKGS+=(libtorch-dev libopenblas0-pthread python3-torch python3-torchvision dataset-fashion-mnist) ;;
esac

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# apt may be busy (unattended upgrades, another setup): wait for its lock.
apt_get() {
  local i
  for i in 1 2 3; do
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 "$@" </dev/null && return 0
    [ "$i" = 3 ] || { echo "setup: apt-get $1 failed (try $i of 3), retrying in 10 s" >&2; sleep 10; }
  done
  return 1
}
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing on ${PRETTY_NAME:-$release}: ${missing[*]}" >&2
  apt_get update -q
  apt_get install -y -q --no-install-recommends "${missing[@]}"
fi
# The daemons must not run from their package scripts: tests start their own.
for svc in slurmctld slurmd slurmdbd munge mariadb; do
  command -v systemctl >/dev/null 2>&1 && $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
done
echo "setup: all packages present (${PRETTY_NAME:-$release})" >&2
