// LocalPsClient: the parameter server in this process: the shared protocol
// (worker/sharded_ps_client.h) over a LocalShardTransport per shard, which
// calls Shard objects directly (no network, no copies beyond the shard's
// own). For unit tests and `tessera-worker --standalone`, the one-process
// baseline that measures what the PS costs. A shard may have a standby Shard
// too: the worker then fails over to it as it would over gRPC (tests).
//
// Threading: as ShardedPsClient: one worker thread; the shards may be
// shared by several clients on other threads.
#ifndef TESSERA_WORKER_LOCAL_PS_CLIENT_H_
#define TESSERA_WORKER_LOCAL_PS_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/config.h"
#include "server/shard.h"
#include "worker/shard_transport.h"
#include "worker/sharded_ps_client.h"

namespace tessera {

// Every shard of a job, created in this process, and a thread that answers
// their parked pulls at their deadlines (DEADLINE_EXCEEDED, as a server's
// reaper does), so that a pull in this process times out as one over gRPC.
class LocalShards {
 public:
  // The shards of `config` with initial values; Shard::Create's errors
  // (INVALID_ARGUMENT for a config it refuses).
  static absl::StatusOr<LocalShards> Create(const JobConfig& config);

  LocalShards();
  LocalShards(LocalShards&&) noexcept;
  LocalShards& operator=(LocalShards&&) noexcept;
  ~LocalShards();

  std::vector<Shard*> ptrs() const;
  const std::vector<std::unique_ptr<Shard>>& shards() const { return shards_; }

 private:
  class Reaper;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::unique_ptr<Reaper> reaper_;  // declared after shards_: stops before they go
};

// A ShardTransport to Shard objects in this process: calls run on the
// caller's thread, except a pull that parks, which the thread that advances
// the clock answers, or the shards' reaper at its deadline (LocalShards;
// shards made otherwise have none, and the caller's bound cancels it). One
// lane; no shared memory (there is nothing to copy). A parked pull is
// cancelled in the shard (CancelPull).
class LocalShardTransport : public ShardTransport {
 public:
  // `daemons`: the shard's primary, then optionally its standby; they must
  // outlive the transport.
  explicit LocalShardTransport(std::vector<Shard*> daemons);

  const std::string& address() const override { return names_[at_]; }
  bool NextAddress() override;
  size_t daemons() const override { return daemons_.size(); }
  size_t lanes() const override { return 1; }
  bool offers_shared_memory() const override { return false; }

  void Register(size_t lane, ShardCall* call, const v1::RegisterRequest* request,
                v1::RegisterResponse* response, Done done) override;
  void Pull(size_t lane, ShardCall* call, const v1::PullRequest* request,
            v1::PullResponse* response, Done done) override;
  void Push(size_t lane, ShardCall* call, const v1::PushRequest* request,
            v1::PushResponse* response, Done done) override;
  void Clock(size_t lane, ShardCall* call, const v1::ClockRequest* request,
             v1::ClockResponse* response, Done done) override;
  void Finish(size_t lane, ShardCall* call, const v1::FinishRequest* request,
              v1::FinishResponse* response, Done done) override;
  void Stats(size_t lane, ShardCall* call, const v1::StatsRequest* request,
             v1::StatsResponse* response, Done done) override;
  void Plan(size_t lane, ShardCall* call, const v1::PlanRequest* request,
            v1::PlanResponse* response, Done done) override;

 private:
  Shard* shard() const { return daemons_[at_]; }

  const std::vector<Shard*> daemons_;
  std::vector<std::string> names_;  // "shard S in process (primary|standby)"
  size_t at_ = 0;
};

class LocalPsClient : public ShardedPsClient {
 public:
  // `shards` (one per configured server) must outlive the client.
  LocalPsClient(const JobConfig& config, uint32_t rank, const std::vector<Shard*>& shards);
  // With standbys: daemons[s] is shard s's primary, then its standby.
  LocalPsClient(const JobConfig& config, uint32_t rank,
                const std::vector<std::vector<Shard*>>& daemons);
};

}  // namespace tessera

#endif  // TESSERA_WORKER_LOCAL_PS_CLIENT_H_
