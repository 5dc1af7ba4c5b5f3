// Host launchers for Tessera's CUDA kernels (kernels.cu). A plain header: any
// C++ translation unit may include it; only kernels.cu is compiled by nvcc.
//
// Every launcher enqueues its kernel on `stream` and returns the launch's
// error (cudaGetLastError); execution errors surface at the stream's next
// synchronization. Pointers are device memory unless named `host`. Matrices
// are row-major and dense, as in worker/backend.h, whose CpuBackend is the
// reference each kernel is tested against (tests/cuda/cuda_backend_test.cc).
//
// Threading: launchers may be called from any thread; calls on one stream
// run in the order they were enqueued.
#ifndef TESSERA_CUDA_KERNELS_H_
#define TESSERA_CUDA_KERNELS_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace tessera {
namespace cuda {

// Shape of an NHWC convolution input, stride 1, square kernel (as
// Backend::ConvShape).
struct ConvDims {
  int64_t batch, height, width, channels, kernel, pad;
};

// x[r, c] += bias[c] for r < rows, then max(x, 0) when `relu` (fused).
cudaError_t BiasActivation(float* x, const float* bias, int64_t rows, int64_t cols, bool relu,
                           cudaStream_t stream);

// db[c] = sum over r < rows of dy[r, c]; deterministic (fixed reduction
// order). With `relu_y` (the output of the ReLU that dy flows back through,
// same shape) dy is first masked in place, dy = relu_y > 0 ? dy : 0: the
// ReLU's backward fused into its layer's bias gradient, one pass over dy.
// Tall inputs are summed in row chunks across the GPU, then the chunks in
// order: `scratch` holds BiasGradScratchFloats(rows, cols) floats.
int64_t BiasGradScratchFloats(int64_t rows, int64_t cols);
cudaError_t BiasGrad(const float* relu_y, float* dy, float* db, int64_t rows, int64_t cols,
                     float* scratch, cudaStream_t stream);

// Per row r of logits (rows x cols), with labels[r] on the device:
//   row_loss[r] = log(sum exp(z - max)) - (z[label] - max)
//   dlogits[r, :] = (softmax(z) - onehot(label)) * scale
//   row_correct[r] = 1 if the first argmax is the label, else 0.
cudaError_t SoftmaxCrossEntropy(const float* logits, const int32_t* labels, int64_t rows,
                                int64_t cols, float scale, float* dlogits, float* row_loss,
                                int32_t* row_correct, cudaStream_t stream);

// cols[(n*OH + y)*OW + x, (r*K + s)*C + c] = x(n, y + r - pad, x + s - pad, c) or 0.
cudaError_t Im2Col(const float* x, const ConvDims& d, float* cols, cudaStream_t stream);

// The adjoint of Im2Col, computed per input element (a gather: no atomics,
// deterministic).
cudaError_t Col2Im(const float* cols, const ConvDims& d, float* dx, cudaStream_t stream);

// 2x2, stride-2 max-pool of NHWC images (height, width even); mask gets 1 at
// each window's first maximum and 0 at its other three elements.
cudaError_t MaxPool2x2(const float* x, const ConvDims& d, float* y, float* mask,
                       cudaStream_t stream);

// dx = mask * dy spread over each 2x2 window.
cudaError_t MaxPool2x2Backward(const float* dy, const float* mask, const ConvDims& d, float* dx,
                               cudaStream_t stream);

// out[i, :] = table[ids[i], :] for i < n; table has `dim` columns.
// REQUIRES: 0 <= ids[i] < table rows.
cudaError_t EmbeddingGather(const float* table, const int64_t* ids, int64_t n, int64_t dim,
                            float* out, cudaStream_t stream);

// dtable[ids[i], :] += dout[i, :] for i < n (atomic adds: repeated ids sum,
// in an unspecified order).
cudaError_t EmbeddingScatterAdd(const float* dout, const int64_t* ids, int64_t n, int64_t dim,
                                float* dtable, cudaStream_t stream);

}  // namespace cuda
}  // namespace tessera

#endif  // TESSERA_CUDA_KERNELS_H_
