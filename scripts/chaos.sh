#!/usr/bin/env bash
# Chaos runs of the 2x2 MLP job (not in CI): each run gets KILLS kill -9 of
# random daemons (servers or workers) at random moments, seeded and printed,
# and must still finish. Reports completed / hung / failed and each run's
# test accuracy against the median of uninterrupted runs.
#
#   scripts/chaos.sh RUNS [SEED]
#
# Environment: CONFIG (default configs/fashion_mnist_mlp.yaml), EPOCHS
# (default: the config's), KILLS (3), BASELINES (uninterrupted runs, 3),
# SETS (extra --set arguments, e.g. "consistency.mode=ssp consistency.staleness=3"),
# REPLICAS (1: `tessera run --replicas 1`, a standby per shard and failover;
# the standbys are among the daemons killed),
# OUT (default runs/chaos-<time>), TESSERA (the launcher; default
# bazel-bin/launcher/tessera, built when missing: copy bazel-bin's launcher/,
# server/ and worker/ binaries elsewhere to keep a rebuild from swapping them
# mid-run). A run still going after 5x the uninterrupted time is hung.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:?usage: scripts/chaos.sh RUNS [SEED]}
seed=${2:-1}
config=${CONFIG:-configs/fashion_mnist_mlp.yaml}
kills=${KILLS:-3}
baselines=${BASELINES:-3}
out=${OUT:-runs/chaos-$(date +%Y%m%d-%H%M%S)}
tessera=${TESSERA:-bazel-bin/launcher/tessera}
[ -x "$tessera" ] || bazel build //launcher:tessera //server:tessera-server //worker:tessera-worker
mkdir -p "$out"

sets=(--set checkpoint.every_clocks=100)
[ -n "${EPOCHS:-}" ] && sets+=(--set "training.epochs=$EPOCHS")
for s in ${SETS:-}; do sets+=(--set "$s"); done

calc() { awk "BEGIN { print $* }"; }
accuracy() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["test_accuracy"])' "$1"; }

# Uninterrupted runs: the accuracy to match and how long a run takes.
walls=()
accs=()
for b in $(seq 1 "$baselines"); do
  dir="$out/baseline-$b"
  start=$(date +%s.%N)
  "$tessera" run "$config" "${sets[@]}" --out "$dir" --no-live > "$dir.out" 2>&1 || {
    echo "chaos: uninterrupted run $b failed; see $dir.out"; exit 1; }
  walls+=("$(calc "$(date +%s.%N) - $start")")
  accs+=("$(accuracy "$dir/summary.json")")
  echo "baseline $b: accuracy ${accs[-1]}, ${walls[-1]} s"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
base_acc=$(median "${accs[@]}")
base_wall=$(median "${walls[@]}")
hang_after=$(calc "int($base_wall * 5 + 30)")
echo "uninterrupted median: accuracy $base_acc, $base_wall s; a run is hung after $hang_after s"
# Kills fall between 1 s and 90% of the uninterrupted time: a job that short
# is killed only as it starts (raise EPOCHS).
if [ "$(calc "int(($base_wall * 0.9 - 1) * 1000)")" -lt 1000 ]; then
  echo "chaos: warning: the kills all fall within the first second of training (the job runs" \
       "$base_wall s); set EPOCHS so that it runs 3 s or more"
fi

daemons=(server-0 server-1 worker-0 worker-1)
run_flags=()
if [ "${REPLICAS:-0}" = 1 ]; then
  run_flags=(--replicas 1)
  daemons+=(standby-0 standby-1)
fi
completed=0; hung=0; failed=0; within=0
results=()
for r in $(seq 1 "$runs"); do
  run_seed=$((seed * 100003 + r))
  RANDOM=$run_seed
  dir="$out/run-$r"
  "$tessera" run "$config" "${sets[@]}" "${run_flags[@]}" --max-restarts 10 --out "$dir" --no-live > "$dir.out" 2>&1 &
  pid=$!
  # KILLS moments in (1 s, 90% of the uninterrupted time), in order.
  span_ms=$(calc "int(($base_wall * 0.9 - 1) * 1000)")
  [ "$span_ms" -gt 1 ] || span_ms=1
  moments=$(for k in $(seq 1 "$kills"); do echo $((1000 + (RANDOM * 32768 + RANDOM) % span_ms)); done | sort -n)
  plan=""
  t0=$(date +%s%N)
  for at in $moments; do
    victim=${daemons[$((RANDOM % ${#daemons[@]}))]}
    now_ms=$((($(date +%s%N) - t0) / 1000000))
    [ "$at" -gt "$now_ms" ] && sleep "$(calc "($at - $now_ms) / 1000")"
    kind=${victim%-*}; index=${victim#*-}
    case $kind in
      server) pattern="[t]essera-server .*$dir/checkpoints.* --shard $index( --set [^ ]*)?\$" ;;
      standby) pattern="[t]essera-server .*$dir/checkpoints.* --shard $index --standby" ;;
      *) pattern="[t]essera-worker .*$dir/checkpoints.* --rank $index( |\$)" ;;
    esac
    target=$(pgrep -f "$pattern" | head -1)
    if [ -n "$target" ]; then kill -9 "$target" 2>/dev/null; plan+=" $victim@${at}ms"; else plan+=" ($victim@${at}ms: not running)"; fi
  done
  # Wait, bounded.
  status=hung
  for _ in $(seq 1 $((hang_after * 10))); do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid"; rc=$?
      status=$([ "$rc" -eq 0 ] && echo completed || echo "failed(rc=$rc)")
      break
    fi
    sleep 0.1
  done
  if [ "$status" = hung ]; then kill -INT "$pid"; sleep 12; kill -9 "$pid" 2>/dev/null; hung=$((hung + 1))
  elif [ "$status" = completed ]; then completed=$((completed + 1))
  else failed=$((failed + 1)); fi
  acc="-"
  if [ "$status" = completed ]; then
    acc=$(accuracy "$dir/summary.json")
    ok=$(calc "($acc - $base_acc <= 0.01 && $base_acc - $acc <= 0.01) ? 1 : 0")
    [ "$ok" = 1 ] && within=$((within + 1))
    lost=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["lost_clocks"], sum(s["restarts"].values()))' "$dir/summary.json")
    acc="$acc (lost clocks, restarts: $lost)"
  fi
  echo "run $r seed $run_seed: kills$plan -> $status, accuracy $acc"
  results+=("$acc")
done
echo "chaos: $runs runs, $kills kills each: $completed completed, $hung hung, $failed failed;" \
     "$within of $completed within 1 pt of the uninterrupted median $base_acc"
[ "$completed" -eq "$runs" ] && [ "$within" -eq "$completed" ]
