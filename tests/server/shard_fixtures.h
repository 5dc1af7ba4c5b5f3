// Helpers shared by the Shard tests: a small job's config, shards with every
// worker registered, slices, pushes and pulls that finish inline.
// Test-only: each test binary includes it once.
#ifndef TESSERA_TESTS_SERVER_SHARD_FIXTURES_H_
#define TESSERA_TESTS_SERVER_SHARD_FIXTURES_H_

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/codec.h"
#include "common/wire.h"
#include "server/shard.h"
#include "tests/server/test_session.h"

namespace tessera {

using v1::PullRequest;
using v1::PullResponse;
using v1::PushRequest;
using v1::PushResponse;

inline const absl::Time kFar = absl::InfiniteFuture();

// A Failover's `stop` for tests: a failover that must stop the daemon fails
// the test (the process ends).
inline void AbortOnFailoverStop(const std::string& why) {
  std::fprintf(stderr, "failover stopped the daemon: %s\n", why.c_str());
  std::abort();
}

inline JobConfig MakeConfig(const std::string& mode, uint32_t staleness, uint32_t workers,
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

// Names `shard`'s job in a Register, as a worker of that job does.
inline void NameJob(const Shard& shard, v1::RegisterRequest* r) {
  r->set_job(shard.config().name);
  r->set_job_layout(shard.config().LayoutText());
}

// Registers worker `rank` with its test session (again: as after a restart).
inline void RegisterWorker(Shard& shard, uint32_t rank) {
  v1::RegisterRequest r;
  r.set_worker_rank(rank);
  r.set_session(SessionOf(rank));
  NameJob(shard, &r);
  v1::RegisterResponse resp;
  REQUIRE(shard.Register(r, &resp).ok());
}

inline std::unique_ptr<Shard> MakeShard(const JobConfig& c, uint32_t index = 0) {
  auto s = Shard::Create(c, index);
  REQUIRE(s.ok());
  for (uint32_t w = 0; w < c.cluster.workers; ++w) RegisterWorker(**s, w);
  return std::move(*s);
}

inline v1::Slice Dense(const std::string& table, uint64_t offset, uint64_t length) {
  v1::Slice s;
  s.set_table(table);
  s.set_offset(offset);
  s.set_length(length);
  return s;
}

inline v1::Slice Sparse(const std::string& table, const std::vector<uint64_t>& keys) {
  v1::Slice s;
  s.set_table(table);
  EncodeKeys(keys, s.mutable_keys());
  return s;
}

inline PushRequest MakePush(uint32_t worker, int64_t clock, const v1::Slice& slice,
                     const std::vector<float>& grad, bool advance = false) {
  PushRequest p;
  p.set_worker_rank(worker);
  p.set_session(SessionOf(worker));
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

// Starts `request` on `shard` (it may finish at once, or park).
inline std::unique_ptr<PendingPull> StartPull(Shard& shard, PullRequest request,
                                              absl::Time deadline = kFar) {
  auto p = std::make_unique<PendingPull>();
  p->request = std::move(request);
  PendingPull* raw = p.get();
  shard.Pull(raw->request, &raw->response, deadline, [raw](absl::Status s) { raw->status = s; });
  return p;
}

// A pull of `slice` by `worker` at `clock`.
inline PullRequest MakePull(uint32_t worker, int64_t clock, const v1::Slice& slice) {
  PullRequest r;
  r.set_worker_rank(worker);
  r.set_session(SessionOf(worker));
  r.set_clock(clock);
  *r.add_slices() = slice;
  return r;
}

inline std::unique_ptr<PendingPull> StartPull(Shard& shard, uint32_t worker, int64_t clock,
                                       const v1::Slice& slice, absl::Time deadline = kFar) {
  return StartPull(shard, MakePull(worker, clock, slice), deadline);
}

inline std::vector<float> PullNow(Shard& shard, const v1::Slice& slice, uint32_t worker = 0) {
  auto p = StartPull(shard, worker, 0, slice);
  REQUIRE(p->status.has_value());
  REQUIRE(p->status->ok());
  return DecodeFloats(p->response.values(0));
}

inline void Advance(Shard& shard, uint32_t worker, int64_t clock) {
  v1::ClockRequest r;
  r.set_worker_rank(worker);
  r.set_session(SessionOf(worker));
  r.set_clock(clock);
  v1::ClockResponse resp;
  REQUIRE(shard.Clock(r, &resp).ok());
}

}  // namespace tessera

#endif  // TESSERA_TESTS_SERVER_SHARD_FIXTURES_H_
