// CUDA and cuBLAS results as absl::Status: INTERNAL naming the call and the
// library's own message, so that a failure reads "cublasGemmEx: CUBLAS_STATUS_...".
//
//   TESSERA_CUDA_RETURN_IF_ERROR(cudaStreamCreate(&stream), "cudaStreamCreate");
//
// Header-only; host code only. Thread-safe (no state).
#ifndef TESSERA_CUDA_STATUS_H_
#define TESSERA_CUDA_STATUS_H_

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tessera {
namespace cuda {

inline absl::Status CudaStatus(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(what, ": ", cudaGetErrorName(error), ": ", cudaGetErrorString(error)));
}

inline absl::Status CublasStatus(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cublasGetStatusString(status)));
}

}  // namespace cuda
}  // namespace tessera

#define TESSERA_CUDA_RETURN_IF_ERROR(expr, what)                                     \
  do {                                                                               \
    ::absl::Status tessera_cuda_status_ = ::tessera::cuda::CudaStatus((expr), what); \
    if (!tessera_cuda_status_.ok()) return tessera_cuda_status_;                     \
  } while (0)

#define TESSERA_CUBLAS_RETURN_IF_ERROR(expr, what)                                       \
  do {                                                                                   \
    ::absl::Status tessera_cublas_status_ = ::tessera::cuda::CublasStatus((expr), what); \
    if (!tessera_cublas_status_.ok()) return tessera_cublas_status_;                     \
  } while (0)

#endif  // TESSERA_CUDA_STATUS_H_
