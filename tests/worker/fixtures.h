// Fixtures shared by the worker tests.
#ifndef TESSERA_TESTS_WORKER_FIXTURES_H_
#define TESSERA_TESTS_WORKER_FIXTURES_H_

#include <catch2/catch.hpp>
#include <vector>

#include "worker/local_ps_client.h"

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

}  // namespace tessera

#endif  // TESSERA_TESTS_WORKER_FIXTURES_H_
