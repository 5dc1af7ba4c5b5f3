// Backend selection from worker.device (on any machine: the expectations
// follow whether CUDA finds a GPU here), and the CPU backend's embedding ops.
#include "worker/device.h"

#include <catch2/catch.hpp>

#include "worker/cuda_backend.h"

namespace tessera {
namespace {

WorkerConfig Device(DeviceChoice device) {
  WorkerConfig c;
  c.device = device;
  return c;
}

TEST_CASE("device cpu is the CPU backend") {
  auto backend = MakeBackend(Device(DeviceChoice::kCpu), 0);
  REQUIRE(backend.ok());
  CHECK((*backend)->name() == "cpu");
}

TEST_CASE("device auto takes a GPU when one is usable, else the CPU") {
  const bool gpu = CudaDeviceCount().ok();
  auto backend = MakeBackend(Device(DeviceChoice::kAuto), 3);
  REQUIRE(backend.ok());
  CHECK((*backend)->name().rfind(gpu ? "cuda:" : "cpu", 0) == 0);
}

TEST_CASE("device cuda without a GPU fails with a line that says why and what to do") {
  auto gpus = CudaDeviceCount();
  auto backend = MakeBackend(Device(DeviceChoice::kCuda), 0);
  if (gpus.ok()) {
    REQUIRE(backend.ok());
    CHECK((*backend)->name().rfind("cuda:0", 0) == 0);
    return;
  }
  REQUIRE_FALSE(backend.ok());
  CHECK(backend.status().code() == absl::StatusCode::kFailedPrecondition);
  const std::string message(backend.status().message());
  CHECK(message.find("worker.device = 'cuda'") == 0);
  CHECK(message.find(std::string(gpus.status().message())) != std::string::npos);
  CHECK(message.find("use device auto or cpu") != std::string::npos);
}

TEST_CASE("CPU embedding gather copies rows; scatter-add sums repeated ids") {
  auto cpu = MakeCpuBackend();
  Tensor table = cpu->Allocate(4, 2), out = cpu->Allocate(3, 2), dtable = cpu->Allocate(4, 2);
  const std::vector<float> values = {0, 1, 10, 11, 20, 21, 30, 31};
  cpu->CopyIn(values, table);
  const int64_t ids[] = {2, 0, 2};
  cpu->EmbeddingGather(table, ids, out);
  std::vector<float> got(6);
  cpu->CopyOut(out, absl::MakeSpan(got));
  CHECK(got == std::vector<float>{20, 21, 0, 1, 20, 21});
  const std::vector<float> dout = {1, 2, 3, 4, 5, 6};
  cpu->CopyIn(dout, out);
  cpu->EmbeddingScatterAdd(out, ids, dtable);
  std::vector<float> sums(8);
  cpu->CopyOut(dtable, absl::MakeSpan(sums));
  CHECK(sums == std::vector<float>{3, 4, 0, 0, 6, 8, 0, 0});
}

}  // namespace
}  // namespace tessera
