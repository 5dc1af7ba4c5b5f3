#!/usr/bin/env bash
# CPU seconds of each daemon of the 2x2 MLP job (1 epoch, loopback), with a
# standby per shard or without (docs/PERFORMANCE.md "Replication"): each
# process's utime+stime from /proc, sampled every 0.2 s until it exits.
#   bench/replication_cpu.sh MODE [plain]     MODE: bsp | ssp | asp
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: bench/replication_cpu.sh MODE [plain]}
cfg=configs/fashion_mnist_mlp.yaml
tmp=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$tmp"' EXIT
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$tmp/token"
chmod 600 "$tmp/token"
sets=(--set training.epochs=1 --set consistency.mode="$mode" --set security.token_file="$tmp/token")
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
standby_sets=()
if [ "${2:-}" != plain ]; then
  standbys="[127.0.0.1:$(free_port),127.0.0.1:$(free_port)]"
  standby_sets=(--set "cluster.standbys=$standbys")
  for s in 0 1; do
    bazel-bin/server/tessera-server --config $cfg "${sets[@]}" "${standby_sets[@]}" \
      --shard $s --standby > "$tmp/standby-$s.log" 2>&1 &
    pids+=($!)
  done
fi
bazel-bin/launcher/tessera run $cfg "${sets[@]}" "${standby_sets[@]}" --out "$tmp/run" \
  --no-live > "$tmp/run.log" 2>&1 &
launcher=$!
declare -A cpu
while kill -0 $launcher 2>/dev/null; do
  for p in $(pgrep -f "tessera-(server|worker)"); do
    c=$(awk '{print $14+$15}' /proc/$p/stat 2>/dev/null) || continue
    name=$(tr '\0' ' ' < /proc/$p/cmdline | grep -o -- "--shard [0-9]\|--rank [0-9]\|--standby" | tr '\n' ' ')
    cpu["$p $name"]=$c
  done
  sleep 0.2
done
for k in "${!cpu[@]}"; do
  echo "$k: $(awk -v t="${cpu[$k]}" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t / hz}') s"
done | sort -k2
grep -o '"samples_per_second": [0-9.]*\|"wall_seconds": [0-9.]*' "$tmp/run/summary.json"
