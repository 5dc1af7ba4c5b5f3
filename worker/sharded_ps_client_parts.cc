// ShardedPsClient under worker.bsp_parts: a BSP step's dense values in parts
// (docs/DESIGN.md "BSP in parts").
#include "worker/sharded_ps_client.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "common/status.h"
#include "worker/call_group.h"

namespace tessera {

absl::StatusOr<std::optional<int64_t>> ShardedPsClient::PushPullParts(
    int64_t clock, const ParameterSet& grads, std::optional<int64_t> values_clock,
    ParameterSet* params) {
  requests_.ShapeParameters(params);
  // Every request is built (and encoded) first, so the parts leave back to back.
  struct Call {
    size_t part = 0;
    v1::PullRequest pull;
    v1::PullResponse pulled;
    v1::PushRequest push;
    v1::PushResponse pushed;
    std::unique_ptr<ShardCall> pull_call, push_call;
    const char* shared_reply = nullptr;
  };
  std::vector<std::vector<std::unique_ptr<Call>>> calls(shards_.size());
  for (size_t s = 0; s < shards_.size(); ++s) {
    const ShardState& shard = shards_[s];
    const auto& groups = shard.groups;
    // A shard with no dense values still gets one (empty) push: its clock advances.
    for (size_t g = 0; g < std::max<size_t>(groups.size(), 1); ++g) {
      static const std::vector<ShardRequests::Piece> kNoPieces;
      const auto& pieces = groups.empty() ? kNoPieces : groups[g];
      const bool last = g + 1 >= groups.size();
      auto call = std::make_unique<Call>();
      call->part = g;
      const bool shared = !groups.empty() && shard.memory;
      const ShardRequests::SharedTarget target =
          shared ? ShardRequests::SharedTarget{shard.push_area[g], shard.push_at[g]}
                 : ShardRequests::SharedTarget{};
      requests_.BuildPush(pieces, rank_, clock, grads, last, static_cast<uint32_t>(g + 1),
                          &call->push, shared ? &target : nullptr);
      if (values_clock) call->push.set_values_clock(*values_clock);
      if (!groups.empty()) {
        requests_.BuildPull(pieces, rank_, clock + 1, &call->pull, shared);
        call->pull.set_part(static_cast<uint32_t>(g + 1));
        if (shared) {
          call->pull.mutable_reply_shared()->set_offset(shard.pull_at[g]);
          call->shared_reply = shard.pull_area[g];
        }
      }
      calls[s].push_back(std::move(call));
    }
  }
  // One group for every call: a failed push cancels the parked pulls.
  CallGroup group;
  absl::Mutex min_mu;
  int64_t min_clock = INT64_MAX;
  for (size_t s = 0; s < shards_.size(); ++s) {
    for (auto& call : calls[s]) {
      if (!call->pull.slices_size()) continue;
      call->pull_call = std::make_unique<ShardCall>(DeadlineIn(config_.worker.pull_timeout_ms));
      Call* c = call.get();
      const auto& pieces = shards_[s].groups[c->part];
      shards_[s].transport->Pull(c->part % shards_[s].transport->lanes(), c->pull_call.get(),
                                 &c->pull, &c->pulled,
                                 group.Add(s, c->pull_call.get(), [this, c, &pieces, params,
                                                                   &min_mu, &min_clock] {
                                   absl::MutexLock lock(&min_mu);
                                   min_clock = std::min(min_clock, c->pulled.min_clock());
                                   return Scatter(pieces, c->pulled, c->shared_reply, params);
                                 }));
    }
  }
  // Each shard's parts in order, the next once the shard took the last (the
  // last advances the clock). Parts sent side by side share the link and
  // all arrive late: two at a time, or all but the last at once, measured
  // slower at 1 Gbit/s (6,800 and 6,160 samples/s against 7,300).
  std::function<void(size_t, size_t)> send = [&](size_t s, size_t g) {
    Call* c = calls[s][g].get();
    c->push_call = std::make_unique<ShardCall>(DeadlineIn(config_.worker.rpc_timeout_ms));
    shards_[s].transport->Push(
        g % shards_[s].transport->lanes(), c->push_call.get(), &c->push, &c->pushed,
        group.Add(s, c->push_call.get(), [&send, &calls, s, g] {
          if (g + 1 < calls[s].size()) send(s, g + 1);
          return absl::OkStatus();
        }));
  };
  for (size_t s = 0; s < shards_.size(); ++s) send(s, 0);
  group.Wait(absl::Milliseconds(config_.worker.pull_timeout_ms) + CallGroup::kAnswerMargin, spin_);
  if (group.failed()) DropSharedMemory();
  TESSERA_RETURN_IF_ERROR(group.Outcome(
      [this](size_t s, const absl::Status& status) { return ShardError(s, status); }));
  for (size_t s = 0; s < shards_.size(); ++s) {
    NoteTerm(s, calls[s].back()->pushed.term(), clock);
  }
  if (values_clock) {
    int64_t staleness = -1;
    for (const auto& shard : calls) staleness = std::max(staleness, shard.front()->pushed.staleness());
    push_staleness_.Add(staleness);
  }
  if (min_clock == INT64_MAX) return std::nullopt;  // no shard holds dense values
  return std::optional<int64_t>(min_clock);
}

}  // namespace tessera
