#include "worker/device.h"

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "worker/cuda_backend.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const WorkerConfig& config, uint32_t rank) {
  if (config.device == DeviceChoice::kCpu) return MakeCpuBackend();
  absl::StatusOr<int> gpus = CudaDeviceCount();
  if (!gpus.ok()) {
    if (config.device == DeviceChoice::kCuda) {
      return absl::FailedPreconditionError(
          absl::StrCat("worker.device = 'cuda': ", gpus.status().message(),
                       "; use device auto or cpu to train on the CPU"));
    }
    spdlog::info("device auto: training on the CPU ({})", std::string(gpus.status().message()));
    return MakeCpuBackend();
  }
  CudaOptions options;
  options.device = static_cast<int>(rank % static_cast<uint32_t>(*gpus));
  options.gemm_precision = config.gemm_precision;
  auto backend = MakeCudaBackend(options);
  if (!backend.ok()) {
    return absl::Status(backend.status().code(), absl::StrCat("worker.device = '", NameOf(config.device),
                                                              "': the GPU could not be set up: ",
                                                              backend.status().message()));
  }
  spdlog::info("device {}: training on {}", NameOf(config.device), (*backend)->name());
  return backend;
}

}  // namespace tessera
