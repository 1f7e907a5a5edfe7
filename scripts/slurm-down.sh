#!/usr/bin/env bash
# Stop the daemons that slurm-up.sh started, by their pid files only.
for f in /run/slurmd.pid /run/slurmctld.pid /run/munge/munged.pid; do
  [[ -f $f ]] && kill "$(cat "$f")" 2>/dev/null
done
exit 0
