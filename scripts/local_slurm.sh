#!/usr/bin/env bash
# A real single-node SLURM (slurmctld, slurmd, slurmdbd with MariaDB, munge) from Debian's packages,
# for tests and for trying the slurm/ launchers on one machine. Everything runs inside a private
# network namespace, so no daemon (and no Ray started by a job) listens outside it.
#
#   scripts/local_slurm.sh up        install what is missing, write the config, start the daemons
#   scripts/local_slurm.sh down      cancel the jobs, stop the daemons (by PID), remove the namespace
#   scripts/local_slurm.sh status    daemons, sinfo and squeue
#   scripts/local_slurm.sh exec CMD  run CMD inside the namespace with this SLURM's client tools
#   scripts/local_slurm.sh env       print the exports that let this shell's sbatch/squeue/... reach it
#
# Needs root (network namespaces, daemons). State, config and logs live in $LOCAL_SLURM_DIR
# (default /tmp/matrix-slurm); `up` starts from a clean state. The client tools are wrapped in
# $LOCAL_SLURM_DIR/bin: each wrapper enters the namespace and sets SLURM_CONF, so submitit run from
# the host submits here once that directory is first on PATH (see `env`).
set -euo pipefail

DIR="${LOCAL_SLURM_DIR:-/tmp/matrix-slurm}"
NS="${LOCAL_SLURM_NS:-matrix-slurm}"
CPUS="${LOCAL_SLURM_CPUS:-2}"
CLUSTER=matrixci
PKGS=(slurmctld slurmd slurmdbd slurm-client munge mariadb-server)
NSENTER=(nsenter "--net=/var/run/netns/$NS")
DB_PASS=matrix-local-only

say() { echo "local_slurm: $*" >&2; }
die() {
  say "error: $*"
  exit 1
}

need_root() {
  [ "$(id -u)" = 0 ] || die "needs root (network namespace and daemons); running as uid $(id -u)"
  command -v ip >/dev/null || die "'ip' (Debian package iproute2) is not installed"
  command -v nsenter >/dev/null || die "'nsenter' (Debian package util-linux) is not installed"
}

install_missing() {
  local missing=()
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them"
  say "installing ${missing[*]} (Debian packages)"
  # Keep the packages' own services from starting: our daemons run in the namespace, with our config.
  local own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  local rc=0
  (export DEBIAN_FRONTEND=noninteractive && apt-get update -qq &&
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null) || rc=$?
  [ $own_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ $rc = 0 ] || die "apt-get install ${missing[*]} failed (exit $rc)"
}

# Start a daemon in the namespace, in the foreground of a background job; its PID goes to $DIR/pids.
start_daemon() {
  local name="$1"
  shift
  "${NSENTER[@]}" "$@" >"$DIR/log/$name.out" 2>&1 &
  echo "$!" >"$DIR/pids/$name"
}

alive() { [ -f "$DIR/pids/$1" ] && kill -0 "$(cat "$DIR/pids/$1")" 2>/dev/null; }

# wait_for NAME SECONDS COMMAND...: poll until COMMAND succeeds; fail naming the daemon and its log.
wait_for() {
  local name="$1" secs="$2"
  shift 2
  local deadline=$((SECONDS + secs))
  while ((SECONDS < deadline)); do
    if timeout 5 "$@" >/dev/null 2>&1; then return 0; fi
    alive "$name" || {
      tail -n 20 "$DIR/log/$name"* >&2 || true
      die "$name exited during start-up (logs in $DIR/log)"
    }
    sleep 0.25
  done
  tail -n 20 "$DIR/log/$name"* >&2 || true
  die "$name did not become ready in ${secs}s (logs in $DIR/log)"
}

write_configs() {
  local mem
  mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
  cat >"$DIR/etc/slurm.conf" <<EOF
# Written by scripts/local_slurm.sh: one node, everything on 127.0.0.1 inside netns $NS.
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/run/munge.socket
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
KillWait=10
InactiveLimit=0
MinJobAge=60
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
# For the slurmdbd plugin this names the munge socket (slurm.conf(5), AccountingStoragePass).
AccountingStoragePass=$DIR/run/munge.socket
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$DIR/run/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$DIR/etc/slurmdbd.conf"
  touch "$DIR/etc/cgroup.conf"
  # Client wrappers: enter the namespace, point at this config.
  local tool
  for tool in sbatch squeue sacct scancel sinfo srun scontrol sacctmgr salloc sstat; do
    cat >"$DIR/bin/$tool" <<EOF
#!/bin/sh
exec nsenter --net=/var/run/netns/$NS env SLURM_CONF=$DIR/etc/slurm.conf /usr/bin/$tool "\$@"
EOF
    chmod +x "$DIR/bin/$tool"
  done
}

up() {
  need_root
  install_missing
  if [ -d "$DIR/pids" ] && ls "$DIR/pids"/* >/dev/null 2>&1; then
    say "a previous local SLURM is still recorded in $DIR; stopping it first"
    down
  fi
  rm -rf "$DIR"
  mkdir -p "$DIR"/{etc,bin,log,run,pids,state,spool,mysql,munge}
  chmod 700 "$DIR/munge"
  chmod 755 "$DIR/run"
  ip netns list | grep -qw "^$NS" || ip netns add "$NS"
  ip -n "$NS" link set lo up
  # The daemons look for an address that is not loopback; this veth pair stays inside the namespace.
  ip -n "$NS" link show mslurm0 >/dev/null 2>&1 || ip -n "$NS" link add mslurm0 type veth peer name mslurm1
  ip -n "$NS" addr add 10.213.0.1/24 dev mslurm0 2>/dev/null || true
  ip -n "$NS" link set mslurm0 up
  ip -n "$NS" link set mslurm1 up
  write_configs

  say "starting munged"
  mungekey --create --keyfile="$DIR/munge/munge.key" --force >/dev/null 2>&1 ||
    dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$DIR/munge/munge.key"
  start_daemon munged /usr/sbin/munged -F --force --key-file="$DIR/munge/munge.key" \
    --socket="$DIR/run/munge.socket" --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" \
    --seed-file="$DIR/munge/munge.seed"
  wait_for munged 20 test -S "$DIR/run/munge.socket"

  say "starting MariaDB for slurmdbd (127.0.0.1:3306 inside the namespace)"
  mariadb-install-db --no-defaults --datadir="$DIR/mysql" --user=root --auth-root-authentication-method=socket \
    >"$DIR/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed (see $DIR/log/mariadb-install.log)"
  start_daemon mariadbd /usr/sbin/mariadbd --no-defaults --datadir="$DIR/mysql" --user=root \
    --socket="$DIR/run/mysqld.sock" --pid-file="$DIR/run/mysqld.pid" --bind-address=127.0.0.1 --port=3306 \
    --log-error="$DIR/log/mariadbd.log" --innodb-buffer-pool-size=64M
  wait_for mariadbd 60 mariadb --no-defaults --socket="$DIR/run/mysqld.sock" -uroot -e "SELECT 1"
  mariadb --no-defaults --socket="$DIR/run/mysqld.sock" -uroot -e "
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
    FLUSH PRIVILEGES;"

  say "starting slurmdbd"
  start_daemon slurmdbd env SLURM_CONF="$DIR/etc/slurm.conf" /usr/sbin/slurmdbd -D -s
  wait_for slurmdbd 60 "$DIR/bin/sacctmgr" -n list cluster
  "$DIR/bin/sacctmgr" -i add cluster "$CLUSTER" >/dev/null 2>&1 || true

  say "starting slurmctld and slurmd"
  start_daemon slurmctld env SLURM_CONF="$DIR/etc/slurm.conf" /usr/sbin/slurmctld -D -i -f "$DIR/etc/slurm.conf"
  wait_for slurmctld 60 "$DIR/bin/scontrol" ping
  start_daemon slurmd env SLURM_CONF="$DIR/etc/slurm.conf" /usr/sbin/slurmd -D -N localhost -f "$DIR/etc/slurm.conf"
  wait_for slurmd 60 sh -c "'$DIR/bin/sinfo' -h -N -o %t | grep -Eq '^(idle|mix|alloc)'"
  say "up: partition debug, node localhost with $CPUS CPUs; logs in $DIR/log"
  say "use it from this shell with: eval \"\$($0 env)\""
}

stop_pid() {
  local name="$1" pid
  [ -f "$DIR/pids/$name" ] || return 0
  pid=$(cat "$DIR/pids/$name")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 60; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$DIR/pids/$name"
}

down() {
  need_root
  if alive slurmctld; then
    "$DIR/bin/scancel" --full --state=PENDING,RUNNING,SUSPENDED --signal=TERM >/dev/null 2>&1 || true
    "$DIR/bin/scancel" --state=PENDING,RUNNING,SUSPENDED >/dev/null 2>&1 || true
    local i
    for ((i = 0; i < 120; i++)); do
      [ -z "$("$DIR/bin/squeue" -h -o %i 2>/dev/null)" ] && break
      sleep 0.25
    done
  fi
  # slurmd first (it ends the jobs' steps), then the controller, accounting, database and munge.
  for d in slurmd slurmctld slurmdbd mariadbd munged; do stop_pid "$d"; done
  ip netns list 2>/dev/null | grep -qw "^$NS" && ip netns delete "$NS" || true
  say "down (logs kept in $DIR/log)"
}

status() {
  local d
  for d in munged mariadbd slurmdbd slurmctld slurmd; do
    if alive "$d"; then echo "$d: running (pid $(cat "$DIR/pids/$d"))"; else echo "$d: not running"; fi
  done
  alive slurmctld && { "$DIR/bin/sinfo" && "$DIR/bin/squeue"; } || true
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
env)
  echo "export PATH=$DIR/bin:\$PATH SLURM_CONF=$DIR/etc/slurm.conf"
  ;;
exec)
  shift
  [ $# -gt 0 ] || die "exec needs a command"
  need_root
  exec "${NSENTER[@]}" env PATH="$DIR/bin:$PATH" SLURM_CONF="$DIR/etc/slurm.conf" "$@"
  ;;
*)
  echo "usage: $0 up|down|status|env|exec CMD..." >&2
  exit 2
  ;;
esac
