#!/bin/sh
# local-cluster.sh - a single-node Slurm cluster on this machine, in a directory of its own
# (Debian's slurmctld, slurmd and munge): to try pipelines/slurm/ without a cluster, and for
# tests/cli/t86-slurm.sh. Needs root (slurmd starts the jobs).
#   local-cluster.sh start DIR    # then: export SLURM_CONF=DIR/slurm.conf
#   local-cluster.sh stop DIR
# Its own munge key and socket, state, logs and ports (PORT, default 16817 and the next)
# live in DIR; nothing under /etc is read or changed.
set -eu
[ $# -eq 2 ] || { echo "usage: local-cluster.sh start|stop DIR" >&2; exit 2; }
cmd=$1
mkdir -p "$2"
dir=$(cd "$2" && pwd)
export SLURM_CONF="$dir/slurm.conf"

stop() {
	[ -f "$SLURM_CONF" ] && scontrol shutdown >/dev/null 2>&1 || true
	for p in slurmd slurmctld munged; do
		[ -f "$dir/$p.pid" ] || continue
		pid=$(cat "$dir/$p.pid")
		kill "$pid" 2>/dev/null || true
		i=0
		while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
		kill -9 "$pid" 2>/dev/null || true
		rm -f "$dir/$p.pid"
	done
}

case $cmd in
stop) stop; exit 0 ;;
start) ;;
*) echo "local-cluster.sh: start or stop, not $cmd" >&2; exit 2 ;;
esac

[ "$(id -u)" -eq 0 ] || { echo "local-cluster.sh: slurmd must run as root" >&2; exit 1; }
for p in slurmctld slurmd munged mungekey sbatch scontrol sinfo; do
	command -v $p >/dev/null 2>&1 || PATH=$PATH:/usr/sbin
	command -v $p >/dev/null 2>&1 || { echo "local-cluster.sh: no $p (apt-get install slurmctld slurmd slurm-client munge)" >&2; exit 1; }
done
host=$(hostname -s)
port=${PORT:-16817}
mkdir -p "$dir/state" "$dir/spool"
[ -f "$dir/munge.key" ] || mungekey -c -k "$dir/munge.key"
munged -f --socket="$dir/munge.sock" --key-file="$dir/munge.key" --log-file="$dir/munged.log" \
	--pid-file="$dir/munged.pid" --seed-file="$dir/munged.seed"
cat >"$SLURM_CONF" <<CONF
ClusterName=cmrlocal
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge.sock
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
slurmctld -f "$SLURM_CONF" || { stop; echo "local-cluster.sh: slurmctld did not start ($dir/slurmctld.log)" >&2; exit 1; }
slurmd -f "$SLURM_CONF" -N "$host" || { stop; echo "local-cluster.sh: slurmd did not start ($dir/slurmd.log)" >&2; exit 1; }
# ready when the node is idle
i=0
until sinfo -h -o %t 2>/dev/null | grep -q idle; do
	i=$((i + 1))
	if [ $i -gt 100 ]; then
		stop
		echo "local-cluster.sh: the node did not come up in 20 s (logs in $dir)" >&2
		exit 1
	fi
	sleep 0.2
done
echo "export SLURM_CONF=$SLURM_CONF"
