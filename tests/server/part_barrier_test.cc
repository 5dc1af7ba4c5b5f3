// worker.bsp_parts on the shard: a part is applied once every worker pushed
// it, its parked pulls are answered before the clock closes, the parts
// together equal the whole clock's apply, and bad part requests change
// nothing.
#include <catch2/catch.hpp>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "common/partition.h"
#include "server/dense_table.h"
#include "server/optimizer.h"
#include "tests/server/shard_fixtures.h"

namespace tessera {
namespace {

// w: 64 floats at 1, b: 2 at 0; SGD lr 1; BSP, 2 workers, one shard;
// `parts`: part 1 is w[0, 32), part 2 w[32, 64) and b.
JobConfig PartsJob(uint32_t parts) {
  auto c = ParseJobConfig(R"(
cluster: {servers: ["h:1"], workers: 2}
consistency: {mode: bsp}
model:
  type: tables
  tables:
    - {name: w, kind: dense, size: 64, init: {type: constant, value: 1}}
    - {name: b, kind: dense, size: 2, init: {type: constant, value: 0}}
optimizer: {type: sgd, lr: 1.0}
)",
                          {"worker.bsp_parts=" + std::to_string(parts)});
  INFO(c.status().ToString());
  REQUIRE(c.ok());
  return *c;
}

PushRequest PartPush(uint32_t worker, int64_t clock, uint32_t part, float g, bool advance) {
  PushRequest p;
  p.set_worker_rank(worker);
  p.set_session(SessionOf(worker));
  p.set_clock(clock);
  p.set_piece(part);
  p.set_advance_clock(advance);
  if (part == 1) {
    *p.add_slices() = Dense("w", 0, 32);
    EncodeFloats(std::vector<float>(32, g), p.add_gradients());
  } else {
    *p.add_slices() = Dense("w", 32, 32);
    EncodeFloats(std::vector<float>(32, g), p.add_gradients());
    *p.add_slices() = Dense("b", 0, 2);
    EncodeFloats(std::vector<float>(2, g), p.add_gradients());
  }
  return p;
}

PullRequest PartPull(uint32_t worker, int64_t clock, uint32_t part) {
  PullRequest r = MakePull(worker, clock, part == 1 ? Dense("w", 0, 32) : Dense("w", 32, 32));
  if (part == 2) *r.add_slices() = Dense("b", 0, 2);
  r.set_part(part);
  return r;
}

TEST_CASE("BSP parts: a part is applied and answered once every worker pushed it") {
  JobConfig c = PartsJob(2);
  REQUIRE(BspParts({64, 2}, 0, 1, 2).size() == 2);
  auto shard = MakeShard(c);
  // Each worker's pulls of clock 1 wait while it still pushes clock 0.
  std::vector<std::unique_ptr<PendingPull>> pulls[2];
  for (uint32_t w = 0; w < 2; ++w) {
    for (uint32_t part : {1u, 2u}) pulls[w].push_back(StartPull(*shard, PartPull(w, 1, part)));
  }
  PushResponse resp;
  REQUIRE(shard->Push(PartPush(0, 0, 1, 1.0f, false), &resp).ok());
  CHECK_FALSE(pulls[0][0]->status.has_value());  // worker 1's part 1 is missing
  REQUIRE(shard->Push(PartPush(1, 0, 1, 3.0f, false), &resp).ok());
  for (uint32_t w = 0; w < 2; ++w) {
    // Part 1 is applied (w = 1 - mean(1, 3)) and answered; part 2 waits.
    REQUIRE(pulls[w][0]->status.has_value());
    REQUIRE(pulls[w][0]->status->ok());
    CHECK(DecodeFloats(pulls[w][0]->response.values(0)) == std::vector<float>(32, -1.0f));
    CHECK(pulls[w][0]->response.min_clock() == 1);
    CHECK_FALSE(pulls[w][1]->status.has_value());
  }
  CHECK(shard->published_min() == 0);  // the clock is still open
  // A copy now would mix two clocks.
  CHECK(shard->Snapshot() == nullptr);
  REQUIRE(shard->Push(PartPush(0, 0, 2, 2.0f, true), &resp).ok());
  CHECK_FALSE(pulls[1][1]->status.has_value());
  REQUIRE(shard->Push(PartPush(1, 0, 2, 4.0f, true), &resp).ok());
  for (uint32_t w = 0; w < 2; ++w) {
    REQUIRE(pulls[w][1]->status.has_value());
    REQUIRE(pulls[w][1]->status->ok());
    CHECK(DecodeFloats(pulls[w][1]->response.values(0)) == std::vector<float>(32, -2.0f));
    CHECK(DecodeFloats(pulls[w][1]->response.values(1)) == std::vector<float>(2, -3.0f));
  }
  CHECK(shard->published_min() == 1);
  CHECK(shard->Snapshot() != nullptr);
  // The next clock: a part pushed by one worker alone is applied at the
  // close when the other finishes without it (as the pushers' mean).
  REQUIRE(shard->Push(PartPush(0, 1, 1, 1.0f, false), &resp).ok());
  REQUIRE(shard->Push(PartPush(0, 1, 2, 1.0f, true), &resp).ok());
  Advance(*shard, 1, 1);
  CHECK(PullNow(*shard, Dense("w", 0, 32)) == std::vector<float>(32, -2.0f));
  CHECK(PullNow(*shard, Dense("w", 32, 32)) == std::vector<float>(32, -3.0f));
}

TEST_CASE("BSP parts: the last part's pulls wait for the clock's close") {
  // Both workers' last parts are in, but their advances come apart (another
  // thread's advance still under way): a worker answered now could push
  // the next clock before this one closed.
  auto shard = MakeShard(PartsJob(2));
  PushResponse resp;
  for (uint32_t w = 0; w < 2; ++w) REQUIRE(shard->Push(PartPush(w, 0, 1, 1.0f, false), &resp).ok());
  auto last = StartPull(*shard, PartPull(1, 1, 2));
  for (uint32_t w = 0; w < 2; ++w) REQUIRE(shard->Push(PartPush(w, 0, 2, 1.0f, false), &resp).ok());
  Advance(*shard, 1, 0);
  CHECK_FALSE(last->status.has_value());
  Advance(*shard, 0, 0);
  REQUIRE(last->status.has_value());
  CHECK(last->status->ok());
  CHECK(shard->published_min() == 1);
  CHECK(last->response.min_clock() == 1);
}

TEST_CASE("BSP parts: a part's push retried after a lost answer counts once") {
  auto shard = MakeShard(PartsJob(2));
  PushResponse resp;
  // Worker 0's part 1 arrives twice (its first answer was lost), with another
  // gradient the second time (a recomputation would be the same; this shows
  // which one counts): the first stands, the mean is over two pushes.
  REQUIRE(shard->Push(PartPush(0, 0, 1, 1.0f, false), &resp).ok());
  REQUIRE(shard->Push(PartPush(0, 0, 1, 7.0f, false), &resp).ok());
  auto pull = StartPull(*shard, PartPull(1, 1, 1));
  CHECK_FALSE(pull->status.has_value());
  REQUIRE(shard->Push(PartPush(1, 0, 1, 3.0f, false), &resp).ok());
  REQUIRE(pull->status.has_value());
  CHECK(DecodeFloats(pull->response.values(0)) == std::vector<float>(32, -1.0f));
  // And after the part was applied, a retry changes nothing either.
  REQUIRE(shard->Push(PartPush(1, 0, 1, 3.0f, false), &resp).ok());
  for (uint32_t w = 0; w < 2; ++w) REQUIRE(shard->Push(PartPush(w, 0, 2, 0.0f, true), &resp).ok());
  CHECK(PullNow(*shard, Dense("w", 0, 32)) == std::vector<float>(32, -1.0f));
  CHECK(PullNow(*shard, Dense("w", 32, 32)) == std::vector<float>(32, 1.0f));
  v1::StatsResponse stats;
  shard->Stats(&stats);
  CHECK(stats.duplicate_pushes() == 2);
}

TEST_CASE("BSP parts: bad part pushes and pulls get the right code and change nothing") {
  auto shard = MakeShard(PartsJob(2));
  PushResponse resp;
  // Part 1's number on part 2's slices; a part number past the last; a
  // dense push without a part number.
  PushRequest swapped = PartPush(0, 0, 2, 1.0f, false);
  swapped.set_piece(1);
  PushRequest unnumbered = PartPush(0, 0, 1, 1.0f, false);
  unnumbered.set_piece(0);
  for (const PushRequest& bad : {swapped, PartPush(0, 0, 3, 1.0f, false), unnumbered}) {
    const absl::Status s = shard->Push(bad, &resp);
    INFO(s.ToString());
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  }
  PullRequest wrong = PartPull(0, 1, 1);
  wrong.set_part(2);
  for (const PullRequest& bad : {wrong, PartPull(0, 2, 1)}) {
    auto p = StartPull(*shard, bad);
    REQUIRE(p->status.has_value());
    INFO(p->status->ToString());
    CHECK(p->status->code() == (bad.clock() == 2 ? absl::StatusCode::kFailedPrecondition
                                                 : absl::StatusCode::kInvalidArgument));
  }
  // Nothing moved: both parts still need both workers.
  for (uint32_t w = 0; w < 2; ++w) {
    REQUIRE(shard->Push(PartPush(w, 0, 1, 1.0f, false), &resp).ok());
    REQUIRE(shard->Push(PartPush(w, 0, 2, 1.0f, true), &resp).ok());
  }
  CHECK(PullNow(*shard, Dense("w", 0, 64)) == std::vector<float>(64, 0.0f));
  // A job of whole clocks refuses a part's pull.
  auto whole = MakeShard(PartsJob(1));
  auto p = StartPull(*whole, PartPull(0, 0, 1));
  REQUIRE(p->status.has_value());
  CHECK(p->status->code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("a clock applied part by part equals its whole apply under Adam, to the bit") {
  // Two lock chunks and a tail; cuts on 16-float boundaries, one of them
  // inside a chunk. Adam counts one step per clock however many parts.
  const uint64_t kSize = DenseTable::kChunkFloats + 1000;
  TableConfig t;
  t.name = "w";
  t.size = kSize;
  t.init.type = InitType::kNormal;
  t.init.stddev = 0.1f;
  OptimizerConfig o;
  o.type = OptimizerType::kAdam;
  o.lr = 0.01f;
  auto adam = MakeOptimizer(o);
  const DenseRange range{0, kSize};
  DenseTable whole(t, range, adam.get(), /*aggregate=*/true);
  DenseTable parted(t, range, adam.get(), /*aggregate=*/true);
  const std::vector<uint64_t> cuts = {0, 4096, DenseTable::kChunkFloats + 512, kSize};
  std::vector<float> g(kSize), a(kSize), b(kSize);
  for (int64_t clock = 0; clock < 3; ++clock) {
    for (int worker = 0; worker < 2; ++worker) {
      for (uint64_t i = 0; i < kSize; ++i) g[i] = std::sin(0.001f * i + clock + worker * 0.5f);
      whole.Accumulate(0, g);
      for (size_t k = 0; k + 1 < cuts.size(); ++k) {
        parted.Accumulate(cuts[k], absl::MakeConstSpan(g).subspan(cuts[k], cuts[k + 1] - cuts[k]));
      }
    }
    whole.ApplyAccumulated(0.5f);
    for (size_t k = cuts.size() - 1; k > 0; --k) {  // in any order
      parted.ApplyAccumulatedRange(cuts[k - 1], cuts[k] - cuts[k - 1], 0.5f, clock);
    }
    whole.CopyValues(0, absl::MakeSpan(a));
    parted.CopyValues(0, absl::MakeSpan(b));
    INFO("clock " << clock);
    CHECK(a == b);
  }
}

}  // namespace
}  // namespace tessera
