#!/usr/bin/env bash
# The main job of README.md: installs what is missing, builds, and trains the
# MLP on Fashion-MNIST through the parameter server (2 shards, 2 workers, BSP),
# printing the test accuracy. Extra arguments go to `tessera run`, e.g.
#   scripts/run_demo.sh --set consistency.mode=ssp --set consistency.staleness=3
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
bazel build //launcher:tessera //server:tessera-server //worker:tessera-worker 2>&1 |
  grep -vE '^[0-9]{10}\.[0-9]+: src/main/tools/linux-sandbox' || true
exec bazel-bin/launcher/tessera run configs/fashion_mnist_mlp.yaml "$@"
