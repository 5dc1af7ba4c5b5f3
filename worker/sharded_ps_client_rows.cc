// ShardedPsClient's sparse rows: routed by key to their shards, pulled and
// pushed there.
#include "worker/sharded_ps_client.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "common/status.h"
#include "worker/call_group.h"

namespace tessera {

const ShardRequests::RowRoute& ShardedPsClient::RouteFor(const RowSet& rows) {
  bool same = rows.size() == routed_keys_.size();
  for (size_t t = 0; same && t < rows.size(); ++t) same = rows[t].keys == routed_keys_[t];
  if (!same) {
    route_ = ShardRequests::RouteRows(rows, static_cast<uint32_t>(shards_.size()));
    routed_keys_.resize(rows.size());
    for (size_t t = 0; t < rows.size(); ++t) routed_keys_[t] = rows[t].keys;
  }
  return route_;
}

absl::StatusOr<int64_t> ShardedPsClient::PullRows(int64_t clock, RowSet* rows, RowPull mode) {
  const ShardRequests::RowRoute& route = RouteFor(*rows);
  for (SparseRows& r : *rows) r.values.resize(r.keys.size() * size_t{r.dim});
  std::vector<v1::PullRequest> requests(shards_.size());
  std::vector<v1::PullResponse> responses(shards_.size());
  std::vector<std::unique_ptr<ShardCall>> calls(shards_.size());
  absl::Mutex min_mu;
  int64_t min_clock = INT64_MAX;
  CallGroup group;
  for (size_t s = 0; s < shards_.size(); ++s) {
    requests_.BuildPull({}, rank_, clock, &requests[s]);
    requests[s].set_read_only(mode == RowPull::kEvaluate);
    requests_.AddRowSlices(*rows, route[s], requests[s].mutable_slices());
    if (requests[s].slices_size() == 0) continue;
    calls[s] = std::make_unique<ShardCall>(DeadlineIn(config_.worker.pull_timeout_ms));
    v1::PullResponse* response = &responses[s];
    const auto* shard_route = &route[s];
    shards_[s].transport->Pull(
        0, calls[s].get(), &requests[s], response,
        group.Add(s, calls[s].get(), [this, response, shard_route, rows, &min_mu, &min_clock] {
          absl::MutexLock lock(&min_mu);  // rows of different shards: one writer at a time
          min_clock = std::min(min_clock, response->min_clock());
          return requests_.ScatterRows(*shard_route, response->values(), rows);
        }));
  }
  group.Wait(absl::Milliseconds(config_.worker.pull_timeout_ms) + CallGroup::kAnswerMargin, spin_);
  TESSERA_RETURN_IF_ERROR(group.Outcome(
      [this](size_t s, const absl::Status& status) { return ShardError(s, status); }));
  return min_clock;
}

absl::Status ShardedPsClient::PushRows(int64_t clock, const RowSet& grads) {
  if (failover_) {
    held_.rows = &grads;
    held_.rows_clock = clock;
  }
  return PushRowsTo(clock, grads, nullptr);
}

absl::Status ShardedPsClient::PushRowsTo(int64_t clock, const RowSet& grads,
                                         const std::vector<size_t>* only) {
  const ShardRequests::RowRoute& route = RouteFor(grads);
  std::vector<v1::PushRequest> requests(shards_.size());
  std::vector<v1::PushResponse> responses(shards_.size());
  std::vector<std::unique_ptr<ShardCall>> calls(shards_.size());
  std::vector<size_t> sent;
  CallGroup group;
  for (size_t s = 0; s < shards_.size(); ++s) {
    requests_.BuildPush({}, rank_, clock, {}, /*advance=*/false, kRowPiece, &requests[s]);
    requests_.AddRowSlices(grads, route[s], requests[s].mutable_slices(),
                           requests[s].mutable_gradients());
    if (requests[s].slices_size() == 0) continue;
    if (only != nullptr && std::find(only->begin(), only->end(), s) == only->end()) continue;
    calls[s] = std::make_unique<ShardCall>(DeadlineIn(config_.worker.rpc_timeout_ms));
    shards_[s].transport->Push(0, calls[s].get(), &requests[s], &responses[s],
                               group.Add(s, calls[s].get()));
    sent.push_back(s);
  }
  group.Wait(absl::Milliseconds(config_.worker.rpc_timeout_ms) + CallGroup::kAnswerMargin, spin_);
  TESSERA_RETURN_IF_ERROR(group.Outcome(
      [this](size_t s, const absl::Status& status) { return ShardError(s, status); }));
  for (size_t s : sent) NoteTerm(s, responses[s].term(), clock);
  return absl::OkStatus();
}

}  // namespace tessera
