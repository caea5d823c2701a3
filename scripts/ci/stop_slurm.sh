#!/usr/bin/env bash
# Stop the daemons that start_slurm.sh DIR started, by the PIDs it recorded in DIR/pids (never by name).
set -uo pipefail

dir=${1:?usage: stop_slurm.sh DIR}
etc=/etc/slurm/slurm.conf
[ -L "$etc" ] && [ "$(readlink "$etc")" = "$(cd "$dir" && pwd)/slurm.conf" ] && rm -f "$etc"
[ -f "$dir/pids" ] || exit 0
pids=$(awk '{print $2}' "$dir/pids")
for pid in $pids; do kill -TERM "$pid" 2>/dev/null; done
for _ in $(seq 50); do
    alive=0
    for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" -eq 0 ] && exit 0
    sleep 0.1
done
for pid in $pids; do kill -KILL "$pid" 2>/dev/null; done
exit 0
