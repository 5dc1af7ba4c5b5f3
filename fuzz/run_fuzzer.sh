#!/usr/bin/env bash
# Runs one libFuzzer binary for SECONDS on a fresh corpus seeded from SEEDS
# (the inputs its smoke test writes: fuzz/seeds/NAME); fails on any crash,
# leak, sanitizer report or timeout (a single input over 10 s). Prints
# libFuzzer's final stats line (executions, coverage) for the log.
set -uo pipefail
bin=$1
seconds=$2
seeds=${3:-}
corpus=${TEST_TMPDIR:-/tmp}/corpus-$(basename "$bin")
mkdir -p "$corpus"
if [ -n "$seeds" ]; then cp "$seeds"/* "$corpus"/; fi
"$bin" "$corpus" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
  -print_final_stats=1 2>&1 | tail -40
status=${PIPESTATUS[0]}
echo "fuzzer exit status: $status"
exit "$status"
