#!/bin/bash
# A Slurm cluster on this machine, for tests and for trying `moerun slurm` by hand: slurmctld
# and NODES slurmd daemons (Debian's Slurm 22.05 and munge), each in its own network namespace
# on a bridge, as separate hosts would be (docs/cluster.md, "Testing"). Needs root.
#
#   tests/slurm/slurm_cluster.sh up DIR [NODES=3] [SUBNET=10.78.0]   start; prints the env to use
#   tests/slurm/slurm_cluster.sh down DIR                           stop everything, remove namespaces
#
# Namespaces are <prefix>hub (the bridge), <prefix>ctl (slurmctld, SUBNET.1) and <prefix>nI
# (node nI's slurmd, SUBNET.(I+1)); the prefix is derived from DIR so that clusters of
# different DIRs never meet. Slurm's client commands run from any namespace that can reach
# SUBNET.1 with SLURM_CONF=DIR/slurm.conf, e.g.
#   ip netns exec <prefix>ctl env SLURM_CONF=DIR/slurm.conf sinfo
# Exit codes: 0 up (every node idle), 77 namespaces or Slurm unavailable here, 1 otherwise.
set -euo pipefail

cmd=${1:?usage: slurm_cluster.sh up|down DIR [NODES] [SUBNET]}
dir=$(realpath -m "${2:?usage: slurm_cluster.sh up|down DIR [NODES] [SUBNET]}")
prefix="sl$(echo -n "$dir" | cksum | cut -c1-6)"

down() {
  for f in "$dir"/*.pid; do
    [[ -f $f ]] && kill -TERM "$(cat "$f")" 2>/dev/null || true
  done
  sleep 0.5
  for f in "$dir"/*.pid; do
    [[ -f $f ]] && kill -KILL "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^${prefix}" || true); do
    # Whatever still runs inside (job steps) goes with its namespace.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
}

if [[ $cmd == down ]]; then
  down
  exit 0
fi
[[ $cmd == up ]] || { echo "slurm_cluster.sh: unknown command $cmd" >&2; exit 2; }
nodes=${3:-3}
subnet=${4:-10.78.0}
for tool in slurmctld slurmd munged ip nsenter; do
  command -v "$tool" >/dev/null || { echo "skipped: $tool is not installed (scripts/install-deps.sh --for-tests)" >&2; exit 77; }
done
[[ $(id -u) -eq 0 ]] || { echo "skipped: needs root for network namespaces" >&2; exit 77; }

down
mkdir -p "$dir/ctld"
chmod 0755 "$dir"
ns() { echo "${prefix}$1"; }
if ! ip netns add "$(ns hub)" 2>/dev/null; then
  echo "skipped: cannot create network namespaces here" >&2
  exit 77
fi
ip -n "$(ns hub)" link add br0 type bridge
ip -n "$(ns hub)" link set br0 up
host_ns() {  # name, last octet
  local v="${prefix}${1}v" h="${prefix}${1}h"
  ip netns add "$(ns "$1")"
  ip link add "$v" type veth peer name "$h"
  ip link set "$v" netns "$(ns "$1")"
  ip link set "$h" netns "$(ns hub)"
  ip -n "$(ns hub)" link set "$h" master br0 up
  ip -n "$(ns "$1")" addr add "$subnet.$2/24" dev "$v"
  ip -n "$(ns "$1")" link set "$v" up
  ip -n "$(ns "$1")" link set lo up
}
host_ns ctl 1
for i in $(seq 1 "$nodes"); do host_ns "n$i" $((i + 1)); done

# munge: one daemon, its socket on the shared filesystem (namespaces split only the network).
dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 status=none
chmod 0400 "$dir/munge.key"
munged --force --socket="$dir/munge.sock" --key-file="$dir/munge.key" \
  --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munge.seed"

host=$(hostname -s)
{
  echo "# Written by tests/slurm/slurm_cluster.sh: a test cluster on one machine."
  echo "ClusterName=moerun-test"
  echo "SlurmctldHost=${host}(${subnet}.1)"
  echo "AuthType=auth/munge"
  echo "CredType=cred/munge"
  # cred_expire: a requeued job may start again this many seconds after its requeue
  # (Slurm's default, 120 s, would dominate a test).
  echo "AuthInfo=socket=$dir/munge.sock,cred_expire=10"
  echo "SlurmUser=root"
  echo "SlurmdUser=root"
  echo "StateSaveLocation=$dir/ctld"
  echo "SlurmdSpoolDir=$dir/spool-%n"
  echo "SlurmctldPidFile=$dir/slurmctld.pid"
  echo "SlurmdPidFile=$dir/slurmd-%n.pid"
  echo "SlurmctldLogFile=$dir/slurmctld.log"
  echo "SlurmdLogFile=$dir/slurmd-%n.log"
  echo "SlurmdParameters=config_overrides"
  echo "ProctrackType=proctrack/pgid"
  echo "TaskPlugin=task/none"
  echo "MpiDefault=none"
  echo "SelectType=select/cons_tres"
  echo "SelectTypeParameters=CR_Core"
  echo "SchedulerType=sched/backfill"
  echo "JobCompType=jobcomp/none"
  echo "AccountingStorageType=accounting_storage/none"
  echo "JobAcctGatherType=jobacct_gather/none"
  echo "ReturnToService=2"
  echo "MinJobAge=3600"
  echo "KillWait=10"
  echo "JobRequeue=1"
  echo "PropagateResourceLimits=NONE"
  for i in $(seq 1 "$nodes"); do
    echo "NodeName=n$i NodeAddr=$subnet.$((i + 1)) CPUs=2 State=UNKNOWN"
  done
  echo "PartitionName=test Nodes=n[1-$nodes] Default=YES MaxTime=INFINITE State=UP"
} >"$dir/slurm.conf"
export SLURM_CONF="$dir/slurm.conf"

# The daemons enter their namespace with nsenter, not `ip netns exec`: that one also remounts
# /sys for the namespace, hiding /sys/fs/cgroup, without which slurmd does not start.
in_ns() { nsenter --net="/run/netns/$(ns "$1")" "${@:2}"; }
in_ns ctl slurmctld -c -i -f "$SLURM_CONF" >"$dir/slurmctld.out" 2>&1
for i in $(seq 1 "$nodes"); do
  mkdir -p "$dir/spool-n$i"
  in_ns "n$i" slurmd -N "n$i" -f "$SLURM_CONF" >"$dir/slurmd-n$i.out" 2>&1
done
# Up once every node is idle.
for _ in $(seq 1 150); do
  idle=$(ip netns exec "$(ns ctl)" sinfo -h -N -t idle -o %N 2>/dev/null | sort -u | wc -l || true)
  if [[ $idle -eq $nodes ]]; then
    echo "SLURM_CONF=$SLURM_CONF"
    echo "MOERUN_SLURM_NS_PREFIX=$prefix"
    exit 0
  fi
  sleep 0.2
done
echo "slurm_cluster.sh: the nodes did not come up; see $dir/*.log" >&2
ip netns exec "$(ns ctl)" sinfo -N -l >&2 || true
exit 1
