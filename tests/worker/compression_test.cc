// worker.compression through the PS clients and real Shards in this
// process: what a lossless setting changes (nothing, to the bit), what
// delta pulls deliver (the shard's values, whatever was lost between), and
// that compressed jobs still train.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "server/shard.h"
#include "tests/worker/fixtures.h"
#include "worker/dataset.h"
#include "worker/local_ps_client.h"
#include "worker/trainer.h"

namespace tessera {
namespace {

JobConfig MakeConfig(const std::vector<std::string>& sets) {
  std::vector<std::string> all = {"cluster.workers=2", "training.batch_size=16",
                                  "training.max_steps=30"};
  all.insert(all.end(), sets.begin(), sets.end());
  return SmallMlpJob(all);
}

// Every shard's tables, as a checkpoint would hold them.
std::vector<std::string> Tables(Cluster& cluster) {
  std::vector<std::string> out;
  for (const auto& shard : cluster.shards()) {
    std::unique_ptr<ShardState> state = shard->Snapshot();
    for (const ByteBuffer& t : state->tables) out.emplace_back(t.data(), t.size());
  }
  return out;
}

std::vector<std::string> Train(const JobConfig& c, PsClient::WireTraffic* traffic = nullptr) {
  Cluster cluster(c);
  auto train = SyntheticDataset(c.data.synthetic_train, 784, 10, c.data.synthetic_seed);
  auto results = RunTrainers(c, cluster, &train);
  for (const auto& r : results) {
    INFO(r.status().ToString());
    REQUIRE(r.ok());
    if (traffic != nullptr) {
      traffic->push_bytes += r->traffic.push_bytes;
      traffic->push_raw_bytes += r->traffic.push_raw_bytes;
      traffic->pull_bytes += r->traffic.pull_bytes;
      traffic->pull_raw_bytes += r->traffic.pull_raw_bytes;
    }
  }
  return Tables(cluster);
}

TEST_CASE("under BSP, top-k that keeps every value trains exactly as float32 does") {
  const std::vector<std::string> fp32 = Train(MakeConfig({"consistency.mode=bsp"}));
  PsClient::WireTraffic traffic;
  const std::vector<std::string> topk =
      Train(MakeConfig({"consistency.mode=bsp", "worker.compression.push=topk",
                        "worker.compression.topk_ratio=1", "worker.compression.min_bytes=0"}),
            &traffic);
  CHECK(topk == fp32);
  // Values and positions: float32's 4 bytes and a byte for each position (a
  // ratio of 1 sends every nonzero, each a gap of 0 from the one before where
  // none is 0), and nothing for a zero: this job's synthetic inputs are
  // mostly 0, and so are most of its first layer's gradients.
  CHECK(4 * traffic.push_bytes <= 5 * traffic.push_raw_bytes);
  // And top-k at 1% does change the result (the comparison above can fail).
  CHECK(Train(MakeConfig({"consistency.mode=bsp", "worker.compression.push=topk",
                          "worker.compression.min_bytes=0"})) != fp32);
}

TEST_CASE("delta pulls that keep every change train exactly as float32 does") {
  const std::vector<std::string> fp32 = Train(MakeConfig({"consistency.mode=bsp"}));
  PsClient::WireTraffic traffic;
  CHECK(Train(MakeConfig({"consistency.mode=bsp", "worker.compression.pull=topk",
                          "worker.compression.pull_topk_ratio=1",
                          "worker.compression.min_bytes=0"}),
              &traffic) == fp32);
  CHECK(traffic.pull_bytes > traffic.pull_raw_bytes);  // every value, with its position
}

// (Whether they train well is checked end to end: tests/e2e/network_test.)
TEST_CASE("compressed SSP jobs run to the end: top-k and onebit pushes, top-k delta pulls") {
  for (const char* push : {"topk", "onebit"}) {
    INFO(push);
    JobConfig c = MakeConfig({"consistency.mode=ssp", "consistency.staleness=2",
                              std::string("worker.compression.push=") + push,
                              "worker.compression.pull=topk", "worker.compression.min_bytes=0",
                              "training.epochs=6", "training.max_steps=0"});
    Cluster cluster(c);
    auto train = SyntheticDataset(1024, 784, 10, 7);
    auto results = RunTrainers(c, cluster, &train);
    for (const auto& r : results) {
      REQUIRE(r.ok());
      CHECK(r->traffic.push_raw_bytes > 10 * r->traffic.push_bytes);
      CHECK(r->traffic.pull_raw_bytes > 5 * r->traffic.pull_bytes);
      CHECK(std::isfinite(r->train_loss));
    }
  }
}

TEST_CASE("through the client, the first delta pull is whole and later ones are deltas") {
  const std::string values = GENERATE("none", "bf16");
  INFO("topk_values " << values);
  JobConfig c = MakeConfig({"worker.compression.pull=topk", "worker.compression.min_bytes=0",
                            "worker.compression.pull_topk_ratio=0.1",
                            "worker.compression.topk_values=" + values});
  Cluster cluster(c);
  LocalPsClient client(c, 0, cluster.ptrs());
  REQUIRE(client.Connect().ok());
  ParameterSet whole, delta;
  REQUIRE(client.PullDense(0, &whole).ok());
  const PsClient::WireTraffic first = client.traffic();
  // Whole, in float32, or with bf16 values in bf16 too.
  CHECK(first.pull_bytes == first.pull_raw_bytes / (values == "none" ? 1 : 2));
  REQUIRE(client.PullDense(0, &delta).ok());
  const PsClient::WireTraffic second = client.traffic();
  CHECK(second.pull_raw_bytes > first.pull_raw_bytes);
  if (values == "none") {
    // Nothing changed: no position is sent (a zero change never is).
    CHECK(second.pull_bytes == first.pull_bytes);
    CHECK(delta == whole);
  } else {
    // The whole answer's bf16 rounding is the change the shard's copy of
    // it holds back: the delta sends the largest 10% of it, each value
    // moving by less than a bf16 step (1/128 of itself, at most).
    CHECK(second.pull_bytes > first.pull_bytes);
    size_t moved = 0, count = 0;
    for (size_t t = 0; t < whole.size(); ++t) {
      for (size_t i = 0; i < whole[t].size(); ++i) {
        ++count;
        if (delta[t][i] == whole[t][i]) continue;
        ++moved;
        CHECK(std::fabs(delta[t][i] - whole[t][i]) <= std::fabs(whole[t][i]) / 128);
      }
    }
    CHECK(moved > 0);
    CHECK(moved <= count / 10 + 64);
  }
}

TEST_CASE("top-k pushes and delta pulls with bf16 values: about 3 bytes an entry, and it trains") {
  // Ratio 1 both ways: every nonzero sent, as a 2-byte value and a 1-byte gap.
  PsClient::WireTraffic traffic;
  JobConfig c = MakeConfig({"consistency.mode=bsp", "worker.compression.push=topk",
                            "worker.compression.topk_ratio=1", "worker.compression.pull=topk",
                            "worker.compression.pull_topk_ratio=1",
                            "worker.compression.topk_values=bf16",
                            "worker.compression.min_bytes=0"});
  Cluster cluster(c);
  auto train = SyntheticDataset(c.data.synthetic_train, 784, 10, c.data.synthetic_seed);
  auto results = RunTrainers(c, cluster, &train);
  for (const auto& r : results) {
    REQUIRE(r.ok());
    CHECK(4 * r->traffic.push_bytes <= 3 * r->traffic.push_raw_bytes);
    CHECK(r->traffic.push_bytes > 0);
    CHECK(4 * r->traffic.pull_bytes <= 3 * r->traffic.pull_raw_bytes);
    CHECK(std::isfinite(r->train_loss));
  }
}

}  // namespace
}  // namespace tessera
