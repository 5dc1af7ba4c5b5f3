#include "worker/sharded_ps_client.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <numeric>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/partition.h"
#include "common/secret.h"
#include "common/status.h"
#include "spdlog/spdlog.h"
#include "worker/call_group.h"

namespace tessera {
namespace {

// Pieces larger than this are split over a shard's lanes.
constexpr uint64_t kSplitBytes = 1 << 20;
// Failover: one try at a shard's address, before the other is tried.
constexpr int64_t kFailoverTryMs = 1000;
// How long past its deadline a call may take to answer before the caller
// gives up on it (a transport answers at its deadline by itself).
constexpr absl::Duration kAnswerMargin = CallGroup::kAnswerMargin;

}  // namespace

absl::Time ShardedPsClient::DeadlineIn(int64_t ms) { return absl::Now() + absl::Milliseconds(ms); }

std::vector<size_t> ShardedPsClient::AllShards() const {
  std::vector<size_t> all(shards_.size());
  std::iota(all.begin(), all.end(), size_t{0});
  return all;
}

ShardedPsClient::ShardedPsClient(const JobConfig& config, uint32_t rank,
                                 std::vector<std::unique_ptr<ShardTransport>> transports,
                                 absl::Duration spin)
    : config_(config),
      rank_(rank),
      spin_(spin),
      requests_(ShardRequests::ForDense(
          config,
          static_cast<uint32_t>(transports.empty() ? 1 : transports.front()->lanes()),
          kSplitBytes)) {
  if (const std::string& path = config.security.session_file; !path.empty()) {
    // The session a launcher keeps for this rank: a restart is the same holder.
    absl::StatusOr<std::string> hex = ReadToken(path);
    const std::string bytes = hex.ok() ? absl::HexStringToBytes(*hex) : "";
    if (hex.ok() && hex->size() == 32 && absl::BytesToHexString(bytes) == absl::AsciiStrToLower(*hex) &&
        bytes.find_first_not_of('\0') != std::string::npos) {
      requests_.session = bytes;
    } else {
      setup_error_ = absl::InvalidArgumentError(absl::StrCat(
          "config: security.session_file = '", path, "': expected a file holding 32 hex "
          "characters, not all zero (",
          hex.ok() ? absl::StrCat(hex->size(), " characters") : std::string(hex.status().message()),
          ")"));
    }
  }
  for (const auto& transport : transports) failover_ |= transport->daemons() > 1;
  if (failover_ && !config.security.session_file.empty() && setup_error_.ok()) {
    held_file_ = std::make_unique<HeldPushFile>(
        HeldPushFile::PathFor(config.security.session_file, rank), requests_.session);
    RestoreHeld();
  }
  for (size_t s = 0; s < transports.size(); ++s) {
    ShardState shard;
    shard.transport = std::move(transports[s]);
    // As many requests as the bytes need (>= kSplitBytes each, at most one
    // per lane): a small shard gets one request, so its push advances the
    // clock itself and can carry a fused pull. Pieces go to the lightest group.
    uint64_t total = 0;
    for (const auto& piece : requests_.pieces[s]) total += piece.length * sizeof(float);
    const size_t wanted = std::clamp<uint64_t>(total / kSplitBytes, 1, shard.transport->lanes());
    std::vector<uint64_t> load(wanted, 0);
    shard.groups.resize(wanted);
    if (!requests_.parts.empty()) {
      shard.groups = requests_.parts[s];  // worker.bsp_parts: a request per part, in order
    } else {
      for (const auto& piece : requests_.pieces[s]) {
        const size_t g = std::min_element(load.begin(), load.end()) - load.begin();
        shard.groups[g].push_back(piece);
        load[g] += piece.length;
      }
    }
    shard.groups.erase(std::remove_if(shard.groups.begin(), shard.groups.end(),
                                      [](const auto& g) { return g.empty(); }),
                       shard.groups.end());
    // Shared memory layout: every group's push area, then every group's pull
    // area, each 64-byte aligned and sized for float32.
    for (const auto& group : shard.groups) {
      shard.push_at.push_back(shard.capacity);
      shard.capacity += (ShardRequests::MaxBytes(group) + 63) / 64 * 64;
    }
    for (size_t g = 0; g < shard.groups.size(); ++g) {
      shard.pull_at.push_back(shard.capacity + shard.push_at[g]);
    }
    shard.capacity *= 2;
    shards_.push_back(std::move(shard));
  }
}

absl::Status ShardedPsClient::ShardError(size_t shard, const absl::Status& status) const {
  return absl::Status(status.code(), absl::StrCat("shard ", shard, " (", address(shard),
                                                  "): ", status.message()));
}

absl::Status ShardedPsClient::CheckLayout(size_t s, const v1::RegisterResponse& layout) const {
  const auto tables = config_.Tables();
  bool same = layout.num_shards() == config_.num_servers() && layout.shard_index() == s &&
              layout.tables_size() == static_cast<int>(tables.size());
  for (size_t t = 0; same && t < tables.size(); ++t) {
    const auto& got = layout.tables(static_cast<int>(t));
    same = got.name() == tables[t].name;
    if (same && tables[t].kind == TableKind::kDense) {
      DenseRange range = DenseShardRange(tables[t].size, s, config_.num_servers());
      same = got.begin() == range.begin && got.end() == range.end;
    }
  }
  if (same) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("shard ", s, " (", address(s), ") serves a different job: it is shard ",
                   layout.shard_index(), " of ", layout.num_shards(), " with ",
                   layout.tables_size(), " tables; this worker's config wants shard ", s, " of ",
                   config_.num_servers(), " with ", tables.size()));
}

void ShardedPsClient::CreateSharedMemory() {
  for (size_t s = 0; s < shards_.size(); ++s) {
    ShardState& shard = shards_[s];
    shard.memory.reset();
    if (shard.capacity == 0 || !shard.transport->offers_shared_memory()) continue;
    absl::StatusOr<std::unique_ptr<SharedSegment>> segment = SharedSegment::Create(shard.capacity);
    if (!segment.ok()) {
      spdlog::warn("shard {} ({}): no shared memory ({}); values travel in the messages", s,
                   address(s), std::string(segment.status().message()));
      continue;
    }
    shard.memory = *std::move(segment);
    shard.push_area.clear();
    shard.pull_area.clear();
    for (size_t g = 0; g < shard.groups.size(); ++g) {
      // Inside the segment by construction of push_at, pull_at and capacity.
      shard.push_area.push_back(shard.memory->Bytes(shard.push_at[g], 0).value());
      shard.pull_area.push_back(shard.memory->Bytes(shard.pull_at[g], 0).value());
    }
  }
}

void ShardedPsClient::DropSharedMemory() {
  if (shared_memory_shards() == 0) return;
  spdlog::warn("a call failed: values travel in the messages from now on");
  for (auto& shard : shards_) shard.memory.reset();
}

size_t ShardedPsClient::shared_memory_shards() const {
  size_t n = 0;
  for (const auto& shard : shards_) n += shard.memory != nullptr;
  return n;
}

std::vector<std::string> ShardedPsClient::shared_memory_names() const {
  std::vector<std::string> names;
  for (const auto& shard : shards_) {
    if (shard.memory != nullptr) names.push_back(shard.memory->name());
  }
  return names;
}

absl::Status ShardedPsClient::RegisterWith(const std::vector<size_t>& which, int64_t resume_clock,
                                           std::vector<v1::RegisterResponse>* responses,
                                           size_t* failed_shard) {
  const int64_t timeout_ms =
      failover_ ? std::min<int64_t>(config_.worker.connect_timeout_ms, kFailoverTryMs)
                : config_.worker.connect_timeout_ms;
  std::vector<v1::RegisterRequest> requests(shards_.size());
  std::vector<std::unique_ptr<ShardCall>> calls(shards_.size());
  CallGroup group;
  for (size_t s : which) {
    requests[s].set_worker_rank(rank_);
    requests[s].set_resume_clock(resume_clock);
    requests[s].set_session(requests_.session);
    requests[s].set_job(config_.name);
    requests[s].set_job_layout(config_.LayoutText());
    if (const SharedSegment* memory = shards_[s].memory.get()) {
      v1::SharedMemory* m = requests[s].mutable_shared_memory();
      m->set_name(memory->name());
      m->set_capacity(memory->capacity());
      m->set_token(memory->token());
    }
    // Retry with backoff while the shard starts; with failover, one try
    // here, and Connect tries the other address.
    calls[s] = std::make_unique<ShardCall>(DeadlineIn(timeout_ms), /*wait_for_ready=*/!failover_);
    shards_[s].transport->Register(0, calls[s].get(), &requests[s], &(*responses)[s],
                                   group.Add(s, calls[s].get(), [this, s, responses] {
                                     return CheckLayout(s, (*responses)[s]);
                                   }));
  }
  group.Wait(absl::Milliseconds(timeout_ms) + kAnswerMargin);
  if (group.failed()) {
    size_t s = group.failed_shard();
    if (failed_shard != nullptr) *failed_shard = s;
    absl::Status status = group.call_error();
    if (absl::IsDeadlineExceeded(status) || absl::IsUnavailable(status)) {
      // The last word from there says why (no connection, or a daemon that
      // does not serve workers, such as a standby).
      return absl::UnavailableError(absl::StrCat(
          "shard ", s, " at ", address(s), " did not answer within ",
          config_.worker.connect_timeout_ms, " ms (worker.connect_timeout_ms; last: ",
          status.message(), "); is tessera-server running there?"));
    }
    return ShardError(s, status);
  }
  return group.Outcome([](size_t, const absl::Status& s) { return s; });
}

absl::StatusOr<int64_t> ShardedPsClient::Connect(int64_t resume_clock) {
  if (!setup_error_.ok()) return setup_error_;
  if (config_.worker.shared_memory == SharedMemoryMode::kAuto) CreateSharedMemory();
  std::vector<v1::RegisterResponse> responses(shards_.size());
  const std::vector<size_t> all = AllShards();
  // Holding a push, register at its clock: a shard that took over without
  // it must say so (registering further on would move it past the push).
  const int64_t ask =
      held_.clock >= 0 && held_.clock < resume_clock ? held_.clock : resume_clock;
  size_t failed = 0;
  absl::Status status = RegisterWith(all, ask, &responses, &failed);
  // Failover: a shard whose address does not serve workers (its primary
  // gone, or a standby) is tried at the other, until the connect timeout.
  const absl::Time connect_by = absl::Now() + absl::Milliseconds(config_.worker.connect_timeout_ms);
  while (failover_ && absl::IsUnavailable(status) && absl::Now() < connect_by) {
    shards_[failed].transport->NextAddress();
    absl::SleepFor(absl::Milliseconds(50));
    std::vector<size_t> left;  // not yet answered (the first failure cancels the rest)
    for (size_t s = 0; s < shards_.size(); ++s) {
      if (responses[s].num_shards() == 0) left.push_back(s);
    }
    status = RegisterWith(left, ask, &responses, &failed);
  }
  // A restarted worker may find its rank still held by its dead predecessor
  // until that one has been silent for security.rank_lease_s; past that (and
  // a margin) the holder is alive: two workers with one rank.
  // Never (the default): no wait; a rank only passes to its holder's session.
  const double lease = config_.security.rank_lease_s;
  const absl::Time give_up =
      std::isinf(lease) ? absl::Now() : absl::Now() + absl::Seconds(lease) + absl::Seconds(5);
  bool logged = false;
  while (absl::IsAlreadyExists(status) && absl::Now() < give_up) {
    if (!logged) {
      spdlog::info(
          "rank {} is still held on a shard ({}); waiting for the old holder to go "
          "silent (security.rank_lease_s = {})",
          rank_, std::string(status.message()), config_.security.rank_lease_s);
      logged = true;
    }
    absl::SleepFor(absl::Milliseconds(250));
    status = RegisterWith(all, ask, &responses);
  }
  // Shards that hold an earlier clock than another (or than this worker)
  // are moved to the highest, so that every shard agrees on it.
  int64_t clock = resume_clock;
  for (const auto& r : responses) clock = std::max(clock, r.clock());
  // What each shard lost, over both rounds.
  std::vector<int64_t> lost(shards_.size(), 0);
  std::vector<size_t> behind, resend;
  for (size_t s = 0; status.ok() && s < shards_.size(); ++s) {
    lost[s] = responses[s].lost_clocks();
    if (responses[s].clock() >= clock) continue;
    // A standby that took over without this worker's push of the clock
    // that was open gets that push again.
    const bool held = held_.clock >= 0 && responses[s].clock() == held_.clock &&
                      clock == held_.clock + 1 && lost[s] == 0;
    (held ? resend : behind).push_back(s);
  }
  if (!resend.empty()) status = Resend(resend);
  if (status.ok() && !behind.empty()) status = RegisterWith(behind, clock, &responses);
  for (size_t s : behind) lost[s] += responses[s].lost_clocks();
  // Mapped or not, the names are no longer needed: nothing stays in /dev/shm.
  for (auto& shard : shards_) {
    if (shard.memory) shard.memory->Unlink();
  }
  if (!status.ok()) {
    for (auto& shard : shards_) shard.memory.reset();
    return status;
  }
  const int64_t most = shards_.empty() ? 0 : *std::max_element(lost.begin(), lost.end());
  if (most > 0) {
    lost_clocks_ += most;
    spdlog::warn(
        "a shard had lost {} clock(s) of this worker's updates (restored from an older "
        "checkpoint, or this worker died between shards); every shard now holds clock {}",
        most, clock);
  }
  std::vector<size_t> shared;
  for (size_t s = 0; s < shards_.size(); ++s) {
    if (!shards_[s].memory) continue;
    if (responses[s].shared_memory_mapped()) {
      shared.push_back(s);
      continue;
    }
    spdlog::info(
        "shard {} ({}) did not map this worker's shared memory ({}); values travel in "
        "the messages",
        s, address(s), responses[s].shared_memory_error());
    shards_[s].memory.reset();
  }
  if (!shared.empty()) {
    spdlog::info("shared memory with shard(s) {}: the transport carries only the calls",
                 absl::StrJoin(shared, ", "));
  }
  return clock;
}

absl::StatusOr<int64_t> ShardedPsClient::PullDense(int64_t clock, ParameterSet* params) {
  requests_.ShapeParameters(params);
  const std::vector<size_t> all = AllShards();
  TESSERA_ASSIGN_OR_RETURN(const int64_t min_clock, PullFrom(clock, all, params));
  if (min_clock > held_.clock) ReleaseHeld();  // every shard closed the held push's clock
  return min_clock;
}

absl::StatusOr<int64_t> ShardedPsClient::PullFrom(int64_t clock, const std::vector<size_t>& shards,
                                                  ParameterSet* params) {
  std::vector<std::unique_ptr<v1::PullRequest>> requests;
  std::vector<std::unique_ptr<v1::PullResponse>> responses;
  std::vector<std::unique_ptr<ShardCall>> calls;
  CallGroup group;
  absl::Mutex min_mu;
  int64_t min_clock = INT64_MAX;
  for (size_t s : shards) {
    for (size_t g = 0; g < shards_[s].groups.size(); ++g) {
      const auto& pieces = shards_[s].groups[g];
      requests.push_back(std::make_unique<v1::PullRequest>());
      responses.push_back(std::make_unique<v1::PullResponse>());
      calls.push_back(std::make_unique<ShardCall>(DeadlineIn(config_.worker.pull_timeout_ms)));
      requests_.BuildPull(pieces, rank_, clock, requests.back().get(), shards_[s].memory != nullptr);
      const char* shared = nullptr;
      if (shards_[s].memory) {
        requests.back()->mutable_reply_shared()->set_offset(shards_[s].pull_at[g]);
        shared = shards_[s].pull_area[g];
      }
      v1::PullResponse* response = responses.back().get();
      // More groups than lanes only with worker.bsp_parts: they share the lanes.
      shards_[s].transport->Pull(
          g % shards_[s].transport->lanes(), calls.back().get(), requests.back().get(), response,
          group.Add(s, calls.back().get(),
                    [this, &pieces, response, params, shared, &min_mu, &min_clock] {
                      absl::MutexLock lock(&min_mu);
                      min_clock = std::min(min_clock, response->min_clock());
                      return Scatter(pieces, *response, shared, params);
                    }));
    }
  }
  group.Wait(absl::Milliseconds(config_.worker.pull_timeout_ms) + kAnswerMargin, spin_);
  if (group.failed()) DropSharedMemory();
  TESSERA_RETURN_IF_ERROR(group.Outcome(
      [this](size_t s, const absl::Status& status) { return ShardError(s, status); }));
  return min_clock;
}

absl::Status ShardedPsClient::PushDense(int64_t clock, const ParameterSet& grads,
                                        std::optional<int64_t> values_clock) {
  std::vector<size_t> unanswered;
  int64_t min_clock;
  return Push(clock, grads, values_clock, nullptr, &unanswered, &min_clock);
}

absl::StatusOr<std::optional<int64_t>> ShardedPsClient::PushDenseAndPull(
    int64_t clock, const ParameterSet& grads, std::optional<int64_t> values_clock,
    ParameterSet* params) {
  if (!requests_.parts.empty()) return PushPullParts(clock, grads, values_clock, params);
  for (const auto& shard : shards_) {
    if (shard.groups.size() > 1) {
      return PsClient::PushDenseAndPull(clock, grads, values_clock, params);
    }
  }
  requests_.ShapeParameters(params);
  std::vector<size_t> unanswered;
  int64_t min_clock = INT64_MAX;
  absl::Status s = Push(clock, grads, values_clock, params, &unanswered, &min_clock);
  if (!s.ok()) return s;
  if (!unanswered.empty()) {
    // Where pushes are not overlapped the next step pulls at once: the
    // shards whose push did not close the clock are pulled now, and those
    // that answered are not pulled again (pulled again, they were 8% of the
    // demo job's pulled bytes).
    if (config_.overlaps_push()) return std::optional<int64_t>();
    std::sort(unanswered.begin(), unanswered.end());
    TESSERA_ASSIGN_OR_RETURN(const int64_t pulled, PullFrom(clock + 1, unanswered, params));
    min_clock = std::min(min_clock, pulled);
  }
  if (min_clock > held_.clock) ReleaseHeld();  // every shard closed it
  return min_clock;
}

absl::Status ShardedPsClient::Push(int64_t clock, const ParameterSet& grads,
                                   std::optional<int64_t> values_clock, ParameterSet* pull_into,
                                   std::vector<size_t>* unanswered, int64_t* min_clock,
                                   const std::vector<size_t>* only) {
  const auto skip = [only](size_t s) {
    return only != nullptr && std::find(only->begin(), only->end(), s) == only->end();
  };
  if (failover_ && only == nullptr) {
    held_.clock = clock;
    held_.grads = &grads;
    held_.values_clock = values_clock;
    if (held_.rows_clock != clock) held_.rows = nullptr;
    restored_.reset();  // this push replaces one a previous life kept
    if (held_file_ != nullptr) {
      // Kept beyond this process, for a restart while a shard fails over.
      if (absl::Status saved = held_file_->Save(clock, values_clock, grads, held_.rows);
          !saved.ok() && !held_file_failed_) {
        spdlog::warn("{}; a restart during a failover may lose this worker's open clock",
                     std::string(saved.message()));
        held_file_failed_ = true;
      }
    }
  }
  absl::Mutex pulled_mu;
  unanswered->clear();
  *min_clock = INT64_MAX;
  // A shard whose push is one request advances its clock in that request; a
  // shard whose push is split gets a Clock call after all its pieces landed.
  std::vector<std::unique_ptr<v1::PushRequest>> requests;
  std::vector<std::unique_ptr<v1::PushResponse>> responses;
  std::vector<std::unique_ptr<ShardCall>> calls;
  std::vector<size_t> shard_of;  // each request's shard
  CallGroup group;
  for (size_t s = 0; s < shards_.size(); ++s) {
    if (skip(s)) continue;
    static const std::vector<ShardRequests::Piece> kNoPieces;
    const auto& groups = shards_[s].groups;
    const bool single = groups.size() <= 1;
    // A shard with no dense pieces still gets one (empty) push: its clock advances.
    for (size_t g = 0; g < std::max<size_t>(groups.size(), 1); ++g) {
      shard_of.push_back(s);
      requests.push_back(std::make_unique<v1::PushRequest>());
      responses.push_back(std::make_unique<v1::PushResponse>());
      calls.push_back(std::make_unique<ShardCall>(DeadlineIn(config_.worker.rpc_timeout_ms)));
      const auto& pieces = groups.empty() ? kNoPieces : groups[g];
      const bool shared = !groups.empty() && shards_[s].memory;
      const char* shared_reply = nullptr;
      if (shared) {
        const ShardRequests::SharedTarget target{shards_[s].push_area[g], shards_[s].push_at[g]};
        requests_.BuildPush(pieces, rank_, clock, grads, single, static_cast<uint32_t>(g + 1),
                            requests.back().get(), &target);
      } else {
        requests_.BuildPush(pieces, rank_, clock, grads, single, static_cast<uint32_t>(g + 1),
                            requests.back().get());
      }
      if (values_clock) requests.back()->set_values_clock(*values_clock);
      std::function<absl::Status()> on_ok;
      if (pull_into != nullptr && single) {
        // The fused pull asks for the same pieces the push carried, answered
        // at the next clock in each table's pull codec (float32 into shared memory).
        for (size_t i = 0; i < pieces.size(); ++i) {
          v1::Slice* slice = requests.back()->add_pull_slices();
          *slice = requests.back()->slices(static_cast<int>(i));
          if (!shared) {
            requests_.encoder->SetPull(clock + 1, pieces[i].table, slice, /*shared=*/false);
          }
        }
        if (shared) {
          requests.back()->mutable_reply_shared()->set_offset(shards_[s].pull_at[g]);
          shared_reply = shards_[s].pull_area[g];
        }
        v1::PushResponse* response = responses.back().get();
        on_ok = [this, s, &pieces, response, pull_into, shared_reply, &pulled_mu, unanswered,
                 min_clock] {
          absl::MutexLock lock(&pulled_mu);
          if (!response->pulled()) {
            unanswered->push_back(s);
            return absl::OkStatus();
          }
          *min_clock = std::min(*min_clock, response->min_clock());
          return Scatter(pieces, *response, shared_reply, pull_into);
        };
      }
      shards_[s].transport->Push(g % shards_[s].transport->lanes(), calls.back().get(),
                                 requests.back().get(), responses.back().get(),
                                 group.Add(s, calls.back().get(), std::move(on_ok)));
    }
  }
  const auto named = [this](size_t s, const absl::Status& status) { return ShardError(s, status); };
  group.Wait(absl::Milliseconds(config_.worker.rpc_timeout_ms) + kAnswerMargin, spin_);
  if (group.failed()) DropSharedMemory();
  TESSERA_RETURN_IF_ERROR(group.Outcome(named));
  for (size_t i = 0; i < requests.size(); ++i) NoteTerm(shard_of[i], responses[i]->term(), clock);
  if (values_clock) {
    int64_t staleness = -1;
    for (size_t i = 0; i < requests.size(); ++i) {
      if (requests[i]->piece() <= 1) staleness = std::max(staleness, responses[i]->staleness());
    }
    push_staleness_.Add(staleness);
  }

  CallGroup clocks;
  std::vector<v1::ClockRequest> clock_requests(shards_.size());
  std::vector<v1::ClockResponse> clock_responses(shards_.size());
  std::vector<std::unique_ptr<ShardCall>> clock_calls(shards_.size());
  for (size_t s = 0; s < shards_.size(); ++s) {
    if (shards_[s].groups.size() <= 1 || skip(s)) continue;
    clock_requests[s].set_worker_rank(rank_);
    clock_requests[s].set_session(requests_.session);
    clock_requests[s].set_clock(clock);
    clock_calls[s] = std::make_unique<ShardCall>(DeadlineIn(config_.worker.rpc_timeout_ms));
    shards_[s].transport->Clock(0, clock_calls[s].get(), &clock_requests[s], &clock_responses[s],
                                clocks.Add(s, clock_calls[s].get()));
  }
  clocks.Wait(absl::Milliseconds(config_.worker.rpc_timeout_ms) + kAnswerMargin);
  return clocks.Outcome(named);
}

template <typename Response>
absl::Status ShardedPsClient::Scatter(const std::vector<ShardRequests::Piece>& pieces,
                                      const Response& response, const char* shared,
                                      ParameterSet* params) const {
  if (!response.values_shared()) return requests_.ScatterPull(pieces, response.values(), params);
  if (shared == nullptr) {
    return absl::InternalError("a shard answered in shared memory this worker did not offer");
  }
  return requests_.ScatterPull(pieces, shared, params);
}
template absl::Status ShardedPsClient::Scatter(const std::vector<ShardRequests::Piece>&,
                                               const v1::PullResponse&, const char*,
                                               ParameterSet*) const;
template absl::Status ShardedPsClient::Scatter(const std::vector<ShardRequests::Piece>&,
                                               const v1::PushResponse&, const char*,
                                               ParameterSet*) const;

absl::Status ShardedPsClient::Finish() {
  if (held_file_ != nullptr) held_file_->Remove();  // nothing is left to send again
  std::vector<v1::FinishRequest> requests(shards_.size());
  std::vector<v1::FinishResponse> responses(shards_.size());
  std::vector<std::unique_ptr<ShardCall>> calls(shards_.size());
  CallGroup group;
  for (size_t s = 0; s < shards_.size(); ++s) {
    requests[s].set_worker_rank(rank_);
    requests[s].set_session(requests_.session);
    calls[s] = std::make_unique<ShardCall>(DeadlineIn(config_.worker.rpc_timeout_ms));
    shards_[s].transport->Finish(0, calls[s].get(), &requests[s], &responses[s],
                                 group.Add(s, calls[s].get()));
  }
  group.Wait(absl::Milliseconds(config_.worker.rpc_timeout_ms) + kAnswerMargin);
  return group.Outcome(
      [this](size_t s, const absl::Status& status) { return ShardError(s, status); });
}

absl::StatusOr<uint32_t> ShardedPsClient::WorkersFinished() {
  std::vector<v1::StatsRequest> requests(shards_.size());
  std::vector<v1::StatsResponse> responses(shards_.size());
  std::vector<std::unique_ptr<ShardCall>> calls(shards_.size());
  CallGroup group;
  for (size_t s = 0; s < shards_.size(); ++s) {
    calls[s] = std::make_unique<ShardCall>(DeadlineIn(config_.worker.rpc_timeout_ms));
    shards_[s].transport->Stats(0, calls[s].get(), &requests[s], &responses[s],
                                group.Add(s, calls[s].get()));
  }
  group.Wait(absl::Milliseconds(config_.worker.rpc_timeout_ms) + kAnswerMargin);
  TESSERA_RETURN_IF_ERROR(group.Outcome(
      [this](size_t s, const absl::Status& status) { return ShardError(s, status); }));
  uint32_t fewest = UINT32_MAX;
  for (const auto& r : responses) fewest = std::min(fewest, r.workers_finished());
  return fewest;
}

absl::StatusOr<std::vector<uint32_t>> ShardedPsClient::PlanEpoch(int64_t epoch,
                                                                 double examples_per_second) {
  v1::PlanRequest request;
  requests_.BuildPlan(rank_, epoch, examples_per_second, &request);
  v1::PlanResponse response;
  ShardCall call(DeadlineIn(config_.worker.rpc_timeout_ms));
  CallGroup group;
  shards_[0].transport->Plan(0, &call, &request, &response, group.Add(0, &call));
  group.Wait(absl::Milliseconds(config_.worker.rpc_timeout_ms) + kAnswerMargin);
  TESSERA_RETURN_IF_ERROR(group.Outcome(
      [this](size_t s, const absl::Status& status) { return ShardError(s, status); }));
  return ShardRequests::SharesOf(response);
}

}  // namespace tessera
