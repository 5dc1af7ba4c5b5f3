// The CUDA backend: Backend on one GPU, with cuBLAS GEMMs and Tessera's own
// kernels (cuda/kernels.h) on one stream.
//
// Memory: every tensor is one cudaMalloc at Allocate (models allocate at
// construction); host<->device copies go through one pinned staging buffer
// that grows during the first step and is reused after it, as are the label
// and loss buffers and the cuBLAS workspace: a steady-state step allocates
// nothing (allocations() counts, for tests).
//
// Built from cuda_backend.cc where CUDA was found at build time and from
// no_cuda_backend.cc where it was not; in that build every call below says
// so (UNAVAILABLE).
//
// Threading: as Backend, one thread per backend. CudaDeviceCount may be
// called from any thread.
#ifndef TESSERA_WORKER_CUDA_BACKEND_H_
#define TESSERA_WORKER_CUDA_BACKEND_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/config.h"
#include "worker/backend.h"

namespace tessera {

struct CudaOptions {
  int device = 0;                       // GPU ordinal, as CUDA numbers them
  GemmPrecision gemm_precision = GemmPrecision::kFp32;  // fp32 accumulation
};

// The number of usable GPUs (>= 1), or UNAVAILABLE saying why there is none:
// no CUDA in this build, no driver, or no device.
absl::StatusOr<int> CudaDeviceCount();

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(const CudaOptions& options);

// Backend allocations (device, pinned, workspace) made so far by a backend
// from MakeCudaBackend; -1 for any other backend.
int64_t CudaAllocations(const Backend& backend);

}  // namespace tessera

#endif  // TESSERA_WORKER_CUDA_BACKEND_H_
