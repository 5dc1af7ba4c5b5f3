#!/usr/bin/env bash
# The test command of README.md: installs what is missing, then runs every
# Catch2 test under Bazel. Exit status is Bazel's.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
exec bazel test //... "$@"
