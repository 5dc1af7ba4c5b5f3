// The worker's failover protocol (worker/sharded_ps_client.h) in one
// process: each shard a primary Shard whose every mutation a standby Shard
// follows before the primary answers (synchronous replication, as a
// ReplicaLink does over gRPC), LocalPsClient over both. The protocol is the
// one GrpcPsClient runs, so these cases check what the e2e kill tests check
// through real daemons, to the bit and without timing: a primary lost while
// its clock was open, the standby promoted, and each worker's push of that
// clock sent again to the standby alone and applied there once. Also: a lost
// shard without a standby is named, and a parked pull in this process times
// out at its deadline with the shard's reason, as one over gRPC does.
#include <catch2/catch.hpp>
#include <memory>
#include <mutex>
#include <vector>

#include "server/shard.h"
#include "tests/worker/fixtures.h"
#include "worker/local_ps_client.h"

namespace tessera {
namespace {

constexpr uint32_t kWorkers = 2;

JobConfig Job(const std::string& mode) {
  return SmallMlpJob({"cluster.workers=2", "consistency.mode=" + mode,
                      "security.rank_lease_s=0"});
}

// Shard s's primary, and a standby that follows each of its mutations when
// the primary awaits it.
struct Replicated {
  std::unique_ptr<Shard> primary, standby;
  std::mutex mu;
  std::vector<v1::Mutation> log;  // appended, not yet followed
  bool cut = false;                // the primary is gone: nothing reaches the standby
};

std::vector<std::unique_ptr<Replicated>> MakeReplicated(const JobConfig& c) {
  std::vector<std::unique_ptr<Replicated>> shards;
  for (uint32_t s = 0; s < c.num_servers(); ++s) {
    auto r = std::make_unique<Replicated>();
    auto primary = Shard::Create(c, s);
    auto standby = Shard::Create(c, s);
    REQUIRE(primary.ok());
    REQUIRE(standby.ok());
    r->primary = *std::move(primary);
    r->standby = *std::move(standby);
    r->standby->SetStandby();
    Replicated* raw = r.get();
    REQUIRE(r->primary
                ->SetMutationLog({[raw](v1::Mutation m) {
                                    std::lock_guard<std::mutex> lock(raw->mu);
                                    raw->log.push_back(std::move(m));
                                  },
                                  [raw](uint64_t sequence, std::function<void()> done) {
                                    {
                                      std::lock_guard<std::mutex> lock(raw->mu);
                                      size_t i = 0;
                                      for (; !raw->cut && i < raw->log.size() &&
                                             raw->log[i].sequence() <= sequence;
                                           ++i) {
                                        REQUIRE(raw->standby->Follow(raw->log[i]).ok());
                                      }
                                      raw->log.erase(raw->log.begin(), raw->log.begin() + i);
                                    }
                                    done();
                                  }})
                .ok());
    shards.push_back(std::move(r));
  }
  return shards;
}

// Worker `rank`'s gradients at `clock`: different for every rank, clock and entry.
ParameterSet Gradients(const ParameterSet& shape, uint32_t rank, int64_t clock) {
  ParameterSet g = shape;
  for (size_t t = 0; t < g.size(); ++t) {
    for (size_t i = 0; i < g[t].size(); ++i) {
      g[t][i] = 1e-3f * static_cast<float>((i * 7 + t * 13 + rank * 31 + clock * 17) % 23) - 0.011f;
    }
  }
  return g;
}

// One clock of both workers, one after the other on this thread: pull the
// clock, push it (each client's gradients kept in grads[rank] until its
// next push, as the trainer keeps them).
void Step(std::vector<std::unique_ptr<LocalPsClient>>& clients, int64_t clock,
          std::vector<ParameterSet>& grads) {
  for (uint32_t rank = 0; rank < kWorkers; ++rank) {
    ParameterSet params;
    REQUIRE(clients[rank]->PullDense(clock, &params).ok());
    grads[rank] = Gradients(params, rank, clock);
    REQUIRE(clients[rank]->PushDense(clock, grads[rank], clock).ok());
  }
}

// The values every worker would pull at `clock`.
ParameterSet PullAt(LocalPsClient& client, int64_t clock) {
  ParameterSet params;
  auto pulled = client.PullDense(clock, &params);
  INFO(pulled.status().ToString());
  REQUIRE(pulled.ok());
  return params;
}

// The same pushes with nobody lost: the values at clock `upto`.
ParameterSet Reference(const JobConfig& c, int64_t upto) {
  Cluster cluster(c);
  std::vector<std::unique_ptr<LocalPsClient>> clients;
  for (uint32_t rank = 0; rank < kWorkers; ++rank) {
    clients.push_back(std::make_unique<LocalPsClient>(c, rank, cluster.ptrs()));
    REQUIRE(clients.back()->Connect().value() == 0);
  }
  std::vector<ParameterSet> grads(kWorkers);
  for (int64_t clock = 0; clock < upto; ++clock) Step(clients, clock, grads);
  return PullAt(*clients[0], upto);
}

TEST_CASE("a primary lost with its clock open: both workers' pushes reach the standby once") {
  const std::string mode = GENERATE("bsp", "ssp", "asp");
  INFO("consistency.mode=" << mode);
  JobConfig c = Job(mode);
  auto shards = MakeReplicated(c);
  std::vector<std::unique_ptr<LocalPsClient>> clients;
  for (uint32_t rank = 0; rank < kWorkers; ++rank) {
    std::vector<std::vector<Shard*>> daemons;
    for (auto& s : shards) daemons.push_back({s->primary.get(), s->standby.get()});
    clients.push_back(std::make_unique<LocalPsClient>(c, rank, daemons));
    REQUIRE(clients.back()->Connect().value() == 0);
  }
  std::vector<ParameterSet> grads(kWorkers);
  Step(clients, 0, grads);
  Step(clients, 1, grads);

  // Clock 2: both pull, worker 0 pushes; then shard 0's primary is gone
  // before worker 1 pushes (under BSP the clock was open there: worker 0's
  // push lives only in the lost primary and in worker 0).
  for (uint32_t rank = 0; rank < kWorkers; ++rank) {
    ParameterSet params;
    REQUIRE(clients[rank]->PullDense(2, &params).ok());
    grads[rank] = Gradients(params, rank, 2);
  }
  REQUIRE(clients[0]->PushDense(2, grads[0], 2).ok());
  Replicated& lost = *shards[0];
  {
    std::lock_guard<std::mutex> lock(lost.mu);
    lost.cut = true;
  }
  lost.primary->SetStandby();  // refuses every worker from now on, as a dead daemon would
  lost.primary->FailParked();
  REQUIRE(lost.standby->Promote(1).ok());

  // Worker 1's push fails on shard 0; reconnecting finds the standby there
  // one clock behind its push, and sends the push to it alone.
  {
    const absl::Status pushed = clients[1]->PushDense(2, grads[1], 2);
    CHECK(absl::IsUnavailable(pushed));
    auto clock = clients[1]->Connect(2);
    INFO(clock.status().ToString());
    REQUIRE(clock.ok());
    CHECK(*clock == 3);
  }
  // Worker 0 learns of the loss at its next call.
  ParameterSet params;
  CHECK(absl::IsUnavailable(clients[0]->PullDense(3, &params).status()));
  auto clock = clients[0]->Connect(3);
  INFO(clock.status().ToString());
  REQUIRE(clock.ok());
  CHECK(*clock == 3);
  CHECK(clients[0]->address(0) == "shard 0 in process (standby)");
  CHECK(clients[0]->address(1) == "shard 1 in process (primary)");

  // Training goes on; every push applied once: the model equals a run
  // that lost nothing, to the bit.
  Step(clients, 3, grads);
  const ParameterSet got = PullAt(*clients[1], 4);
  const ParameterSet want = Reference(c, 4);
  REQUIRE(got.size() == want.size());
  for (size_t t = 0; t < got.size(); ++t) {
    INFO("table " << t);
    CHECK(got[t] == want[t]);
  }
  for (const auto& client : clients) CHECK(client->lost_clocks() == 0);
}

TEST_CASE("without a standby a lost shard's calls fail and name it") {
  JobConfig c = Job("bsp");
  Cluster cluster(c);
  LocalPsClient client(c, 0, cluster.ptrs());
  REQUIRE(client.Connect().ok());
  cluster.shards()[1]->SetStandby();
  auto clock = client.Connect(0);
  REQUIRE(absl::IsUnavailable(clock.status()));
  CHECK_THAT(std::string(clock.status().message()),
             Catch::Contains("shard 1 at shard 1 in process (primary) did not answer"));
  CHECK(client.address(1) == "shard 1 in process (primary)");
}

TEST_CASE("a pull in this process that cannot be answered times out with the shard's reason") {
  JobConfig c = Job("bsp");
  c.worker.pull_timeout_ms = 300;
  Cluster cluster(c);  // LocalShards: its reaper answers parked pulls at their deadline
  LocalPsClient client(c, 0, cluster.ptrs());
  REQUIRE(client.Connect().ok());
  ParameterSet params;
  REQUIRE(client.PullDense(0, &params).ok());
  REQUIRE(client.PushDense(0, Gradients(params, 0, 0), 0).ok());
  // Clock 1 needs worker 1's push of clock 0, which never comes.
  auto pulled = client.PullDense(1, &params);
  REQUIRE(absl::IsDeadlineExceeded(pulled.status()));
  CHECK_THAT(std::string(pulled.status().message()),
             Catch::Contains("pull waited for min_clock >= 1 until its deadline"));
}

}  // namespace
}  // namespace tessera
