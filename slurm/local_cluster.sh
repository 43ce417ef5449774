#!/usr/bin/env bash
# A real, single-node Slurm cluster on this machine, for tests and for trying sweeps locally.
#
#   bash slurm/local_cluster.sh start    # install slurm-wlm + munge if missing, start, wait until idle
#   bash slurm/local_cluster.sh status   # daemons and `sinfo`; exit 1 unless the node is usable
#   bash slurm/local_cluster.sh stop     # stop the daemons this script started (by their PID files)
#
# One node `localhost` (CPUs = nproc, RealMemory a bit below the machine's), two fake GPUs
# (character devices 195:0 and 195:1, so `--gres=gpu:N` / `--gpus-per-node=N` jobs get
# CUDA_VISIBLE_DEVICES), partition `debug` (default). No cgroups, no accounting.
# Needs root for `start` (slurmd runs as root); status/stop of a running cluster work for anyone
# who can read the state folder.
#
# Environment:
#   RLHF_SLURM_DIR      state folder: slurm.conf, gres.conf, logs, spool, PID files (default /tmp/rlhf-slurm)
#   RLHF_SLURM_TIMEOUT  seconds `start` waits for the node to become idle (default 60)
#   RLHF_SLURM_GPUS     fake GPUs on the node (default 2; 0 disables gres)
#
# Clients find the cluster through SLURM_CONF=$RLHF_SLURM_DIR/slurm.conf; when /etc/slurm/slurm.conf
# is absent (or is a link this script made earlier) it is linked there too, so bare `sinfo` works.
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

DIR="${RLHF_SLURM_DIR:-/tmp/rlhf-slurm}"
DIR="$(realpath -m -- "$DIR")"
TIMEOUT="${RLHF_SLURM_TIMEOUT:-60}"
NGPU="${RLHF_SLURM_GPUS:-2}"
NODE=localhost
CONF="$DIR/slurm.conf"
GRES_CONF="$DIR/gres.conf"
MARKER="$DIR/.rlhf-local-cluster"
CTLD_PID="$DIR/run/slurmctld.pid"
SLURMD_PID="$DIR/run/slurmd.pid"
MUNGED_PID="$DIR/run/munged.pid"   # written only when this script started munged
ETC_CONF=/etc/slurm/slurm.conf
export SLURM_CONF="$CONF"

say() { echo "local_cluster: $*"; }
die() { echo "local_cluster: ERROR: $*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# PID from a PID file if that process is alive and is the named program; empty otherwise.
live_pid() {
    local file=$1 prog=$2 pid
    [ -r "$file" ] || return 0
    pid="$(tr -dc '0-9' <"$file")"
    [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 0
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$prog" ] || return 0
    # A zombie (killed, not yet reaped) is not alive.
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 0
    echo "$pid"
}

# Send TERM, wait up to 10 s, then KILL. One PID.
stop_pid() {
    local pid=$1 name=$2 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 50); do
        [ -d "/proc/$pid" ] || { say "stopped $name (pid $pid)"; return 0; }
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
    say "killed $name (pid $pid)"
}

# ---------------------------------------------------------------------------------------- install

install_packages() {
    local missing=()
    for c in slurmctld slurmd sbatch sinfo munged munge; do command -v "$c" >/dev/null || missing+=("$c"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    is_root || die "missing ${missing[*]}; run as root so this script can apt-get install slurm-wlm munge"
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install Slurm (slurmctld, slurmd, client tools) and munge yourself"
    say "installing slurm-wlm and munge (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    local apt=(apt-get -q -y -o DPkg::Lock::Timeout=300)
    # Try without refreshing the package lists first; refresh once if that fails.
    if ! "${apt[@]}" install --no-install-recommends slurm-wlm munge >"$DIR/log/apt.log" 2>&1; then
        "${apt[@]}" update >>"$DIR/log/apt.log" 2>&1 || { tail -n 20 "$DIR/log/apt.log" >&2; die "apt-get update failed"; }
        "${apt[@]}" install --no-install-recommends slurm-wlm munge >>"$DIR/log/apt.log" 2>&1 \
            || { tail -n 20 "$DIR/log/apt.log" >&2; die "apt-get install slurm-wlm munge failed (log: $DIR/log/apt.log)"; }
    fi
    for c in slurmctld slurmd sbatch sinfo munged munge; do command -v "$c" >/dev/null || die "$c still missing after install"; done
}

# ------------------------------------------------------------------------------------------ munge

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    if munge_works; then return 0; fi
    is_root || die "munged is not running and starting it needs root"
    local key=/etc/munge/munge.key
    mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
    if [ ! -s "$key" ]; then
        say "creating munge key $key"
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$key" --force >/dev/null
        else
            dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
        fi
    fi
    chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
    chmod 0700 /etc/munge /var/lib/munge /var/log/munge
    chmod 0755 /run/munge
    chmod 0400 "$key"
    # --force: start even if a dead munged left its socket behind.
    runuser -u munge -- munged --force >"$DIR/log/munged.start" 2>&1 9>&- \
        || { cat "$DIR/log/munged.start" >&2; die "munged failed to start"; }
    local i
    for i in $(seq 1 50); do munge_works && break; sleep 0.1; done
    munge_works || die "munged started but munge -n | unmunge fails (see /var/log/munge/munged.log)"
    if [ -r /run/munge/munged.pid ]; then cp /run/munge/munged.pid "$MUNGED_PID"; fi
    say "munged started"
}

# ----------------------------------------------------------------------------------------- config

write_config() {
    local cpus mem_mb gres_node="" gres_types=""
    # Not plain nproc: it honours OMP_NUM_THREADS, which the test workers set to 1 (a 1-CPU node would
    # refuse every 2-task job with Reason=PartitionConfig).
    cpus="$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)"
    mem_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
    # Below the detected memory, or slurmd drains the node ("Low RealMemory").
    mem_mb=$(( mem_mb * 90 / 100 ))
    [ "$mem_mb" -ge 512 ] || mem_mb=512
    if [ "$NGPU" -gt 0 ]; then
        gres_types="GresTypes=gpu"
        gres_node="Gres=gpu:$NGPU"
        mkdir -p "$DIR/dev"
        local i f
        : >"$GRES_CONF.new"
        for i in $(seq 0 $((NGPU - 1))); do
            f="$DIR/dev/fgpu$i"
            # A character device with the NVIDIA major: slurmd rejects plain files as GPU devices.
            if [ ! -c "$f" ]; then rm -f "$f"; mknod "$f" c 195 "$i" || die "mknod $f failed (needs root and a filesystem that allows device nodes; set RLHF_SLURM_DIR elsewhere or RLHF_SLURM_GPUS=0)"; fi
            echo "NodeName=$NODE Name=gpu File=$f" >>"$GRES_CONF.new"
        done
    else
        : >"$GRES_CONF.new"
    fi
    cat >"$CONF.new" <<EOF
# Written by slurm/local_cluster.sh: a single-node test cluster. Edits are overwritten on start.
ClusterName=rlhflocal
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
KillWait=5
MinJobAge=300
InactiveLimit=0
$gres_types
NodeName=$NODE CPUs=$cpus RealMemory=$mem_mb $gres_node State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

# 0 when the new config differs from the one in place (or none is in place).
config_changed() {
    ! { [ -f "$CONF" ] && cmp -s "$CONF" "$CONF.new" && [ -f "$GRES_CONF" ] && cmp -s "$GRES_CONF" "$GRES_CONF.new"; }
}

install_config() {
    mv -f "$CONF.new" "$CONF"
    mv -f "$GRES_CONF.new" "$GRES_CONF"
    # Let plain `sinfo`/`sbatch` (and srun inside jobs) find this cluster, unless a real config is there.
    if [ ! -e "$ETC_CONF" ] || [ -L "$ETC_CONF" ]; then
        if is_root; then mkdir -p /etc/slurm && ln -sfn "$CONF" "$ETC_CONF"; fi
    fi
}

# ------------------------------------------------------------------------------------- node state

# The node's state from sinfo ("idle", "mix", "down*", ...), empty when slurmctld does not answer.
node_state() { timeout 10 sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n 1 || true; }
node_reason() { timeout 10 sinfo -h -N -n "$NODE" -o '%E' 2>/dev/null | head -n 1 || true; }

node_usable() {
    case "$(node_state)" in
        idle | mixed | allocated | completing) return 0 ;;
        *) return 1 ;;
    esac
}

# Stop slurmctld/slurmd processes that an earlier run of this script started from another
# state folder (their -f points at a folder with our marker). Refuse to touch anyone else's.
stop_strays() {
    local prog pid cmd conf
    for prog in slurmctld slurmd; do
        for pid in $(pgrep -x "$prog" || true); do
            [ "$pid" = "$(live_pid "$CTLD_PID" slurmctld)" ] && continue
            [ "$pid" = "$(live_pid "$SLURMD_PID" slurmd)" ] && continue
            cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
            [ -n "$cmd" ] || continue # a zombie (a daemon's exited parent) or already gone
            conf="$(sed -n 's/.* -f \([^ ]*\).*/\1/p' <<<"$cmd")"
            if [ -n "$conf" ] && [ -e "$(dirname "$conf")/.rlhf-local-cluster" ]; then
                say "stopping $prog (pid $pid) left over from $(dirname "$conf")"
                stop_pid "$pid" "$prog"
            else
                die "a $prog not started by this script is running (pid $pid: $cmd); stop it first, this cluster needs ports 6817/6818"
            fi
        done
    done
}

stop_daemons() {
    local pid
    pid="$(live_pid "$SLURMD_PID" slurmd)"
    [ -n "$pid" ] && stop_pid "$pid" slurmd
    pid="$(live_pid "$CTLD_PID" slurmctld)"
    [ -n "$pid" ] && stop_pid "$pid" slurmctld
    rm -f "$SLURMD_PID" "$CTLD_PID"
}

log_tails() {
    local f
    for f in "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log"; do
        [ -f "$f" ] && { echo "--- last lines of $f" >&2; tail -n 15 "$f" >&2; }
    done
}

wait_usable() {
    local deadline=$((SECONDS + TIMEOUT)) resumed=0 state
    while true; do
        state="$(node_state)"
        case "$state" in
            idle | mixed | allocated | completing) return 0 ;;
            *"*") ;; # slurmd has not registered yet
            down | drain* | fail*)
                # Responding but marked down/drained (e.g. after a restart): resume it once.
                if [ $resumed -eq 0 ]; then
                    scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
                    resumed=1
                fi
                ;;
        esac
        if [ $SECONDS -ge $deadline ]; then
            log_tails
            die "node $NODE not idle after ${TIMEOUT}s (state: '${state:-no answer from slurmctld}', reason: '$(node_reason)'); logs in $DIR/log"
        fi
        sleep 0.3
    done
}

# ---------------------------------------------------------------------------------------- commands

cmd_start() {
    if ! is_root; then
        # Without root nothing can be (re)started, but a cluster someone started is fine to use.
        if [ -f "$CONF" ] && command -v sinfo >/dev/null && node_usable; then
            say "already up: node $NODE $(node_state) (SLURM_CONF=$CONF)"
            return 0
        fi
        die "the cluster in $DIR is not up, and starting it needs root (slurmd runs as root)"
    fi
    mkdir -p "$DIR"/{state,spool,run,log}
    touch "$MARKER"
    exec 9>"$DIR/.lock"
    flock -w 300 9 || die "another local_cluster.sh holds $DIR/.lock"

    install_packages
    write_config

    local ctld slurmd
    ctld="$(live_pid "$CTLD_PID" slurmctld)"
    slurmd="$(live_pid "$SLURMD_PID" slurmd)"
    if [ -n "$ctld" ] && [ -n "$slurmd" ] && ! config_changed && munge_works && node_usable \
        && timeout 10 scontrol show slurmd >/dev/null 2>&1; then
        rm -f "$CONF.new" "$GRES_CONF.new"
        install_config_link_only
        say "already up: node $NODE $(node_state) (slurmctld $ctld, slurmd $slurmd, SLURM_CONF=$CONF)"
        return 0
    fi

    # Restart from a clean slate: whatever of ours is running, stale daemons from other state folders.
    stop_daemons
    stop_strays
    install_config
    start_munge

    rm -rf "$DIR/spool" && mkdir -p "$DIR/spool"
    # -c: forget jobs from a previous life of the cluster; -f: this config (stop_strays reads it back).
    slurmctld -c -f "$CONF" 9>&- || { log_tails; die "slurmctld failed to start"; }
    slurmd -f "$CONF" -N "$NODE" 9>&- || { log_tails; die "slurmd failed to start"; }
    wait_usable
    say "up: node $NODE $(node_state), partition debug, $(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc) CPUs, gpu:$NGPU (SLURM_CONF=$CONF)"
}

# On the fast path keep the /etc link pointing here, in case another folder took it over.
install_config_link_only() {
    if [ ! -e "$ETC_CONF" ] || { [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" != "$CONF" ]; }; then
        if is_root; then mkdir -p /etc/slurm && ln -sfn "$CONF" "$ETC_CONF"; fi
    fi
}

cmd_stop() {
    [ -d "$DIR" ] || { say "nothing to stop ($DIR does not exist)"; return 0; }
    exec 9>"$DIR/.lock"
    flock -w 300 9 || die "another local_cluster.sh holds $DIR/.lock"
    stop_daemons
    local pid
    pid="$(live_pid "$MUNGED_PID" munged)"
    if [ -n "$pid" ]; then stop_pid "$pid" munged; fi
    rm -f "$MUNGED_PID"
    if [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$CONF" ]; then rm -f "$ETC_CONF"; fi
    say "stopped (state kept in $DIR)"
}

cmd_status() {
    local ctld slurmd
    ctld="$(live_pid "$CTLD_PID" slurmctld)"
    slurmd="$(live_pid "$SLURMD_PID" slurmd)"
    echo "state folder: $DIR   SLURM_CONF=$CONF"
    echo "slurmctld: ${ctld:-not running}   slurmd: ${slurmd:-not running}"
    if ! command -v sinfo >/dev/null; then echo "sinfo not installed"; return 1; fi
    if [ -z "$ctld" ] || [ ! -f "$CONF" ]; then return 1; fi
    timeout 10 sinfo || return 1
    node_usable
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 {start|stop|status}" >&2; exit 2 ;;
esac
