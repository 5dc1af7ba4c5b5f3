// Delta pulls on the shard: the top of the change since the version a worker
// holds, what is held back, and one answer shared by workers that hold the
// same version of the same values.
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <optional>
#include <thread>
#include <vector>

#include "common/codec.h"
#include "server/dense_table.h"
#include "server/optimizer.h"
#include "server/shard.h"
#include "tests/server/shard_fixtures.h"

namespace tessera {
namespace {

TEST_CASE("delta pulls: whole first, then the largest changes, whole again on a stale base") {
  JobConfig c = MakeConfig("asp", 0, 1);
  auto shard = MakeShard(c);
  auto pull = [&](uint64_t base) {
    v1::Slice slice = Dense("w", 0, 8);
    slice.set_delta_ratio(0.25f);  // 2 of 8
    slice.set_delta_base(base);
    auto p = StartPull(*shard, 0, 0, slice);
    REQUIRE(p->status.has_value());
    REQUIRE(p->status->ok());
    REQUIRE(p->response.values_size() == 1);
    return p->response.values(0);
  };
  const v1::Payload first = pull(0);
  CHECK(!first.delta());
  CHECK(first.version() != 0);
  std::vector<float> held = DecodeFloats(first);
  CHECK(held == PullNow(*shard, Dense("w", 0, 8)));
  PushResponse resp;
  REQUIRE(shard->Push(MakePush(0, 0, Dense("w", 0, 8), {1, 0, 0, 0.5f, 0, 0, 0, -2}, true), &resp)
              .ok());
  const v1::Payload second = pull(first.version());
  CHECK(second.delta());
  CHECK(second.codec() == v1::TOPK);
  CHECK(second.version() != first.version());
  std::vector<float> change(8);
  REQUIRE(CodecOf(v1::TOPK).Decode(second, absl::MakeSpan(change)).ok());
  CHECK(change[0] == -1.0f);  // SGD, lr 1: the two largest changes
  CHECK(change[7] == 2.0f);
  CHECK(change[3] == 0.0f);   // kept on the shard for a later answer
  for (size_t i = 0; i < 8; ++i) held[i] += change[i];
  // The next delta carries what was held back.
  const v1::Payload third = pull(second.version());
  REQUIRE(CodecOf(v1::TOPK).Decode(third, absl::MakeSpan(change)).ok());
  CHECK(change[3] == -0.5f);
  for (size_t i = 0; i < 8; ++i) held[i] += change[i];
  CHECK(held == PullNow(*shard, Dense("w", 0, 8)));
  // A base the shard no longer holds (an answer the worker never got): whole.
  const v1::Payload again = pull(second.version());
  CHECK(!again.delta());
  CHECK(DecodeFloats(again) == PullNow(*shard, Dense("w", 0, 8)));
}

TEST_CASE("a delta pull of a sparse table or with a ratio outside [0, 1] is refused") {
  JobConfig c = MakeConfig("asp", 0, 1);
  auto shard = MakeShard(c);
  v1::Slice rows = Sparse("emb", {5});
  rows.set_delta_ratio(0.5f);
  auto p = StartPull(*shard, 0, 0, rows);
  REQUIRE(p->status.has_value());
  CHECK(p->status->code() == absl::StatusCode::kInvalidArgument);
  v1::Slice wide = Dense("w", 0, 8);
  wide.set_delta_ratio(2.0f);
  p = StartPull(*shard, 0, 0, wide);
  REQUIRE(p->status.has_value());
  CHECK(p->status->code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("workers pulling from one version at the same values share an answer, not after a write") {
  JobConfig c = MakeConfig("asp", 0, 2);
  auto shard = MakeShard(c);
  std::vector<float> held[2];
  auto pull = [&](uint32_t worker, uint64_t base) {
    v1::Slice slice = Dense("w", 0, 8);
    slice.set_delta_ratio(0.25f);  // 2 of 8
    slice.set_delta_base(base);
    auto p = StartPull(*shard, worker, 0, slice);
    REQUIRE(p->status.has_value());
    REQUIRE(p->status->ok());
    REQUIRE(p->response.values_size() == 1);
    const v1::Payload& answer = p->response.values(0);
    if (answer.delta()) {
      std::vector<float> change(8);
      REQUIRE(CodecOf(v1::TOPK).Decode(answer, absl::MakeSpan(change)).ok());
      for (size_t i = 0; i < 8; ++i) held[worker][i] += change[i];
    } else {
      held[worker] = DecodeFloats(answer);
    }
    return answer;
  };
  auto push = [&](uint32_t worker, std::vector<float> grad) {
    PushResponse resp;
    REQUIRE(shard->Push(MakePush(worker, 0, Dense("w", 0, 8), std::move(grad), false), &resp).ok());
  };
  // Whole answers at the same values: one answer, one version.
  const v1::Payload a0 = pull(0, 0);
  const v1::Payload b0 = pull(1, 0);
  CHECK(b0.version() == a0.version());
  // From that version, after one write: the same delta, byte for byte.
  push(0, {1, 0, 0, 0.5f, 0, 0, 0, -2});
  const v1::Payload a1 = pull(0, a0.version());
  const v1::Payload b1 = pull(1, b0.version());
  REQUIRE(a1.delta());
  CHECK(b1.SerializeAsString() == a1.SerializeAsString());
  CHECK(held[1] == held[0]);
  // A write between the two pulls: each gets the change to what it sees.
  push(1, {0, 3, 0, 0, 0, 0, 0, 0});
  const v1::Payload a2 = pull(0, a1.version());
  push(0, {0, 0, -4, 0, 0, 0, 0, 0});
  const v1::Payload b2 = pull(1, b1.version());
  CHECK(b2.version() != a2.version());
  CHECK(b2.SerializeAsString() != a2.SerializeAsString());
  // Shared or not, each worker's copy is what the shard remembers for it:
  // the changes held back arrive in later answers until both hold the table.
  uint64_t version[2] = {a2.version(), b2.version()};
  for (int round = 0; round < 4; ++round) {
    for (uint32_t w : {0u, 1u}) version[w] = pull(w, version[w]).version();
  }
  const std::vector<float> now = PullNow(*shard, Dense("w", 0, 8));
  CHECK(held[0] == now);
  CHECK(held[1] == now);
}

TEST_CASE("a table names the values a copy shows by its count of writes, none while one runs") {
  TableConfig t;
  t.name = "w";
  t.size = 2 * DenseTable::kChunkFloats;
  OptimizerConfig o;
  o.type = OptimizerType::kAdam;
  auto adam = MakeOptimizer(o);
  DenseTable table(t, DenseRange{0, t.size}, adam.get(), /*aggregate=*/true);
  std::vector<float> out(t.size), grad(t.size, 1.0f);
  const std::optional<uint64_t> first = table.CopyValuesAt(0, absl::MakeSpan(out));
  REQUIRE(first.has_value());
  CHECK(table.CopyValuesAt(0, absl::MakeSpan(out)) == first);
  CHECK(table.QuietWrites() == first);
  // Each kind of write moves it.
  table.Apply(0, grad, 1.0f);
  const std::optional<uint64_t> applied = table.QuietWrites();
  CHECK(applied > first);
  table.Accumulate(0, grad);
  table.ApplyAccumulated(1.0f);
  CHECK(table.QuietWrites() > applied);
  // Copies taken while another thread writes: any that names a count shows
  // exactly the values a quiet copy at that count shows.
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int i = 0; i < 200; ++i) {
      table.Apply(0, grad, 1.0f);
      std::this_thread::sleep_for(std::chrono::microseconds(200));  // quiet between writes
    }
    stop = true;
  });
  do {
    // Values go down by Adam's steps every write, one chunk at a time: the
    // first and the last of a named copy come from one state.
    if (table.CopyValuesAt(0, absl::MakeSpan(out))) CHECK(out.front() == out.back());
  } while (!stop);
  writer.join();
  const std::optional<uint64_t> last = table.QuietWrites();
  CHECK(last == applied.value() + 1 + 200);
  table.CopyValuesAt(0, absl::MakeSpan(out));
  CHECK(out.front() == out.back());
}

}  // namespace
}  // namespace tessera
