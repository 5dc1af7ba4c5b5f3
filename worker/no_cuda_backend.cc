// cuda_backend.h in a build without CUDA (see //third_party/cuda).
#include "worker/cuda_backend.h"

namespace tessera {
namespace {
absl::Status NoCuda() {
  return absl::UnavailableError(
      "this build has no CUDA backend: CUDA was not found when it was built (install the CUDA "
      "toolkit under /usr/local/cuda or set CUDA_PATH, then rebuild), or it was built with "
      "--config=cpu");
}
}  // namespace

absl::StatusOr<int> CudaDeviceCount() { return NoCuda(); }

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(const CudaOptions&) { return NoCuda(); }

int64_t CudaAllocations(const Backend&) { return -1; }

}  // namespace tessera
