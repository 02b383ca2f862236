#!/usr/bin/env bash
# A one-node Slurm cluster on localhost, for tests/test_slurm.sh and for
# measuring the Slurm executor by hand (docs/cluster.md):
#
#   bash tests/slurm_cluster.sh start DIR   # prints SLURM_CONF=DIR/slurm.conf
#   bash tests/slurm_cluster.sh stop DIR
#
# Everything lives in DIR: a munge key and socket of its own (the system's
# /etc/munge and /run/munge are left alone), slurm.conf on free ports, the
# state, spool, pid and log files, and the job completion log DIR/jobcomp.log
# (jobcomp/filetxt: one line per finished job, JobId= Name= JobState=).
# The daemons run as root (SlurmUser=root) under `nice -n 10`, which the
# jobs inherit (PropagatePrioProcess=0: tasks get slurmd's nice value).
# start fails with one line saying what did not come up; stop ends only the
# daemons whose pids start wrote into DIR.
set -u
cmd=${1:-} dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: slurm_cluster.sh start|stop DIR" >&2; exit 2; }

stop() {
    local p
    for p in slurmd slurmctld munged; do
        [ -f "$dir/$p.daemon" ] || continue
        local pid; pid=$(cat "$dir/$p.daemon")
        kill "$pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
        rm -f "$dir/$p.daemon"
    done
}

# a TCP port nobody listens on, from a range unlikely to be taken
free_port() {
    local p
    for _ in $(seq 100); do
        p=$((20000 + RANDOM % 30000))
        ss -ltnH 2>/dev/null | awk '{print $4}' | grep -q ":$p\$" || { echo $p; return 0; }
    done
    return 1
}

start() {
    for b in munged slurmctld slurmd srun sinfo ss; do
        command -v $b >/dev/null || { echo "slurm_cluster: $b not found: install slurm-wlm and munge (scripts/install-deps.sh --slurm)"; return 1; }
    done
    [ "$(id -u)" -eq 0 ] || { echo "slurm_cluster: the daemons run as root here (SlurmUser=root), and this is uid $(id -u)"; return 1; }
    mkdir -p "$dir"/{state,spool,munge}
    chmod 700 "$dir" "$dir/munge"
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$dir/munge/munge.key"
    local sock=$dir/munge/munge.socket
    # --force: the key and socket live under /tmp, whose sticky,
    # world-writable parent munged would otherwise refuse
    nice -n 10 munged -F --force --socket="$sock" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
        --seed-file="$dir/munge/munged.seed" >"$dir/munged.out" 2>&1 &
    echo $! > "$dir/munged.daemon"
    for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
    [ -S "$sock" ] || { echo "slurm_cluster: munged did not start: $(tail -1 "$dir/munged.out" "$dir/munge/munged.log" 2>/dev/null | tail -1)"; return 1; }

    local node cport dport
    node=$(slurmd -C 2>/dev/null | head -1)
    [[ $node == NodeName=* ]] || { echo "slurm_cluster: slurmd -C printed no node line: $node"; return 1; }
    cport=$(free_port) && dport=$(free_port) || { echo "slurm_cluster: no free TCP port found"; return 1; }
    [ "$cport" != "$dport" ] || dport=$((cport + 1))
    local host=${node#NodeName=}; host=${host%% *}
    cat > "$dir/slurm.conf" <<EOF
# written by tests/slurm_cluster.sh
ClusterName=matstest
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$cport
SlurmdPort=$dport
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
KillWait=5
MinJobAge=300
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF=$dir/slurm.conf
    nice -n 10 slurmctld -D -i -f "$SLURM_CONF" >"$dir/slurmctld.out" 2>&1 &
    echo $! > "$dir/slurmctld.daemon"
    nice -n 10 slurmd -D -f "$SLURM_CONF" >"$dir/slurmd.out" 2>&1 &
    echo $! > "$dir/slurmd.daemon"
    for _ in $(seq 100); do
        sinfo -h -o %T 2>/dev/null | grep -qx idle && { echo "SLURM_CONF=$SLURM_CONF"; return 0; }
        sleep 0.2
    done
    echo "slurm_cluster: the node did not become idle in 20 s: $(sinfo -h -o '%T %E' 2>&1 | head -1); $(tail -1 "$dir/slurmctld.log" 2>/dev/null)"
    return 1
}

case "$cmd" in
    start) start || { stop; exit 1; } ;;
    stop) stop ;;
    *) echo "usage: slurm_cluster.sh start|stop DIR" >&2; exit 2 ;;
esac
