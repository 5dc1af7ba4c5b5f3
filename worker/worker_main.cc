// tessera-worker: one training worker.
//
//   tessera-worker --config JOB.yaml [--rank N] [--set key=value ...]
//                  [--result FILE] [--standalone] [--log-level LEVEL]
//
// --standalone trains the same model in this one process with no parameter
// server over the network (the shards run in-process): the baseline that
// measures what the PS costs.
//
// Exit codes say whether a restart can help:
//   0 done; 2 bad flag, config or data (a restart cannot help);
//   3 a server was lost or did not answer (a restart can help); 1 otherwise.
#include <chrono>
#include <cstdio>
#include <thread>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/allocator.h"
#include "common/config.h"
#include "common/flags.h"
#include "common/identity.h"
#include "common/logging.h"
#include "common/metrics.h"
#include "common/metrics_server.h"
#include "common/process_limits.h"
#include "common/transport.h"
#include "common/shared_memory.h"
#include "common/status.h"
#include "spdlog/spdlog.h"
#include "worker/backend.h"
#include "worker/device.h"
#include "worker/example_stream.h"
#include "worker/grpc_ps_client.h"
#include "worker/local_ps_client.h"
#include "worker/trainer.h"
#include "worker/worker_metrics.h"

namespace {

const tessera::Program kProgram{
    "tessera-worker",
    "--config JOB.yaml [--rank N] [--set key=value ...] [--result FILE] [--standalone]\n"
    "       [--log-level LEVEL]",
    "One training worker. Exit codes say whether a restart can help: 0 done; 2 a bad flag,\n"
    "config or data (it cannot); 3 a server was lost or did not answer (it can); 1 otherwise.",
    {{"config", "FILE", "the job's YAML (required)"},
     {"rank", "N", "this worker's rank (default: $JOB_COMPLETION_INDEX, a Kubernetes Indexed Job)"},
     {"set", "KEY=VALUE", "override a config key, e.g. --set worker.metrics_port=9101",
      tessera::FlagKind::kRepeatable},
     {"result", "FILE", "write the run's result (JSON) here at the end"},
     {"standalone", "",
      "train in this one process with the shards in-process: the baseline without a network",
      tessera::FlagKind::kSwitch},
     {"log-level", "LEVEL", "trace, debug, info, warn or error (default: logging.level)"}}};

int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "tessera-worker: %s\n", message.c_str());
  return code;
}

// Exit code for a failed run: 3 where retrying may succeed.
int ExitCodeFor(const absl::Status& s) {
  if (tessera::IsTransient(s)) return 3;
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kAlreadyExists:     // another live worker has this rank
    case absl::StatusCode::kPermissionDenied:  // replaced by another registration
    case absl::StatusCode::kUnauthenticated:   // wrong or missing job token
    case absl::StatusCode::kFailedPrecondition:  // another job's shard, or a config that differs
      return 2;
    default:
      return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace tessera;
  ConfigureAllocatorForLargeTransfers();
  if (auto exit = AnswerHelpOrVersion(argc, argv, kProgram)) return *exit;
  auto flags = ParseFlags(argc, argv, kProgram);
  if (!flags.ok()) return Fail(2, std::string(flags.status().message()));
  if (!flags->Has("config")) return Fail(2, "--config FILE is required");
  std::vector<std::string> sets = flags->All("set");
  const bool standalone = flags->Has("standalone");
  if (standalone) {
    sets.push_back("cluster.workers=1");
  }
  auto config = LoadJobConfig(flags->Get("config"), sets);
  if (!config.ok()) return Fail(2, std::string(config.status().message()));
  auto rank_flag = flags->GetInt("rank", kMaxWorkers - 1);
  if (!rank_flag.ok()) return Fail(2, std::string(rank_flag.status().message()));
  auto rank = standalone ? absl::StatusOr<uint32_t>(0) : ResolveWorkerRank(*rank_flag);
  if (!rank.ok()) return Fail(2, std::string(rank.status().message()));
  if (*rank >= config->cluster.workers) {
    return Fail(2, absl::StrCat("worker rank ", *rank, " is not below cluster.workers (",
                                config->cluster.workers, ")"));
  }
  std::string level = flags->Has("log-level") ? flags->Get("log-level") : config->logging.level;
  if (auto s = SetupLogging(absl::StrCat(standalone ? "standalone-" : "worker-", *rank), level);
      !s.ok()) {
    return Fail(2, std::string(s.message()));
  }
  // Idle connections to the metrics port must not use up the descriptors
  // this worker's own calls to the shards need.
  spdlog::info("{}", Describe(RaiseDescriptorLimit()));
  if (config->model.type == ModelType::kTables) {
    return Fail(2, "model.type = 'tables': a worker trains softmax or mlp models");
  }

  // Stopped while it waits for servers, a worker still leaves /dev/shm clean.
  SharedSegment::UnlinkOnTermination();

  auto train = OpenExamples(*config, /*train=*/true, *rank);
  if (!train.ok()) return Fail(2, std::string(train.status().message()));
  auto test = OpenExamples(*config, /*train=*/false, *rank);
  if (!test.ok()) return Fail(2, std::string(test.status().message()));
  // (A ctr model's inputs come from the same keys as its data's.)
  if (config->model.type != ModelType::kCtr &&
      ((*train)->features() != config->model.layers.front() ||
       (*train)->classes() != config->model.layers.back())) {
    return Fail(2, absl::StrCat("model.layers: the data has ", (*train)->features(), " inputs and ",
                                (*train)->classes(),
                                " classes; the model's first and last widths "
                                "must match"));
  }

  LocalShards local_shards;
  std::unique_ptr<PsClient> client;
  if (standalone) {
    auto shards = LocalShards::Create(*config);
    if (!shards.ok()) {
      return Fail(absl::IsInvalidArgument(shards.status()) ? 2 : 1,
                  std::string(shards.status().message()));
    }
    local_shards = *std::move(shards);
    client = std::make_unique<LocalPsClient>(*config, 0, local_shards.ptrs());
  } else {
    auto security = TransportSecurity::ForJob(*config);
    if (!security.ok()) return Fail(2, std::string(security.status().message()));
    client = std::make_unique<GrpcPsClient>(*config, *rank, *std::move(security));
  }
  auto backend = MakeBackend(config->worker, *rank);
  if (!backend.ok()) return Fail(2, std::string(backend.status().message()));
  Trainer trainer(*config, *rank, client.get(), backend->get(), *std::move(train),
                  *std::move(test));
  // worker.metrics_port: GET /metrics from before the first step to the end.
  WorkerMetrics metrics;
  MetricsRegistry registry(Labels{{"job", config->name}, {"rank", absl::StrCat(*rank)}});
  registry.Add([&metrics](Exposition& e) { metrics.Collect(e); });
  std::unique_ptr<MetricsServer> metrics_server;
  if (config->worker.metrics_port > 0) {
    bool local = true;
    for (const std::string& s : config->cluster.servers) local &= IsLoopbackAddress(s);
    auto access = MetricsAccessFor(*config);
    if (!access.ok()) return Fail(2, std::string(access.status().message()));
    if (config->security.tls.enabled() && !access->https()) {
      spdlog::warn(
          "GET /metrics over plain HTTP: this worker has no certificate of its own "
          "(security.tls.cert_file) to serve it over TLS");
    }
    auto started = MetricsServer::Start(local || standalone ? "127.0.0.1" : "0.0.0.0",
                                        static_cast<int>(config->worker.metrics_port), &registry,
                                        "worker.metrics_port", *access);
    if (!started.ok()) {
      return Fail(absl::IsInvalidArgument(started.status()) ? 2 : 1,
                  std::string(started.status().message()));
    }
    metrics_server = *std::move(started);
    spdlog::info("serving GET /metrics on {}://{}:{}", metrics_server->https() ? "https" : "http",
                 local || standalone ? "127.0.0.1" : "0.0.0.0", metrics_server->port());
    trainer.metrics = &metrics;
  }
  auto result = trainer.Run();
  if (!result.ok()) {
    int code = ExitCodeFor(result.status());
    return Fail(code,
                absl::StrCat(result.status().message(), code == 3 ? " (a restart may help)" : ""));
  }
  if (flags->Has("result")) {
    FILE* f = std::fopen(flags->Get("result").c_str(), "w");
    if (!f) return Fail(1, "cannot write --result " + flags->Get("result"));
    nlohmann::json j = {{"rank", *rank}, {"standalone", standalone}};
    j.update(result->ToJson());
    std::fprintf(f, "%s\n", j.dump().c_str());
    std::fclose(f);
  }
  spdlog::info("done: {} steps, {:.0f} samples/s, train loss {:.4f}{}", result->steps,
               result->samples_per_second, result->train_loss,
               result->evaluated ? absl::StrCat(", test accuracy ", result->test_accuracy) : "");
  if (metrics_server && config->worker.metrics_linger_s > 0) {
    spdlog::info("answering GET /metrics for {} s more (worker.metrics_linger_s)",
                 config->worker.metrics_linger_s);
    std::this_thread::sleep_for(std::chrono::duration<double>(config->worker.metrics_linger_s));
  }
  return 0;
}
