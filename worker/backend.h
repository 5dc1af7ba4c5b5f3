// Backend: the compute a model needs, behind one interface, so that model code
// is written once and runs on the CPU (Eigen, CpuBackend) or a GPU (cuBLAS and
// Tessera's kernels, the CUDA backend). Both give the same numbers to float
// tolerance.
//
// Tensors are row-major float matrices in the backend's own memory (host for
// the CPU, device for CUDA): Allocate them once and reuse them every step.
//
// Operations may run asynchronously (CUDA enqueues them on one stream); they
// take effect in call order. CopyOut's host memory is written by the time
// Synchronize() returns. A failure (a CUDA or cuBLAS error) is recorded in
// status(): the first one stays, and every later call does nothing, so a
// caller checks status() once per step rather than after every call.
//
// Threading: a Backend belongs to one worker thread; calls run in order.
#ifndef TESSERA_WORKER_BACKEND_H_
#define TESSERA_WORKER_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace tessera {

struct Tensor {
  float* data = nullptr;  // backend memory; not owned
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t size() const { return rows * cols; }
  // Rows [first, first + n) of this tensor (a view).
  Tensor Rows(int64_t first, int64_t n) const { return {data + first * cols, n, cols}; }
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // OK, or the first error any call met.
  virtual absl::Status status() const { return absl::OkStatus(); }
  // Waits until every call so far has finished and CopyOut's host memory is written.
  virtual void Synchronize() {}

  // A rows x cols tensor owned by the backend, alive as long as the backend.
  virtual Tensor Allocate(int64_t rows, int64_t cols) = 0;
  // Host <-> backend copies. REQUIRES: host.size() == t.size().
  // CopyIn reads `host` before it returns; CopyOut writes it by the next
  // Synchronize() (the CPU backend at once), which lets a model download
  // all its gradients behind one synchronization.
  virtual void CopyIn(absl::Span<const float> host, Tensor t) = 0;
  virtual void CopyOut(Tensor t, absl::Span<float> host) = 0;

  // c = alpha * op(a) * op(b) + beta * c, op = transpose when ta / tb.
  virtual void Gemm(bool ta, bool tb, float alpha, Tensor a, Tensor b, float beta, Tensor c) = 0;
  // x[r, :] += bias[0, :], then ReLU when `relu`.
  virtual void BiasActivation(Tensor x, Tensor bias, bool relu) = 0;
  // db[0, :] = sum over rows of dy.
  virtual void BiasGrad(Tensor dy, Tensor db) = 0;
  // The ReLU's backward fused with its layer's bias gradient: dy *= (y > 0)
  // elementwise (y: the ReLU's output), then db[0, :] = sum over rows of dy.
  virtual void ReluBackwardBiasGrad(Tensor y, Tensor dy, Tensor db) = 0;
  // Convolution and pooling work on images stored NHWC: row n of a tensor
  // holds image n as height x width x channels. A convolution is Im2Col (one
  // row per output pixel, holding its R x S x C input patch) followed by a
  // Gemm with a (R*S*C) x K weight, so the output is NHWC as well.
  struct ConvShape {
    int64_t batch, height, width, channels;  // input
    int64_t kernel;                          // square kernel side
    int64_t pad;                             // zero padding each side; stride 1
    int64_t out_height() const { return height + 2 * pad - kernel + 1; }
    int64_t out_width() const { return width + 2 * pad - kernel + 1; }
    int64_t patch() const { return kernel * kernel * channels; }
  };
  // cols[(n*OH + y)*OW + x, (r*S + s)*C + c] = input pixel (y + r - pad, x + s - pad, c)
  // of image n, or 0 outside. cols: (batch*OH*OW) x patch.
  virtual void Im2Col(Tensor x, const ConvShape& shape, Tensor cols) = 0;
  // The adjoint of Im2Col: dx = sum of every patch entry back onto its pixel.
  virtual void Col2Im(Tensor cols, const ConvShape& shape, Tensor dx) = 0;
  // 2x2 max-pooling with stride 2 over NHWC images of `shape` (height and
  // width even). mask gets 1 at each window's maximum (first on ties), 0 elsewhere.
  virtual void MaxPool2x2(Tensor x, const ConvShape& shape, Tensor y, Tensor mask) = 0;
  // dx = mask * (dy spread back over each window).
  virtual void MaxPool2x2Backward(Tensor dy, Tensor mask, const ConvShape& shape, Tensor dx) = 0;

  // Sparse embeddings: out[i, :] = table[ids[i], :] for i < out.rows, and
  // dtable[ids[i], :] += dout[i, :] (repeated ids add up). ids is a host
  // array of out.rows (dout.rows) entries. REQUIRES: 0 <= ids[i] < table.rows.
  virtual void EmbeddingGather(Tensor table, const int64_t* ids, Tensor out) = 0;
  virtual void EmbeddingScatterAdd(Tensor dout, const int64_t* ids, Tensor dtable) = 0;

  // Softmax cross-entropy of each row against labels (host array of
  // logits.rows): returns the mean loss, writes d(mean loss)/d(logits) into
  // dlogits, adds the number of rows whose argmax is the label to *correct.
  // Synchronizes (the loss is needed on the host).
  virtual float SoftmaxCrossEntropy(Tensor logits, const int32_t* labels, Tensor dlogits,
                                    int64_t* correct) = 0;

  // Where a step's time goes, for benchmarks: device milliseconds in GEMMs,
  // in Tessera's own kernels and in host<->device copies, summed over the
  // calls since timing was switched on or last taken. Backends that cannot
  // attribute time this way (the CPU's) return false.
  struct OpTimes {
    double gemm_ms = 0, kernel_ms = 0, copy_ms = 0;
    int64_t calls = 0;
  };
  virtual void EnableTiming(bool on) {}
  virtual bool TakeOpTimes(OpTimes* times) { return false; }
};

// Eigen on the host.
std::unique_ptr<Backend> MakeCpuBackend();

}  // namespace tessera

#endif  // TESSERA_WORKER_BACKEND_H_
