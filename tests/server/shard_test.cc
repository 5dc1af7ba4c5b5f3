// Shard logic without gRPC: consistency gating, BSP aggregation, sparse rows,
// and every bad-input case leaving the shard unchanged.
#include "server/shard.h"

#include <catch2/catch.hpp>
#include <limits>
#include <optional>
#include <thread>

#include "common/partition.h"
#include "common/shared_memory.h"
#include "common/wire.h"

namespace tessera {
namespace {

using v1::PullRequest;
using v1::PullResponse;
using v1::PushRequest;
using v1::PushResponse;

const absl::Time kFar = absl::InfiniteFuture();

JobConfig MakeConfig(const std::string& mode, uint32_t staleness, uint32_t workers,
                     uint32_t servers = 1) {
  std::string yaml = "cluster: {servers: [";
  for (uint32_t s = 0; s < servers; ++s) yaml += (s ? ", " : "") + ("h:" + std::to_string(s + 1));
  yaml += "], workers: " + std::to_string(workers) + "}\n";
  yaml += "consistency: {mode: " + mode + ", staleness: " + std::to_string(staleness) + "}\n";
  yaml += R"(
model:
  type: tables
  tables:
    - {name: w, kind: dense, size: 8, init: {type: constant, value: 1}}
    - {name: b, kind: dense, size: 2}
    - {name: emb, kind: sparse, dim: 2, init: {type: uniform, low: -1, high: 1, seed: 4}}
optimizer: {type: sgd, lr: 1.0}
)";
  auto c = ParseJobConfig(yaml, {});
  REQUIRE(c.ok());
  return *c;
}

std::unique_ptr<Shard> MakeShard(const JobConfig& c, uint32_t index = 0) {
  auto s = Shard::Create(c, index);
  REQUIRE(s.ok());
  for (uint32_t w = 0; w < c.cluster.workers; ++w) {
    v1::RegisterRequest r;
    r.set_worker_rank(w);
    v1::RegisterResponse resp;
    REQUIRE((*s)->Register(r, &resp).ok());
  }
  return std::move(*s);
}

v1::Slice Dense(const std::string& table, uint64_t offset, uint64_t length) {
  v1::Slice s;
  s.set_table(table);
  s.set_offset(offset);
  s.set_length(length);
  return s;
}

v1::Slice Sparse(const std::string& table, const std::vector<uint64_t>& keys) {
  v1::Slice s;
  s.set_table(table);
  EncodeKeys(keys, s.mutable_keys());
  return s;
}

PushRequest MakePush(uint32_t worker, int64_t clock, const v1::Slice& slice,
                     const std::vector<float>& grad, bool advance = false) {
  PushRequest p;
  p.set_worker_rank(worker);
  p.set_clock(clock);
  *p.add_slices() = slice;
  EncodeFloats(grad, p.add_gradients());
  p.set_advance_clock(advance);
  return p;
}

// A pull that records how and when it finished.
struct PendingPull {
  PullRequest request;
  PullResponse response;
  std::optional<absl::Status> status;
};

std::unique_ptr<PendingPull> StartPull(Shard& shard, uint32_t worker, int64_t clock,
                                       const v1::Slice& slice, absl::Time deadline = kFar) {
  auto p = std::make_unique<PendingPull>();
  p->request.set_worker_rank(worker);
  p->request.set_clock(clock);
  *p->request.add_slices() = slice;
  PendingPull* raw = p.get();
  shard.Pull(raw->request, &raw->response, deadline, [raw](absl::Status s) { raw->status = s; });
  return p;
}

std::vector<float> PullNow(Shard& shard, const v1::Slice& slice, uint32_t worker = 0) {
  auto p = StartPull(shard, worker, 0, slice);
  REQUIRE(p->status.has_value());
  REQUIRE(p->status->ok());
  return DecodeFloats(p->response.values(0));
}

void Advance(Shard& shard, uint32_t worker, int64_t clock) {
  v1::ClockRequest r;
  r.set_worker_rank(worker);
  r.set_clock(clock);
  v1::ClockResponse resp;
  REQUIRE(shard.Clock(r, &resp).ok());
}

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
  c.optimizer.type = "adam";
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
  push.set_clock(0);
  push.set_encoding(v1::BFLOAT16);
  *push.add_slices() = Dense("b", 0, 2);
  AppendBfloat16(grad, push.add_gradients());
  PushResponse resp;
  REQUIRE(shard->Push(push, &resp).ok());
  const std::vector<float> b = PullNow(*shard, Dense("b", 0, 2));  // float32 pull
  CHECK(b[0] == -FromBfloat16(ToBfloat16(0.1f)));                  // SGD, lr 1, from 0
  CHECK(b[1] == -FromBfloat16(ToBfloat16(-0.3f)));
  // A bfloat16 pull returns the rounding of the float32 values.
  auto pull = StartPull(*shard, 0, 0, Dense("b", 0, 2));
  PullRequest request = pull->request;
  request.set_encoding(v1::BFLOAT16);
  PullResponse bf16_resp;
  std::optional<absl::Status> status;
  shard->Pull(request, &bf16_resp, kFar, [&](absl::Status s) { status = s; });
  REQUIRE(status.has_value());
  REQUIRE(status->ok());
  REQUIRE(bf16_resp.values(0).size() == 4);
  std::vector<float> got(2);
  DecodeBfloat16(bf16_resp.values(0), got.data());
  CHECK(got[0] == FromBfloat16(ToBfloat16(b[0])));
  CHECK(got[1] == FromBfloat16(ToBfloat16(b[1])));
  // Sparse rows travel the same way.
  auto emb = PullNow(*shard, Sparse("emb", {5}));
  PullRequest sparse;
  sparse.set_worker_rank(0);
  sparse.set_encoding(v1::BFLOAT16);
  *sparse.add_slices() = Sparse("emb", {5});
  PullResponse sparse_resp;
  status.reset();
  shard->Pull(sparse, &sparse_resp, kFar, [&](absl::Status s) { status = s; });
  REQUIRE((status.has_value() && status->ok()));
  DecodeBfloat16(sparse_resp.values(0), got.data());
  CHECK(got[0] == FromBfloat16(ToBfloat16(emb[0])));
  CHECK(got[1] == FromBfloat16(ToBfloat16(emb[1])));
}

TEST_CASE("a bfloat16 push of the wrong size, or an unknown encoding, changes nothing") {
  JobConfig c = MakeConfig("asp", 0, 1);
  auto shard = MakeShard(c);
  const std::vector<float> before = PullNow(*shard, Dense("w", 0, 8));
  PushRequest push = MakePush(0, 0, Dense("w", 0, 2), {1, 1}, true);  // float32 bytes
  push.set_encoding(v1::BFLOAT16);
  PushResponse resp;
  absl::Status s = shard->Push(push, &resp);
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(s.message()) ==
        "table 'w': gradient payload is 8 bytes, expected 4 (2 bfloat16)");
  push.set_encoding(static_cast<v1::Encoding>(9));
  s = shard->Push(push, &resp);
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(s.message()) == "encoding 9 is unknown: expected FLOAT32 or BFLOAT16");
  PullRequest pull;
  pull.set_worker_rank(0);
  pull.set_encoding(static_cast<v1::Encoding>(9));
  *pull.add_slices() = Dense("w", 0, 2);
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

TEST_CASE("Finish lets the others run on and reports when all are done") {
  auto shard = MakeShard(MakeConfig("bsp", 0, 2));
  Advance(*shard, 0, 0);
  auto p = StartPull(*shard, 0, 1, Dense("b", 0, 2));
  CHECK_FALSE(p->status.has_value());
  v1::FinishRequest f;
  f.set_worker_rank(1);
  v1::FinishResponse fr;
  REQUIRE(shard->Finish(f, &fr).ok());
  CHECK(fr.workers_finished() == 1);
  CHECK(p->status.has_value());  // worker 1 no longer holds min_clock back
  CHECK_FALSE(shard->AllWorkersFinished());
  f.set_worker_rank(0);
  REQUIRE(shard->Finish(f, &fr).ok());
  CHECK(shard->AllWorkersFinished());
}

// Shared memory: a worker on the shard's host registers a segment; payloads
// then lie in it instead of in the messages.
std::unique_ptr<SharedSegment> RegisterShared(Shard& shard, uint32_t worker, uint64_t capacity,
                                              bool* mapped = nullptr,
                                              std::string* error = nullptr) {
  auto segment = SharedSegment::Create(capacity);
  REQUIRE(segment.ok());
  v1::RegisterRequest r;
  r.set_worker_rank(worker);
  r.mutable_shared_memory()->set_name((*segment)->name());
  r.mutable_shared_memory()->set_capacity(capacity);
  r.mutable_shared_memory()->set_token((*segment)->token());
  v1::RegisterResponse resp;
  REQUIRE(shard.Register(r, &resp).ok());
  if (mapped) *mapped = resp.shared_memory_mapped();
  if (error) *error = resp.shared_memory_error();
  return *std::move(segment);
}

float* FloatsAt(SharedSegment& segment, uint64_t offset, uint64_t n) {
  auto bytes = segment.Bytes(offset, n * sizeof(float));
  REQUIRE(bytes.ok());
  return reinterpret_cast<float*>(*bytes);
}

TEST_CASE("shared memory carries a push's gradients and its fused pull, as the message would") {
  JobConfig c = MakeConfig("asp", 0, 1);
  auto shared = MakeShard(c);
  auto messages = MakeShard(c);
  bool mapped = false;
  auto segment = RegisterShared(*shared, 0, 1024, &mapped);
  REQUIRE(mapped);
  const std::vector<float> gw = {1, 2, 3, 4, 5, 6, 7, 8}, gb = {-1, 0.5f};

  for (int step = 0; step < 3; ++step) {  // the same areas, reused call after call
    PushRequest via_message = MakePush(0, step, Dense("w", 0, 8), gw, true);
    *via_message.add_slices() = Dense("b", 0, 2);
    EncodeFloats(gb, via_message.add_gradients());
    *via_message.add_pull_slices() = Dense("w", 0, 8);
    *via_message.add_pull_slices() = Dense("b", 0, 2);
    PushRequest via_memory = via_message;
    via_memory.clear_gradients();
    std::copy(gw.begin(), gw.end(), FloatsAt(*segment, 0, 8));
    std::copy(gb.begin(), gb.end(), FloatsAt(*segment, 32, 2));
    via_memory.mutable_gradients_shared()->set_offset(0);
    via_memory.mutable_reply_shared()->set_offset(512);

    PushResponse from_message, from_memory;
    REQUIRE(messages->Push(via_message, &from_message).ok());
    REQUIRE(shared->Push(via_memory, &from_memory).ok());
    REQUIRE(from_memory.pulled());
    CHECK(from_memory.values_shared());
    CHECK(from_memory.values_size() == 0);
    CHECK(from_memory.clock() == from_message.clock());
    const float* w = FloatsAt(*segment, 512, 10);
    CHECK(std::vector<float>(w, w + 8) == DecodeFloats(from_message.values(0)));
    CHECK(std::vector<float>(w + 8, w + 10) == DecodeFloats(from_message.values(1)));
    CHECK(PullNow(*shared, Dense("w", 0, 8)) == PullNow(*messages, Dense("w", 0, 8)));
  }
  CHECK(PullNow(*shared, Dense("w", 0, 8))[7] == 1.0f - 3 * 8);  // SGD, lr 1, from 1

  // bfloat16 gradients and values through the segment.
  std::vector<float> rounded(2);
  EncodeBfloat16(gb, *segment->Bytes(0, 4));
  PushRequest bf16 = MakePush(0, 3, Dense("b", 0, 2), {}, true);
  bf16.clear_gradients();
  bf16.set_encoding(v1::BFLOAT16);
  bf16.mutable_gradients_shared()->set_offset(0);
  *bf16.add_pull_slices() = Dense("b", 0, 2);
  bf16.mutable_reply_shared()->set_offset(8);
  const std::vector<float> b_before = PullNow(*shared, Dense("b", 0, 2));
  PushResponse resp;
  REQUIRE(shared->Push(bf16, &resp).ok());
  REQUIRE(resp.values_shared());
  const std::vector<float> b_after = PullNow(*shared, Dense("b", 0, 2));
  CHECK(b_after[1] == b_before[1] - FromBfloat16(ToBfloat16(0.5f)));
  DecodeBfloat16(absl::string_view(*segment->Bytes(8, 4), 4), rounded.data());
  CHECK(rounded[0] == FromBfloat16(ToBfloat16(b_after[0])));
  CHECK(rounded[1] == FromBfloat16(ToBfloat16(b_after[1])));
}

TEST_CASE("a pull answers into shared memory, also after it was parked") {
  JobConfig c = MakeConfig("bsp", 0, 2);
  auto shard = MakeShard(c);
  auto segment = RegisterShared(*shard, 0, 256);
  Advance(*shard, 0, 0);  // worker 0 at clock 1; worker 1 still at 0
  auto pull = std::make_unique<PendingPull>();
  pull->request.set_worker_rank(0);
  pull->request.set_clock(1);
  *pull->request.add_slices() = Dense("w", 2, 4);
  *pull->request.add_slices() = Sparse("emb", {9});
  pull->request.mutable_reply_shared()->set_offset(64);
  PendingPull* raw = pull.get();
  shard->Pull(raw->request, &raw->response, kFar, [raw](absl::Status s) { raw->status = s; });
  CHECK_FALSE(raw->status.has_value());  // parked until worker 1 finishes clock 0
  std::fill_n(FloatsAt(*segment, 64, 6), 6, -7.0f);
  Advance(*shard, 1, 0);
  REQUIRE(raw->status.has_value());
  REQUIRE(raw->status->ok());
  CHECK(raw->response.values_shared());
  CHECK(raw->response.values_size() == 0);
  const float* got = FloatsAt(*segment, 64, 6);
  CHECK(std::vector<float>(got, got + 4) == std::vector<float>(4, 1.0f));  // constant init
  CHECK(std::vector<float>(got + 4, got + 6) == PullNow(*shard, Sparse("emb", {9})));
}

TEST_CASE("bad shared-memory ranges and missing mappings are refused and change nothing") {
  JobConfig c = MakeConfig("asp", 0, 2);
  auto shard = MakeShard(c);
  auto segment = RegisterShared(*shard, 0, 64);  // worker 1 registered without one
  const std::vector<float> w_before = PullNow(*shard, Dense("w", 0, 8));
  auto shared_push = [](uint32_t worker, uint64_t at) {
    PushRequest p = MakePush(worker, 0, Dense("w", 0, 8), {}, true);
    p.clear_gradients();
    p.mutable_gradients_shared()->set_offset(at);
    return p;
  };
  struct Case {
    const char* what;
    PushRequest push;
    absl::StatusCode code;
  };
  std::vector<Case> cases = {
      {"gradients past the segment's end", shared_push(0, 40), absl::StatusCode::kInvalidArgument},
      {"offset not 8-byte aligned", shared_push(0, 4), absl::StatusCode::kInvalidArgument},
      {"worker without a segment", shared_push(1, 0), absl::StatusCode::kFailedPrecondition},
  };
  PushRequest both = MakePush(0, 0, Dense("w", 0, 8), std::vector<float>(8, 1.0f), true);
  both.mutable_gradients_shared()->set_offset(0);
  cases.push_back({"gradients in the segment and in the message", both,
                   absl::StatusCode::kInvalidArgument});
  PushRequest bad_reply = MakePush(0, 0, Dense("w", 0, 8), std::vector<float>(8, 1.0f), true);
  *bad_reply.add_pull_slices() = Dense("w", 0, 8);
  bad_reply.mutable_reply_shared()->set_offset(48);  // 32 bytes do not fit in 16
  cases.push_back({"fused pull's values past the end", bad_reply,
                   absl::StatusCode::kInvalidArgument});
  for (auto& k : cases) {
    INFO(k.what);
    PushResponse resp;
    CHECK(shard->Push(k.push, &resp).code() == k.code);
    CHECK(PullNow(*shard, Dense("w", 0, 8)) == w_before);
    v1::StatsResponse stats;
    shard->Stats(&stats);
    CHECK(stats.worker_clocks(0) == 0);
    CHECK(stats.worker_clocks(1) == 0);
  }
  PullRequest pull;
  pull.set_worker_rank(0);
  *pull.add_slices() = Dense("w", 0, 8);
  pull.mutable_reply_shared()->set_offset(64);
  PullResponse resp;
  std::optional<absl::Status> status;
  CHECK_FALSE(shard->Pull(pull, &resp, kFar, [&](absl::Status s) { status = s; }).has_value());
  REQUIRE(status.has_value());
  CHECK(status->code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("Register maps only the worker's own memory; registering again without it unmaps") {
  JobConfig c = MakeConfig("asp", 0, 1);
  auto shard = MakeShard(c);
  auto segment = SharedSegment::Create(64);
  REQUIRE(segment.ok());
  v1::RegisterRequest r;
  r.set_worker_rank(0);
  r.mutable_shared_memory()->set_name((*segment)->name());
  r.mutable_shared_memory()->set_capacity(64);
  std::string token = (*segment)->token();
  token[3] ^= 0x40;
  r.mutable_shared_memory()->set_token(token);
  v1::RegisterResponse resp;
  REQUIRE(shard->Register(r, &resp).ok());  // registered; its bytes travel in messages
  CHECK_FALSE(resp.shared_memory_mapped());
  CHECK(resp.shared_memory_error().find("token") != std::string::npos);

  r.mutable_shared_memory()->set_name("/tessera-0-gone");
  r.mutable_shared_memory()->set_token((*segment)->token());
  REQUIRE(shard->Register(r, &resp).ok());
  CHECK_FALSE(resp.shared_memory_mapped());
  CHECK(resp.shared_memory_error().find("not visible") != std::string::npos);

  bool mapped = false;
  auto good = RegisterShared(*shard, 0, 64, &mapped);
  CHECK(mapped);
  PushRequest push = MakePush(0, 0, Dense("b", 0, 2), {}, true);
  push.clear_gradients();
  push.mutable_gradients_shared()->set_offset(0);
  PushResponse push_resp;
  CHECK(shard->Push(push, &push_resp).ok());

  v1::RegisterRequest plain;
  plain.set_worker_rank(0);
  REQUIRE(shard->Register(plain, &resp).ok());
  push.set_clock(1);
  CHECK(shard->Push(push, &push_resp).code() == absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace tessera
