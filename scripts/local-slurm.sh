#!/usr/bin/env bash
# A one-node Slurm cluster (munge + slurmctld + slurmd) on this machine, for the demo and the
# integration tests. Needs root (it installs Debian packages and runs the daemons as root).
#
#   scripts/local-slurm.sh start    # install if needed, start, wait until the node is idle
#   scripts/local-slurm.sh start --fresh   # the same with an empty queue: forgets every job
#                                   # an earlier cluster in this folder still had (CI uses it)
#   scripts/local-slurm.sh status   # say whether it runs; exit 0 if it does
#   scripts/local-slurm.sh stop     # stop the daemons (the state folder stays)
#   scripts/local-slurm.sh restart  # stop, write slurm.conf anew, start (the queue stays); e.g.
#                                   # HYPERSAL_SLURM_MAX_ARRAY_SIZE=10 ... restart sets MaxArraySize
#                                   # (slurmctld reads it at start only, not on reconfigure)
#
# `start` prints `export SLURM_CONF=...` on stdout (progress goes to stderr), so
# `eval "$(scripts/local-slurm.sh start)"` sets up the current shell. It also links
# /etc/slurm/slurm.conf to that file when no other slurm.conf is there, so sbatch, squeue and
# scancel work in any shell of this machine. Everything else lives in $HYPERSAL_SLURM_DIR
# (default /tmp/hypersal-slurm). Idempotent: a second `start` finds the cluster up and only
# prints the export line.
set -euo pipefail

DIR=${HYPERSAL_SLURM_DIR:-/tmp/hypersal-slurm}
CONF=$DIR/slurm.conf
SYSTEM_CONF=/etc/slurm/slurm.conf
MARK="# written by hypersal scripts/local-slurm.sh"

say() { echo "local-slurm: $*" >&2; }
die() { say "error: $*"; exit 1; }

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null && command -v munged >/dev/null && return
    [ "$(id -u)" = 0 ] || die "Slurm is not installed and installing it needs root (apt-get)."
    say "installing slurmctld slurmd slurm-client munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq slurmctld slurmd slurm-client munge >&2
}

start_munge() {
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
    mkdir -p /run/munge /var/lib/munge /var/log/munge /etc/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge /etc/munge
    chmod 0755 /run/munge
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && return
        sleep 0.1
    done
    die "munged did not start (see /var/log/munge/munged.log)"
}

write_conf() {
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
    local host mem cpus
    host=$(hostname -s)
    # The machine's CPUs. Not plain `nproc`, which answers OMP_NUM_THREADS when it is set: the
    # test suite sets it to 1 for its trainings, and a restart from inside a test (MaxArraySize)
    # then left a 1-CPU node that ran every later test's jobs one at a time.
    cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
    # Leave 1 GB to the system; Slurm refuses a node that reports less memory than configured.
    mem=$(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) - 1024 ))
    cat >"$CONF.tmp" <<EOF
$MARK
ClusterName=hypersal-local
SlurmctldHost=$host
SlurmUser=root
SlurmctldPort=${HYPERSAL_SLURMCTLD_PORT:-6817}
SlurmdPort=${HYPERSAL_SLURMD_PORT:-6818}
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# One node, a handful of jobs: look at the queue every second, not every 30-60 s (a requeued
# job's begin time, a job freed by another's end, start at once).
SchedulerParameters=sched_interval=1,bf_interval=1
ReturnToService=2
MpiDefault=none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=10
MinJobAge=300
MaxArraySize=${HYPERSAL_SLURM_MAX_ARRAY_SIZE:-1001}
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
    # Link the system path only when it is free or already ours: never touch a real cluster's.
    if [ ! -e "$SYSTEM_CONF" ] || head -1 "$SYSTEM_CONF" 2>/dev/null | grep -qF "$MARK"; then
        mkdir -p "$(dirname "$SYSTEM_CONF")"
        ln -sfn "$CONF" "$SYSTEM_CONF"
    fi
}

running() { # is the controller answering and the node usable?
    [ -f "$CONF" ] || return 1
    SLURM_CONF=$CONF timeout 5 sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated|completing)'
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
    install_packages
    if [ "${1:-}" = --fresh ]; then
        if running; then SLURM_CONF=$CONF scancel --user="$(id -un)" 2>/dev/null || true; fi
        stop_daemons
        # slurmctld reloads its queue from the state folder: without it, jobs of an earlier
        # cluster run again and hold new ones back.
        rm -rf "$DIR/state" "$DIR/spool"
        say "fresh start: the queue of any earlier cluster in $DIR is gone"
    fi
    if running; then
        say "already running"
        echo "export SLURM_CONF=$CONF"
        return
    fi
    start_munge
    stop_daemons
    write_conf
    say "starting slurmctld and slurmd (state in $DIR)"
    slurmctld -f "$CONF"
    slurmd -f "$CONF"
    for _ in $(seq 120); do
        if running; then
            say "cluster up: $(SLURM_CONF=$CONF sinfo -h -o '%n %c CPUs %m MB %T')"
            echo "export SLURM_CONF=$CONF"
            return
        fi
        # A node left DOWN by an earlier run comes back once told to.
        SLURM_CONF=$CONF scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true
        sleep 0.5
    done
    die "the node did not become idle in 60 s; logs: $DIR/log/"
}

stop_daemons() {
    local f
    for f in "$DIR/slurmd.pid" "$DIR/slurmctld.pid"; do
        if alive "$f"; then kill "$(cat "$f")"; fi
    done
    for _ in $(seq 50); do
        alive "$DIR/slurmd.pid" || alive "$DIR/slurmctld.pid" || return 0
        sleep 0.1
    done
}

case "${1:-}" in
    start) start "${2:-}" ;;
    stop) stop_daemons; say "stopped" ;;
    restart) stop_daemons; start ;;
    status)
        if running; then
            say "running: $(SLURM_CONF=$CONF sinfo -h -o '%n %c CPUs %m MB %T')"
            echo "export SLURM_CONF=$CONF"
        else
            say "not running"; exit 1
        fi ;;
    *) echo "usage: $0 start [--fresh]|stop|restart|status" >&2; exit 2 ;;
esac
