// ShardedPsClient's failover: the terms that accepted this worker's pushes,
// and the held push a shard that took over without it gets again.
#include "worker/sharded_ps_client.h"

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace tessera {

void ShardedPsClient::NoteTerm(size_t s, int64_t term, int64_t clock) {
  const int64_t before = shards_[s].term;
  if (term == before) return;
  if (term < before) {
    spdlog::error(
        "shard {}: a push of clock {} was accepted under term {}, older than term {} which "
        "accepted this worker's pushes before: two primaries of one shard",
        s, clock, term, before);
    return;
  }
  shards_[s].term = term;
  spdlog::info("shard {}: pushes accepted under term {} from clock {} ({})", s, term, clock,
               address(s));
}

absl::Status ShardedPsClient::Resend(const std::vector<size_t>& behind) {
  std::vector<std::string> named;
  for (size_t s : behind) named.push_back(absl::StrCat(s, " (", address(s), ")"));
  spdlog::warn(
      "shard(s) {} took over without this worker's push of clock {} (its primary's alone); "
      "sending it again",
      absl::StrJoin(named, ", "), held_.clock);
  if (held_.rows != nullptr && held_.rows_clock == held_.clock) {
    TESSERA_RETURN_IF_ERROR(PushRowsTo(held_.clock, *held_.rows, &behind));
  }
  std::vector<size_t> unanswered;
  int64_t min_clock;
  return Push(held_.clock, *held_.grads, held_.values_clock, nullptr, &unanswered, &min_clock,
              &behind);
}

void ShardedPsClient::ReleaseHeld() {
  held_ = Held();
  restored_.reset();
}

void ShardedPsClient::RestoreHeld() {
  std::optional<HeldPush> push = held_file_->Load();
  if (!push) return;
  // The tables it was saved for must be this job's.
  ParameterSet shape;
  requests_.ShapeParameters(&shape);
  bool fits = push->grads.size() == shape.size();
  for (size_t t = 0; fits && t < shape.size(); ++t) fits = push->grads[t].size() == shape[t].size();
  const size_t tables = config_.Tables().size();
  for (const SparseRows& r : push->rows) fits &= r.table < tables;
  if (!fits) {
    spdlog::warn("{}: a push of other tables than this job's; ignored", held_file_->path());
    return;
  }
  restored_ = std::move(push);
  held_.clock = restored_->clock;
  held_.grads = &restored_->grads;
  held_.values_clock = restored_->values_clock;
  if (!restored_->rows.empty()) {
    held_.rows = &restored_->rows;
    held_.rows_clock = restored_->clock;
  }
  spdlog::info(
      "this rank's push of clock {} from before its restart is kept ({}): a shard that took "
      "over without it gets it again",
      held_.clock, held_file_->path());
}

}  // namespace tessera
