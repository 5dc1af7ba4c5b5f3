// Shard's mutations: the one place a shard's state changes (Apply, and
// Make under it), what a change waits for with a standby, and the BSP
// clock's close (the buffer applied, or what BSP parts left of it, then
// min_clock published). Part of Shard (server/shard.h); the locking rules
// are that header's.
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "server/shard.h"

namespace tessera {

void Shard::ApplyGradients(uint32_t worker, int64_t clock,
                           const std::vector<absl::Span<const float>>& grads,
                           const std::vector<Resolved>& slices,
                           std::optional<int64_t> staleness,
                           const std::vector<const float*>& reads) {
  if (aggregate_ && !slices.empty()) workers_[worker]->pushed_this_clock.store(true);
  for (size_t i = 0; i < slices.size(); ++i) {
    const Resolved& r = slices[i];
    const absl::Span<const float> grad = grads[i];
    if (r.dense && aggregate_) {
      r.dense->Accumulate(r.offset, grad);
    } else if (r.dense) {
      r.dense->Apply(r.offset, grad, 1.0f, worker, clock, staleness, reads[i]);
    } else if (aggregate_) {
      r.sparse->Accumulate(r.keys, grad);
    } else {
      r.sparse->Apply(r.keys, grad, 1.0f);
    }
    if (!aggregate_) updates_applied_.fetch_add(1, std::memory_order_relaxed);
  }
}

absl::StatusOr<Shard::Applied> Shard::Apply(const Mutation& m, Hold* hold) {
  // A BSP push only adds to the buffer, which the clock's close sends.
  if (!logging_.load() || (aggregate_ && m.kind == Mutation::Kind::kPush)) return Make(m);
  if (hold == nullptr) return absl::InternalError("a change to a shard with a log, unheld");
  absl::StatusOr<Applied> out;
  {
    absl::MutexLock lock(&log_mu_);
    const uint64_t before = log_sequence_.load();
    out = LogAndMake(m);
    // The change is answered (and a min_clock it raised published to
    // parked pulls) once its mutation is safe; meanwhile the next call's
    // change is made and appended (group commit). Published by the Hold,
    // not under the log's lock: a parked pull served then records what it
    // read (the staleness tracker's lock), which a push holds while it
    // takes the log's.
    const int64_t publish = std::exchange(unpublished_, -1);
    const uint64_t last = log_sequence_.load();
    if (last != before || publish >= 0) {
      hold->sequence = std::max(hold->sequence, last);
      hold->when_held = mutation_log_.when_held;
    }
    hold->publish = std::max(hold->publish, publish);
  }
  return out;
}

absl::StatusOr<Shard::Applied> Shard::LogAndMake(const Mutation& m) {
  TESSERA_ASSIGN_OR_RETURN(const Applied out, Make(m));
  v1::Mutation logged;
  switch (m.kind) {
    case Mutation::Kind::kPush:
      LogPush(m, logged.mutable_push());
      break;
    case Mutation::Kind::kAdvance:
      if (aggregate_) return out;  // the clock's close carries it
      logged.mutable_advance()->set_worker(m.worker);
      logged.mutable_advance()->set_clock(m.clock);
      break;
    case Mutation::Kind::kAdopt:
      logged.mutable_adopt()->set_worker(m.worker);
      logged.mutable_adopt()->set_clock(out.clock);
      break;
    case Mutation::Kind::kFinish:
      logged.mutable_finish()->set_worker(m.worker);
      break;
    case Mutation::Kind::kEvict:
    case Mutation::Kind::kRejoin:
      if (!out.changed) return out;
      logged.mutable_evict()->set_worker(m.worker);
      logged.mutable_evict()->set_rejoin(m.kind == Mutation::Kind::kRejoin);
      break;
    case Mutation::Kind::kPlan:
      logged.mutable_plan()->set_worker(m.worker);
      logged.mutable_plan()->set_epoch(m.epoch);
      logged.mutable_plan()->set_rate(m.rate);
      break;
  }
  Log(std::move(logged));
  return out;
}

absl::StatusOr<Shard::Applied> Shard::Make(const Mutation& m) {
  WorkerSlot& slot = *workers_[m.worker];
  Applied out;
  switch (m.kind) {
    case Mutation::Kind::kPush:
      slot.pieces_applied.fetch_or(m.piece_bit);
      out.clock = m.clock;
      if (parts_ != nullptr && m.piece_bit != 0 && !m.slices->empty() &&
          m.slices->front().dense != nullptr) {
        // A BSP part (checked: exactly part `piece`'s dense slices).
        slot.pushed_this_clock.store(true);
        const uint32_t part = static_cast<uint32_t>(__builtin_ctzll(m.piece_bit)) + 1;
        if (parts_->Push(part, m.worker, m.clock, *m.grads, [this] { return clock_.Laggards(); })) {
          out.part_applied = part;
        }
        return out;
      }
      // Piece 0 pushes are each an update of their own.
      ApplyGradients(m.worker, m.piece_bit != 0 ? m.clock : -1, *m.grads, *m.slices, m.staleness,
                     *m.reads);
      return out;
    case Mutation::Kind::kAdvance: {
      absl::StatusOr<ClockTable::Advance> a = clock_.AdvanceClock(m.worker, m.clock);
      if (!a.ok()) {
        return absl::InternalError(absl::StrCat("a checked advance failed: ", a.status().message()));
      }
      slot.pieces_applied.store(0);
      if (!aggregate_) staleness_tracker_.Published(1);
      AfterAdvance(*a);
      out.clock = a->clock;
      return out;
    }
    case Mutation::Kind::kAdopt: {
      const int64_t held = clock_.WorkerClock(m.worker);
      const ClockTable::Advance a = clock_.Adopt(m.worker, std::max<int64_t>(m.clock, 0));
      if (a.clock != held) slot.pieces_applied.store(0);
      if (held >= 0 && a.clock > held) {
        out.lost_clocks = a.clock - held;
        int64_t prev = lost_here_.load();
        while (out.lost_clocks > prev && !lost_here_.compare_exchange_weak(prev, out.lost_clocks)) {
        }
      }
      AfterAdvance(a);
      out.clock = a.clock;
      return out;
    }
    case Mutation::Kind::kFinish: {
      const int64_t old_min = clock_.min_clock();
      out.workers_finished = clock_.Finish(m.worker);
      const int64_t new_min = clock_.min_clock();
      if (new_min > old_min) OnMinClock(new_min);
      out.clock = clock_.WorkerClock(m.worker);
      return out;
    }
    case Mutation::Kind::kEvict: {
      const ClockTable::Advance a = clock_.Evict(m.worker);
      AfterAdvance(a);
      out.clock = a.clock;
      return out;
    }
    case Mutation::Kind::kRejoin:
      out.changed = clock_.Rejoin(m.worker);
      if (out.changed) slot.pieces_applied.store(0);
      out.clock = clock_.WorkerClock(m.worker);
      return out;
    case Mutation::Kind::kPlan:
      out.shares = planner_.Plan(m.worker, m.epoch, m.rate);
      return out;
  }
  return absl::InternalError("unknown mutation");
}

void Shard::AfterAdvance(const ClockTable::Advance& a) {
  if (a.new_min > a.old_min) OnMinClock(a.new_min);
}

void Shard::OnMinClock(int64_t new_min) {
  const bool bsp = config_.consistency.mode == ConsistencyMode::kBsp;
  if (!aggregate_) {
    // BSP without aggregation: every push of the clocks below new_min is
    // applied and no worker may push at new_min before it is published.
    if (bsp && want_cut_ && want_cut_(new_min)) {
      absl::MutexLock lock(&aggregate_mu_);  // one cut at a time
      cut_sink_(CopyState(new_min, clock_.clocks(), clock_.finished(), /*clamp=*/true));
    }
    PublishMin(new_min);
    return;
  }
  absl::MutexLock lock(&aggregate_mu_);
  uint32_t pushers = 0;
  for (uint32_t w = 0; w < num_workers_; ++w) pushers += workers_[w]->pushed_this_clock.exchange(false);
  if (logging_.load()) {
    // The clock's close, before the buffer is applied and cleared. Every
    // change that raises min_clock comes through Apply, which holds the log.
    log_mu_.AssertHeld();
    // Applied here while the standby applies it too; published by the
    // call's Hold once it holds it.
    LogClose(new_min, pushers);
    ApplyAggregate(pushers);
  } else {
    ApplyAggregate(pushers);
  }
  if (want_cut_ && want_cut_(new_min)) {
    cut_sink_(CopyState(new_min, clock_.clocks(), clock_.finished(), /*clamp=*/true));
  }
  PublishMin(new_min);
}

void Shard::PublishMin(int64_t new_min) {
  if (logging_.load()) {
    // Published by Apply's Hold once the standby holds the change; every
    // change that raises min_clock comes through Apply, which holds the log.
    log_mu_.AssertHeld();
    unpublished_ = std::max(unpublished_, new_min);
    return;
  }
  clock_.Publish(new_min);
}

void Shard::ApplyAggregate(uint32_t pushers) {
  if (pushers == 0) return;
  const float scale = 1.0f / static_cast<float>(pushers);
  if (parts_ != nullptr) {
    parts_->Close();  // the dense tables' parts not applied yet
  } else {
    for (auto& table : dense_) table->ApplyAccumulated(scale);
  }
  for (auto& table : sparse_) table->ApplyAccumulated(scale);
  updates_applied_.fetch_add(dense_.size() + sparse_.size(), std::memory_order_relaxed);
  staleness_tracker_.Published(pushers);
}

}  // namespace tessera
