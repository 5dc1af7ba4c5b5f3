#!/usr/bin/env bash
# What a standby per shard costs a job (#29's cost target): the 2x2 MLP job
# under BSP with and without cluster.standbys, alternating the two per round
# so that both see the same machine. The standbys are tessera-server
# --standby daemons on this host, started before each replicated run and
# stopped after it; the job's token is shared with them.
#   bench/replication.sh [BIN_DIR] [ROUNDS] [--set key=value ...]
# BIN_DIR holds tessera and tessera-server (default bazel-bin/{launcher,server});
# extra --set arguments go to every run (e.g. --set training.epochs=2).
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${1:-}
rounds=${2:-3}
shift $(( $# >= 2 ? 2 : $# ))
extra=("$@")
if [ -n "$bin" ]; then
  launcher=$bin/tessera server=$bin/tessera-server
else
  launcher=bazel-bin/launcher/tessera server=bazel-bin/server/tessera-server
fi
cfg=configs/fashion_mnist_mlp.yaml
tmp=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$tmp"' EXIT
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$tmp/token"
chmod 600 "$tmp/token"
sets=(--set training.epochs=1 --set consistency.mode=bsp --set security.token_file="$tmp/token"
      "${extra[@]}")
rate() { grep -o '"samples_per_second": [0-9.]*' "$1" | awk '{print $2}'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for round in $(seq "$rounds"); do
  rm -rf "$tmp/plain"
  "$launcher" run $cfg "${sets[@]}" --out "$tmp/plain" --no-live > "$tmp/plain.log" 2>&1 ||
    { echo "run without standbys failed:"; tail -3 "$tmp/plain.log"; exit 1; }
  p0=$(free_port) p1=$(free_port)
  standbys="[127.0.0.1:$p0,127.0.0.1:$p1]"
  pids=()
  for s in 0 1; do
    "$server" --config $cfg "${sets[@]}" --set "cluster.standbys=$standbys" \
      --shard $s --standby > "$tmp/standby-$s.log" 2>&1 &
    pids+=($!)
  done
  rm -rf "$tmp/replicated"
  "$launcher" run $cfg "${sets[@]}" --set "cluster.standbys=$standbys" --out "$tmp/replicated" \
    --no-live > "$tmp/replicated.log" 2>&1 ||
    { echo "run with standbys failed:"; tail -3 "$tmp/replicated.log"; exit 1; }
  kill "${pids[@]}" 2>/dev/null
  wait "${pids[@]}" 2>/dev/null
  if grep -q "without its standby" "$tmp"/replicated/server-*.log; then
    echo "a primary lost its standby:"; grep -h "without its standby" "$tmp"/replicated/server-*.log
    exit 1
  fi
  a=$(rate "$tmp/plain/summary.json") b=$(rate "$tmp/replicated/summary.json")
  awk -v r="$round" -v a="$a" -v b="$b" 'BEGIN {
    printf "round %d: replicas 0 %.0f samples/s, replicas 1 %.0f samples/s, ratio %.1f%%\n",
           r, a, b, 100 * b / a }'
  sent=$(grep -ho "sends every change to its standby" "$tmp"/replicated/server-*.log | wc -l)
  [ "$sent" -eq 2 ] || { echo "the primaries did not both replicate"; exit 1; }
done
