#!/usr/bin/env bash
# The test command of README.md: installs what is missing, then runs every
# Catch2 test under Bazel, then (one clang build) the tests again under
# ASan + UBSan, with one end-to-end job of sanitized daemons, and each fuzzer
# for 30 s. Exit status: 0 when every stage passed. Tests tagged "gpu" pass
# by skipping where no GPU is usable; the last lines say which.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
status=0
# What failed, in the words of the failing tests' own logs (Catch2's failed
# assertions, sanitizer reports), collected after each stage and printed
# last, where a CI page that shows only the end of the output still has it.
failures=""
collect_failures() {
  local stage=$1 log excerpt
  for log in $(find -L bazel-testlogs/ -name test.log 2>/dev/null | sort); do
    excerpt=$(grep -B10 -A8 -E ': FAILED:$|^==[0-9]+==ERROR|runtime error:|^SUMMARY: ' "$log" | head -60 || true)
    if [ -n "$excerpt" ]; then
      failures+="=== ${stage}: ${log#bazel-testlogs/}"$'\n'"${excerpt}"$'\n'
    fi
  done
}
bazel test //... "$@" || { status=$?; collect_failures "tests"; }
# Which GPU cases skipped, read now: bazel-testlogs follows the last build's
# configuration, and the sanitizer and fuzz stages below run no GPU case.
skipped=""
for log in $(find -L bazel-testlogs/ -name test.log 2>/dev/null | sort); do
  n=$(grep -c '^SKIPPED (no GPU)' "$log" || true)
  if [ "$n" -gt 0 ]; then
    why=$(grep -m1 '^SKIPPED (no GPU)' "$log" | sed 's/^SKIPPED (no GPU): [^:]*: //')
    skipped+="SKIPPED: ${n} GPU test cases in ${log#bazel-testlogs/} (${why})"$'\n'
  fi
done
# The unit and integration tests again under AddressSanitizer (leaks included)
# and UndefinedBehaviorSanitizer, and each libFuzzer target for 30 s: one
# clang build (--config=fuzz) serves both, in an output folder of its own
# (scripts/fuzz.sh fuzzes for hours). The end-to-end runs (real daemons for
# minutes) and the manifest checks are left out: they run the same code the
# other tests cover; so are the fuzz smoke tests, whose targets the fuzzers
# run. Real daemons run sanitized too: e2e_sanitized_test is one 2x2 job in
# each mode whose launcher, servers and workers are this build's; a report
# aborts its daemon, and the test fails on any restart.
bazel test --config=fuzz --build_tests_only --test_tag_filters=-e2e,-deploy,-gpu,-nofuzz \
  //... //tests:e2e/e2e_sanitized_test \
  //fuzz:checkpoint_fuzz_run //fuzz:config_fuzz_run //fuzz:shard_fuzz_run "$@" ||
  { status=$?; collect_failures "ASan + UBSan, fuzzers"; }
printf "%s" "$skipped"
if [ -n "$failures" ]; then printf "\nWhat failed:\n%s" "$failures"; fi
exit "$status"
