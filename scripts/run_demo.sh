#!/usr/bin/env bash
# The main job of README.md: installs what is missing, builds, and trains the
# MLP on Fashion-MNIST through the parameter server (2 shards, 2 workers, BSP),
# printing the test accuracy. Extra arguments go to `tessera run`, e.g.
#   scripts/run_demo.sh --set consistency.mode=ssp --set consistency.staleness=3
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
# --version and tessera_build_info name the commit (only build_info.cc rebuilds).
revision=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
bazel build --per_file_copt="common/build_info.cc@-DTESSERA_REVISION=\"${revision}\"" \
  //launcher:tessera //server:tessera-server //worker:tessera-worker 2>&1 |
  grep -vE '^[0-9]{10}\.[0-9]+: src/main/tools/linux-sandbox' || true
exec bazel-bin/launcher/tessera run configs/fashion_mnist_mlp.yaml "$@"
