#!/usr/bin/env bash
# Runs on a GPU machine over a bundle made by scripts/gpu_bundle.sh:
#   bash scripts/gpu_run.sh BUNDLE OUTDIR
# the GPU tests, the worker benchmark (MLP and CNN, CPU and CUDA, batch 256)
# and the CNN trained through the PS on the GPU; everything goes to OUTDIR.
set -uo pipefail
bundle=$(cd "$1" && pwd)
out=$2
mkdir -p "$out"
export LD_LIBRARY_PATH="$bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
# cuBLAS and the CUDA runtime come from that machine: where they are not under
# /usr/local/cuda (e.g. only in Python wheels), find them.
for lib in libcublas.so.13 libcudart.so.13; do
  if ! ldconfig -p | grep -q "$lib" && [ ! -e /usr/local/cuda/lib64/$lib ]; then
    found=$(find / -name "$lib" -not -path '*/proc/*' 2>/dev/null | head -1)
    [ -n "$found" ] && export LD_LIBRARY_PATH="$(dirname "$found"):$LD_LIBRARY_PATH"
  fi
done
data="--set data.dir=$bundle/data"
bin=$bundle/bin
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  ldd "$bin/tessera-worker" | grep -E 'cublas|cudart|not found'
} > "$out/device.txt" 2>&1
TESSERA_REQUIRE_GPU=1 timeout 180 "$bin/cuda_backend_test" -s -r compact > "$out/gpu_tests.txt" 2>&1
echo "gpu tests exit $?" >> "$out/gpu_tests.txt"
for model in mlp cnn; do
  for device in cpu cuda; do
    steps=200
    [ "$model$device" = cnncpu ] && steps=5
    timeout 120 "$bin/worker_bench" --config configs/fashion_mnist_$model.yaml --set worker.device=$device \
      $data --batch 256 --steps $steps >> "$out/worker_bench.txt" 2>&1
  done
done
timeout 120 "$bin/worker_bench" --config configs/fashion_mnist_mlp.yaml --set worker.device=cuda $data \
  --set worker.gemm_precision=tf32 --batch 256 --steps 200 >> "$out/worker_bench.txt" 2>&1
timeout -s INT "${CNN_RUN_LIMIT_S:-300}" "$bin/tessera" run configs/fashion_mnist_cnn.yaml --set worker.device=cuda $data \
  --out "$out/cnn" --no-live > "$out/cnn_run.txt" 2>&1
echo "cnn run exit $?" >> "$out/cnn_run.txt"
# The reply shows only the end of the output: a short summary last.
echo "== device"; cat "$out/device.txt"
echo "== gpu tests"; grep -E 'SKIPPED|FAILED|failed|passed|error|exit' "$out/gpu_tests.txt" | tail -30
echo "== worker_bench"; grep -v '^\[' "$out/worker_bench.txt" | tail -40
echo "== cnn run"; tail -8 "$out/cnn_run.txt"
