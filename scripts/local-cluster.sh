#!/bin/bash
# Throwaway single-node Slurm cluster on localhost with the ttpred plugins, for
# the tests (tests/slurm) and the README demo. Needs root and the Debian packages
# slurmctld slurmd slurm-client munge. Nothing outside DIR is touched: private
# munged (own key and socket), private ports, state, spool and log files.
#
#   scripts/local-cluster.sh start  DIR   # create DIR, start munged/slurmctld/slurmd
#   scripts/local-cluster.sh status DIR
#   scripts/local-cluster.sh stop   DIR   # cancel jobs, stop the daemons (DIR is kept)
#
# Then point the Slurm commands at it:   export SLURM_CONF=DIR/slurm.conf
#
# Environment read by `start` (all optional):
#   TTPRED_PLUGIN_DIR        dir holding spank_ttpred.so and job_submit_ttpred.so
#                            (default: first of build/plugin, /tmp/build-plugin)
#   TTPRED_ESTIMATOR         estimator the SPANK plugin runs
#                            (default: build/cli/ttpred-estimate, else PATH)
#   TTPRED_ESTIMATOR_TIMEOUT seconds (default 120)
#   TTPRED_DEVICE            auto | cpu | cuda (default auto)
#   TTPRED_POLICY_FILE       copied to DIR/ttpred.yaml, the policy slurmctld loads
#                            (next to slurm.conf); default configs/policies/default.yaml
#   TTPRED_PARTITIONS        partition names, the first is the default (default "debug")
#   TTPRED_PORT              slurmctld port, slurmd uses PORT+1 (default: a free one)
#   TTPRED_ACCOUNTING=1      also start a private MariaDB (datadir and socket in
#                            DIR/mysql, run as user mysql, 127.0.0.1 on a free port)
#                            and slurmdbd (free port), and configure
#                            AccountingStorageType=accounting_storage/slurmdbd,
#                            AccountingStorageTRES=gres/gpu, priority/multifactor
#                            (usage every minute: PriorityCalcPeriod=1),
#                            AccountingStorageEnforce=associations,limits,safe;
#                            registers the cluster before slurmctld starts, and
#                            once it is up runs the sacctmgr lines of the file
#                            TTPRED_ACCOUNTING_SETUP (`-i` is added). Needs
#                            mariadb-server and slurmdbd (about 8 s more).
#                            Default 0: no database (accounting_storage/none).
#   TTPRED_GPUS_PER_NODE=N   declare N fake GPUs on the node (GresTypes=gpu,
#                            Gres=gpu:N; gres.conf File= character devices made in
#                            DIR/gpus with mknod, same as /dev/null). Default 0.
#   TTPRED_GPU_TYPE=NAME     their type (Gres=gpu:NAME:N, gres.conf Type=NAME);
#                            untyped requests (--gpus=2) still match. Default: untyped.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
SBIN=/usr/sbin
export PATH="$SBIN:/usr/bin:/bin:$PATH"

die() { echo "local-cluster: error: $*" >&2; exit 1; }
log() { echo "local-cluster: $*" >&2; }

usage() { echo "usage: $0 start|stop|status DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
dir=$2

pid_of() { # pidfile -> pid if the process is alive
  local f=$1 p
  [ -s "$f" ] || return 1
  p=$(cat "$f" 2>/dev/null) || return 1
  [[ "$p" =~ ^[0-9]+$ ]] && kill -0 "$p" 2>/dev/null && echo "$p"
}

# The pidfile's process if alive, else the process whose command line holds PATTERN.
# Slurm 24.11's slurmctld re-executes itself on `scontrol reconfigure` and the pidfile
# can name the old process, while the controller keeps serving under a new pid.
daemon_pid() { # pidfile [pattern]
  local f p
  pid_of "$1" && return 0
  [ -n "${2:-}" ] || return 1
  for f in /proc/[0-9]*/cmdline; do
    p=${f#/proc/}; p=${p%/cmdline}
    [ "$p" = $$ ] && continue
    if tr '\0' ' ' 2>/dev/null <"$f" | grep -qF -- "$2"; then echo "$p"; return 0; fi
  done
  return 1
}
# The command-line pattern of a daemon of this cluster (empty: the pidfile only).
daemon_pattern() { # name
  case $1 in
    slurmctld | slurmd) echo "$1 -f $dir/slurm.conf " ;;
    *) echo "" ;;
  esac
}

stop_pidfile() { # pidfile name
  local f=$1 name=$2 p i
  p=$(daemon_pid "$f" "$(daemon_pattern "$name")") || return 0
  kill -TERM "$p" 2>/dev/null || true
  for i in $(seq 1 100); do
    kill -0 "$p" 2>/dev/null || { log "stopped $name ($p)"; return 0; }
    sleep 0.1
  done
  kill -KILL "$p" 2>/dev/null || true
  log "killed $name ($p)"
}

# A port p with p and p+1 unused by any TCP socket (listening or connected), below the
# kernel's ephemeral range: a port in that range can be taken by an outgoing
# connection between this check and the daemon's bind (EADDRINUSE).
free_port() {
  local p i lo=32768 hi
  [ -r /proc/sys/net/ipv4/ip_local_port_range ] && read -r lo _ </proc/sys/net/ipv4/ip_local_port_range
  hi=$(( lo - 2 )); [ "$hi" -gt 10100 ] || hi=10100
  for i in $(seq 1 50); do
    p=$(( 10000 + (RANDOM % (hi - 10000)) ))
    if ! ss -Htan 2>/dev/null | awk '{print $4}' | grep -Eq "[:.]($p|$((p+1)))\$"; then
      echo "$p"; return 0
    fi
  done
  die "no free port found"
}

# Private MariaDB + slurmdbd (TTPRED_ACCOUNTING=1). Sets dbd_port.
start_accounting() {
  local b
  for b in mariadbd mariadb-install-db mariadb slurmdbd sacctmgr; do
    command -v "$b" >/dev/null || die "$b missing (apt-get install mariadb-server slurmdbd)"
  done
  id mysql >/dev/null 2>&1 || die "user mysql missing (apt-get install mariadb-server)"
  local my="$dir/mysql" sql_port i pass
  mkdir -p "$my/data"
  chown -R mysql:mysql "$my"
  chmod 0755 "$my"
  if [ ! -d "$my/data/mysql" ]; then
    mariadb-install-db --no-defaults --user=mysql --datadir="$my/data" \
      --auth-root-authentication-method=socket --skip-test-db >"$my/install.log" 2>&1 \
      || die "mariadb-install-db failed: $(tail -n 5 "$my/install.log")"
  fi
  # --no-defaults: nothing from /etc/mysql; datadir, socket, pid and log in DIR.
  # A port taken between free_port and the bind: another port, up to 3 tries.
  local try mpid
  for try in 1 2 3; do
    sql_port=$(free_port)
    : >"$my/mysqld.log"
    runuser -u mysql -- mariadbd --no-defaults --datadir="$my/data" --socket="$my/mysqld.sock" \
      --pid-file="$my/mysqld.pid" --log-error="$my/mysqld.log" --port="$sql_port" \
      --bind-address=127.0.0.1 --skip-name-resolve --innodb-buffer-pool-size=32M \
      --skip-log-bin </dev/null >/dev/null 2>&1 &
    mpid=$!
    disown 2>/dev/null || true
    for i in $(seq 1 300); do
      mariadb --no-defaults -S "$my/mysqld.sock" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break
      kill -0 "$mpid" 2>/dev/null || break  # it exited (e.g. the port was taken)
      sleep 0.2
    done
    mariadb --no-defaults -S "$my/mysqld.sock" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break
    grep -q "Address already in use" "$my/mysqld.log" 2>/dev/null || break
    log "mariadbd: port $sql_port was taken; another one"
  done
  mariadb --no-defaults -S "$my/mysqld.sock" -uroot -e 'SELECT 1' >/dev/null 2>&1 \
    || die "mariadbd did not start: $(tail -n 5 "$my/mysqld.log" 2>/dev/null)"
  pass=$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')
  mariadb --no-defaults -S "$my/mysqld.sock" -uroot -e "
    CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
    ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" \
    || die "cannot create the slurm database and user"
  dbd_port=$(free_port)
  {
    echo "# Generated by scripts/local-cluster.sh (TTPRED_ACCOUNTING=1)."
    echo "AuthType=auth/munge"
    echo "AuthInfo=socket=$sock"
    echo "DbdHost=localhost"
    echo "DbdAddr=127.0.0.1"
    echo "DbdPort=$dbd_port"
    echo "CommunicationParameters=NoInAddrAny"  # loopback only (DbdHost's address)
    echo "SlurmUser=root"
    echo "PidFile=$dir/slurmdbd.pid"
    echo "LogFile=$dir/log/slurmdbd.log"
    echo "DebugLevel=info"
    echo "StorageType=accounting_storage/mysql"
    echo "StorageHost=127.0.0.1"
    echo "StoragePort=$sql_port"
    echo "StorageUser=slurm"
    echo "StoragePass=$pass"
    echo "StorageLoc=slurm_acct_db"
  } > "$dir/slurmdbd.conf"
  chmod 0600 "$dir/slurmdbd.conf"
}

# After slurm.conf exists, before slurmctld: start slurmdbd, register the cluster.
setup_accounting() {
  export SLURM_CONF="$dir/slurm.conf"
  # slurmdbd reads slurmdbd.conf next to $SLURM_CONF (no -f option).
  "$SBIN/slurmdbd" \
    || die "slurmdbd failed: $(tail -n 5 "$dir/log/slurmdbd.log" 2>/dev/null)"
  local i ok=0 line
  for i in $(seq 1 40); do
    if timeout 5 sacctmgr -n -P list cluster >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.2
  done
  [ $ok = 1 ] || die "slurmdbd not answering: $(tail -n 5 "$dir/log/slurmdbd.log" 2>/dev/null)"
  timeout 20 sacctmgr -i add cluster ttpred >/dev/null || die "sacctmgr add cluster failed"
}

# After slurmctld is up (it registers the gres/gpu TRES that GrpTRESMins=gres/gpu=N
# needs): the sacctmgr lines of TTPRED_ACCOUNTING_SETUP.
run_accounting_setup() {
  [ -n "${TTPRED_ACCOUNTING_SETUP:-}" ] || return 0
  local line
  while IFS= read -r line; do
    case "$line" in ''|'#'*) continue ;; esac
    # shellcheck disable=SC2086
    timeout 20 sacctmgr -i $line >/dev/null || die "sacctmgr $line failed"
  done < "$TTPRED_ACCOUNTING_SETUP"
}

# The test cluster needs no cgroups (proctrack/linuxproc, task/none), but slurmd
# 24.11 initializes its cgroup plugin anyway and, without /sys/fs/cgroup (a
# chroot, a container), fails: "Unable to initialize cgroup plugin". Slurm >= 24.05
# has CgroupPlugin=disabled (cgroup.conf next to slurm.conf); 22.05 reads no
# cgroup.conf here and would reject the value, so none is written for it.
write_cgroup_conf() {
  local v major minor
  v=$("$SBIN/slurmd" -V 2>/dev/null | grep -oE '[0-9]+\.[0-9]+(\.[0-9]+)?' | head -n1 || true)
  major=${v%%.*}; minor=${v#*.}; minor=${minor%%.*}
  [[ "$major" =~ ^[0-9]+$ && "$minor" =~ ^[0-9]+$ ]] || { log "cannot read slurmd's version ('$v'): no cgroup.conf"; return 0; }
  if [ $((10#$major * 100 + 10#$minor)) -ge 2405 ]; then
    echo "CgroupPlugin=disabled" > "$dir/cgroup.conf"
  else
    rm -f "$dir/cgroup.conf"
  fi
}

first_existing() { local f; for f in "$@"; do [ -e "$f" ] && { echo "$f"; return 0; }; done; return 1; }

start() {
  [ "$(id -u)" = 0 ] || die "must run as root (slurmctld/slurmd run as root here)"
  for b in munged slurmctld slurmd; do [ -x "$SBIN/$b" ] || die "$SBIN/$b missing (apt-get install munge slurmctld slurmd)"; done
  command -v scontrol >/dev/null || die "scontrol missing (apt-get install slurm-client)"
  if [ -e "$dir/slurm.conf" ] && daemon_pid "$dir/slurmctld.pid" "$(daemon_pattern slurmctld)" >/dev/null; then
    die "a cluster is already running in $dir (stop it first)"
  fi
  local plugdir est timeout device policy parts port host cpus slurm_plugdir dbd_port=""
  local accounting=${TTPRED_ACCOUNTING:-0} gpus=${TTPRED_GPUS_PER_NODE:-0}
  [[ "$gpus" =~ ^[0-9]+$ ]] || die "TTPRED_GPUS_PER_NODE must be a number"
  local gpu_type=${TTPRED_GPU_TYPE:-}
  [[ "$gpu_type" =~ ^[A-Za-z0-9_]*$ ]] || die "TTPRED_GPU_TYPE must be a plain name"
  plugdir=${TTPRED_PLUGIN_DIR:-$(first_existing "$repo/build/plugin" /tmp/build-plugin || true)}
  [ -n "$plugdir" ] && [ -e "$plugdir/job_submit_ttpred.so" ] && [ -e "$plugdir/spank_ttpred.so" ] \
    || die "plugins not found in '${plugdir}' (build them, or set TTPRED_PLUGIN_DIR)"
  plugdir=$(cd "$plugdir" && pwd)
  est=${TTPRED_ESTIMATOR:-$(first_existing "$repo/build/cli/ttpred-estimate" || command -v ttpred-estimate || echo /usr/local/bin/ttpred-estimate)}
  timeout=${TTPRED_ESTIMATOR_TIMEOUT:-120}
  device=${TTPRED_DEVICE:-auto}
  policy=${TTPRED_POLICY_FILE:-$repo/configs/policies/default.yaml}
  [ -r "$policy" ] || die "policy $policy not readable"
  parts=${TTPRED_PARTITIONS:-debug}
  port=${TTPRED_PORT:-$(free_port)}
  host=$(hostname -s)
  cpus=$(nproc)
  slurm_plugdir=$(first_existing /usr/lib/x86_64-linux-gnu/slurm-wlm /usr/lib64/slurm /usr/lib/slurm) \
    || die "Slurm's plugin directory not found"

  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  chmod 0755 "$dir"  # munged (user munge) must reach its directory
  mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/munge"
  [ ${#dir} -lt 80 ] || die "DIR path too long for the munge socket: $dir"

  # munged: private key, socket, pid and log, running as user munge.
  chown munge:munge "$dir/munge"
  chmod 0755 "$dir/munge"
  if [ ! -s "$dir/munge/munge.key" ]; then
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
  fi
  chown munge:munge "$dir/munge/munge.key"
  chmod 0400 "$dir/munge/munge.key"
  local sock="$dir/munge/munge.socket.2"
  runuser -u munge -- "$SBIN/munged" --socket="$sock" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
    --seed-file="$dir/munge/munged.seed" \
    || die "munged failed to start: $(tail -n 3 "$dir/munge/munged.log" 2>/dev/null)"
  ln -sf "$dir/munge/munged.pid" "$dir/munged.pid"

  cat > "$dir/plugstack.conf" <<EOF
# ttpred SPANK plugin (optional: a plugin that fails to load must not break sbatch)
optional $plugdir/spank_ttpred.so estimator=$est timeout=$timeout device=$device
EOF
  cp "$policy" "$dir/ttpred.yaml"

  local acct_conf="AccountingStorageType=accounting_storage/none" gres_conf="" node_gres=""
  if [ "$accounting" = 1 ]; then
    start_accounting
    acct_conf="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$dbd_port
AccountingStoragePass=$sock
AccountingStorageTRES=gres/gpu
AccountingStorageEnforce=associations,limits,safe
PriorityType=priority/multifactor
PriorityCalcPeriod=1"
  fi
  if [ "$gpus" -gt 0 ]; then
    # gres/gpu needs a File= per GPU, a character device: /dev/null look-alikes.
    local g
    mkdir -p "$dir/gpus"
    for g in $(seq 0 $((gpus - 1))); do
      [ -c "$dir/gpus/gpu$g" ] || mknod "$dir/gpus/gpu$g" c 1 3 || die "mknod failed (fake GPUs need CAP_MKNOD)"
    done
    gres_conf="GresTypes=gpu"
    node_gres=" Gres=gpu:${gpu_type:+$gpu_type:}$gpus"
    local files="$dir/gpus/gpu0"
    [ "$gpus" -gt 1 ] && files="$dir/gpus/gpu[0-$((gpus - 1))]"
    echo "NodeName=$host Name=gpu${gpu_type:+ Type=$gpu_type} File=$files" > "$dir/gres.conf"
  fi

  local p first=1 partlines=""
  for p in $parts; do
    if [ $first = 1 ]; then
      partlines+="PartitionName=$p Nodes=ALL Default=YES MaxTime=INFINITE State=UP"$'\n'
      first=0
    else
      partlines+="PartitionName=$p Nodes=ALL MaxTime=INFINITE State=UP"$'\n'
    fi
  done
  cat > "$dir/slurm.conf" <<EOF
# Generated by scripts/local-cluster.sh: throwaway ttpred test cluster.
ClusterName=ttpred
SlurmctldHost=$host(127.0.0.1)
# Loopback only: slurmctld and slurmd bind to their NodeAddr/SlurmctldHost address
# (127.0.0.1), not to 0.0.0.0.
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$sock
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
$acct_conf
$gres_conf
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
MinJobAge=60
PluginDir=$plugdir:$slurm_plugdir
JobSubmitPlugins=ttpred
PlugStackConfig=$dir/plugstack.conf
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=1000$node_gres State=UNKNOWN
$partlines
EOF
  write_cgroup_conf

  if [ "$accounting" = 1 ]; then setup_accounting; fi

  # No TTPRED_POLICY: slurmctld then loads ttpred.yaml next to slurm.conf.
  env -u TTPRED_POLICY "$SBIN/slurmctld" -f "$dir/slurm.conf" -i \
    || die "slurmctld failed: $(tail -n 5 "$dir/log/slurmctld.log" 2>/dev/null)"
  "$SBIN/slurmd" -f "$dir/slurm.conf" \
    || die "slurmd failed: $(tail -n 5 "$dir/log/slurmd.log" 2>/dev/null)"

  export SLURM_CONF="$dir/slurm.conf"
  local i state=""
  for i in $(seq 1 150); do
    state=$(sinfo -h -N -o %t 2>/dev/null | head -n1 || true)
    [ "$state" = idle ] && break
    sleep 0.2
  done
  if [ "$state" != idle ]; then
    log "cluster not ready (node state '$state'); last log lines:"
    tail -n 15 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
    exit 1
  fi
  if [ "$accounting" = 1 ]; then run_accounting_setup; fi
  log "cluster up in $dir (slurmctld port $port, node $host, partitions: $parts)"
  log "estimator: $est (timeout ${timeout}s), policy: $dir/ttpred.yaml"
  if [ "$accounting" = 1 ]; then log "accounting: slurmdbd port $dbd_port, MariaDB in $dir/mysql"; fi
  echo "export SLURM_CONF=$dir/slurm.conf"
}

stop() {
  [ -d "$dir" ] || { log "$dir does not exist"; return 0; }
  if daemon_pid "$dir/slurmctld.pid" "$(daemon_pattern slurmctld)" >/dev/null; then
    local ids
    ids=$(SLURM_CONF="$dir/slurm.conf" timeout 10 squeue -h -o %i 2>/dev/null || true)
    if [ -n "$ids" ]; then
      # shellcheck disable=SC2086
      SLURM_CONF="$dir/slurm.conf" timeout 20 scancel $ids 2>/dev/null || true
      sleep 1
    fi
  fi
  stop_pidfile "$dir/slurmd.pid" slurmd
  stop_pidfile "$dir/slurmctld.pid" slurmctld
  stop_pidfile "$dir/slurmdbd.pid" slurmdbd
  stop_pidfile "$dir/mysql/mysqld.pid" mariadbd
  stop_pidfile "$dir/munge/munged.pid" munged
}

status() {
  local rc=0 name f p
  local names="munged slurmctld slurmd"
  [ -e "$dir/slurmdbd.conf" ] && names="$names slurmdbd mariadbd"
  for name in $names; do
    f="$dir/$name.pid"
    [ $name = munged ] && f="$dir/munge/munged.pid"
    [ $name = mariadbd ] && f="$dir/mysql/mysqld.pid"
    if p=$(daemon_pid "$f" "$(daemon_pattern $name)"); then echo "$name: running (pid $p)"; else echo "$name: stopped"; rc=3; fi
  done
  if [ $rc = 0 ]; then
    SLURM_CONF="$dir/slurm.conf" scontrol ping || rc=3
    SLURM_CONF="$dir/slurm.conf" sinfo || true
  fi
  return $rc
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) usage ;;
esac
