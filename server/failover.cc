#include "server/failover.h"


#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace tessera {
namespace {

// How often a standby looks whether its primary's term ended.
constexpr absl::Duration kWatchInterval = absl::Milliseconds(100);

std::string KeyOf(const JobConfig& config, uint32_t shard, const char* what) {
  return absl::StrCat("/tessera/", config.name, "/shard-", shard, "/", what);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Failover>> Failover::Create(
    const JobConfig& config, uint32_t shard_index, Role role, const std::string& address,
    Shard* shard, std::function<void(const std::string&)> stop) {
  if (config.cluster.etcd.empty()) {
    return absl::InvalidArgumentError("failover needs cluster.etcd (etcd's host:port)");
  }
  TESSERA_ASSIGN_OR_RETURN(std::unique_ptr<Election> election,
                           Election::Create(config.cluster.etcd,
                                            KeyOf(config, shard_index, "primary"), address,
                                            config.server.lease_ttl_s));
  return std::unique_ptr<Failover>(new Failover(config, shard_index, role, address, shard,
                                                std::move(stop), std::move(election)));
}

Failover::Failover(const JobConfig& config, uint32_t shard_index, Role role, std::string address,
                   Shard* shard, std::function<void(const std::string&)> stop,
                   std::unique_ptr<Election> election)
    : shard_index_(shard_index),
      address_(std::move(address)),
      standby_address_(config.cluster.standbys.at(shard_index)),
      in_sync_key_(KeyOf(config, shard_index, "in_sync")),
      ttl_(absl::Seconds(config.server.lease_ttl_s)),
      shard_(shard),
      stop_(std::move(stop)),
      role_(role),
      election_(std::move(election)) {}

Failover::~Failover() {
  if (!done_.HasBeenNotified()) done_.Notify();
  if (thread_.joinable()) thread_.join();
}

absl::StatusOr<int64_t> Failover::BecomePrimary() {
  const absl::Time give_up = absl::Now() + 3 * ttl_ + absl::Seconds(5);
  absl::Status last;
  bool logged = false;
  while (true) {
    absl::StatusOr<int64_t> term;
    {
      absl::MutexLock lock(&mu_);
      term = election_->Campaign(Election::Condition{in_sync_key_, std::nullopt});
    }
    if (term.ok()) {
      shard_->SetTerm(*term);
      spdlog::info("shard {}: primary at {}, term {} (etcd {})", shard_index_, address_, *term,
                   std::string(in_sync_key_.substr(0, in_sync_key_.rfind('/'))));
      return *term;
    }
    last = term.status();
    if (absl::IsAlreadyExists(last)) {
      // This daemon's own term from before a restart: it ends with its lease.
      absl::StatusOr<Election::Holder> holder;
      {
        absl::MutexLock lock(&mu_);
        holder = election_->Current();
      }
      if (holder.ok() && holder->name == address_) {
        if (!logged) {
          spdlog::warn("shard {}: term {}, of this address before a restart, has not expired yet",
                       shard_index_, holder->term);
          logged = true;
        }
        if (absl::Now() + absl::Milliseconds(200) > give_up) break;
        absl::SleepFor(absl::Milliseconds(200));
        continue;
      }
      return absl::AlreadyExistsError(absl::StrCat(
          "shard ", shard_index_, ": ", last.message(),
          "; this daemon would be a second primary, and it cannot rejoin as that primary's "
          "standby yet: not serving"));
    }
    if (absl::IsFailedPrecondition(last) && !logged) {
      spdlog::warn(
          "shard {}: its standby holds every acknowledged change ({} names it); waiting for it "
          "to take over",
          shard_index_, in_sync_key_);
      logged = true;
    }
    if (absl::Now() + absl::Milliseconds(200) > give_up) break;
    absl::SleepFor(absl::Milliseconds(200));
  }
  if (absl::IsFailedPrecondition(last)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "shard ", shard_index_, ": the standby named in ", in_sync_key_,
        " holds newer changes than this daemon and did not take over within ",
        absl::FormatDuration(3 * ttl_ + absl::Seconds(5)),
        "; if it is lost for good, `etcdctl del ", in_sync_key_,
        "` lets this daemon start from its checkpoint (the clocks since are lost, and counted)"));
  }
  return last;
}

void Failover::Start() {
  followed_at_start_ = shard_->followed();
  thread_ = std::thread([this] { Run(); });
}

void Failover::Run() {
  while (!done_.HasBeenNotified()) {
    if (role_.load() == Role::kStandby) {
      Watch();
      done_.WaitForNotificationWithTimeout(kWatchInterval);
    } else {
      Renew();
      done_.WaitForNotificationWithTimeout(ttl_ / 3);
    }
  }
}

void Failover::Watch() {
  // A standby that followed nothing in this life may lack what its
  // primary made visible (it restarted from its own checkpoint).
  if (shard_->followed() <= followed_at_start_) return;
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Election::Holder> holder = election_->Current();
  if (!absl::IsNotFound(holder.status())) return;  // a primary holds it, or etcd is away
  absl::StatusOr<int64_t> term =
      election_->Campaign(Election::Condition{in_sync_key_, address_});
  if (!term.ok()) return;
  // From here this daemon is primary: the old one's mutations are refused.
  const absl::Status promoted = shard_->Promote(*term);
  if (!promoted.ok()) {
    spdlog::error("shard {}: won term {} but cannot take over: {}; resigning", shard_index_, *term,
                  std::string(promoted.message()));
    (void)election_->Resign();
    return;
  }
  promoted_at_ms_.store(absl::ToUnixMillis(absl::Now()));
  role_.store(Role::kPrimary);
  // No standby follows this one: nobody else is in sync.
  const absl::Status unnamed = election_->DeleteWhileHeld(in_sync_key_);
  spdlog::warn(
      "shard {}: the primary's term ended; this standby at {} is primary now, term {}, with "
      "every change up to mutation {}{}",
      shard_index_, address_, *term, shard_->followed(),
      unnamed.ok() ? "" : absl::StrCat(" (", unnamed.message(), ")"));
}

void Failover::Renew() {
  absl::Status renewed;
  {
    absl::MutexLock lock(&mu_);
    renewed = election_->Renew();
  }
  if (absl::IsFailedPrecondition(renewed)) {
    stop_(absl::StrCat("shard ", shard_index_, ": ", renewed.message(),
                       "; another daemon may be primary now, so this one stops"));
  } else if (!renewed.ok()) {
    spdlog::warn("shard {}: could not renew term {}: {}", shard_index_, election_->term(),
                 std::string(renewed.message()));
  }
}

void Failover::StandbyInSync() {
  absl::Status named;
  {
    absl::MutexLock lock(&mu_);
    if (named_in_sync_) return;
    named = election_->PutWhileHeld(in_sync_key_, standby_address_);
    named_in_sync_ = named.ok();
  }
  if (absl::IsFailedPrecondition(named)) {
    stop_(absl::StrCat("shard ", shard_index_, ": ", named.message()));
  } else if (!named.ok()) {
    spdlog::warn("shard {}: could not name its standby in sync yet: {}", shard_index_,
                 std::string(named.message()));
  }
}

void Failover::StandbyOutOfSync(const std::string& why) {
  absl::Status unnamed;
  {
    absl::MutexLock lock(&mu_);
    unnamed = election_->DeleteWhileHeld(in_sync_key_);
    if (unnamed.ok()) named_in_sync_ = false;
  }
  if (!unnamed.ok()) {
    stop_(absl::StrCat("shard ", shard_index_, " cannot go on without its standby (", why,
                       "): ", unnamed.message()));
  }
}

void Failover::Resign() {
  if (!done_.HasBeenNotified()) done_.Notify();  // no renewal after this
  if (thread_.joinable()) thread_.join();
  absl::MutexLock lock(&mu_);
  if (election_->term() == 0) return;
  (void)election_->DeleteWhileHeld(in_sync_key_);
  (void)election_->Resign();
}

}  // namespace tessera
