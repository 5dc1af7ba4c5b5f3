// The shard fuzz target's smoke run (fuzz/smoke.h): well-formed requests of
// every type for each of its three shards, then 20,000 mutations of them.
#include <catch2/catch.hpp>

#include "common/codec.h"
#include "common/wire.h"
#include "fuzz/shard_fuzz.h"
#include "fuzz/smoke.h"
#include "proto/tessera.pb.h"

namespace tessera {
namespace {

// The target's framing: a byte naming the shard (0..2) and the request type
// (0 Register, 1 Pull, 2 Push, 3 Clock, 4 Finish, 5 Stats), then the request.
std::string Frame(int shard, int kind, const google::protobuf::Message& request) {
  return std::string(1, static_cast<char>(shard | (kind << 2))) + request.SerializeAsString();
}

TEST_CASE("the shard fuzz target survives seeds and their mutations") {
  std::vector<std::string> seeds;
  const std::string session = "fuzz-worker-0000";
  for (int shard = 0; shard < 3; ++shard) {
    v1::RegisterRequest reg;
    reg.set_session(session);
    seeds.push_back(Frame(shard, 0, reg));
    reg.mutable_shared_memory()->set_name("/tessera-1-00");
    reg.mutable_shared_memory()->set_capacity(~uint64_t{0} - 31);
    reg.mutable_shared_memory()->set_token(std::string(16, 'k'));
    seeds.push_back(Frame(shard, 0, reg));

    v1::PullRequest pull;
    pull.set_session(session);
    auto* dense = pull.add_slices();
    dense->set_table("w");
    dense->set_offset(8);
    dense->set_length(64);
    auto* sparse = pull.add_slices();
    sparse->set_table("emb");
    EncodeKeys(std::vector<uint64_t>{3, 9, 400}, sparse->mutable_keys());
    seeds.push_back(Frame(shard, 1, pull));

    v1::PushRequest push;
    push.set_session(session);
    push.set_piece(1);
    *push.add_slices() = *dense;
    EncodeFloats(std::vector<float>(64, 0.5f), push.add_gradients());
    *push.add_slices() = *sparse;
    EncodeFloats(std::vector<float>(12, 1e30f), push.add_gradients());
    push.set_advance_clock(true);
    *push.add_pull_slices() = *dense;
    seeds.push_back(Frame(shard, 2, push));

    v1::ClockRequest clock;
    clock.set_session(session);
    seeds.push_back(Frame(shard, 3, clock));
    v1::FinishRequest finish;
    finish.set_session(session);
    seeds.push_back(Frame(shard, 4, finish));
    seeds.push_back(Frame(shard, 5, v1::StatsRequest()));
  }
  // Well-formed calls are answered: every shard's Register and Stats.
  ShardFuzzTally before = ShardFuzzCounts();
  for (int shard = 0; shard < 3; ++shard) {
    v1::RegisterRequest reg;
    reg.set_session(session);
    Feed(Frame(shard, 0, reg));
    Feed(Frame(shard, 5, v1::StatsRequest()));
  }
  CHECK(ShardFuzzCounts().accepted - before.accepted == 6);
  CHECK(ShardFuzzCounts().refused == before.refused);
  // The mutations reach both outcomes.
  before = ShardFuzzCounts();
  RunSmoke(seeds, 20000);
  const ShardFuzzTally after = ShardFuzzCounts();
  CHECK(after.accepted - before.accepted > 100);
  CHECK(after.refused - before.refused > 100);
}

}  // namespace
}  // namespace tessera
