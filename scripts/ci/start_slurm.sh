#!/usr/bin/env bash
# Start a throw-away single-node SLURM cluster (munge + slurmctld + slurmd) with fake GPUs, for CI.
#
#   sudo scripts/ci/start_slurm.sh DIR [GPUS]      then: export SLURM_CONF=DIR/slurm.conf
#   sudo scripts/ci/stop_slurm.sh DIR
#
# Needs root and Debian's packages: apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge
# Everything (config, key, sockets, state, logs) lives in DIR, so it neither needs nor disturbs a system munge.
# One exception: /etc/slurm/slurm.conf becomes a link to DIR/slurm.conf, because Snakemake's jobstep plugin drops
# every SLURM_* variable (SLURM_CONF included) before its srun inside a job, and srun then reads only the default
# path. A real /etc/slurm/slurm.conf is never replaced. DIR/pids lists "name pid" of the three daemons it started.
# Settings are the ones that worked on a 2-core Debian 12 box without systemd or cgroups (FINDINGS section 11).
set -euo pipefail

dir=${1:?usage: start_slurm.sh DIR [GPUS]}
gpus=${2:-2}
[ "$(id -u)" -eq 0 ] || { echo "start_slurm.sh: must run as root (slurmd starts jobs as their user)" >&2; exit 1; }
for exe in munged slurmctld slurmd sbatch; do
    command -v "$exe" >/dev/null || PATH=$PATH:/usr/sbin
    command -v "$exe" >/dev/null || { echo "start_slurm.sh: $exe not found; apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge" >&2; exit 1; }
done

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
# munged runs as the munge user and must reach its socket: every parent of DIR must be traversable.
chmod 755 "$dir"
mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log"
chown munge:munge "$dir/munge"
chmod 755 "$dir/munge"  # munged wants its socket directory searchable by all

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ctld_port=$(free_port)
slurmd_port=$(free_port)
while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port=$(free_port); done

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)  # leave 20 % to the OS

# A fresh key per cluster: only this cluster's daemons and clients share it.
head -c 1024 /dev/urandom >"$dir/munge/munge.key"
chown munge:munge "$dir/munge/munge.key"
chmod 400 "$dir/munge/munge.key"
runuser -u munge -- munged --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed"
for _ in $(seq 50); do [ -s "$dir/munge/munged.pid" ] && break; sleep 0.1; done
echo "munged $(cat "$dir/munge/munged.pid")" >"$dir/pids"

# One gres line per fake GPU, each with its own device file: a bare Count=N without files is refused.
: >"$dir/gres.conf"
echo "AutoDetect=off" >>"$dir/gres.conf"
for i in $(seq 0 $((gpus - 1))); do
    mknod -m 666 "$dir/fakegpu$i" c 1 3  # same major/minor as /dev/null: a char device nothing can misuse
    echo "NodeName=$host Name=gpu File=$dir/fakegpu$i" >>"$dir/gres.conf"
done
: >"$dir/plugstack.conf"

cat >"$dir/slurm.conf" <<EOF
ClusterName=ctxci
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
PlugStackConfig=$dir/plugstack.conf
# No cgroups, no systemd: plain process tracking and no task confinement.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Jobs that ask for no memory would otherwise get the whole node and run one at a time.
DefMemPerCPU=1000
# A node that was down comes back by itself; finished jobs stay visible to squeue/scontrol for 10 minutes
# (Snakemake's status check falls back to squeue, which must still see a job that just ended).
ReturnToService=2
MinJobAge=600
GresTypes=gpu
SchedulerParameters=sched_interval=1
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:$gpus State=UNKNOWN
PartitionName=ci Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF

etc=/etc/slurm/slurm.conf
if [ -e "$etc" ] && ! { [ -L "$etc" ] && grep -q "^ClusterName=ctxci" "$etc" 2>/dev/null; }; then
    echo "start_slurm.sh: $etc exists and is not a link made by this script; not replacing a real SLURM config" >&2
    exit 1
fi
mkdir -p /etc/slurm
ln -sfn "$dir/slurm.conf" "$etc"

export SLURM_CONF=$dir/slurm.conf
setsid slurmctld -D -f "$SLURM_CONF" >"$dir/log/slurmctld.out" 2>&1 </dev/null &
echo "slurmctld $!" >>"$dir/pids"
setsid slurmd -D -f "$SLURM_CONF" >"$dir/log/slurmd.out" 2>&1 </dev/null &
echo "slurmd $!" >>"$dir/pids"

for _ in $(seq 300); do
    if sinfo -h -N -o "%t" 2>/dev/null | grep -qx "idle"; then
        echo "SLURM up: SLURM_CONF=$SLURM_CONF, node $host, $cpus CPUs, ${mem_mb} MB, $gpus fake GPUs"
        exit 0
    fi
    sleep 0.1
done
echo "start_slurm.sh: the node did not become idle within 30 s; logs in $dir/log" >&2
tail -n 20 "$dir/log/"* >&2 || true
exit 1
