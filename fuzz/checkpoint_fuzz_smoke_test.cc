// The checkpoint fuzz target's smoke run (fuzz/smoke.h): real checkpoints of
// its job (fresh, trained, with epoch plans) as seeds, then mutations of
// them. The seeds must restore (the target reaches Restore and its finite
// check) and the mutations must mostly be refused.
#include <catch2/catch.hpp>

#include "common/codec.h"
#include "common/wire.h"
#include "fuzz/checkpoint_fuzz.h"
#include "fuzz/smoke.h"
#include "proto/tessera.pb.h"
#include "server/shard.h"

namespace tessera {
namespace {

std::string Session(uint32_t rank) { return std::string(15, 's') + static_cast<char>('0' + rank); }

// A checkpoint of the target's job after `rounds` pushes of both workers.
std::string Seed(int rounds, bool plans) {
  auto shard = Shard::Create(CheckpointFuzzJob(), 0);
  REQUIRE(shard.ok());
  for (uint32_t w = 0; w < 2; ++w) {
    v1::RegisterRequest r;
    r.set_worker_rank(w);
    r.set_session(Session(w));
    r.set_job(CheckpointFuzzJob().name);
    r.set_job_layout(CheckpointFuzzJob().LayoutText());
    v1::RegisterResponse resp;
    REQUIRE((*shard)->Register(r, &resp).ok());
  }
  for (int i = 0; i < rounds; ++i) {
    for (uint32_t w = 0; w < 2; ++w) {
      v1::PushRequest push;
      push.set_worker_rank(w);
      push.set_session(Session(w));
      push.set_clock(i);
      push.set_advance_clock(true);
      v1::Slice* dense = push.add_slices();
      dense->set_table("w");
      dense->set_length(300);
      EncodeFloats(std::vector<float>(300, 0.01f * (i + 1)), push.add_gradients());
      v1::Slice* sparse = push.add_slices();
      sparse->set_table("emb");
      EncodeKeys(std::vector<uint64_t>{3, 17, 1000 + uint64_t(i)}, sparse->mutable_keys());
      EncodeFloats(std::vector<float>(12, -0.5f), push.add_gradients());
      v1::PushResponse resp;
      REQUIRE((*shard)->Push(push, &resp).ok());
    }
  }
  if (plans) {
    for (int64_t epoch : {-1, 0, 1}) {
      v1::PlanRequest p;
      p.set_worker_rank(0);
      p.set_session(Session(0));
      p.set_epoch(epoch);
      p.set_examples_per_second(100.0 * (epoch + 2));
      v1::PlanResponse resp;
      REQUIRE((*shard)->Plan(p, &resp).ok());
    }
  }
  return CheckpointFuzzInput(*(*shard)->Snapshot());
}

TEST_CASE("the checkpoint fuzz target restores real checkpoints and survives their mutations") {
  const std::vector<std::string> seeds = {Seed(0, false), Seed(3, false), Seed(5, true)};
  const uint64_t before = CheckpointFuzzRestored();
  for (const std::string& seed : seeds) Feed(seed);
  CHECK(CheckpointFuzzRestored() - before == seeds.size());  // every real one restores
  const uint64_t mutations = 5000;
  RunSmoke(seeds, mutations);
  const uint64_t restored = CheckpointFuzzRestored() - before - 2 * seeds.size();
  // Most mutations break the framing, the tiling or the layout; a few
  // (a changed value, a changed clock in range) restore.
  CHECK(restored < mutations / 2);
}

}  // namespace
}  // namespace tessera
