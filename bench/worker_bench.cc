// worker_bench: a worker's compute alone (no parameter server): samples/s of
// Model::TrainStep — parameters uploaded, forward, backward, gradients
// downloaded, as the trainer runs it each step — on the backend that
// worker.device picks, on real Fashion-MNIST batches. On a GPU it also says
// where the step's time goes: cuBLAS GEMMs, Tessera's kernels, host<->device
// copies (device time from CUDA events), and the rest (host work and waits).
//
//   bazel-bin/bench/worker_bench --config configs/fashion_mnist_mlp.yaml
//       --set worker.device=cpu --batch 256 --steps 200
//
// Prints one line per measurement and a final JSON line.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/config.h"
#include "common/denormal.h"
#include "common/flags.h"
#include "nlohmann/json.hpp"
#include "worker/dataset.h"
#include "worker/device.h"
#include "worker/model.h"

namespace tessera {
namespace {

int Fail(const std::string& message) {
  std::fprintf(stderr, "worker_bench: %s\n", message.c_str());
  return 2;
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

const Program kProgram{
    "worker_bench",
    "--config JOB.yaml [--set key=value ...] [--batch N] [--steps N] [--warmup N]",
    "A worker's compute alone (no parameter server): samples/s of a training step on the\n"
    "backend worker.device picks, on real batches; on a GPU, where the step's time goes.",
    {{"config", "FILE", "the job's YAML (required; a dense model)"},
     {"set", "KEY=VALUE", "override a config key, e.g. worker.device=cpu", FlagKind::kRepeatable},
     {"batch", "N", "examples a step (default: training.batch_size)"},
     {"steps", "N", "timed steps"},
     {"warmup", "N", "untimed steps first"}}};

int Main(int argc, char** argv) {
  if (auto exit = AnswerHelpOrVersion(argc, argv, kProgram)) return *exit;
  auto flags = ParseFlags(argc, argv, kProgram);
  if (!flags.ok()) return Fail(std::string(flags.status().message()));
  if (!flags->Has("config")) return Fail("--config FILE is required");
  auto config = LoadJobConfig(flags->Get("config"), flags->All("set"));
  if (!config.ok()) return Fail(std::string(config.status().message()));
  if (config->model.type == ModelType::kTables) return Fail("model.type 'tables' has no compute");
  if (config->model.type == ModelType::kCtr) {
    return Fail(
        "model.type 'ctr': worker_bench times the dense models; time a ctr job with "
        "`tessera-worker --config JOB --standalone` (bench/ctr_speed.sh)");
  }
  auto batch_flag = flags->GetInt("batch");
  auto steps_flag = flags->GetInt("steps");
  auto warmup_flag = flags->GetInt("warmup");
  if (!batch_flag.ok() || !steps_flag.ok() || !warmup_flag.ok()) {
    return Fail("--batch, --steps and --warmup take non-negative integers");
  }
  const uint32_t batch = static_cast<uint32_t>(batch_flag->value_or(256));
  const int64_t steps = steps_flag->value_or(200);
  const int64_t warmup = warmup_flag->value_or(20);
  if (batch == 0 || steps == 0) return Fail("--batch and --steps must be positive");

  auto train = LoadDataset(config->data, /*train=*/true);
  if (!train.ok()) return Fail(std::string(train.status().message()));
  if (train->size() < batch) return Fail("--batch is larger than the data set");
  auto backend = MakeBackend(config->worker, 0);
  if (!backend.ok()) return Fail(std::string(backend.status().message()));
  Backend& b = **backend;
  ScopedFlushDenormal flush;  // as on the trainer's thread
  auto model = MakeModel(config->model, &b, batch);

  ParameterSet params;
  std::mt19937_64 rng(1);
  for (size_t size : model->TableSizes()) {
    std::normal_distribution<float> normal(0.0f, 0.05f);
    params.emplace_back(size);
    for (float& v : params.back()) v = normal(rng);
  }
  size_t parameters = 0;
  for (const auto& p : params) parameters += p.size();
  ParameterSet grads;
  int64_t correct = 0;
  const size_t batches = train->size() / batch;
  auto step = [&](int64_t i) {
    const size_t first = (i % batches) * batch;
    model->TrainStep(params, train->example(first), train->y.data() + first, batch, &grads,
                     &correct);
  };

  for (int64_t i = 0; i < warmup; ++i) step(i);
  double t0 = Now();
  for (int64_t i = 0; i < steps; ++i) step(i);
  const double seconds = Now() - t0;
  if (!b.status().ok()) return Fail(std::string(b.status().message()));
  const double step_ms = 1e3 * seconds / steps;
  const double rate = steps * double(batch) / seconds;
  std::printf("%s on %s: %zu parameters, batch %u, %lld steps: %.3f ms/step, %.0f samples/s\n",
              NameOf(config->model.type), b.name().c_str(), parameters, batch,
              static_cast<long long>(steps), step_ms, rate);

  // A second pass with per-call device timing, when the backend has it.
  nlohmann::json result = {{"model", NameOf(config->model.type)},
                           {"backend", b.name()},
                           {"batch", batch},
                           {"steps", steps}};
  b.EnableTiming(true);
  t0 = Now();
  for (int64_t i = 0; i < steps; ++i) step(i);
  const double timed_ms = 1e3 * (Now() - t0) / steps;
  Backend::OpTimes times;
  if (b.TakeOpTimes(&times)) {
    const double gemm = times.gemm_ms / steps, kernels = times.kernel_ms / steps,
                 copies = times.copy_ms / steps;
    const double other = std::max(0.0, timed_ms - gemm - kernels - copies);
    std::printf(
        "per step (timed pass, %.3f ms): GEMM %.3f ms (%.0f%%), own kernels %.3f ms (%.0f%%), "
        "host<->device copies %.3f ms (%.0f%%), other (host work, launch gaps) %.3f ms (%.0f%%); "
        "%lld device calls per step\n",
        timed_ms, gemm, 100 * gemm / timed_ms, kernels, 100 * kernels / timed_ms, copies,
        100 * copies / timed_ms, other, 100 * other / timed_ms,
        static_cast<long long>(times.calls / steps));
    result["gemm_ms"] = gemm;
    result["kernel_ms"] = kernels;
    result["copy_ms"] = copies;
    result["timed_step_ms"] = timed_ms;
  }
  b.EnableTiming(false);
  if (!b.status().ok()) return Fail(std::string(b.status().message()));
  result["step_ms"] = step_ms;
  result["samples_per_second"] = rate;
  std::printf("%s\n", result.dump().c_str());
  return 0;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) { return tessera::Main(argc, argv); }
