#!/usr/bin/env bash
# Runs a command and reports the peak resident memory of every Tessera daemon
# it starts (tessera-server, tessera-worker), read from /proc every second:
# each process's VmHWM at its last sample, the largest per binary, and the
# sum of the shards' at the moment it was largest. Used for the memory
# figures in docs/PERFORMANCE.md.
#
#   scripts/peak_rss.sh bazel-bin/launcher/tessera run configs/ctr_scale.yaml
set -euo pipefail
[[ $# -ge 1 ]] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }
"$@" &
cmd=$!
declare -A hwm name
max_servers_now=0
while kill -0 "$cmd" 2>/dev/null; do
  servers_now=0
  for pid in $(pgrep -x 'tessera-server|tessera-worker' || true); do
    status=/proc/$pid/status
    [[ -r $status ]] || continue
    n=$(awk '/^Name:/ {print $2}' "$status" 2>/dev/null || true)
    h=$(awk '/^VmHWM:/ {print $2}' "$status" 2>/dev/null || true)
    r=$(awk '/^VmRSS:/ {print $2}' "$status" 2>/dev/null || true)
    [[ -n $h && -n $r ]] || continue
    hwm[$pid]=$h
    name[$pid]=$n
    [[ $n == tessera-server ]] && servers_now=$((servers_now + r))
  done
  (( servers_now > max_servers_now )) && max_servers_now=$servers_now
  sleep 1
done
wait "$cmd" && rc=0 || rc=$?
echo "peak resident memory (VmHWM, MiB):"
for pid in "${!hwm[@]}"; do
  printf '  %-15s pid %-8s %8.1f\n' "${name[$pid]}" "$pid" "$(echo "${hwm[$pid]} / 1024" | bc -l)"
done | sort
printf '  shards together, largest sample: %.1f MiB\n' "$(echo "$max_servers_now / 1024" | bc -l)"
exit "$rc"
