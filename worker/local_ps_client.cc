#include "worker/local_ps_client.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/status.h"

namespace tessera {

absl::StatusOr<LocalShards> LocalShards::Create(const JobConfig& config) {
  LocalShards local;
  for (uint32_t s = 0; s < config.num_servers(); ++s) {
    TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<Shard> shard, Shard::Create(config, s));
    local.shards_.push_back(std::move(shard));
  }
  return local;
}

std::vector<Shard*> LocalShards::ptrs() const {
  std::vector<Shard*> p;
  for (const auto& s : shards_) p.push_back(s.get());
  return p;
}

LocalPsClient::LocalPsClient(const JobConfig& config, uint32_t rank, std::vector<Shard*> shards)
    : config_(config),
      rank_(rank),
      shards_(std::move(shards)),
      requests_(ShardRequests::ForDense(config, 1, ~0ull)) {}

absl::StatusOr<int64_t> LocalPsClient::Connect(int64_t resume_clock) {
  // Two rounds: the second moves shards that hold an earlier clock.
  int64_t clock = resume_clock;
  for (int round = 0; round < 2; ++round) {
    const int64_t target = clock;
    for (Shard* shard : shards_) {
      v1::RegisterRequest request;
      request.set_worker_rank(rank_);
      request.set_resume_clock(target);
      request.set_session(requests_.session);
      request.set_job(config_.name);
      request.set_job_layout(config_.LayoutText());
      v1::RegisterResponse response;
      absl::Status s = shard->Register(request, &response);
      if (!s.ok()) return s;
      clock = std::max(clock, response.clock());
    }
    if (clock == target) break;
  }
  return clock;
}

absl::Status LocalPsClient::PullFrom(size_t s, const v1::PullRequest& request,
                                     v1::PullResponse* response) {
  const absl::Duration timeout = absl::Milliseconds(config_.worker.pull_timeout_ms);
  // The pull may park until other workers (other threads) advance.
  auto done = std::make_shared<absl::Notification>();
  auto result = std::make_shared<absl::Status>();
  shards_[s]->Pull(request, response, absl::Now() + timeout, [done, result](absl::Status st) {
    *result = st;
    done->Notify();
  });
  // The shard's deadline answers the pull; the extra second only bounds this wait.
  if (!done->WaitForNotificationWithTimeout(timeout + absl::Seconds(1))) {
    return absl::DeadlineExceededError("local pull did not finish");
  }
  return *result;
}

absl::StatusOr<int64_t> LocalPsClient::PullDense(int64_t clock, ParameterSet* params) {
  requests_.ShapeParameters(params);
  int64_t min_clock = INT64_MAX;
  for (size_t s = 0; s < shards_.size(); ++s) {
    v1::PullRequest request;
    v1::PullResponse response;
    requests_.BuildPull(requests_.pieces[s], rank_, clock, &request);
    TESSERA_RETURN_IF_ERROR(PullFrom(s, request, &response));
    TESSERA_RETURN_IF_ERROR(requests_.ScatterPull(requests_.pieces[s], response.values(), params));
    min_clock = std::min(min_clock, response.min_clock());
  }
  return min_clock;
}

absl::StatusOr<int64_t> LocalPsClient::PullRows(int64_t clock, RowSet* rows, RowPull mode) {
  const ShardRequests::RowRoute route = ShardRequests::RouteRows(*rows, shards_.size());
  int64_t min_clock = INT64_MAX;
  for (size_t s = 0; s < shards_.size(); ++s) {
    v1::PullRequest request;
    v1::PullResponse response;
    requests_.BuildPull({}, rank_, clock, &request);
    request.set_read_only(mode == RowPull::kEvaluate);
    requests_.AddRowSlices(*rows, route[s], request.mutable_slices());
    if (request.slices_size() == 0) continue;
    TESSERA_RETURN_IF_ERROR(PullFrom(s, request, &response));
    TESSERA_RETURN_IF_ERROR(requests_.ScatterRows(route[s], response.values(), rows));
    min_clock = std::min(min_clock, response.min_clock());
  }
  for (SparseRows& r : *rows) r.values.resize(r.keys.size() * size_t{r.dim});
  return min_clock;
}

absl::Status LocalPsClient::PushRows(int64_t clock, const RowSet& grads) {
  const ShardRequests::RowRoute route = ShardRequests::RouteRows(grads, shards_.size());
  for (size_t s = 0; s < shards_.size(); ++s) {
    v1::PushRequest request;
    v1::PushResponse response;
    requests_.BuildPush({}, rank_, clock, {}, /*advance=*/false, kRowPiece, &request);
    requests_.AddRowSlices(grads, route[s], request.mutable_slices(), request.mutable_gradients());
    if (request.slices_size() == 0) continue;
    TESSERA_RETURN_IF_ERROR(shards_[s]->Push(request, &response));
  }
  return absl::OkStatus();
}

absl::Status LocalPsClient::PushDense(int64_t clock, const ParameterSet& grads,
                                      std::optional<int64_t> values_clock) {
  return Push(clock, grads, values_clock, nullptr).status();
}

absl::StatusOr<std::optional<int64_t>> LocalPsClient::PushDenseAndPull(
    int64_t clock, const ParameterSet& grads, std::optional<int64_t> values_clock,
    ParameterSet* params) {
  requests_.ShapeParameters(params);
  return Push(clock, grads, values_clock, params);
}

absl::StatusOr<std::optional<int64_t>> LocalPsClient::Push(int64_t clock, const ParameterSet& grads,
                                                           std::optional<int64_t> values_clock,
                                                           ParameterSet* pull_into) {
  int64_t staleness = -1;
  int64_t min_clock = INT64_MAX;
  bool all_pulled = pull_into != nullptr;
  for (size_t s = 0; s < shards_.size(); ++s) {
    v1::PushRequest request;
    v1::PushResponse response;
    requests_.BuildPush(requests_.pieces[s], rank_, clock, grads, /*advance=*/true, /*piece=*/1,
                        &request);
    if (values_clock) request.set_values_clock(*values_clock);
    if (pull_into != nullptr) {
      const auto& pieces = requests_.pieces[s];
      for (size_t i = 0; i < pieces.size(); ++i) {
        v1::Slice* slice = request.add_pull_slices();
        *slice = request.slices(static_cast<int>(i));
        requests_.encoder->SetPull(clock + 1, pieces[i].table, slice, /*shared=*/false);
      }
    }
    TESSERA_RETURN_IF_ERROR(shards_[s]->Push(request, &response));
    staleness = std::max(staleness, response.staleness());
    if (pull_into == nullptr) continue;
    if (!response.pulled()) {
      all_pulled = false;
      continue;
    }
    TESSERA_RETURN_IF_ERROR(
        requests_.ScatterPull(requests_.pieces[s], response.values(), pull_into));
    min_clock = std::min(min_clock, response.min_clock());
  }
  if (values_clock) push_staleness_.Add(staleness);
  return all_pulled ? std::optional<int64_t>(min_clock) : std::nullopt;
}

absl::Status LocalPsClient::Finish() {
  for (Shard* shard : shards_) {
    v1::FinishRequest request;
    request.set_worker_rank(rank_);
    request.set_session(requests_.session);
    v1::FinishResponse response;
    absl::Status s = shard->Finish(request, &response);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint32_t>> LocalPsClient::PlanEpoch(int64_t epoch,
                                                               double examples_per_second) {
  v1::PlanRequest request;
  requests_.BuildPlan(rank_, epoch, examples_per_second, &request);
  v1::PlanResponse response;
  TESSERA_RETURN_IF_ERROR(shards_[0]->Plan(request, &response));
  return ShardRequests::SharesOf(response);
}

absl::StatusOr<uint32_t> LocalPsClient::WorkersFinished() {
  uint32_t fewest = UINT32_MAX;
  for (Shard* shard : shards_) {
    v1::StatsResponse stats;
    shard->Stats(&stats);
    fewest = std::min(fewest, stats.workers_finished());
  }
  return fewest;
}

}  // namespace tessera
