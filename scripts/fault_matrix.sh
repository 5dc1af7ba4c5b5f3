#!/usr/bin/env bash
# One fault at a time on the 2x2 MLP job, each next to an uninterrupted run of
# the same mode (not in CI; docs/RELIABILITY.md has its figures):
#   kill -9 of server 0 under BSP, SSP s=3 and ASP; kill -9 of worker 1 under
#   BSP and SSP; SIGSTOP of worker 1 for 10 s under BSP; SIGSTOP of server 1
#   for 10 s under BSP.
# Each fault comes AT seconds into the run (default 4). Prints one line per run:
# exit code, accuracy, wall time, restarts and clocks lost.
#
#   scripts/fault_matrix.sh [OUT] [EPOCHS]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/faults-$(date +%Y%m%d-%H%M%S)}
epochs=${2:-3}
at=${AT:-4}
tessera=${TESSERA:-bazel-bin/launcher/tessera}
[ -x "$tessera" ] || bazel build //launcher:tessera //server:tessera-server //worker:tessera-worker
mkdir -p "$out"

# run NAME MODE [DAEMON SIGNAL]: DAEMON server-N or worker-N, SIGNAL 9 or STOP.
run() {
  local name=$1 mode=$2 target=${3:-} sig=${4:-}
  local dir="$out/$name"
  "$tessera" run configs/fashion_mnist_mlp.yaml --no-live --out "$dir" \
    --set training.epochs="$epochs" --set consistency.mode="$mode" \
    --set consistency.staleness=3 --set checkpoint.every_clocks=100 > "$dir.out" 2>&1 &
  local pid=$! fault_at=""
  if [ -n "$target" ]; then
    sleep "$at"
    local kind=${target%-*} index=${target#*-} flag victim
    flag=$([ "$kind" = server ] && echo "--shard" || echo "--rank")
    victim=$(pgrep -f "[t]essera-$kind .*$dir/checkpoints.* $flag $index( |\$)" | head -1)
    fault_at=$(date +%s.%N)
    if [ "$sig" = STOP ]; then
      kill -STOP "$victim"; sleep 10; kill -CONT "$victim"
    else
      kill -"$sig" "$victim"
    fi
  fi
  wait "$pid"
  local rc=$?
  python3 - "$dir" "$name" "$rc" "${fault_at:-0}" <<'EOF'
import datetime, glob, json, sys
d, name, rc, fault_at = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
line = f"{name:24s} exit {rc}"
try:
    s = json.load(open(d + "/summary.json"))
    line += (f"  accuracy {s['test_accuracy']:.4f}  wall {s['wall_seconds']:5.1f} s  "
             f"restarts {sum(s['restarts'].values())}  lost clocks {s['lost_clocks']}")
except (OSError, ValueError):
    line += "  (no summary)"
# From the fault to every worker reconnected (logs carry local wall-clock time).
if fault_at > 0 and "kill" in name and "server" in name:
    back = []
    for w in sorted(glob.glob(d + "/worker-*.log")):
        for l in open(w, errors="replace"):
            if "reconnected" in l:
                t = datetime.datetime.strptime(l[:23], "%Y-%m-%d %H:%M:%S.%f").timestamp()
                if t >= fault_at:
                    back.append(t - fault_at)
                    break
    if back:
        line += f"  kill to every worker back {max(back):.3f} s"
print(line)
EOF
}

for mode in bsp ssp asp; do
  run "$mode-uninterrupted" "$mode"
  run "$mode-kill-server-0" "$mode" server-0 9
done
run bsp-kill-worker-1 bsp worker-1 9
run ssp-kill-worker-1 ssp worker-1 9
run bsp-pause-worker-1 bsp worker-1 STOP
run bsp-pause-server-1 bsp server-1 STOP
