#!/usr/bin/env bash
# Runs every libFuzzer target (fuzz/BUILD.bazel) for SECONDS each (default
# 3600), one after another, under ASan + UBSan, keeping each corpus in
# fuzz/corpus/NAME between runs. A crash leaves crash-* in fuzz/ and fails.
# Add the input to fuzz/regressions/ once fixed, so the smoke test keeps it.
#   scripts/fuzz.sh 600        # ten minutes each
#   JOBS=2 scripts/fuzz.sh     # two fuzzing processes per target
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-3600}
# At -O1 (the test command's clang build is -O0, for compile time): more
# inputs a second.
bazel build --config=fuzz --copt=-O1 //fuzz:checkpoint_fuzz_fuzzer //fuzz:config_fuzz_fuzzer //fuzz:shard_fuzz_fuzzer
status=0
for name in checkpoint_fuzz config_fuzz shard_fuzz; do
  corpus=fuzz/corpus/$name
  mkdir -p "$corpus"
  cp -n "fuzz/seeds/${name%_fuzz}"/* "$corpus"/  # the smoke tests' real inputs
  echo "fuzz.sh: $name for $seconds s (corpus $corpus)"
  (cd fuzz && "../bazel-out/k8-optfuzz/bin/fuzz/${name}_fuzzer" "../$corpus" \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
      -jobs="${JOBS:-1}" -workers="${JOBS:-1}" 2>&1 | grep -E '^(stat::|Done|#[0-9]+ *DONE)|ERROR|SUMMARY' ) ||
    status=1
done
exit "$status"
