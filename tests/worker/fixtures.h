// Fixtures shared by the worker tests.
#ifndef TESSERA_TESTS_WORKER_FIXTURES_H_
#define TESSERA_TESTS_WORKER_FIXTURES_H_

#include <catch2/catch.hpp>
#include <functional>
#include <thread>
#include <vector>

#include "worker/backend.h"
#include "worker/local_ps_client.h"
#include "worker/trainer.h"

namespace tessera {

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
