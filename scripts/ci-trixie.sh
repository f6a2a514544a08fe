#!/usr/bin/env bash
# The whole suite on Debian 13 (trixie: Slurm 24.11, LibTorch 2.6, g++ 14) in a
# fresh chroot, from a Debian host (.ci/run runs it after the Debian 12 run):
#
#   1. debootstrap --variant=minbase trixie into a new temporary directory
#      (from Debian's archive, $DEBIAN_MIRROR, default http://deb.debian.org/debian);
#   2. binds /proc, /sys (without its submounts: no cgroups, like a container),
#      /dev, /dev/pts, a private /dev/shm; a policy-rc.d so that no package starts
#      a daemon;
#   3. copies this checkout (its git-tracked and untracked-not-ignored files,
#      no build directories) to /src in the chroot;
#   4. runs `scripts/setup.sh && scripts/test.sh` there (build dir build-trixie),
#      as root, CI=true, no stdin; the build and the tests in a network namespace
#      with loopback only (the test clusters cannot listen anywhere else);
#   5. always stops whatever still runs in the chroot, unmounts and removes it.
#
# Prints the time of each phase and "ci-trixie: PASS" or "ci-trixie: FAIL (...)";
# the exit status is the suite's. Needs root, debootstrap (installed if missing)
# and network access to the Debian mirror. Extra arguments go to ctest (e.g. -L unit).
# Environment: DEBIAN_MIRROR; CI_TRIXIE_DIR=DIR (parent of the temporary chroot,
# default /var/tmp); CI_TRIXIE_KEEP=1 keeps the chroot (unmounted) for a post-mortem.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
SUITE=trixie
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PARENT=${CI_TRIXIE_DIR:-/var/tmp}
KEEP=${CI_TRIXIE_KEEP:-0}

log() { echo "ci-trixie: $*"; }
reported=""
die() { echo "ci-trixie: FAIL ($*)"; reported=1; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, mounts)"

t_start=$(date +%s)
phase_t=$t_start
phases=()
phase_done() { # name: records the time since the previous phase
  local now; now=$(date +%s)
  phases+=("$1 $((now - phase_t)) s")
  log "$1 took $((now - phase_t)) s"
  phase_t=$now
}

root=""
# Every mount under $root, deepest first (from the kernel's table, not our list).
mounts_under_root() {
  awk -v r="$root" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/self/mounts | sort -r
}
cleanup() {
  local rc=$? pid p m i pids
  set +e
  [ -n "$reported" ] || [ $rc = 0 ] || echo "ci-trixie: FAIL (stopped with exit status $rc)"
  if [ -n "$root" ] && [ -d "$root" ]; then
    # Processes left in the chroot (a test cluster's daemons after a crash): by pid.
    for i in 1 2 3; do
      pids=()
      for p in /proc/[0-9]*; do
        [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && pids+=("${p#/proc/}")
      done
      [ ${#pids[@]} -gt 0 ] || break
      log "stopping ${#pids[@]} process(es) left in the chroot: ${pids[*]}"
      for pid in "${pids[@]}"; do kill -"$([ $i -lt 3 ] && echo TERM || echo KILL)" "$pid" 2>/dev/null; done
      sleep 2
    done
    for m in $(mounts_under_root); do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "warning: cannot unmount $m"
    done
    if [ -n "$(mounts_under_root)" ]; then
      # Never rm -rf across a bind mount of the host's /dev or /sys.
      log "warning: still mounted under $root, not removing it: $(mounts_under_root | tr '\n' ' ')"
    elif [ "$KEEP" = 1 ]; then
      log "kept the chroot (unmounted) in $root"
    else
      rm -rf --one-file-system "$root"
    fi
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! command -v debootstrap >/dev/null 2>&1; then
  log "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends debootstrap </dev/null >/dev/null \
    || { apt-get update -q </dev/null >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends debootstrap </dev/null >/dev/null; } \
    || die "cannot install debootstrap"
fi

mkdir -p "$PARENT"
root=$(mktemp -d "$PARENT/ttpred-ci-$SUITE.XXXXXX")
chmod 0755 "$root"
log "debootstrap --variant=minbase $SUITE $root $MIRROR"
if ! debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >"$root.debootstrap.log" 2>&1; then
  tail -n 30 "$root.debootstrap.log"
  rm -f "$root.debootstrap.log"
  die "debootstrap failed (log above)"
fi
rm -f "$root.debootstrap.log"
phase_done debootstrap

printf '#!/bin/sh\n# ci-trixie.sh: packages start no daemons in this chroot\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
cp /etc/hosts "$root/etc/hosts"
mount -t proc proc "$root/proc"
mount --bind /sys "$root/sys"           # not --rbind: no /sys/fs/cgroup in the chroot
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$root/dev/shm"

mkdir -p "$root/src"
if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git -C "$repo" ls-files -z --cached --others --exclude-standard \
    | (cd "$repo" && tar --null --no-recursion --ignore-failed-read -T - -cf -) | tar -C "$root/src" -xf -
else
  tar -C "$repo" --exclude=./.git --exclude='./build*' -cf - . | tar -C "$root/src" -xf -
fi
log "copied $(find "$root/src" -type f | wc -l) files of $repo to /src"

# Inside: a clean environment, CI=true, no stdin.
in_chroot() {
  chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb CI=true \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    BUILD_DIR=build-trixie JOBS="$(nproc)" /bin/bash -c "cd /src && $1" </dev/null
}
# The same in a private network namespace that has only loopback (the chroot's
# iproute2, installed by setup.sh): the build and the test clusters (munged,
# slurmctld, slurmd, slurmdbd, MariaDB) can neither listen on nor reach any other
# address, whatever they bind to. Nothing after setup.sh needs the network.
# lo also gets 127.0.0.2: glibc's getaddrinfo(AF_INET, AI_ADDRCONFIG), which
# Slurm uses for its listening sockets, finds no IPv4 address when 127.0.0.1 is
# the only one ("Unable to resolve (null)", slurmctld exits).
in_chroot_lo() {
  unshare --net /bin/sh -c 'chroot "$1" ip link set lo up && chroot "$1" ip addr add 127.0.0.2/32 dev lo && shift && exec "$@"' sh "$root" \
    chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb CI=true \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    BUILD_DIR=build-trixie JOBS="$(nproc)" /bin/bash -c "cd /src && $1" </dev/null
}
in_chroot 'cat /etc/debian_version; . /etc/os-release; echo "ci-trixie: in $PRETTY_NAME"'

result=PASS
failed=""
if ! in_chroot 'scripts/setup.sh'; then result=FAIL; failed="scripts/setup.sh"; fi
phase_done "package install (setup.sh)"
if [ $result = PASS ]; then
  # test.sh builds first; building here on its own times the two phases apart.
  if ! in_chroot_lo 'scripts/build.sh'; then result=FAIL; failed="scripts/build.sh"; fi
  phase_done build
fi
if [ $result = PASS ]; then
  in_chroot "slurmd -V; g++ --version | head -n1; dpkg-query -W -f='\${Package} \${Version}\n' libtorch-dev libslurm-dev" || true
  args=""
  [ $# -eq 0 ] || args=$(printf ' %q' "$@")
  if ! in_chroot_lo "scripts/test.sh$args"; then result=FAIL; failed="scripts/test.sh"; fi
  phase_done "tests (test.sh)"
fi

log "phases: $(printf '%s; ' "${phases[@]}")total $(( $(date +%s) - t_start )) s"
if [ $result = PASS ]; then
  log "PASS (Debian 13 $SUITE: setup.sh && test.sh)"
else
  die "$failed failed in the $SUITE chroot"
fi
