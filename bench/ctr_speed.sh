#!/usr/bin/env bash
# The ctr speed comparison of docs/PERFORMANCE.md ("Speed, again"): the same
# model and data (configs/ctr_synthetic.yaml, 400,000 examples, 1 epoch,
# constant lr) through 1 shard + 1 worker (checkpoints as `tessera run` makes
# them, then none) against one process (`tessera-worker --standalone`),
# alternating, ROUNDS times. Prints samples/s and the PS/one-process ratio
# per round. Run from the repository root after `bazel build //...`.
#
#   bench/ctr_speed.sh [ROUNDS] [OUT]
set -euo pipefail
rounds=${1:-3}
out=${2:-$(mktemp -d /tmp/ctr-speed.XXXXXX)}
mkdir -p "$out"
bin=bazel-bin
common=(--set data.synthetic_train=400000 --set training.epochs=1
        --set optimizer.lr_schedule=constant --set data.synthetic_test=20000
        --set 'cluster.servers=[127.0.0.1:50061]')
for i in $(seq 1 "$rounds"); do
  "$bin/launcher/tessera" run configs/ctr_synthetic.yaml --no-live --out "$out/ps$i" \
    --set cluster.workers=1 "${common[@]}" > "$out/ps$i.log" 2>&1
  "$bin/worker/tessera-worker" --config configs/ctr_synthetic.yaml --standalone \
    "${common[@]}" --result "$out/one$i.json" > "$out/one$i.log" 2>&1
  "$bin/launcher/tessera" run configs/ctr_synthetic.yaml --no-live --out "$out/pn$i" \
    --set cluster.workers=1 --set checkpoint.disabled=true "${common[@]}" > "$out/pn$i.log" 2>&1
  python3 - "$out" "$i" <<'PY'
import json, sys
out, i = sys.argv[1], sys.argv[2]
ps = json.load(open(f"{out}/ps{i}/summary.json"))["samples_per_second"]
pn = json.load(open(f"{out}/pn{i}/summary.json"))["samples_per_second"]
one = json.load(open(f"{out}/one{i}.json"))["samples_per_second"]
print(f"round {i}: PS {ps:,.0f} | one process {one:,.0f} | PS without checkpoints {pn:,.0f}"
      f" | ratio {ps / one:.1%} ({pn / one:.1%} without checkpoints)", flush=True)
PY
done
echo "runs in $out"
