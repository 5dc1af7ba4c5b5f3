#!/usr/bin/env bash
# Builds what a GPU check needs and gathers it under .device/ (ignored by git)
# for a machine that has a GPU but no Bazel and no Debian libraries: the GPU
# test, the worker benchmark, the three daemons, the libraries they load
# (except the C runtime and CUDA's own, found on that machine), the data set
# and the configs. Then, there: `bash scripts/gpu_run.sh .device OUTDIR`.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
targets=(//tests:cuda/cuda_backend_test //bench:worker_bench //server:tessera-server
         //worker:tessera-worker //launcher:tessera)
bazel build --repo_env=TESSERA_CUDA=on --dynamic_mode=off "${targets[@]}"
rm -rf .device && mkdir -p .device/bin .device/lib .device/data
cp bazel-bin/tests/cuda/cuda_backend_test bazel-bin/bench/worker_bench \
   bazel-bin/server/tessera-server bazel-bin/worker/tessera-worker bazel-bin/launcher/tessera \
   .device/bin/
chmod u+w .device/bin/*
for bin in .device/bin/*; do
  ldd "$bin" | awk '/=> \// {print $3}'
done | sort -u | grep -v -E '/(libc|libm|libdl|librt|libpthread|libgcc_s|libstdc\+\+|ld-linux[^/]*)\.so|/usr/local/cuda' |
  xargs -r -I{} cp -L {} .device/lib/
cp /usr/share/datasets/fashion-mnist/*.gz .device/data/
du -sh .device
