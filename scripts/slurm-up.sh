#!/usr/bin/env bash
# Bring up a real single-node SLURM cluster on this machine, on loopback only, for the test of
# HPC submission (tests/test_slurm.py). Idempotent; a no-op where a cluster already answers.
# Needs root: it installs Debian's slurm packages if missing and uses the system paths
# (/etc/slurm, /run, default ports), so one instance per machine. Stop it with slurm-down.sh.
# No accounting daemon: Snakemake needs --slurm-status-command squeue (workflow/profiles/slurm).
set -euo pipefail
usable() { sinfo -h -o '%T' 2>/dev/null | grep -qE 'idle|mix|alloc'; }
if usable; then sinfo; exit 0; fi
if [[ $EUID -ne 0 ]]; then
  echo "slurm-up.sh: no SLURM cluster answers and starting one needs root" >&2
  exit 2
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
    || ! command -v sbatch >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    munge slurmctld slurmd slurm-client >/dev/null
fi
host=$(hostname)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
# MinJobAge 600: finished jobs stay visible to squeue long enough for its status checks.
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=local
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
MinJobAge=600
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$host NodeHostname=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
[[ -s /etc/munge/munge.key ]] || { mungekey -c -f 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null; }
chown munge:munge /etc/munge/munge.key /run/munge; chmod 400 /etc/munge/munge.key
alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
alive /run/munge/munged.pid || runuser -u munge -- munged
alive /run/slurmctld.pid || slurmctld -c   # -c: start clean, no stale jobs from an earlier run
alive /run/slurmd.pid || slurmd
for _ in $(seq 1 60); do
  if usable; then sinfo; exit 0; fi
  sleep 1
done
echo "slurm did not come up; see /var/log/slurm/" >&2
exit 1
