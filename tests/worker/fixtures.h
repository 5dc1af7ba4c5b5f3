// Fixtures shared by the worker tests.
#ifndef TESSERA_TESTS_WORKER_FIXTURES_H_
#define TESSERA_TESTS_WORKER_FIXTURES_H_

#include <catch2/catch.hpp>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "common/config.h"
#include "worker/backend.h"
#include "worker/local_ps_client.h"
#include "worker/trainer.h"

namespace tessera {

// A small MLP job on synthetic data, 2 in-process shards ("local:N"), with
// `sets` applied; the test fails if it does not parse.
inline JobConfig SmallMlpJob(const std::vector<std::string>& sets) {
  auto c = ParseJobConfig(R"(
cluster: {servers: ["local:1", "local:2"]}
model: {type: mlp, layers: [784, 16, 10], seed: 3}
optimizer: {type: adam, lr: 0.01}
data: {dataset: synthetic, synthetic_train: 1024}
worker: {pull_timeout_ms: 30000, progress_interval_s: 1000}
)",
                          sets);
  INFO(c.status().ToString());
  REQUIRE(c.ok());
  return *c;
}

// A job's shards in this process; the test fails if they cannot be made.
struct Cluster {
  explicit Cluster(const JobConfig& c) {
    auto made = LocalShards::Create(c);
    INFO(made.status().ToString());
    REQUIRE(made.ok());
    local = *std::move(made);
  }
  std::vector<Shard*> ptrs() const { return local.ptrs(); }
  const std::vector<std::unique_ptr<Shard>>& shards() const { return local.shards(); }

  LocalShards local;
};

// Trains every worker of `c` on its own thread against `cluster`, the CPU
// backend and `train` (no test set); `setup` may set a trainer's hooks first.
inline std::vector<absl::StatusOr<TrainResult>> RunTrainers(
    const JobConfig& c, Cluster& cluster, const Dataset* train,
    const std::function<void(uint32_t rank, Trainer&)>& setup = {}) {
  std::vector<absl::StatusOr<TrainResult>> results(c.cluster.workers,
                                                   absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (uint32_t rank = 0; rank < c.cluster.workers; ++rank) {
    threads.emplace_back([&, rank] {
      LocalPsClient client(c, rank, cluster.ptrs());
      auto backend = MakeCpuBackend();
      Trainer trainer(c, rank, &client, backend.get(), train, nullptr);
      if (setup) setup(rank, trainer);
      results[rank] = trainer.Run();
    });
  }
  for (auto& t : threads) t.join();
  return results;
}

}  // namespace tessera

#endif  // TESSERA_TESTS_WORKER_FIXTURES_H_
