// Tessera's own CUDA kernels; GEMMs are cuBLAS's (worker/cuda_backend.cc).
// Elementwise kernels use grid-stride loops over 64-bit indices, so any size
// works with a bounded grid; consecutive threads touch consecutive elements.
#include <cfloat>
#include <cstdint>

#include "cuda/kernels.h"

namespace tessera {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 8192;  // grid-stride beyond this

int Blocks(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(b < kMaxBlocks ? b : kMaxBlocks);
}

#define TESSERA_GRID_STRIDE(i, n)                                           \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); \
       i += int64_t(gridDim.x) * blockDim.x)

__global__ void BiasActivationKernel(float* x, const float* bias, int64_t rows, int64_t cols,
                                     bool relu) {
  TESSERA_GRID_STRIDE(i, rows * cols) {
    float v = x[i] + bias[i % cols];
    x[i] = relu ? fmaxf(v, 0.0f) : v;
  }
}

// Bias gradient, pass 1: block (32, 8) sums a 32-column tile over one chunk
// of rows; threadIdx.x walks columns (coalesced), threadIdx.y rows.
constexpr int kTileCols = 32;
constexpr int kTileRows = 8;

// With relu_y, dy is masked by relu_y > 0 on the way (written back only
// where it becomes 0).
__global__ void ColumnSumKernel(const float* relu_y, float* dy, int64_t rows, int64_t cols,
                                int64_t rows_per_chunk, float* partial) {
  __shared__ float sums[kTileRows][kTileCols + 1];
  const int64_t c = blockIdx.x * int64_t(kTileCols) + threadIdx.x;
  const int64_t first = blockIdx.y * rows_per_chunk;
  const int64_t last = min(rows, first + rows_per_chunk);
  float acc = 0.0f;
  if (c < cols) {
    for (int64_t r = first + threadIdx.y; r < last; r += kTileRows) {
      const int64_t at = r * cols + c;
      float v = dy[at];
      if (relu_y != nullptr && !(relu_y[at] > 0.0f)) {
        v = 0.0f;
        dy[at] = 0.0f;
      }
      acc += v;
    }
  }
  sums[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    float total = 0.0f;
    for (int k = 0; k < kTileRows; ++k) total += sums[k][threadIdx.x];
    partial[blockIdx.y * cols + c] = total;
  }
}

// Pass 2: db[c] = sum over chunks of partial[chunk, c], in chunk order.
__global__ void ChunkSumKernel(const float* partial, int64_t chunks, int64_t cols, float* db) {
  TESSERA_GRID_STRIDE(c, cols) {
    float total = 0.0f;
    for (int64_t k = 0; k < chunks; ++k) total += partial[k * cols + c];
    db[c] = total;
  }
}

// One warp per row.
__global__ void SoftmaxCrossEntropyKernel(const float* logits, const int32_t* labels, int64_t rows,
                                          int64_t cols, float scale, float* dlogits,
                                          float* row_loss, int32_t* row_correct) {
  const int lane = threadIdx.x % 32;
  const int64_t row = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  if (row >= rows) return;  // whole warps leave together
  const float* z = logits + row * cols;
  float* d = dlogits + row * cols;
  // Max and its first index: lanes scan strided columns in increasing order,
  // then the warp keeps the larger value, or the smaller index on a tie.
  float best = -FLT_MAX;
  int64_t best_at = cols;
  for (int64_t c = lane; c < cols; c += 32) {
    if (z[c] > best || best_at == cols) {
      best = z[c];
      best_at = c;
    }
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    float other = __shfl_down_sync(0xffffffffu, best, offset);
    int64_t other_at = __shfl_down_sync(0xffffffffu, best_at, offset);
    if (other > best || (other == best && other_at < best_at)) {
      best = other;
      best_at = other_at;
    }
  }
  best = __shfl_sync(0xffffffffu, best, 0);
  best_at = __shfl_sync(0xffffffffu, best_at, 0);
  float sum = 0.0f;
  for (int64_t c = lane; c < cols; c += 32) {
    float e = __expf(z[c] - best);
    d[c] = e;
    sum += e;
  }
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
  sum = __shfl_sync(0xffffffffu, sum, 0);
  const int32_t label = labels[row];
  const float norm = scale / sum;
  __syncwarp();
  for (int64_t c = lane; c < cols; c += 32) d[c] = d[c] * norm - (c == label ? scale : 0.0f);
  if (lane == 0) {
    row_loss[row] = logf(sum) - (z[label] - best);
    row_correct[row] = best_at == label ? 1 : 0;
  }
}

__global__ void Im2ColKernel(const float* x, ConvDims d, int64_t oh, int64_t ow, float* cols) {
  const int64_t patch = d.kernel * d.kernel * d.channels;
  TESSERA_GRID_STRIDE(i, d.batch * oh * ow * patch) {
    const int64_t entry = i % patch, row = i / patch;
    const int64_t ch = entry % d.channels, rs = entry / d.channels;
    const int64_t s = rs % d.kernel, r = rs / d.kernel;
    const int64_t xo = row % ow, rest = row / ow;
    const int64_t yo = rest % oh, n = rest / oh;
    const int64_t iy = yo + r - d.pad, ix = xo + s - d.pad;
    cols[i] = (iy < 0 || iy >= d.height || ix < 0 || ix >= d.width)
                  ? 0.0f
                  : x[((n * d.height + iy) * d.width + ix) * d.channels + ch];
  }
}

__global__ void Col2ImKernel(const float* cols, ConvDims d, int64_t oh, int64_t ow, float* dx) {
  const int64_t patch = d.kernel * d.kernel * d.channels;
  TESSERA_GRID_STRIDE(i, d.batch * d.height * d.width * d.channels) {
    const int64_t ch = i % d.channels, pixel = i / d.channels;
    const int64_t ix = pixel % d.width, rest = pixel / d.width;
    const int64_t iy = rest % d.height, n = rest / d.height;
    float acc = 0.0f;
    for (int64_t r = 0; r < d.kernel; ++r) {
      const int64_t yo = iy - r + d.pad;
      if (yo < 0 || yo >= oh) continue;
      for (int64_t s = 0; s < d.kernel; ++s) {
        const int64_t xo = ix - s + d.pad;
        if (xo < 0 || xo >= ow) continue;
        acc += cols[((n * oh + yo) * ow + xo) * patch + (r * d.kernel + s) * d.channels + ch];
      }
    }
    dx[i] = acc;
  }
}

// One thread per output element; it owns its window's four mask entries.
__global__ void MaxPoolKernel(const float* x, ConvDims d, float* y, float* mask) {
  const int64_t h2 = d.height / 2, w2 = d.width / 2, c = d.channels;
  TESSERA_GRID_STRIDE(i, d.batch * h2 * w2 * c) {
    const int64_t ch = i % c, pixel = i / c;
    const int64_t px = pixel % w2, rest = pixel / w2;
    const int64_t py = rest % h2, n = rest / h2;
    int64_t at[4];
    for (int k = 0; k < 4; ++k) {
      at[k] = ((n * d.height + 2 * py + k / 2) * d.width + 2 * px + k % 2) * c + ch;
    }
    int best = 0;
    for (int k = 1; k < 4; ++k) {
      if (x[at[k]] > x[at[best]]) best = k;
    }
    y[i] = x[at[best]];
    for (int k = 0; k < 4; ++k) mask[at[k]] = k == best ? 1.0f : 0.0f;
  }
}

__global__ void MaxPoolBackwardKernel(const float* dy, const float* mask, ConvDims d, float* dx) {
  const int64_t w2 = d.width / 2, c = d.channels;
  TESSERA_GRID_STRIDE(i, d.batch * d.height * d.width * c) {
    const int64_t ch = i % c, pixel = i / c;
    const int64_t ix = pixel % d.width, rest = pixel / d.width;
    const int64_t iy = rest % d.height, n = rest / d.height;
    const int64_t h2 = d.height / 2;
    dx[i] = mask[i] * dy[((n * h2 + iy / 2) * w2 + ix / 2) * c + ch];
  }
}

__global__ void GatherKernel(const float* table, const int64_t* ids, int64_t n, int64_t dim,
                             float* out) {
  TESSERA_GRID_STRIDE(i, n * dim) { out[i] = table[ids[i / dim] * dim + i % dim]; }
}

__global__ void ScatterAddKernel(const float* dout, const int64_t* ids, int64_t n, int64_t dim,
                                 float* dtable) {
  TESSERA_GRID_STRIDE(i, n * dim) { atomicAdd(&dtable[ids[i / dim] * dim + i % dim], dout[i]); }
}

// Row chunks of a bias gradient: one per 256 rows, at most 256 (a grid of
// 256 x column tiles fills an H100's 132 SMs).
int64_t BiasGradChunks(int64_t rows) {
  constexpr int64_t kMinRowsPerChunk = 256, kMaxChunks = 256;
  int64_t chunks = (rows + kMinRowsPerChunk - 1) / kMinRowsPerChunk;
  return chunks < 1 ? 1 : (chunks > kMaxChunks ? kMaxChunks : chunks);
}

}  // namespace

cudaError_t BiasActivation(float* x, const float* bias, int64_t rows, int64_t cols, bool relu,
                           cudaStream_t stream) {
  if (rows * cols == 0) return cudaSuccess;
  BiasActivationKernel<<<Blocks(rows * cols), kThreads, 0, stream>>>(x, bias, rows, cols, relu);
  return cudaGetLastError();
}

int64_t BiasGradScratchFloats(int64_t rows, int64_t cols) { return BiasGradChunks(rows) * cols; }

cudaError_t BiasGrad(const float* relu_y, float* dy, float* db, int64_t rows, int64_t cols,
                     float* scratch, cudaStream_t stream) {
  if (cols == 0) return cudaSuccess;
  const int64_t chunks = BiasGradChunks(rows);
  const int64_t rows_per_chunk = (rows + chunks - 1) / chunks;
  float* partial = chunks == 1 ? db : scratch;
  dim3 grid(static_cast<unsigned>((cols + kTileCols - 1) / kTileCols),
            static_cast<unsigned>(chunks));
  ColumnSumKernel<<<grid, dim3(kTileCols, kTileRows), 0, stream>>>(relu_y, dy, rows, cols,
                                                                   rows_per_chunk, partial);
  if (chunks > 1) ChunkSumKernel<<<Blocks(cols), kThreads, 0, stream>>>(scratch, chunks, cols, db);
  return cudaGetLastError();
}

cudaError_t SoftmaxCrossEntropy(const float* logits, const int32_t* labels, int64_t rows,
                                int64_t cols, float scale, float* dlogits, float* row_loss,
                                int32_t* row_correct, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  constexpr int kRowsPerBlock = kThreads / 32;
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  SoftmaxCrossEntropyKernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      logits, labels, rows, cols, scale, dlogits, row_loss, row_correct);
  return cudaGetLastError();
}

namespace {
int64_t OutHeight(const ConvDims& d) { return d.height + 2 * d.pad - d.kernel + 1; }
int64_t OutWidth(const ConvDims& d) { return d.width + 2 * d.pad - d.kernel + 1; }
}  // namespace

cudaError_t Im2Col(const float* x, const ConvDims& d, float* cols, cudaStream_t stream) {
  const int64_t oh = OutHeight(d), ow = OutWidth(d);
  const int64_t n = d.batch * oh * ow * d.kernel * d.kernel * d.channels;
  if (n == 0) return cudaSuccess;
  Im2ColKernel<<<Blocks(n), kThreads, 0, stream>>>(x, d, oh, ow, cols);
  return cudaGetLastError();
}

cudaError_t Col2Im(const float* cols, const ConvDims& d, float* dx, cudaStream_t stream) {
  const int64_t n = d.batch * d.height * d.width * d.channels;
  if (n == 0) return cudaSuccess;
  Col2ImKernel<<<Blocks(n), kThreads, 0, stream>>>(cols, d, OutHeight(d), OutWidth(d), dx);
  return cudaGetLastError();
}

cudaError_t MaxPool2x2(const float* x, const ConvDims& d, float* y, float* mask,
                       cudaStream_t stream) {
  const int64_t n = d.batch * (d.height / 2) * (d.width / 2) * d.channels;
  if (n == 0) return cudaSuccess;
  MaxPoolKernel<<<Blocks(n), kThreads, 0, stream>>>(x, d, y, mask);
  return cudaGetLastError();
}

cudaError_t MaxPool2x2Backward(const float* dy, const float* mask, const ConvDims& d, float* dx,
                               cudaStream_t stream) {
  const int64_t n = d.batch * d.height * d.width * d.channels;
  if (n == 0) return cudaSuccess;
  MaxPoolBackwardKernel<<<Blocks(n), kThreads, 0, stream>>>(dy, mask, d, dx);
  return cudaGetLastError();
}

cudaError_t EmbeddingGather(const float* table, const int64_t* ids, int64_t n, int64_t dim,
                            float* out, cudaStream_t stream) {
  if (n * dim == 0) return cudaSuccess;
  GatherKernel<<<Blocks(n * dim), kThreads, 0, stream>>>(table, ids, n, dim, out);
  return cudaGetLastError();
}

cudaError_t EmbeddingScatterAdd(const float* dout, const int64_t* ids, int64_t n, int64_t dim,
                                float* dtable, cudaStream_t stream) {
  if (n * dim == 0) return cudaSuccess;
  ScatterAddKernel<<<Blocks(n * dim), kThreads, 0, stream>>>(dout, ids, n, dim, dtable);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace tessera
