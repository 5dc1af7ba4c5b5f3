#!/usr/bin/env bash
# The test command of README.md: installs what is missing, then runs every
# Catch2 test under Bazel. Exit status is Bazel's. Tests tagged "gpu" pass by
# skipping where no GPU is usable; the lines after Bazel's summary say which.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
status=0
bazel test //... "$@" || status=$?
for log in $(find -L bazel-testlogs/ -name test.log 2>/dev/null | sort); do
  n=$(grep -c '^SKIPPED (no GPU)' "$log" || true)
  if [ "$n" -gt 0 ]; then
    why=$(grep -m1 '^SKIPPED (no GPU)' "$log" | sed 's/^SKIPPED (no GPU): [^:]*: //')
    echo "SKIPPED: ${n} GPU test cases in ${log} (${why})"
  fi
done
exit "$status"
