// worker.bsp_parts through real shards in process (LocalPsClient): a BSP job
// whose dense values move in parts trains to the same parameters, to the
// bit, as one that moves whole clocks.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "tests/worker/fixtures.h"
#include "worker/dataset.h"
#include "worker/local_ps_client.h"

namespace tessera {
namespace {

// The parameters after `steps` BSP steps of 2 workers with `parts`.
ParameterSet TrainWithParts(uint32_t parts, const Dataset& train, int64_t steps) {
  JobConfig c = SmallMlpJob({"cluster.workers=2", "consistency.mode=bsp",
                             "training.batch_size=16", "training.epochs=10",
                             "worker.bsp_parts=" + std::to_string(parts)});
  c.training.max_steps = steps;
  // The reader below takes rank 0 over from the finished worker.
  c.security.rank_lease_s = 0;
  Cluster cluster(c);
  for (const auto& result : RunTrainers(c, cluster, &train)) {
    INFO(result.status().ToString());
    REQUIRE(result.ok());
    CHECK(result->steps == steps);
  }
  LocalPsClient reader(c, 0, cluster.ptrs());
  REQUIRE(reader.Connect().ok());
  ParameterSet params;
  REQUIRE(reader.PullDense(0, &params).ok());
  return params;
}

TEST_CASE("BSP in parts trains to the same parameters as whole clocks, to the bit") {
  const Dataset train = SyntheticDataset(1024, 784, 10, 5);
  const ParameterSet whole = TrainWithParts(1, train, 30);
  const uint32_t parts = GENERATE(2, 4, 16);
  INFO("worker.bsp_parts " << parts);
  const ParameterSet parted = TrainWithParts(parts, train, 30);
  REQUIRE(parted.size() == whole.size());
  for (size_t t = 0; t < whole.size(); ++t) {
    INFO("table " << t);
    CHECK(parted[t] == whole[t]);
  }
  // And training moved them: the comparison is not trivially true.
  CHECK(whole != TrainWithParts(1, train, 1));
}

}  // namespace
}  // namespace tessera
