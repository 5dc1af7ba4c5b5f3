// Picks a worker's compute backend from worker.device:
//   cpu  -> the Eigen backend;
//   cuda -> a GPU, or an error naming why there is none (the worker exits 2);
//   auto -> a GPU when one is usable, else the CPU (logged either way).
// A worker uses GPU (rank mod the GPUs it sees): one worker per GPU when
// several share a machine; under Kubernetes each pod sees only its own.
//
// Threading: call once at start-up.
#ifndef TESSERA_WORKER_DEVICE_H_
#define TESSERA_WORKER_DEVICE_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "common/config.h"
#include "worker/backend.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const WorkerConfig& config, uint32_t rank);

}  // namespace tessera

#endif  // TESSERA_WORKER_DEVICE_H_
