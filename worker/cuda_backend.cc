// CudaBackend: Backend on one GPU (see cuda_backend.h). Every call enqueues
// work on stream_ and returns; the host waits only in Synchronize() (also
// reached from SoftmaxCrossEntropy, which returns the loss, and when the
// pinned staging buffer must grow).
#include "worker/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cuda/kernels.h"
#include "cuda/status.h"

namespace tessera {
namespace {

constexpr size_t kAlign = 256;
constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;

size_t RoundUp(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

cuda::ConvDims Dims(const Backend::ConvShape& s) {
  return {s.batch, s.height, s.width, s.channels, s.kernel, s.pad};
}

cublasComputeType_t ComputeType(GemmPrecision precision) {
  if (precision == GemmPrecision::kTf32) return CUBLAS_COMPUTE_32F_FAST_TF32;
  if (precision == GemmPrecision::kBf16) return CUBLAS_COMPUTE_32F_FAST_16BF;
  return CUBLAS_COMPUTE_32F;
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const CudaOptions& options)
      : options_(options), compute_(ComputeType(options.gemm_precision)) {}

  ~CudaBackend() override {
    // Errors are ignored here: the context may already be broken.
    if (stream_) cudaStreamSynchronize(stream_);
    for (float* p : device_buffers_) cudaFree(p);
    for (void* p : {labels_, row_loss_, row_correct_, ids_, scratch_, workspace_}) cudaFree(p);
    if (staging_) cudaFreeHost(staging_);
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
    if (cublas_) cublasDestroy(cublas_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  absl::Status Init() {
    TESSERA_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device), "cudaSetDevice");
    cudaDeviceProp prop;
    TESSERA_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, options_.device),
                                 "cudaGetDeviceProperties");
    name_ = absl::StrCat("cuda:", options_.device, " (", prop.name, ", sm_", prop.major, prop.minor,
                         ", gemm ", NameOf(options_.gemm_precision), ")");
    TESSERA_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
                                 "cudaStreamCreateWithFlags");
    TESSERA_CUBLAS_RETURN_IF_ERROR(cublasCreate(&cublas_), "cublasCreate");
    TESSERA_CUBLAS_RETURN_IF_ERROR(cublasSetStream(cublas_, stream_), "cublasSetStream");
    // Our own workspace, so that cuBLAS allocates nothing while training.
    TESSERA_CUDA_RETURN_IF_ERROR(cudaMalloc(&workspace_, kCublasWorkspaceBytes), "cudaMalloc");
    ++allocations_;
    TESSERA_CUBLAS_RETURN_IF_ERROR(cublasSetWorkspace(cublas_, workspace_, kCublasWorkspaceBytes),
                                   "cublasSetWorkspace");
    return absl::OkStatus();
  }

  std::string name() const override { return name_; }
  absl::Status status() const override { return status_; }
  int64_t allocations() const { return allocations_; }

  void Synchronize() override {
    if (failed()) return;
    if (!Check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize")) return;
    for (const PendingCopy& p : pending_) std::memcpy(p.host, p.staged, p.bytes);
    pending_.clear();
    staged_ = 0;
  }

  Tensor Allocate(int64_t rows, int64_t cols) override {
    Tensor t{nullptr, rows, cols};
    if (failed() || t.size() == 0) return t;
    const size_t bytes = t.size() * sizeof(float);
    if (!Check(cudaMalloc(reinterpret_cast<void**>(&t.data), bytes), "cudaMalloc")) return t;
    ++allocations_;
    device_buffers_.push_back(t.data);
    // Zeroed like the CPU backend's tensors.
    Check(cudaMemsetAsync(t.data, 0, bytes, stream_), "cudaMemsetAsync");
    return t;
  }

  void CopyIn(absl::Span<const float> host, Tensor t) override {
    Upload(host.data(), host.size() * sizeof(float), t.data, "cudaMemcpyAsync (host to device)");
  }

  void CopyOut(Tensor t, absl::Span<float> host) override {
    if (failed() || host.empty()) return;
    const size_t bytes = host.size() * sizeof(float);
    char* staged = Stage(bytes);
    if (!staged) return;
    Timed(kCopy, [&] {
      Check(cudaMemcpyAsync(staged, t.data, bytes, cudaMemcpyDeviceToHost, stream_),
            "cudaMemcpyAsync (device to host)");
    });
    pending_.push_back({staged, host.data(), bytes});
  }

  void Gemm(bool ta, bool tb, float alpha, Tensor a, Tensor b, float beta, Tensor c) override {
    if (failed() || c.size() == 0) return;
    // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, and a
    // row-major matrix is its own transpose in column-major order: so cuBLAS
    // gets B first, then A, with the same transpose flags and row lengths as
    // leading dimensions.
    const int m = static_cast<int>(c.rows), n = static_cast<int>(c.cols);
    const int k = static_cast<int>(ta ? a.rows : a.cols);
    Timed(kGemm, [&] {
      CheckBlas(cublasGemmEx(cublas_, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                             ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b.data, CUDA_R_32F,
                             static_cast<int>(b.cols), a.data, CUDA_R_32F, static_cast<int>(a.cols),
                             &beta, c.data, CUDA_R_32F, n, compute_, CUBLAS_GEMM_DEFAULT),
                "cublasGemmEx");
    });
  }

  void BiasActivation(Tensor x, Tensor bias, bool relu) override {
    Kernel("BiasActivation",
           [&] { return cuda::BiasActivation(x.data, bias.data, x.rows, x.cols, relu, stream_); });
  }

  void BiasGrad(Tensor dy, Tensor db) override { ColumnSums(nullptr, dy, db, "BiasGrad"); }

  void ReluBackwardBiasGrad(Tensor y, Tensor dy, Tensor db) override {
    ColumnSums(y.data, dy, db, "ReluBackwardBiasGrad");
  }

  void Im2Col(Tensor x, const ConvShape& shape, Tensor cols) override {
    Kernel("Im2Col", [&] { return cuda::Im2Col(x.data, Dims(shape), cols.data, stream_); });
  }

  void Col2Im(Tensor cols, const ConvShape& shape, Tensor dx) override {
    Kernel("Col2Im", [&] { return cuda::Col2Im(cols.data, Dims(shape), dx.data, stream_); });
  }

  void MaxPool2x2(Tensor x, const ConvShape& shape, Tensor y, Tensor mask) override {
    Kernel("MaxPool2x2",
           [&] { return cuda::MaxPool2x2(x.data, Dims(shape), y.data, mask.data, stream_); });
  }

  void MaxPool2x2Backward(Tensor dy, Tensor mask, const ConvShape& shape, Tensor dx) override {
    Kernel("MaxPool2x2Backward", [&] {
      return cuda::MaxPool2x2Backward(dy.data, mask.data, Dims(shape), dx.data, stream_);
    });
  }

  void EmbeddingGather(Tensor table, const int64_t* ids, Tensor out) override {
    const int64_t* device_ids = UploadIds(ids, out.rows);
    if (!device_ids) return;
    Kernel("EmbeddingGather", [&] {
      return cuda::EmbeddingGather(table.data, device_ids, out.rows, out.cols, out.data, stream_);
    });
  }

  void EmbeddingScatterAdd(Tensor dout, const int64_t* ids, Tensor dtable) override {
    const int64_t* device_ids = UploadIds(ids, dout.rows);
    if (!device_ids) return;
    Kernel("EmbeddingScatterAdd", [&] {
      return cuda::EmbeddingScatterAdd(dout.data, device_ids, dout.rows, dout.cols, dtable.data,
                                       stream_);
    });
  }

  float SoftmaxCrossEntropy(Tensor logits, const int32_t* labels, Tensor dlogits,
                            int64_t* correct) override {
    const int64_t rows = logits.rows;
    if (failed() || rows == 0) return 0.0f;
    const size_t ints = rows * sizeof(int32_t), floats = rows * sizeof(float);
    if (!EnsureDevice(&labels_, &labels_bytes_, ints) ||
        !EnsureDevice(&row_loss_, &row_loss_bytes_, floats) ||
        !EnsureDevice(&row_correct_, &row_correct_bytes_, ints)) {
      return 0.0f;
    }
    Upload(labels, ints, labels_, "cudaMemcpyAsync (labels)");
    Kernel("SoftmaxCrossEntropy", [&] {
      return cuda::SoftmaxCrossEntropy(logits.data, static_cast<const int32_t*>(labels_), rows,
                                       logits.cols, 1.0f / static_cast<float>(rows), dlogits.data,
                                       static_cast<float*>(row_loss_),
                                       static_cast<int32_t*>(row_correct_), stream_);
    });
    // Per-row results come back and are summed here in double, as the CPU does.
    // One staged region for both (a second Stage() could synchronize and
    // hand out the first one's memory again).
    char* loss_host = Stage(RoundUp(floats) + ints);
    if (!loss_host) return 0.0f;
    char* correct_host = loss_host + RoundUp(floats);
    Timed(kCopy, [&] {
      Check(cudaMemcpyAsync(loss_host, row_loss_, floats, cudaMemcpyDeviceToHost, stream_),
            "cudaMemcpyAsync (row losses)");
      Check(cudaMemcpyAsync(correct_host, row_correct_, ints, cudaMemcpyDeviceToHost, stream_),
            "cudaMemcpyAsync (row hits)");
    });
    Synchronize();
    if (failed()) return 0.0f;
    const float* loss = reinterpret_cast<const float*>(loss_host);
    const int32_t* hit = reinterpret_cast<const int32_t*>(correct_host);
    double total = 0.0;
    for (int64_t r = 0; r < rows; ++r) {
      total += loss[r];
      *correct += hit[r];
    }
    return static_cast<float>(total / rows);
  }

  void EnableTiming(bool on) override {
    timing_ = on;
    marks_.clear();
    next_event_ = 0;
  }

  bool TakeOpTimes(OpTimes* times) override {
    *times = OpTimes();
    if (!timing_) return false;
    Synchronize();
    if (failed()) return false;
    for (const Mark& m : marks_) {
      float ms = 0;
      if (!Check(cudaEventElapsedTime(&ms, m.start, m.end), "cudaEventElapsedTime")) return false;
      (m.kind == kGemm     ? times->gemm_ms
       : m.kind == kKernel ? times->kernel_ms
                           : times->copy_ms) += ms;
      ++times->calls;
    }
    marks_.clear();
    next_event_ = 0;
    return true;
  }

 private:
  enum Kind { kGemm, kKernel, kCopy };
  struct Mark {
    Kind kind;
    cudaEvent_t start, end;
  };
  struct PendingCopy {
    const char* staged;
    float* host;
    size_t bytes;
  };

  bool failed() const { return !status_.ok(); }

  // Records the first failure; later ones are consequences of it.
  bool Check(cudaError_t error, const char* what) {
    if (error == cudaSuccess) return true;
    if (status_.ok()) status_ = cuda::CudaStatus(error, what);
    return false;
  }
  bool CheckBlas(cublasStatus_t s, const char* what) {
    if (s == CUBLAS_STATUS_SUCCESS) return true;
    if (status_.ok()) status_ = cuda::CublasStatus(s, what);
    return false;
  }

  template <typename Launch>
  void Kernel(const char* what, Launch launch) {
    if (failed()) return;
    Timed(kKernel, [&] { Check(launch(), what); });
  }

  // Runs `f` (which enqueues work), bracketed by events when timing is on.
  template <typename F>
  void Timed(Kind kind, F f) {
    if (!timing_) {
      f();
      return;
    }
    while (next_event_ + 2 > events_.size()) {
      cudaEvent_t e;
      if (!Check(cudaEventCreate(&e), "cudaEventCreate")) return;
      events_.push_back(e);
    }
    Mark m{kind, events_[next_event_], events_[next_event_ + 1]};
    next_event_ += 2;
    Check(cudaEventRecord(m.start, stream_), "cudaEventRecord");
    f();
    Check(cudaEventRecord(m.end, stream_), "cudaEventRecord");
    marks_.push_back(m);
  }

  // `bytes` of pinned host memory, valid until the next Synchronize(). When
  // the buffer is full it synchronizes (earlier staged copies are done) and,
  // if the work since the last synchronization needed more, grows: steps
  // settle within a few on a buffer that holds a whole step.
  char* Stage(size_t bytes) {
    bytes = RoundUp(bytes);
    if (staged_ + bytes > staging_bytes_) {
      const size_t wanted = staged_ + bytes;
      Synchronize();
      if (failed()) return nullptr;
      if (wanted > staging_bytes_) {
        if (staging_) Check(cudaFreeHost(staging_), "cudaFreeHost");
        staging_ = nullptr;
        const size_t size = std::max(wanted, 2 * staging_bytes_);
        staging_bytes_ = 0;
        if (!Check(cudaMallocHost(reinterpret_cast<void**>(&staging_), size), "cudaMallocHost")) {
          return nullptr;
        }
        ++allocations_;
        staging_bytes_ = size;
      }
    }
    char* at = staging_ + staged_;
    staged_ += bytes;
    return at;
  }

  // Grows a device buffer to at least `bytes` (first use; reused after).
  bool EnsureDevice(void** buffer, size_t* capacity, size_t bytes) {
    if (failed()) return false;
    if (*capacity >= bytes) return true;
    Synchronize();  // the old buffer may be in use by queued work
    if (failed()) return false;
    const size_t size = std::max(RoundUp(bytes), 2 * *capacity);
    if (*buffer) cudaFree(*buffer);
    *buffer = nullptr;
    *capacity = 0;
    if (!Check(cudaMalloc(buffer, size), "cudaMalloc")) return false;
    ++allocations_;
    *capacity = size;
    return true;
  }

  void ColumnSums(const float* relu_y, Tensor dy, Tensor db, const char* what) {
    const size_t bytes = cuda::BiasGradScratchFloats(dy.rows, dy.cols) * sizeof(float);
    if (!EnsureDevice(&scratch_, &scratch_bytes_, bytes)) return;
    Kernel(what, [&] {
      return cuda::BiasGrad(relu_y, dy.data, db.data, dy.rows, dy.cols,
                            static_cast<float*>(scratch_), stream_);
    });
  }

  const int64_t* UploadIds(const int64_t* ids, int64_t n) {
    const size_t bytes = n * sizeof(int64_t);
    if (n == 0 || !EnsureDevice(&ids_, &ids_bytes_, bytes)) return nullptr;
    Upload(ids, bytes, ids_, "cudaMemcpyAsync (ids)");
    return failed() ? nullptr : static_cast<const int64_t*>(ids_);
  }

  // Copies `bytes` of host memory to `device` through the staging buffer:
  // the host memory is read before this returns, the DMA runs on the stream.
  void Upload(const void* host, size_t bytes, void* device, const char* what) {
    if (failed() || bytes == 0) return;
    char* staged = Stage(bytes);
    if (!staged) return;
    std::memcpy(staged, host, bytes);
    Timed(kCopy, [&] {
      Check(cudaMemcpyAsync(device, staged, bytes, cudaMemcpyHostToDevice, stream_), what);
    });
  }

  const CudaOptions options_;
  const cublasComputeType_t compute_;
  std::string name_ = "cuda";
  absl::Status status_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  void* workspace_ = nullptr;
  int64_t allocations_ = 0;
  std::vector<float*> device_buffers_;

  char* staging_ = nullptr;  // pinned
  size_t staging_bytes_ = 0;
  size_t staged_ = 0;  // bytes handed out since the last Synchronize()
  std::vector<PendingCopy> pending_;

  void* labels_ = nullptr;  // int32 per row
  size_t labels_bytes_ = 0;
  void* row_loss_ = nullptr;  // float per row
  size_t row_loss_bytes_ = 0;
  void* row_correct_ = nullptr;  // int32 per row
  size_t row_correct_bytes_ = 0;
  void* ids_ = nullptr;  // int64 per embedding lookup
  size_t ids_bytes_ = 0;
  void* scratch_ = nullptr;  // bias-gradient partial sums
  size_t scratch_bytes_ = 0;

  bool timing_ = false;
  std::vector<cudaEvent_t> events_;
  size_t next_event_ = 0;
  std::vector<Mark> marks_;
};

}  // namespace

absl::StatusOr<int> CudaDeviceCount() {
  int count = 0;
  cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    cudaGetLastError();  // clear it: this is an answer, not a failure
    const char* hint = error == cudaErrorInsufficientDriver
                           ? " (no NVIDIA driver is loaded here, or it is older than this CUDA "
                             "runtime needs)"
                           : "";
    return absl::UnavailableError(
        absl::StrCat("no usable GPU: cudaGetDeviceCount says ", cudaGetErrorString(error), hint));
  }
  if (count == 0) return absl::UnavailableError("no usable GPU: CUDA found no device");
  return count;
}

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(const CudaOptions& options) {
  auto count = CudaDeviceCount();
  if (!count.ok()) return count.status();
  if (options.device < 0 || options.device >= *count) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPU ", options.device, " does not exist: ", *count, " found"));
  }
  auto backend = std::make_unique<CudaBackend>(options);
  if (absl::Status s = backend->Init(); !s.ok()) return s;
  return std::unique_ptr<Backend>(std::move(backend));
}

int64_t CudaAllocations(const Backend& backend) {
  const auto* cuda = dynamic_cast<const CudaBackend*>(&backend);
  return cuda ? cuda->allocations() : -1;
}

}  // namespace tessera
