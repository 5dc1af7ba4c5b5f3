#include "worker/local_ps_client.h"

#include <algorithm>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace tessera {

// Expires the shards' parked pulls: wakes at the next deadline, or every
// kTick (a pull parked since may have an earlier one), like a server's reaper.
class LocalShards::Reaper {
 public:
  explicit Reaper(std::vector<Shard*> shards)
      : shards_(std::move(shards)), thread_([this] { Loop(); }) {}
  ~Reaper() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    thread_.join();
  }

 private:
  static constexpr absl::Duration kTick = absl::Milliseconds(20);

  void Loop() {
    absl::MutexLock lock(&mu_);
    while (!stopping_) {
      absl::Time wake = absl::Now() + kTick;
      for (Shard* shard : shards_) wake = std::min(wake, shard->NextDeadline());
      mu_.AwaitWithDeadline(absl::Condition(&stopping_), wake);
      if (stopping_) break;
      mu_.Unlock();  // a pull's callback may run long (it scatters values)
      for (Shard* shard : shards_) shard->ExpireDue(absl::Now());
      mu_.Lock();
    }
  }

  const std::vector<Shard*> shards_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // last: starts once the rest is set
};

LocalShards::LocalShards() = default;
LocalShards::LocalShards(LocalShards&&) noexcept = default;
LocalShards& LocalShards::operator=(LocalShards&& other) noexcept {
  reaper_.reset();  // before the shards it expires go
  shards_ = std::move(other.shards_);
  reaper_ = std::move(other.reaper_);
  return *this;
}
LocalShards::~LocalShards() { reaper_.reset(); }

absl::StatusOr<LocalShards> LocalShards::Create(const JobConfig& config) {
  LocalShards local;
  for (uint32_t s = 0; s < config.num_servers(); ++s) {
    TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<Shard> shard, Shard::Create(config, s));
    local.shards_.push_back(std::move(shard));
  }
  local.reaper_ = std::make_unique<Reaper>(local.ptrs());
  return local;
}

std::vector<Shard*> LocalShards::ptrs() const {
  std::vector<Shard*> p;
  for (const auto& s : shards_) p.push_back(s.get());
  return p;
}

LocalShardTransport::LocalShardTransport(std::vector<Shard*> daemons)
    : daemons_(std::move(daemons)) {
  for (size_t d = 0; d < daemons_.size(); ++d) {
    names_.push_back(absl::StrCat("shard ", daemons_[d]->index(), " in process (",
                                  d == 0 ? "primary" : "standby", ")"));
  }
}

bool LocalShardTransport::NextAddress() {
  if (daemons_.size() < 2) return false;
  at_ = (at_ + 1) % daemons_.size();
  return true;
}

void LocalShardTransport::Register(size_t, ShardCall*, const v1::RegisterRequest* request,
                                   v1::RegisterResponse* response, Done done) {
  response->Clear();  // as a message that arrives is read into an empty one
  done(shard()->Register(*request, response));
}

void LocalShardTransport::Pull(size_t, ShardCall* call, const v1::PullRequest* request,
                               v1::PullResponse* response, Done done) {
  Shard* shard = this->shard();
  response->Clear();
  // The pull may park until other workers (other threads) advance, or
  // until LocalShards' reaper expires it.
  std::optional<ClockTable::WaiterId> parked =
      shard->Pull(*request, response, call->deadline(), std::move(done));
  if (parked) call->SetCancel([shard, id = *parked] { shard->CancelPull(id); });
}

void LocalShardTransport::Push(size_t, ShardCall*, const v1::PushRequest* request,
                               v1::PushResponse* response, Done done) {
  response->Clear();  // as a message that arrives is read into an empty one
  done(shard()->Push(*request, response));
}

void LocalShardTransport::Clock(size_t, ShardCall*, const v1::ClockRequest* request,
                                v1::ClockResponse* response, Done done) {
  response->Clear();  // as a message that arrives is read into an empty one
  done(shard()->Clock(*request, response));
}

void LocalShardTransport::Finish(size_t, ShardCall*, const v1::FinishRequest* request,
                                 v1::FinishResponse* response, Done done) {
  response->Clear();  // as a message that arrives is read into an empty one
  done(shard()->Finish(*request, response));
}

void LocalShardTransport::Stats(size_t, ShardCall*, const v1::StatsRequest*,
                                v1::StatsResponse* response, Done done) {
  response->Clear();
  shard()->Stats(response);
  done(absl::OkStatus());
}

void LocalShardTransport::Plan(size_t, ShardCall*, const v1::PlanRequest* request,
                               v1::PlanResponse* response, Done done) {
  response->Clear();  // as a message that arrives is read into an empty one
  done(shard()->Plan(*request, response));
}

namespace {

std::vector<std::unique_ptr<ShardTransport>> Transports(
    const std::vector<std::vector<Shard*>>& daemons) {
  std::vector<std::unique_ptr<ShardTransport>> transports;
  for (const auto& d : daemons) transports.push_back(std::make_unique<LocalShardTransport>(d));
  return transports;
}

std::vector<std::vector<Shard*>> Alone(const std::vector<Shard*>& shards) {
  std::vector<std::vector<Shard*>> daemons;
  for (Shard* s : shards) daemons.push_back({s});
  return daemons;
}

}  // namespace

LocalPsClient::LocalPsClient(const JobConfig& config, uint32_t rank,
                             const std::vector<Shard*>& shards)
    : LocalPsClient(config, rank, Alone(shards)) {}

LocalPsClient::LocalPsClient(const JobConfig& config, uint32_t rank,
                             const std::vector<std::vector<Shard*>>& daemons)
    : ShardedPsClient(config, rank, Transports(daemons)) {}

}  // namespace tessera
