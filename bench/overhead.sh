#!/usr/bin/env bash
# PS overhead (issue 3): the MLP trained by 1 server + 1 worker against the
# same model, batch and epochs trained in one process with the shards
# in-process (`tessera-worker --standalone`), alternating the two per round
# so that both see the same machine.
#   bench/overhead.sh [BIN_DIR] [ROUNDS] [--set key=value ...]
# BIN_DIR holds tessera and tessera-worker (default bazel-bin/{launcher,worker});
# extra --set arguments go to both runs (e.g. --set worker.device=cuda).
# OVERHEAD_MODES picks the modes (default "bsp:0 ssp:1 asp:0", mode:staleness).
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${1:-}
rounds=${2:-2}
shift $(( $# >= 2 ? 2 : $# ))
extra=("$@")
if [ -n "$bin" ]; then
  launcher=$bin/tessera worker=$bin/tessera-worker
else
  launcher=bazel-bin/launcher/tessera worker=bazel-bin/worker/tessera-worker
fi
cfg=configs/fashion_mnist_mlp.yaml
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rate() { grep -o '"samples_per_second": *[0-9.]*' "$1" | awk -F: '{print $2 + 0}'; }
for round in $(seq "$rounds"); do
  for mode in ${OVERHEAD_MODES:-bsp:0 ssp:1 asp:0}; do
    set -- ${mode/:/ }
    sets=(--set training.epochs=2 --set consistency.mode=$1 --set consistency.staleness=$2
          "${extra[@]}")
    "$worker" --config $cfg --standalone "${sets[@]}" --result "$tmp/sa.json" > "$tmp/sa.log" 2>&1 ||
      { echo "standalone run failed:"; tail -3 "$tmp/sa.log"; exit 1; }
    rm -rf "$tmp/ps"
    "$launcher" run $cfg "${sets[@]}" --set 'cluster.servers=[127.0.0.1:1]' --set cluster.workers=1 \
      --out "$tmp/ps" --no-live > "$tmp/ps.log" 2>&1 ||
      { echo "PS run failed:"; tail -3 "$tmp/ps.log"; exit 1; }
    sa=$(rate "$tmp/sa.json") ps=$(rate "$tmp/ps/summary.json")
    echo "round $round $1 s=$2: standalone $sa samples/s, 1 server + 1 worker $ps samples/s," \
      "ratio $(awk -v a="$ps" -v b="$sa" 'BEGIN {printf "%.1f%%", 100 * a / b}')"
  done
done
