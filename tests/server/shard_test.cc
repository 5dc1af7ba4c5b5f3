// Shard logic without gRPC: consistency gating, BSP aggregation, sparse rows,
// and every bad-input case leaving the shard unchanged.
#include "server/shard.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <limits>
#include <optional>
#include <thread>

#include "common/codec.h"
#include "common/partition.h"
#include "common/wire.h"
#include "server/dense_table.h"
#include "tests/server/shard_fixtures.h"

namespace tessera {
namespace {

TEST_CASE("SSP: a pull at clock c waits exactly until min_clock >= c - s") {
  for (uint32_t s : {0u, 1u, 3u}) {
    JobConfig c = MakeConfig(s == 0 ? "bsp" : "ssp", s, 2);
    c.consistency.aggregate = false;
    auto shard = MakeShard(c);
    // The fast worker 0 runs ahead to clock 6; the slow worker 1 stays at 0.
    for (int64_t k = 0; k < 6; ++k) Advance(*shard, 0, k);
    std::vector<std::unique_ptr<PendingPull>> pulls;
    for (int64_t clock = 0; clock <= 6; ++clock) {
      pulls.push_back(StartPull(*shard, 0, clock, Dense("w", 0, 8)));
    }
    for (int64_t min = 0; min <= 6; ++min) {
      for (int64_t clock = 0; clock <= 6; ++clock) {
        INFO("s=" << s << " min_clock=" << min << " pull clock=" << clock);
        CHECK(pulls[clock]->status.has_value() == (min >= clock - static_cast<int64_t>(s)));
      }
      Advance(*shard, 1, min);  // the slow worker finishes iteration `min`
    }
    for (auto& p : pulls) CHECK(p->status->ok());
  }
}

TEST_CASE("ASP never waits") {
  auto shard = MakeShard(MakeConfig("asp", 0, 2));
  for (int64_t k = 0; k < 50; ++k) Advance(*shard, 0, k);
  auto p = StartPull(*shard, 0, 50, Dense("w", 0, 8));
  CHECK(p->status.has_value());
}

TEST_CASE("a parked pull fails DEADLINE_EXCEEDED at its deadline and nothing else changes") {
  auto shard = MakeShard(MakeConfig("bsp", 0, 2));
  Advance(*shard, 0, 0);
  absl::Time deadline = absl::FromUnixSeconds(100);
  auto p = StartPull(*shard, 0, 1, Dense("w", 0, 8), deadline);
  CHECK_FALSE(p->status.has_value());
  CHECK(shard->ExpireDue(deadline - absl::Milliseconds(1)) == 0);
  CHECK_FALSE(p->status.has_value());
  CHECK(shard->ExpireDue(deadline) == 1);
  REQUIRE(p->status.has_value());
  CHECK(p->status->code() == absl::StatusCode::kDeadlineExceeded);
  CHECK(p->response.values_size() == 0);
}

TEST_CASE("BSP aggregation sums the W pushes of a clock and applies once, as their mean") {
  const uint32_t kWorkers = 3;
  auto shard = MakeShard(MakeConfig("bsp", 0, kWorkers));
  std::vector<std::vector<float>> grads = {{1, 2}, {4, 8}, {7, -1}};
  for (uint32_t w = 0; w < kWorkers; ++w) {
    PushResponse resp;
    REQUIRE(shard->Push(MakePush(w, 0, Dense("b", 0, 2), grads[w]), &resp).ok());
    // Nothing is applied until every worker has finished the clock.
    CHECK(PullNow(*shard, Dense("b", 0, 2)) == std::vector<float>{0, 0});
  }
  v1::StatsResponse before;
  shard->Stats(&before);
  CHECK(before.updates_applied() == 0);
  for (uint32_t w = 0; w < kWorkers; ++w) Advance(*shard, w, 0);
  // lr 1: b = 0 - mean(g) = -(1+4+7)/3, -(2+8-1)/3
  auto b = PullNow(*shard, Dense("b", 0, 2));
  CHECK(b[0] == Approx(-4.0f));
  CHECK(b[1] == Approx(-3.0f));
  v1::StatsResponse after;
  shard->Stats(&after);
  CHECK(after.updates_applied() == 3);  // once per table, not once per push
}

TEST_CASE("BSP aggregation over partial and full ranges never reapplies an old clock's sum") {
  // The buffer is not cleared after an apply: a clock's first push into a
  // chunk copies (whole chunk) or clears the chunk first (part of it).
  auto shard = MakeShard(MakeConfig("bsp", 0, 2));  // w starts at 1, SGD lr 1
  auto step = [&](int64_t clock, std::vector<std::pair<uint32_t, PushRequest>> pushes) {
    for (auto& [worker, push] : pushes) {
      PushResponse resp;
      REQUIRE(shard->Push(push, &resp).ok());
    }
    Advance(*shard, 0, clock);
    Advance(*shard, 1, clock);
  };
  step(0, {{0, MakePush(0, 0, Dense("w", 0, 4), {1, 1, 1, 1})},
           {1, MakePush(1, 0, Dense("w", 2, 6), {2, 2, 2, 2, 2, 2})}});
  CHECK(PullNow(*shard, Dense("w", 0, 8)) ==
        std::vector<float>{0.5f, 0.5f, -0.5f, -0.5f, 0, 0, 0, 0});
  // One pusher, part of the chunk: only its values move, by its gradient.
  step(1, {{0, MakePush(0, 1, Dense("w", 6, 2), {4, 4})}});
  CHECK(PullNow(*shard, Dense("w", 0, 8)) ==
        std::vector<float>{0.5f, 0.5f, -0.5f, -0.5f, 0, 0, -4, -4});
  // The whole chunk, then a part on top: copy, then add.
  step(2, {{1, MakePush(1, 2, Dense("w", 0, 8), {1, 1, 1, 1, 1, 1, 1, 1})},
           {0, MakePush(0, 2, Dense("w", 0, 1), {3})}});
  CHECK(PullNow(*shard, Dense("w", 0, 8)) ==
        std::vector<float>{-1.5f, 0, -1, -1, -0.5f, -0.5f, -4.5f, -4.5f});
  // A clock nobody pushed to changes nothing.
  step(3, {});
  CHECK(PullNow(*shard, Dense("w", 0, 8)) ==
        std::vector<float>{-1.5f, 0, -1, -1, -0.5f, -0.5f, -4.5f, -4.5f});
}

TEST_CASE("BSP aggregation matches one process applying the mean gradient, under Adam") {
  JobConfig c = MakeConfig("bsp", 0, 2);
  c.optimizer.type = OptimizerType::kAdam;
  c.optimizer.lr = 0.1f;
  auto shard = MakeShard(c);
  JobConfig single = MakeConfig("bsp", 0, 1);
  single.optimizer = c.optimizer;
  auto reference = MakeShard(single);
  for (int64_t clock = 0; clock < 5; ++clock) {
    std::vector<float> g0 = {float(clock), -1}, g1 = {3, float(clock * clock)};
    PushResponse r;
    REQUIRE(shard->Push(MakePush(0, clock, Dense("b", 0, 2), g0, true), &r).ok());
    REQUIRE(shard->Push(MakePush(1, clock, Dense("b", 0, 2), g1, true), &r).ok());
    std::vector<float> mean = {(g0[0] + g1[0]) / 2, (g0[1] + g1[1]) / 2};
    REQUIRE(reference->Push(MakePush(0, clock, Dense("b", 0, 2), mean, true), &r).ok());
  }
  auto got = PullNow(*shard, Dense("b", 0, 2));
  auto want = PullNow(*reference, Dense("b", 0, 2));
  CHECK(got[0] == Approx(want[0]).epsilon(1e-6));
  CHECK(got[1] == Approx(want[1]).epsilon(1e-6));
}

TEST_CASE("a push split into pieces inside a lock chunk is one Adam step, as one piece is") {
  // ASP and Adam: each lock chunk counts updates for the bias correction. The
  // split push's pieces meet at 100,000 floats, inside the first chunk of
  // 262,144 (DenseTable::kChunkFloats); until session 10 that chunk counted
  // two steps for one update.
  const auto make = [] {
    auto c = ParseJobConfig(R"(
cluster: {servers: ["h:1"], workers: 2}
consistency: {mode: asp}
model: {type: tables, tables: [{name: w, kind: dense, size: 300000}]}
optimizer: {type: adam, lr: 0.1}
)",
                            {});
    REQUIRE(c.ok());
    return MakeShard(*c);
  };
  auto split = make(), whole = make();
  const uint64_t n = 300000, cut = 100000;
  REQUIRE(cut < DenseTable::kChunkFloats);
  REQUIRE(n > DenseTable::kChunkFloats);
  for (int64_t clock = 0; clock < 3; ++clock) {
    for (uint32_t w = 0; w < 2; ++w) {
      std::vector<float> g(n);
      for (uint64_t i = 0; i < n; ++i) g[i] = float((i * 7 + clock * 3 + w) % 11) - 5.0f;
      PushRequest a = MakePush(w, clock, Dense("w", 0, cut), {g.begin(), g.begin() + cut});
      a.set_piece(1);
      PushRequest b = MakePush(w, clock, Dense("w", cut, n - cut), {g.begin() + cut, g.end()}, true);
      b.set_piece(2);
      PushRequest one = MakePush(w, clock, Dense("w", 0, n), g, true);
      one.set_piece(1);
      PushResponse r;
      REQUIRE(split->Push(a, &r).ok());
      REQUIRE(split->Push(b, &r).ok());
      REQUIRE(whole->Push(one, &r).ok());
    }
  }
  const std::vector<float> got = PullNow(*split, Dense("w", 0, n));
  const std::vector<float> want = PullNow(*whole, Dense("w", 0, n));
  REQUIRE(got.size() == n);
  size_t differ = 0;
  for (uint64_t i = 0; i < n; ++i) differ += got[i] != want[i];
  CHECK(differ == 0);
}

TEST_CASE("BSP refuses a push for a clock that is not open yet") {
  auto shard = MakeShard(MakeConfig("bsp", 0, 2));
  Advance(*shard, 0, 0);
  PushResponse resp;
  auto s = shard->Push(MakePush(0, 1, Dense("b", 0, 2), {1, 1}), &resp);
  CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
}

TEST_CASE("sparse rows are created on first touch with the initializer, then updated") {
  JobConfig c = MakeConfig("asp", 0, 1);
  auto shard = MakeShard(c);
  auto first = PullNow(*shard, Sparse("emb", {3, 9, 100}));
  REQUIRE(first.size() == 6);
  Initializer init(c.Tables()[2].init, "emb");
  CHECK(first[0] == init.ValueAt(3 * 2));
  CHECK(first[5] == init.ValueAt(100 * 2 + 1));
  CHECK(PullNow(*shard, Sparse("emb", {3, 9, 100})) == first);  // stable once created
  PushResponse resp;
  REQUIRE(shard->Push(MakePush(0, 0, Sparse("emb", {9}), {0.5f, -0.5f}), &resp).ok());
  auto after = PullNow(*shard, Sparse("emb", {9}));
  CHECK(after[0] == Approx(first[2] - 0.5f));
  CHECK(after[1] == Approx(first[3] + 0.5f));
  v1::StatsResponse stats;
  shard->Stats(&stats);
  CHECK(stats.tables(2).rows() == 3);
}

TEST_CASE("a push treats subnormal gradients as zero and leaves the caller's float mode alone") {
  // SGD with lr 1 on weights of 0: a subnormal gradient is read as zero
  // (the optimizer would otherwise crawl through microcode assists).
  auto shard = MakeShard(MakeConfig("asp", 0, 1));
  const float tiny = std::numeric_limits<float>::denorm_min() * 4;
  PushResponse resp;
  REQUIRE(PullNow(*shard, Dense("b", 0, 2)) == std::vector<float>{0, 0});
  REQUIRE(shard->Push(MakePush(0, 0, Dense("b", 0, 2), {tiny, 0.5f}), &resp).ok());
  auto after = PullNow(*shard, Dense("b", 0, 2));
  CHECK(after[0] == 0.0f);  // without the flush: -tiny
  CHECK(after[1] == -0.5f);
  volatile float x = tiny;
  CHECK(x * 1.0f == tiny);  // the calling thread still keeps subnormals
}

TEST_CASE("a fused pull is answered in the push when the rule allows it, never waited for") {
  auto shard = MakeShard(MakeConfig("bsp", 0, 2));
  auto fused = [&](uint32_t worker, std::vector<float> g) {
    PushRequest p = MakePush(worker, 0, Dense("b", 0, 2), g, /*advance=*/true);
    *p.add_pull_slices() = Dense("b", 0, 2);
    PushResponse r;
    REQUIRE(shard->Push(p, &r).ok());
    return r;
  };
  // Worker 0 finishes clock 0 first: a pull at clock 1 would wait, so none.
  PushResponse first = fused(0, {2, 4});
  CHECK_FALSE(first.pulled());
  CHECK(first.values_size() == 0);
  // Worker 1 closes the clock: the aggregated update is applied, then read.
  PushResponse last = fused(1, {4, 8});
  REQUIRE(last.pulled());
  CHECK(last.min_clock() == 1);
  auto values = DecodeFloats(last.values(0));
  CHECK(values == std::vector<float>{-3, -6});  // lr 1, mean of the two gradients
  CHECK(PullNow(*shard, Dense("b", 0, 2)) == values);
}

TEST_CASE("a push whose fused pull is bad is refused whole") {
  auto shard = MakeShard(MakeConfig("asp", 0, 1));
  PushRequest p = MakePush(0, 0, Dense("b", 0, 2), {1, 1}, /*advance=*/true);
  *p.add_pull_slices() = Dense("nope", 0, 1);
  PushResponse r;
  CHECK(shard->Push(p, &r).code() == absl::StatusCode::kInvalidArgument);
  CHECK(PullNow(*shard, Dense("b", 0, 2)) == std::vector<float>{0, 0});
  v1::StatsResponse stats;
  shard->Stats(&stats);
  CHECK(stats.worker_clocks(0) == 0);  // not advanced either
}

TEST_CASE("a push with advance_clock moves the worker's clock") {
  auto shard = MakeShard(MakeConfig("ssp", 1, 2));
  PushResponse resp;
  REQUIRE(shard->Push(MakePush(0, 0, Dense("b", 0, 2), {1, 1}, true), &resp).ok());
  CHECK(resp.clock() == 1);
  CHECK(resp.min_clock() == 0);
}

// Everything a client can see of the shard: all values and the clocks.
struct Snapshot {
  std::vector<float> w, b, emb;
  std::vector<int64_t> clocks;
  bool operator==(const Snapshot& o) const {
    return w == o.w && b == o.b && emb == o.emb && clocks == o.clocks;
  }
};

TEST_CASE("bad pushes get the right code and leave the shard unchanged") {
  JobConfig c = MakeConfig("ssp", 2, 2, /*servers=*/2);
  auto shard = MakeShard(c, 0);
  // Keys of shard 0 and of shard 1 under the documented hash.
  std::vector<uint64_t> mine, theirs;
  for (uint64_t k = 0; mine.size() < 3 || theirs.empty(); ++k) {
    (SparseShardOf(k, 2) == 0 ? mine : theirs).push_back(k);
  }
  mine.resize(3);
  DenseRange range = DenseShardRange(8, 0, 2);  // [0, 4)
  auto snapshot = [&] {
    Snapshot s;
    s.w = PullNow(*shard, Dense("w", 0, 4));
    s.b = PullNow(*shard, Dense("b", 0, 1));
    s.emb = PullNow(*shard, Sparse("emb", mine));
    v1::StatsResponse stats;
    shard->Stats(&stats);
    s.clocks.assign(stats.worker_clocks().begin(), stats.worker_clocks().end());
    return s;
  };
  const Snapshot before = snapshot();
  const float nan = std::nanf("");
  const float inf = std::numeric_limits<float>::infinity();

  struct Case {
    const char* what;
    PushRequest push;
    absl::StatusCode code;
  };
  PushRequest two_slices = MakePush(0, 0, Dense("w", 0, 2), {1, 1}, true);
  *two_slices.add_slices() = Dense("b", 0, 1);  // no second payload
  PushRequest good_then_bad = MakePush(0, 0, Dense("w", 0, 2), {5, 5}, true);
  *good_then_bad.add_slices() = Dense("nope", 0, 1);
  EncodeFloats(std::vector<float>{1}, good_then_bad.add_gradients());
  PushRequest unregistered = MakePush(0, 0, Dense("w", 0, 1), {1});
  unregistered.set_worker_rank(7);
  unregistered.set_session(SessionOf(7));
  std::vector<Case> cases = {
      {"unknown table", MakePush(0, 0, Dense("nope", 0, 1), {1}, true),
       absl::StatusCode::kInvalidArgument},
      {"offset past the range", MakePush(0, 0, Dense("w", range.end, 1), {1}, true),
       absl::StatusCode::kInvalidArgument},
      {"length past the range", MakePush(0, 0, Dense("w", 2, 3), {1, 1, 1}, true),
       absl::StatusCode::kInvalidArgument},
      {"payload shorter than the slice", MakePush(0, 0, Dense("w", 0, 3), {1, 1}, true),
       absl::StatusCode::kInvalidArgument},
      {"sparse payload not keys * dim", MakePush(0, 0, Sparse("emb", mine), {1, 1}, true),
       absl::StatusCode::kInvalidArgument},
      {"NaN gradient", MakePush(0, 0, Dense("w", 0, 2), {1, nan}, true),
       absl::StatusCode::kInvalidArgument},
      {"Inf gradient", MakePush(0, 0, Dense("b", 0, 1), {inf}, true),
       absl::StatusCode::kInvalidArgument},
      {"unsorted keys", MakePush(0, 0, Sparse("emb", {mine[1], mine[0]}), {1, 1, 1, 1}, true),
       absl::StatusCode::kInvalidArgument},
      {"duplicate keys", MakePush(0, 0, Sparse("emb", {mine[0], mine[0]}), {1, 1, 1, 1}, true),
       absl::StatusCode::kInvalidArgument},
      {"key of another shard", MakePush(0, 0, Sparse("emb", {theirs[0]}), {1, 1}, true),
       absl::StatusCode::kOutOfRange},
      {"keys on a dense table", MakePush(0, 0, Sparse("w", {mine[0]}), {1}, true),
       absl::StatusCode::kInvalidArgument},
      {"slices without payloads", two_slices, absl::StatusCode::kInvalidArgument},
      {"a good slice then a bad one", good_then_bad, absl::StatusCode::kInvalidArgument},
      {"clock ahead of the worker's", MakePush(0, 1, Dense("w", 0, 1), {1}, true),
       absl::StatusCode::kFailedPrecondition},
      {"rank beyond cluster.workers", unregistered, absl::StatusCode::kInvalidArgument},
  };
  for (auto& c : cases) {
    INFO(c.what);
    PushResponse resp;
    CHECK(shard->Push(c.push, &resp).code() == c.code);
    CHECK(snapshot() == before);
  }
}

TEST_CASE("bfloat16 pushes and pulls: rounded on the wire, float32 on the shard") {
  JobConfig c = MakeConfig("asp", 0, 1);
  auto shard = MakeShard(c);
  // A gradient that bfloat16 cannot hold exactly is applied as its rounding.
  const std::vector<float> grad = {0.1f, -0.3f};
  PushRequest push;
  push.set_worker_rank(0);
  push.set_session(SessionOf(0));
  push.set_clock(0);
  *push.add_slices() = Dense("b", 0, 2);
  CodecOf(v1::BFLOAT16).Encode(grad, push.add_gradients());
  PushResponse resp;
  REQUIRE(shard->Push(push, &resp).ok());
  const std::vector<float> b = PullNow(*shard, Dense("b", 0, 2));  // float32 pull
  CHECK(b[0] == -FromBfloat16(ToBfloat16(0.1f)));                  // SGD, lr 1, from 0
  CHECK(b[1] == -FromBfloat16(ToBfloat16(-0.3f)));
  // A bfloat16 pull returns the rounding of the float32 values.
  auto pull = StartPull(*shard, 0, 0, Dense("b", 0, 2));
  PullRequest request = pull->request;
  request.mutable_slices(0)->set_codec(v1::BFLOAT16);
  PullResponse bf16_resp;
  std::optional<absl::Status> status;
  shard->Pull(request, &bf16_resp, kFar, [&](absl::Status s) { status = s; });
  REQUIRE(status.has_value());
  REQUIRE(status->ok());
  REQUIRE(bf16_resp.values(0).codec() == v1::BFLOAT16);
  REQUIRE(bf16_resp.values(0).values().size() == 4);
  std::vector<float> got = DecodeFloats(bf16_resp.values(0));
  CHECK(got[0] == FromBfloat16(ToBfloat16(b[0])));
  CHECK(got[1] == FromBfloat16(ToBfloat16(b[1])));
  // Sparse rows travel the same way.
  auto emb = PullNow(*shard, Sparse("emb", {5}));
  PullRequest sparse;
  sparse.set_worker_rank(0);
  sparse.set_session(SessionOf(0));
  *sparse.add_slices() = Sparse("emb", {5});
  sparse.mutable_slices(0)->set_codec(v1::BFLOAT16);
  PullResponse sparse_resp;
  status.reset();
  shard->Pull(sparse, &sparse_resp, kFar, [&](absl::Status s) { status = s; });
  REQUIRE((status.has_value() && status->ok()));
  got = DecodeFloats(sparse_resp.values(0));
  CHECK(got[0] == FromBfloat16(ToBfloat16(emb[0])));
  CHECK(got[1] == FromBfloat16(ToBfloat16(emb[1])));
}

TEST_CASE("a bfloat16 push of the wrong size, or an unknown codec, changes nothing") {
  JobConfig c = MakeConfig("asp", 0, 1);
  auto shard = MakeShard(c);
  const std::vector<float> before = PullNow(*shard, Dense("w", 0, 8));
  PushRequest push = MakePush(0, 0, Dense("w", 0, 2), {1, 1}, true);  // float32 bytes
  push.mutable_gradients(0)->set_codec(v1::BFLOAT16);
  PushResponse resp;
  absl::Status s = shard->Push(push, &resp);
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(s.message()) ==
        "table 'w': gradient payload (BFLOAT16): values hold 8 bytes, expected 4 (2 values)");
  push.mutable_gradients(0)->set_codec(static_cast<v1::Codec>(9));
  s = shard->Push(push, &resp);
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(s.message()) ==
        "codec 9 is unknown: expected FLOAT32, BFLOAT16, FLOAT16, TOPK or ONEBIT");
  PullRequest pull;
  pull.set_worker_rank(0);
  pull.set_session(SessionOf(0));
  *pull.add_slices() = Dense("w", 0, 2);
  pull.mutable_slices(0)->set_codec(static_cast<v1::Codec>(9));
  PullResponse pull_resp;
  std::optional<absl::Status> status;
  shard->Pull(pull, &pull_resp, kFar, [&](absl::Status st) { status = st; });
  REQUIRE(status.has_value());
  CHECK(status->code() == absl::StatusCode::kInvalidArgument);
  CHECK(PullNow(*shard, Dense("w", 0, 8)) == before);
  v1::StatsResponse stats;
  shard->Stats(&stats);
  CHECK(stats.worker_clocks(0) == 0);
}

TEST_CASE("pushes and pulls from unregistered workers fail FAILED_PRECONDITION") {
  auto s = Shard::Create(MakeConfig("asp", 0, 2), 0);
  REQUIRE(s.ok());
  PushResponse resp;
  CHECK((*s)->Push(MakePush(1, 0, Dense("b", 0, 1), {1}), &resp).code() ==
        absl::StatusCode::kFailedPrecondition);
  auto p = StartPull(**s, 1, 0, Dense("b", 0, 1));
  CHECK(p->status->code() == absl::StatusCode::kFailedPrecondition);
}

TEST_CASE("a pull whose answer would exceed max_message_bytes fails RESOURCE_EXHAUSTED") {
  JobConfig c = MakeConfig("asp", 0, 1);
  c.model.tables[0].size = 1 << 20;
  c.server.max_message_bytes = 1 << 20;
  auto shard = MakeShard(c);
  auto p = StartPull(*shard, 0, 0, Dense("w", 0, 1 << 20));
  CHECK(p->status->code() == absl::StatusCode::kResourceExhausted);
}

TEST_CASE("bad pulls fail at once without parking") {
  auto shard = MakeShard(MakeConfig("bsp", 0, 2));
  CHECK(StartPull(*shard, 0, 0, Dense("w", 4, 8))->status->code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(StartPull(*shard, 0, 3, Dense("w", 0, 8))->status->code() ==
        absl::StatusCode::kFailedPrecondition);
  v1::StatsResponse stats;
  shard->Stats(&stats);
  CHECK(stats.parked_pulls() == 0);
}

TEST_CASE("concurrent ASP pushes from many threads equal the sequential result") {
  const uint32_t kWorkers = 4;
  const int kPushes = 200;
  auto shard = MakeShard(MakeConfig("asp", 0, kWorkers));
  std::vector<std::thread> threads;
  for (uint32_t w = 0; w < kWorkers; ++w) {
    threads.emplace_back([&, w] {
      for (int i = 0; i < kPushes; ++i) {
        PushResponse resp;
        // Small integers: float sums are exact, so any order gives one answer.
        std::vector<float> g(8, static_cast<float>(w + 1));
        REQUIRE(shard->Push(MakePush(w, i, Dense("w", 0, 8), g, true), &resp).ok());
      }
    });
  }
  for (auto& t : threads) t.join();
  auto w = PullNow(*shard, Dense("w", 0, 8));
  const float expected = 1.0f - kPushes * (1 + 2 + 3 + 4);
  for (float x : w) CHECK(x == expected);
}

TEST_CASE("one worker's concurrent pushes all apply; its clock advance closes the clock") {
  // Pushes of one worker within a clock run in parallel on the shard; an
  // advance runs alone. Every push that returns OK must be in the values and
  // every push refused (its clock closed under it) must not.
  const int kThreads = 4, kPushes = 300;
  auto shard = MakeShard(MakeConfig("asp", 0, 1));
  std::atomic<int> accepted{0}, refused{0}, other{0};
  std::atomic<bool> advanced{false};
  std::vector<std::thread> threads;  // Catch2's assertions stay on this thread
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPushes; ++i) {
        PushResponse resp;
        const bool advance = t == 0 && i == kPushes / 2;
        absl::Status s =
            shard->Push(MakePush(0, 0, Dense("w", 0, 8), std::vector<float>(8, 1.0f), advance),
                        &resp);
        if (advance) {
          advanced = s.ok();
        } else if (s.ok()) {
          ++accepted;
        } else if (s.code() == absl::StatusCode::kFailedPrecondition) {
          ++refused;
        } else {
          ++other;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  REQUIRE(advanced);
  CHECK(other == 0);
  CHECK(accepted + refused == kThreads * kPushes - 1);
  CHECK(refused > 0);  // thread 0 alone pushed kPushes / 2 - 1 after its advance
  // lr 1, w starts at 1: one step per applied push, the advancing one included.
  const float expected = 1.0f - static_cast<float>(accepted + 1);
  for (float x : PullNow(*shard, Dense("w", 0, 8))) CHECK(x == expected);
  v1::StatsResponse stats;
  shard->Stats(&stats);
  CHECK(stats.worker_clocks(0) == 1);
}

TEST_CASE("Finish lets the others run on and reports when all are done") {
  auto shard = MakeShard(MakeConfig("bsp", 0, 2));
  Advance(*shard, 0, 0);
  auto p = StartPull(*shard, 0, 1, Dense("b", 0, 2));
  CHECK_FALSE(p->status.has_value());
  v1::FinishRequest f;
  f.set_worker_rank(1);
  f.set_session(SessionOf(1));
  v1::FinishResponse fr;
  REQUIRE(shard->Finish(f, &fr).ok());
  CHECK(fr.workers_finished() == 1);
  CHECK(p->status.has_value());  // worker 1 no longer holds min_clock back
  CHECK_FALSE(shard->AllWorkersFinished());
  f.set_worker_rank(0);
  f.set_session(SessionOf(0));
  REQUIRE(shard->Finish(f, &fr).ok());
  CHECK(shard->AllWorkersFinished());
}

TEST_CASE("a reservation the machine cannot hold stops the shard at start-up, naming the key") {
  JobConfig c = MakeConfig("asp", 0, 1, /*servers=*/2);
  // 2^36 rows of 4096 floats: petabytes, on any machine.
  c.model.tables[2].dim = 4096;
  c.model.tables[2].reserve_rows = uint64_t{1} << 36;
  auto shard = Shard::Create(c, 0);
  REQUIRE_FALSE(shard.ok());
  CHECK(shard.status().code() == absl::StatusCode::kInvalidArgument);
  const std::string message(shard.status().message());
  CHECK(message.find("config: model.tables.2.reserve_rows = '68719476736': expected at most ") ==
        0);
  CHECK(message.find("bytes a row, split over 2 shard(s); this machine has ") !=
        std::string::npos);
  // A reservation that fits is made.
  c.model.tables[2].dim = 2;
  c.model.tables[2].reserve_rows = 10000;
  auto small = Shard::Create(c, 0);
  REQUIRE(small.ok());
}

}  // namespace
}  // namespace tessera
