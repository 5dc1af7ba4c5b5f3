// LocalPsClient: the parameter server in this process. Calls Shard objects
// directly (no network, no copies beyond the shard's own), for unit tests
// and `tessera-worker --standalone`, the one-process baseline that measures
// what the PS costs.
//
// Threading: as PsClient: one worker thread; the shards may be shared by
// several clients on other threads.
#ifndef TESSERA_WORKER_LOCAL_PS_CLIENT_H_
#define TESSERA_WORKER_LOCAL_PS_CLIENT_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/config.h"
#include "proto/tessera.pb.h"
#include "server/shard.h"
#include "worker/ps_client.h"
#include "worker/shard_requests.h"

namespace tessera {

// Every shard of a job, created in this process.
class LocalShards {
 public:
  // The shards of `config` with initial values; Shard::Create's errors
  // (INVALID_ARGUMENT for a config it refuses).
  static absl::StatusOr<LocalShards> Create(const JobConfig& config);

  std::vector<Shard*> ptrs() const;
  const std::vector<std::unique_ptr<Shard>>& shards() const { return shards_; }

 private:
  std::vector<std::unique_ptr<Shard>> shards_;
};

// The PS in this process: calls the given shards directly (no network).
class LocalPsClient : public PsClient {
 public:
  // `shards` (one per configured server) must outlive the client.
  LocalPsClient(const JobConfig& config, uint32_t rank, std::vector<Shard*> shards);

  absl::StatusOr<int64_t> Connect(int64_t resume_clock = 0) override;
  absl::StatusOr<int64_t> PullDense(int64_t clock, ParameterSet* params) override;
  absl::Status PushDense(int64_t clock, const ParameterSet& grads,
                         std::optional<int64_t> values_clock) override;
  // Fused like GrpcPsClient's: each shard answers the pull in the push when
  // the consistency rule allows it at once.
  absl::StatusOr<std::optional<int64_t>> PushDenseAndPull(int64_t clock, const ParameterSet& grads,
                                                          std::optional<int64_t> values_clock,
                                                          ParameterSet* params) override;
  PushStaleness push_staleness() const override { return push_staleness_; }
  absl::StatusOr<std::vector<uint32_t>> PlanEpoch(int64_t epoch,
                                                  double examples_per_second) override;
  absl::StatusOr<int64_t> PullRows(int64_t clock, RowSet* rows, RowPull mode) override;
  absl::Status PushRows(int64_t clock, const RowSet& grads) override;
  absl::Status Finish() override;
  WireTraffic traffic() const override { return requests_.encoder->traffic(); }
  absl::StatusOr<uint32_t> WorkersFinished() override;

 private:
  // The push of PushDense to every shard; with `pull_into`, fused with a
  // pull: the values' min_clock when every shard answered, else nullopt.
  absl::StatusOr<std::optional<int64_t>> Push(int64_t clock, const ParameterSet& grads,
                                              std::optional<int64_t> values_clock,
                                              ParameterSet* pull_into);
  // Sends `request` to shard s as a pull and waits (bounded) for it.
  absl::Status PullFrom(size_t s, const v1::PullRequest& request, v1::PullResponse* response);

  const JobConfig config_;
  const uint32_t rank_;
  const std::vector<Shard*> shards_;
  const ShardRequests requests_;
  PushStaleness push_staleness_;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_LOCAL_PS_CLIENT_H_
