#include "server/failover.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>


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

// Whether host:port refuses a TCP connection within 200 ms: its host is up
// and nothing listens there (the daemon's process is gone). A timeout, an
// unknown host or an accepted connection is not a refusal.
bool Refuses(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return false;
  std::string host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), address.substr(colon + 1).c_str(), &hints, &found) != 0) {
    return false;
  }
  bool refused = false;
  const int fd = socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd >= 0) {
    if (connect(fd, found->ai_addr, found->ai_addrlen) != 0) {
      if (errno == ECONNREFUSED) {
        refused = true;
      } else if (errno == EINPROGRESS) {
        pollfd p{fd, POLLOUT, 0};
        int error = 0;
        socklen_t len = sizeof(error);
        if (poll(&p, 1, 200) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) == 0) {
          refused = error == ECONNREFUSED;
        }
      }
    }
    close(fd);
  }
  freeaddrinfo(found);
  return refused;
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
      in_sync_key_(KeyOf(config, shard_index, "in_sync")),
      present_prefix_(KeyOf(config, shard_index, "present/")),
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

void Failover::Start(uint64_t followed_before_serving) {
  followed_at_start_ = followed_before_serving;
  thread_ = std::thread([this] { Run(); });
}

void Failover::Run() {
  while (!done_.HasBeenNotified()) {
    if (role_.load() == Role::kStandby) {
      KeepPresent();
      Watch();
      done_.WaitForNotificationWithTimeout(kWatchInterval);
    } else {
      Renew();
      done_.WaitForNotificationWithTimeout(ttl_ / 3);
    }
  }
}

void Failover::KeepPresent() {
  const absl::Time now = absl::Now();
  if (now < present_until_) return;
  absl::StatusOr<bool> lapsed;
  absl::StatusOr<std::optional<std::string>> named;
  absl::StatusOr<Election::Holder> holder;
  {
    absl::MutexLock lock(&mu_);
    lapsed = election_->KeepPresent(present_prefix_ + address_, address_);
    if (lapsed.ok()) {
      named = election_->Get(in_sync_key_);
      holder = election_->Current();
    }
  }
  // Failed, it is tried again at the next look: a primary that reads this
  // key only gives up on a standby that is also silent to it.
  present_until_ = lapsed.ok() ? now + ttl_ / 3 : absl::InfinitePast();
  if (!lapsed.ok() && !present_failed_) {
    spdlog::warn("shard {}: cannot renew this standby's presence in etcd (retried every {}): {}",
                 shard_index_, absl::FormatDuration(kWatchInterval),
                 std::string(lapsed.status().message()));
  }
  present_failed_ = !lapsed.ok();
  if (!lapsed.ok()) return;
  // Whether a primary serves that no longer names this standby in sync: it
  // went on without it (ReplicaLink::Cut), or another daemon joined in its
  // place. Such a standby follows nothing any more and never may take over.
  const bool given_up = named.ok() && *named != std::optional<std::string>(address_) &&
                        holder.ok() && holder->name != address_;
  const uint64_t followed = shard_->followed();
  const bool followed_here = followed > followed_at_start_;
  // Its presence lapsed: this daemon was paused, or cut off from etcd, for
  // a lease, and its primary gave up on it meanwhile. One still named (its
  // primary went on answering through it, or died while it was paused)
  // stays: it may be the one that holds every change.
  if (*lapsed && given_up && (followed_here || joined_)) {
    stop_(absl::StrCat("shard ", shard_index_,
                       ": this standby was silent past its presence lease (",
                       absl::FormatDuration(ttl_), "), and its primary ", holder->name,
                       " no longer names it in sync: it follows nothing any more. It exits, to "
                       "be started again and join that primary with a copy of its state"));
    return;
  }
  // Present all along, but given up on all the same: its primary could not
  // reach it for server.replication_timeout_s (a link cut between the two
  // alone). It followed in this life, so its primary named it in sync once
  // (on the first acknowledgement); unnamed at two looks in a row with
  // nothing followed in between, it is not merely a moment before that
  // naming. A joiner that followed nothing yet is left alone: unnamed is
  // what it is until the first change its primary makes.
  if (!given_up || !followed_here) {
    given_up_at_ = kNotGivenUp;
    return;
  }
  if (given_up_at_ != followed) {
    given_up_at_ = followed;
    return;
  }
  stop_(absl::StrCat("shard ", shard_index_, ": its primary ", holder->name,
                     " no longer names this standby in sync, and nothing reached it since "
                     "mutation ",
                     followed, ": the primary went on without it, and it follows nothing any "
                     "more. It exits, to be started again and join that primary with a copy of "
                     "its state"));
}

absl::StatusOr<bool> Failover::StandbyPresent(const std::string& address) const {
  TESSERA_ASSIGN_OR_RETURN(std::optional<std::string> value,
                           election_->Get(present_prefix_ + address));
  return value.has_value();
}

void Failover::Watch() {
  // A standby that followed nothing in this life may lack what its
  // primary made visible (it restarted from its own checkpoint); one that
  // joined has the primary's copy (BecomeStandby).
  const bool followed = shard_->followed() > followed_at_start_;
  if (!followed && !joined_) return;
  absl::StatusOr<int64_t> term;
  absl::Status unnamed;
  bool unnamed_takeover = false;
  {
    // Etcd's calls only: the shard is promoted outside this lock (its
    // replication path takes this lock under the shard's).
    absl::MutexLock lock(&mu_);
    absl::StatusOr<Election::Holder> holder = election_->Current();
    // Workers knocking here lost their primary. If its process is gone (its
    // address refuses connections), its term need not run out its lease:
    // ending it early is safe, because a primary that is in fact alive is
    // fenced anyway (this standby refuses it once promoted, and it may not
    // go on alone). A primary that is paused or cut off keeps its lease.
    const uint64_t refused = shard_->refused_calls();
    if (holder.ok() && refused != refused_seen_ && holder->name != address_) {
      refused_seen_ = refused;
      // The holder campaigned under its address.
      if (Refuses(holder->name) && election_->EndTerm(*holder).ok()) {
        spdlog::warn(
            "shard {}: workers lost their primary and {} refuses connections; its term {} "
            "ends now, not at its lease's end",
            shard_index_, holder->name, holder->term);
        holder = election_->Current();
      }
    }
    if (holder.ok() && holder->name != address_) last_holder_ = holder->name;
    if (!absl::IsNotFound(holder.status())) return;  // a primary holds it, or etcd is away
    if (followed) term = election_->Campaign(Election::Condition{in_sync_key_, address_});
    // A primary that ended cleanly (every worker finished: this standby
    // followed each Finish) unnamed its standby and resigned: the job is
    // over, and nothing is left to take over.
    if (joined_ && (!followed || absl::IsFailedPrecondition(term.status())) &&
        !last_holder_.empty() && !shard_->AllWorkersFinished() && Refuses(last_holder_)) {
      // Nobody is named in sync (BecomeStandby says why this one may go on).
      term = election_->Campaign(Election::Condition{in_sync_key_, std::nullopt});
      unnamed_takeover = term.ok();
    }
    if (!term.ok()) return;
    // No standby follows this one yet: nobody else is in sync. Unnamed
    // before it serves, so that a standby that joins it is named after.
    unnamed = election_->DeleteWhileHeld(in_sync_key_);
  }
  // From here this daemon is primary: the old one's mutations are refused.
  const absl::Status promoted = shard_->Promote(*term);
  if (!promoted.ok()) {
    spdlog::error("shard {}: won term {} but cannot take over: {}; resigning", shard_index_, *term,
                  std::string(promoted.message()));
    absl::MutexLock lock(&mu_);
    (void)election_->Resign();
    return;
  }
  promoted_at_ms_.store(absl::ToUnixMillis(absl::Now()));
  role_.store(Role::kPrimary);
  spdlog::warn(
      "shard {}: the primary's term ended; this standby at {} is primary now, term {}, with "
      "every change up to mutation {}{}{}",
      shard_index_, address_, *term, shard_->followed(),
      unnamed_takeover ? " (it was not named in sync, and no daemon was: what the lost primary "
                         "made visible after that is lost, and counted)"
                       : "",
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

absl::StatusOr<Election::Holder> Failover::Holder() {
  absl::MutexLock lock(&mu_);
  return election_->Current();
}

void Failover::RenounceInSync() {
  absl::Status renounced;
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<std::optional<std::string>> named = election_->Get(in_sync_key_);
    if (!named.ok() || !named->has_value() || **named != address_) return;
    renounced = election_->DeleteIfVacant(in_sync_key_, address_);
  }
  if (renounced.ok()) {
    spdlog::warn(
        "shard {}: this standby was named in sync but restarted while no primary served: it "
        "unnamed itself, so a primary can start from its checkpoint (the clocks since are lost)",
        shard_index_);
  }
}

void Failover::StandbyInSync(const std::string& address) {
  absl::Status named;
  {
    absl::MutexLock lock(&mu_);
    if (named_in_sync_ == address) return;
    named = election_->PutWhileHeld(in_sync_key_, address);
    if (named.ok()) named_in_sync_ = address;
  }
  if (absl::IsFailedPrecondition(named)) {
    stop_(absl::StrCat("shard ", shard_index_, ": ", named.message()));
  } else if (!named.ok()) {
    spdlog::warn("shard {}: could not name its standby in sync yet: {}", shard_index_,
                 std::string(named.message()));
  } else {
    spdlog::info("shard {}: its standby at {} has every change: named in sync ({})",
                 shard_index_, address, in_sync_key_);
  }
}

void Failover::StandbyOutOfSync(const std::string& why) {
  absl::Status unnamed;
  {
    absl::MutexLock lock(&mu_);
    unnamed = election_->DeleteWhileHeld(in_sync_key_);
    if (unnamed.ok()) named_in_sync_.clear();
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
