#include "server/replication.h"

#include <algorithm>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "server/service.h"
#include "spdlog/spdlog.h"

namespace tessera {
namespace {

// One try's deadline, and the pause between tries of an unreachable standby.
constexpr absl::Duration kTryDeadline = absl::Seconds(2);
constexpr absl::Duration kRetryPause = absl::Milliseconds(100);
// A standby that acknowledged before and whose address has refused
// connections this long is gone: the link is cut before the timeout.
constexpr absl::Duration kRefusedGrace = absl::Seconds(1);
// A silent standby's presence in etcd is read at most this often.
constexpr absl::Duration kPresenceCheckPause = absl::Milliseconds(500);
// A joiner still catching up is offered its queue with tries this short
// (its address refuses until it serves, so a try fails at once).
constexpr absl::Duration kCatchUpTry = absl::Milliseconds(200);
// A joiner's refused offer is made again this much later.
constexpr absl::Duration kOfferPause = absl::Milliseconds(20);
// A joining standby's state travels in parts of this size.
constexpr uint64_t kPartBytes = 1 << 20;
// How long a joiner waits for the whole state.
constexpr absl::Duration kJoinDeadline = absl::Minutes(5);

// Writes a ShardState as SnapshotParts: the manifest and term, then each
// table's bytes in parts. Deletes itself when the call is done.
class SnapshotWriter final : public grpc::ServerWriteReactor<v1::SnapshotPart> {
 public:
  SnapshotWriter(std::unique_ptr<ShardState> state, int64_t term) : state_(std::move(state)) {
    // The byte counts a checkpoint's writer would fill in.
    for (size_t t = 0; t < state_->tables.size(); ++t) {
      state_->manifest.mutable_tables(static_cast<int>(t))->set_bytes(state_->tables[t].size());
    }
    part_.set_manifest(state_->manifest.SerializeAsString());
    part_.set_term(term);
    StartWrite(&part_);
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the joining standby went away"));
    } else if (Next()) {
      StartWrite(&part_);
    } else {
      Finish(grpc::Status::OK);
    }
  }
  void OnDone() override { delete this; }

 private:
  // The next part of table bytes into part_; false when all were written.
  bool Next() {
    for (; table_ < state_->tables.size(); ++table_, offset_ = 0) {
      const ByteBuffer& bytes = state_->tables[table_];
      if (offset_ >= bytes.size()) continue;
      const uint64_t n = std::min(kPartBytes, bytes.size() - offset_);
      part_.Clear();
      part_.set_table(static_cast<uint32_t>(table_));
      part_.set_data(bytes.data() + offset_, n);
      offset_ += n;
      return true;
    }
    return false;
  }

  const std::unique_ptr<ShardState> state_;
  v1::SnapshotPart part_;
  size_t table_ = 0;
  uint64_t offset_ = 0;
};

// A call refused before anything was written.
class Refusal final : public grpc::ServerWriteReactor<v1::SnapshotPart> {
 public:
  explicit Refusal(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerUnaryReactor* ReplicaService::Follow(grpc::CallbackServerContext* context,
                                                 const v1::Mutations* request,
                                                 v1::FollowReply* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (!security_->Admits(*context)) {
    reactor->Finish(grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                                 "this job's standbys require its token (security.token_file)"));
    return reactor;
  }
  absl::Status status;
  for (const v1::Mutation& m : request->mutations()) {
    status = shard_->Follow(m);
    if (!status.ok()) break;
  }
  response->set_followed(shard_->followed());
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

grpc::ServerWriteReactor<v1::SnapshotPart>* ReplicaService::Join(
    grpc::CallbackServerContext* context, const v1::JoinRequest* request) {
  if (!security_->Admits(*context)) {
    return new Refusal(grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                                    "this job's shards require its token (security.token_file)"));
  }
  if (!join_) {
    return new Refusal(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                    "this shard takes no standby that joins (cluster.etcd unset)"));
  }
  if (request->address().empty() || request->address().size() > 1024) {
    return new Refusal(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                    "a joining standby names the host:port it serves at"));
  }
  absl::StatusOr<std::unique_ptr<ShardState>> state = join_(request->address());
  if (!state.ok()) return new Refusal(ToGrpcStatus(state.status()));
  return new SnapshotWriter(*std::move(state), shard_->term());
}

absl::StatusOr<JoinedState> JoinPrimary(const JobConfig& config, const Shard& shard,
                                        const std::string& primary, const std::string& address,
                                        const TransportSecurity& security) {
  auto stub = v1::Replica::NewStub(
      security.Channel(primary, config.server.max_message_bytes, /*channel_id=*/0));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kJoinDeadline));
  v1::JoinRequest request;
  request.set_address(address);
  std::unique_ptr<grpc::ClientReader<v1::SnapshotPart>> reader = stub->Join(&context, request);
  JoinedState out;
  v1::SnapshotPart part;
  bool first = true;
  std::vector<std::string> tables;
  while (reader->Read(&part)) {
    if (first) {
      if (!out.state.manifest.ParseFromString(part.manifest())) {
        return absl::InvalidArgumentError(
            absl::StrCat("the primary at ", primary, " sent a manifest that does not parse"));
      }
      out.term = part.term();
      tables.resize(out.state.manifest.tables_size());
      first = false;
      continue;
    }
    if (part.table() >= tables.size() ||
        tables[part.table()].size() + part.data().size() >
            out.state.manifest.tables(static_cast<int>(part.table())).bytes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the primary at ", primary, " sent more bytes of table ", part.table(),
          " than its manifest names"));
    }
    tables[part.table()] += part.data();
  }
  const grpc::Status done = reader->Finish();
  if (!done.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(done.error_code()),
                        absl::StrCat("joining the primary at ", primary, ": ",
                                     done.error_message()));
  }
  if (first) return absl::UnavailableError("the primary at " + primary + " sent no state");
  if (out.state.manifest.identity().SerializeAsString() !=
      shard.Identity().SerializeAsString()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the primary at ", primary, " holds another job's or layout's state"));
  }
  for (size_t t = 0; t < tables.size(); ++t) {
    if (tables[t].size() != out.state.manifest.tables(static_cast<int>(t)).bytes()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the primary at ", primary, " sent ", tables[t].size(), " bytes of table ",
                       t, ", not the ", out.state.manifest.tables(static_cast<int>(t)).bytes(),
                       " its manifest names"));
    }
    ByteBuffer bytes(tables[t].size());
    std::copy(tables[t].begin(), tables[t].end(), bytes.data());
    std::string().swap(tables[t]);
    out.state.tables.push_back(std::move(bytes));
  }
  return out;
}

ReplicaLink::ReplicaLink(const JobConfig& config, uint32_t shard_index,
                         const std::string& address,
                         std::shared_ptr<const TransportSecurity> security)
    : shard_index_(shard_index),
      address_(address),
      timeout_(absl::Seconds(config.server.replication_timeout_s)),
      queue_limit_(static_cast<uint64_t>(config.server.replication_queue_bytes)),
      channel_(security->Channel(address_, config.server.max_message_bytes, /*channel_id=*/0)),
      stub_(v1::Replica::NewStub(channel_)) {
  sender_ = std::thread([this] { SendLoop(); });
}

ReplicaLink::~ReplicaLink() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  stopped_.store(true);
  {
    absl::MutexLock lock(&try_mu_);
    if (trying_ != nullptr) trying_->TryCancel();
  }
  sender_.join();
  std::vector<std::pair<uint64_t, std::function<void()>>> left;
  {
    absl::MutexLock lock(&mu_);
    left.swap(waiters_);
  }
  for (auto& [sequence, done] : left) done();
}

void ReplicaLink::SetCatchingUp() {
  absl::MutexLock lock(&mu_);
  catching_up_ = true;
}

Shard::MutationLog ReplicaLink::Log() {
  return {[this](v1::Mutation m) { Append(std::move(m)); },
          [this](uint64_t sequence, std::function<void()> done) {
            WhenHeld(sequence, std::move(done));
          }};
}

void ReplicaLink::Append(v1::Mutation m) {
  if (cut_.load()) return;
  absl::MutexLock lock(&mu_);
  if (overflowed_) return;
  const uint64_t bytes = m.ByteSizeLong();
  if (catching_up_ && queued_bytes_ + bytes > queue_limit_) {
    overflowed_ = true;  // the sender cuts the link
    queue_.clear();
    queued_bytes_ = 0;
    return;
  }
  if (queue_.empty()) queued_since_ = absl::Now();
  queued_bytes_ += bytes;
  queue_.push_back(std::move(m));
}

void ReplicaLink::WhenHeld(uint64_t sequence, std::function<void()> done) {
  {
    absl::MutexLock lock(&mu_);
    // Catching up, nobody waits; cut_ is set before the sender takes mu_
    // to release every waiter, so a waiter added here is released.
    if (!cut_.load() && !catching_up_ && held_ < sequence && !stopping_) {
      waiters_.emplace_back(sequence, std::move(done));
      return;
    }
  }
  done();
}

void ReplicaLink::Await(uint64_t sequence) {
  absl::Notification held;
  WhenHeld(sequence, [&held] { held.Notify(); });
  if (!held.WaitForNotificationWithTimeout(timeout_ + kTryDeadline + absl::Seconds(10))) {
    spdlog::error("shard {}: mutation {} was neither acknowledged by the standby at {} nor "
                  "given up on within server.replication_timeout_s",
                  shard_index_, sequence, address_);
  }
}

std::vector<std::function<void()>> ReplicaLink::TakeReady() {
  std::vector<std::function<void()>> ready;
  const bool all = cut_.load() || catching_up_;
  auto keep = waiters_.begin();
  for (auto it = waiters_.begin(); it != waiters_.end(); ++it) {
    if (all || it->first <= held_) {
      ready.push_back(std::move(it->second));
    } else {
      *keep++ = std::move(*it);
    }
  }
  waiters_.erase(keep, waiters_.end());
  return ready;
}

bool ReplicaLink::SendReady() const {
  return stopping_ || (overflowed_ && !cut_.load()) ||
         (!queue_.empty() && !cut_.load() && absl::Now() >= offer_after_);
}

void ReplicaLink::SendLoop() {
  for (;;) {
    v1::Mutations batch;
    bool catching_up = false;
    bool overflowed = false;
    uint64_t bytes = 0;  // the batch's mutations' serialized bytes
    absl::Time oldest;  // when the first of the batch was queued
    {
      absl::MutexLock lock(&mu_);
      // Waits for work (the condition is looked at whenever mu_ is let
      // go, an Append's included), a second at a time; catching up, a
      // refused offer is tried again kOfferPause later.
      while (!SendReady()) {
        absl::Time deadline = absl::Now() + absl::Seconds(1);
        if (!queue_.empty()) deadline = std::min(deadline, offer_after_);
        mu_.AwaitWithDeadline(absl::Condition(this, &ReplicaLink::SendReady), deadline);
      }
      if (stopping_) return;
      if (overflowed_ && !cut_.load()) {
        overflowed = true;
      } else {
        catching_up = catching_up_;
        oldest = queued_since_;
        // Its bytes stay counted in queued_bytes_ until it is delivered.
        while (!queue_.empty() && (batch.mutations_size() == 0 || bytes < kBatchBytes)) {
          bytes += queue_.front().ByteSizeLong();
          batch.mutable_mutations()->Add(std::move(queue_.front()));
          queue_.pop_front();
        }
      }
    }
    bool delivered = false;
    if (overflowed) {
      Cut(absl::StrCat("it did not catch up before ", queue_limit_ >> 20,
                       " MiB of changes were queued for it (server.replication_queue_bytes)"));
    } else {
      delivered = catching_up ? Offer(batch, oldest) : Deliver(batch);
      // Named in sync before any waiter answers what the standby now holds.
      if (delivered) Delivered(batch);
    }
    std::vector<std::function<void()>> ready;
    {
      absl::MutexLock lock(&mu_);
      if (delivered) {
        queued_bytes_ -= std::min(queued_bytes_, bytes);
        held_ = batch.mutations(batch.mutations_size() - 1).sequence();
        if (catching_up && queue_.empty()) catching_up_ = false;  // waited for from now on
      } else if (catching_up && !cut_.load()) {
        // Offered again kOfferPause later, with what is queued by then.
        for (int i = batch.mutations_size() - 1; i >= 0; --i) {
          queue_.push_front(std::move(*batch.mutable_mutations(i)));
        }
        queued_since_ = oldest;
        offer_after_ = absl::Now() + kOfferPause;
      }
      if (cut_.load()) {
        queue_.clear();
        queued_bytes_ = 0;
      }
      ready = TakeReady();
    }
    for (auto& done : ready) done();
  }
}

bool ReplicaLink::Deliver(const v1::Mutations& batch) {
  const uint64_t first = batch.mutations(0).sequence();
  const uint64_t last = batch.mutations(batch.mutations_size() - 1).sequence();
  const std::string which =
      first == last ? absl::StrCat("mutation ", first) : absl::StrCat("mutations ", first, "-", last);
  const absl::Time started = absl::Now();
  const absl::Time give_up = started + timeout_;
  // When the standby's address first refused a connection (below).
  absl::Time refused_since = absl::InfiniteFuture();
  // When its presence in etcd may be read next (below).
  absl::Time ask_after = started;
  grpc::Status status;
  for (int attempt = 1;; ++attempt) {
    grpc::ClientContext context;
    const absl::Time deadline = std::min(absl::Now() + kTryDeadline, give_up);
    context.set_deadline(absl::ToChronoTime(deadline));
    // A try may wait for the standby's channel to come up (the first
    // mutations may be sent before the standby serves), except where the
    // channel failed to connect, after the standby had acknowledged
    // something: then it fails at once, so that a refusal is seen.
    const bool failing =
        sent_.load() > 0 && channel_->GetState(false) == GRPC_CHANNEL_TRANSIENT_FAILURE;
    context.set_wait_for_ready(!failing);
    std::string abandoned;
    {
      absl::MutexLock lock(&try_mu_);
      if (stopped_.load()) return false;  // the destructor's; it cancels from here on
      abandoned = abandoned_;
      if (abandoned.empty()) trying_ = &context;
    }
    if (!abandoned.empty()) {
      Cut(abandoned);
      return false;
    }
    v1::FollowReply reply;
    status = stub_->Follow(&context, batch, &reply);
    {
      absl::MutexLock lock(&try_mu_);
      trying_ = nullptr;
    }
    if (status.ok()) return true;
    if (stopped_.load()) return false;
    const bool retry = status.error_code() == grpc::StatusCode::UNAVAILABLE ||
                       status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
                       status.error_code() == grpc::StatusCode::CANCELLED;  // Abandon: next try cuts
    if (!retry) {
      Cut(absl::StrCat("it refused ", which, ": ", status.error_message()));
      return false;
    }
    // A standby that served and now refuses connections is gone (nothing
    // listens at its address: its process ended; a paused or cut-off one
    // stays silent instead, and is waited for). Started again it joins with
    // a copy of the state whatever this link does, so waiting out the
    // timeout would only stall this shard's changes: cut after
    // kRefusedGrace of refusals.
    if (failing && status.error_code() == grpc::StatusCode::UNAVAILABLE &&
        absl::StrContains(absl::AsciiStrToLower(status.error_message()), "refused")) {
      const absl::Time now = absl::Now();
      refused_since = std::min(refused_since, now);
      if (now - refused_since >= kRefusedGrace) {
        Cut(absl::StrCat("its address refuses connections (", attempt, " tries over ",
                         absl::FormatDuration(now - refused_since),
                         "): its daemon is gone; the last: ", status.error_message()));
        return false;
      }
    }
    // A standby that served and has gone silent is slow, paused or cut
    // off. Its presence in etcd (server/failover.h) tells: a paused daemon,
    // or one cut off from etcd as well, stops renewing it and loses it
    // within server.lease_ttl_s, and then waiting out the timeout would
    // only stall this shard's changes. One that is present is waited for.
    if (failover_ != nullptr && sent_.load() > 0 && absl::Now() >= ask_after) {
      ask_after = absl::Now() + kPresenceCheckPause;
      absl::StatusOr<bool> present = failover_->StandbyPresent(address_);
      if (present.ok() && !*present) {
        Cut(absl::StrCat("it has not answered for ", absl::FormatDuration(absl::Now() - started),
                         " (", attempt, " tries, the last: ", status.error_message(),
                         ") and its presence in etcd lapsed: it is paused, or cut off from "
                         "etcd too"));
        return false;
      }
    }
    if (absl::Now() + kRetryPause >= give_up) {
      Cut(absl::StrCat("it did not acknowledge ", which, " within ",
                       absl::FormatDuration(timeout_), " (server.replication_timeout_s; ",
                       attempt, " tries, the last: ", status.error_message(), ")"));
      return false;
    }
    if (status.error_code() != grpc::StatusCode::CANCELLED) {
      std::this_thread::sleep_for(absl::ToChronoMilliseconds(kRetryPause));
    }
  }
}

bool ReplicaLink::Offer(const v1::Mutations& batch, absl::Time oldest) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kCatchUpTry));
  v1::FollowReply reply;
  const grpc::Status status = stub_->Follow(&context, batch, &reply);
  if (status.ok()) return true;
  const bool later = status.error_code() == grpc::StatusCode::UNAVAILABLE ||
                     status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
  if (!later) {
    Cut(absl::StrCat("it refused mutations ", batch.mutations(0).sequence(), "-",
                     batch.mutations(batch.mutations_size() - 1).sequence(), ": ",
                     status.error_message()));
  } else if (absl::Now() - oldest > timeout_) {
    Cut(absl::StrCat("it did not catch up within ", absl::FormatDuration(timeout_),
                     " of joining (server.replication_timeout_s; ", batch.mutations_size(),
                     " mutations and more waiting)"));
  }
  return false;
}

void ReplicaLink::Delivered(const v1::Mutations& batch) {
  sent_.fetch_add(batch.mutations_size(), std::memory_order_relaxed);
  bytes_.fetch_add(batch.ByteSizeLong(), std::memory_order_relaxed);
  if (failover_ != nullptr) failover_->StandbyInSync(address_);
}

void ReplicaLink::Abandon(const std::string& why) {
  absl::MutexLock lock(&try_mu_);
  abandoned_ = why;
  if (trying_ != nullptr) trying_->TryCancel();
}

void ReplicaLink::Cut(const std::string& why) {
  if (cut_.load()) return;
  bool abandoned;
  {
    absl::MutexLock lock(&try_mu_);
    abandoned = !abandoned_.empty();
  }
  // Unnamed before anything it lacks is answered; else this daemon stops.
  // An abandoned link's standby was unnamed by the Join that abandoned it,
  // and the daemon that joined may be named again since: left alone.
  if (failover_ != nullptr && !abandoned) failover_->StandbyOutOfSync(why);
  if (cut_.exchange(true)) return;
  spdlog::error(
      "shard {} goes on without its standby at {}: {}. The standby no longer follows; "
      "started again (with cluster.etcd), it joins this primary with a copy of its state",
      shard_index_, address_, why);
}

}  // namespace tessera
