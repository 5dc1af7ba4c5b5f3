#include "server/checkpointer.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace tessera {
namespace {

// How often the thread looks at the clock and the time.
constexpr absl::Duration kTick = absl::Milliseconds(50);

int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string ShardRoot(const JobConfig& config, uint32_t shard) {
  return absl::StrCat(config.checkpoint.dir, "/shard-", shard);
}

// Shard 0 plans training.balance dynamic's epochs (server/epoch_planner.h).
bool KeepsPlanLog(const Shard& shard, const JobConfig& config) {
  return shard.index() == 0 && config.training.balance == Balance::kDynamic;
}

// After a checkpoint was restored: the plans made since it, from the plan
// log. A log that is missing, torn or someone else's leaves the
// checkpoint's plans (a plan made after it is then made again; logged).
absl::Status RestorePlans(Shard* shard, const JobConfig& config) {
  const std::string root = ShardRoot(config, shard->index());
  absl::StatusOr<v1::EpochPlanLog> log = ReadPlanLog(root);
  if (absl::IsNotFound(log.status())) return absl::OkStatus();
  if (!log.ok()) {
    spdlog::warn("epoch plan log: {}; plans made after the checkpoint will be made again",
                 std::string(log.status().message()));
    return absl::OkStatus();
  }
  const std::string other = CheckpointStore::IdentityDifference(log->identity(), shard->Identity());
  if (!other.empty()) {
    spdlog::warn("epoch plan log in {} is not this shard's ({}); not used", root, other);
    return absl::OkStatus();
  }
  TESSERA_RETURN_IF_ERROR(shard->RestorePlanLog(*log));
  if (log->epoch_plans_size() > 0) {
    spdlog::info("restored epoch plans up to epoch {} from the plan log in {}",
                 log->epoch_plans(log->epoch_plans_size() - 1).epoch(), root);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Checkpointer::Restore(Shard* shard, const JobConfig& config) {
  const CheckpointConfig& c = config.checkpoint;
  if (c.dir.empty() || c.restore == RestorePolicy::kNever) return absl::OkStatus();
  CheckpointStore store(ShardRoot(config, shard->index()), c.keep);
  std::vector<std::string> skipped;
  CheckpointInfo info;
  absl::StatusOr<ShardState> state =
      store.LoadNewest(shard->Identity(), c.restore_clock, &skipped, &info,
                       [shard](const v1::CheckpointManifest& m) { return shard->CheckManifest(m); });
  for (const std::string& line : skipped) spdlog::warn("checkpoint: {}", line);
  if (absl::IsNotFound(state.status())) {
    if (c.restore == RestorePolicy::kRequired) {
      return absl::FailedPreconditionError(absl::StrCat(
          "checkpoint.restore is required: ", state.status().message()));
    }
    spdlog::info("checkpoint: none to restore in {}; starting from initial values", store.root());
    return absl::OkStatus();
  }
  if (!state.ok()) return absl::FailedPreconditionError(state.status().message());
  const auto start = std::chrono::steady_clock::now();
  absl::Status s = shard->Restore(*state);
  if (!s.ok()) return absl::FailedPreconditionError(s.message());
  if (KeepsPlanLog(*shard, config)) {
    s = RestorePlans(shard, config);
    if (!s.ok()) return absl::FailedPreconditionError(s.message());
  }
  const double seconds =
      info.seconds +
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::info("restored checkpoint of clock {} from {}: {} bytes in {:.3f} s ({:.0f} MB/s)",
               info.clock, info.path, info.bytes, seconds, info.bytes / 1e6 / std::max(seconds, 1e-9));
  return absl::OkStatus();
}

Checkpointer::Checkpointer(Shard* shard, const JobConfig& config)
    : shard_(shard),
      config_(config.checkpoint),
      bsp_(config.consistency.mode == ConsistencyMode::kBsp),
      store_(ShardRoot(config, shard->index()), config.checkpoint.keep),
      last_cut_ms_(SteadyMs()) {
  shard_->SetBspCuts([this](int64_t clock) { return WantBspCut(clock); },
                     [this](std::unique_ptr<ShardState> state) { Queue(std::move(state)); });
  if (KeepsPlanLog(*shard, config)) {
    shard_->SetPlanLog([root = store_.root()](const v1::EpochPlanLog& log) {
      const absl::Status s = WritePlanLog(root, log);
      if (!s.ok()) {
        spdlog::error("epoch plan log: {}; a restart before the next checkpoint would make "
                      "this plan again", std::string(s.message()));
      }
    });
  }
  thread_ = std::thread([this] { Loop(); });
}

Checkpointer::~Checkpointer() { Final(); }

bool Checkpointer::WantBspCut(int64_t clock) {
  // min_clock is "infinite" once every worker finished: Final() cuts then.
  if (clock <= 0 || clock == std::numeric_limits<int64_t>::max()) return false;
  const bool by_clock = config_.every_clocks > 0 && clock % config_.every_clocks == 0;
  // Decided here, on the advancing thread, and the timer restarts with the
  // decision: when Loop flagged "due" on its tick, a tick that fell during a
  // long copy (or raced the decision) asked for a second cut at the next clock.
  const int64_t now = SteadyMs();
  const bool by_time =
      config_.every_seconds > 0 && now - last_cut_ms_.load() >= config_.every_seconds * 1000;
  if (by_clock || by_time) last_cut_ms_.store(now);
  return by_clock || by_time;
}

void Checkpointer::Queue(std::unique_ptr<ShardState> state) {
  last_cut_ms_.store(SteadyMs());
  last_cut_clock_.store(state->manifest.clock());
  absl::MutexLock lock(&mu_);
  if (queued_) {
    spdlog::debug("checkpoint: the cut of clock {} replaces the waiting one of clock {}",
                  state->manifest.clock(), queued_->manifest.clock());
  }
  queued_ = std::move(state);
}

void Checkpointer::Write(std::unique_ptr<ShardState> state) {
  const int64_t clock = state->manifest.clock();
  absl::StatusOr<CheckpointInfo> info = store_.Write(state.get());
  if (!info.ok()) {
    spdlog::error("checkpoint of clock {} failed: {}; the previous one stays", clock,
                  std::string(info.status().message()));
    return;
  }
  shard_->NoteCheckpoint(clock, static_cast<int64_t>(info->bytes), info->seconds);
  spdlog::info("checkpoint of clock {}: {} bytes in {:.3f} s ({:.0f} MB/s) to {}", clock,
               info->bytes, info->seconds, info->bytes / 1e6 / std::max(info->seconds, 1e-9),
               info->path);
  shard_->Recycle(std::move(state));
}

void Checkpointer::Loop() {
  while (true) {
    std::unique_ptr<ShardState> state;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || queued_ != nullptr;
      };
      mu_.AwaitWithTimeout(absl::Condition(&ready), kTick);
      state = std::move(queued_);
      if (!state && stopping_) return;
    }
    if (state) {
      Write(std::move(state));
      continue;
    }
    const bool time_due = config_.every_seconds > 0 &&
                          SteadyMs() - last_cut_ms_.load() >= config_.every_seconds * 1000;
    if (bsp_) continue;  // the shard asks WantBspCut at each clock
    const int64_t min = shard_->published_min();
    const int64_t last = last_cut_clock_.load();
    const bool clock_due = config_.every_clocks > 0 && min < std::numeric_limits<int64_t>::max() &&
                           min / config_.every_clocks > std::max<int64_t>(last, 0) / config_.every_clocks;
    if (time_due || clock_due) {
      std::unique_ptr<ShardState> cut = shard_->Snapshot();
      last_cut_ms_.store(SteadyMs());
      last_cut_clock_.store(cut->manifest.clock());
      Write(std::move(cut));
    }
  }
}

void Checkpointer::Final() {
  {
    absl::MutexLock lock(&mu_);
    if (final_done_) return;
    final_done_ = true;
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
  std::unique_ptr<ShardState> state = shard_->Snapshot();
  if (state == nullptr) {
    spdlog::warn("checkpoint: no final copy: the open clock is partly applied "
                 "(worker.bsp_parts); the last cut (clock {}) stands",
                 last_cut_clock_.load());
    return;
  }
  Write(std::move(state));
}

}  // namespace tessera
