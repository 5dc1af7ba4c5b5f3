// Failover: a replicated shard's part in its election (docs/DESIGN.md
// "Failover"), decided by etcd (common/election.h), never by the shards.
//
// Keys per shard in etcd, under /tessera/JOB/shard-N/:
//   primary   held (under a lease of server.lease_ttl_s) by the daemon that
//             serves workers; its create revision is the term.
//   in_sync   the standby's address while it holds every change the primary
//             made visible; absent otherwise. Written and deleted by the
//             primary only while its term holds.
//   present/ADDRESS  written by the standby at ADDRESS under a lease of its
//             own, renewed every server.lease_ttl_s / 3 (Election::
//             KeepPresent): gone within the TTL once that daemon is paused
//             or cut off from etcd. A primary whose standby has gone
//             silent reads it to tell a paused or cut-off standby (give up
//             on it now) from a slow one (wait: server.
//             replication_timeout_s). A standby that its primary no longer
//             names in sync, after its presence lapsed or after it followed
//             in this life (its link to the primary alone was cut), exits
//             (`stop`) to be started again and join with a copy: it
//             follows nothing any more.
// A primary writes in_sync once its standby acknowledged a mutation (so it
// holds all before it), and deletes it before it goes on without the
// standby; if it cannot (its term is over, or etcd does not answer), it
// stops instead. A standby campaigns only in the transaction that also
// requires in_sync to name it, and only once it has followed a mutation in
// this life. So a standby that wins holds every change a worker has seen,
// and the old primary cannot make another visible: the standby refuses its
// mutations, and it may not go on alone.
//
//   Primary:  auto f = Failover::Create(config, shard, Role::kPrimary, address, shard_ptr, stop);
//             TESSERA_ASSIGN_OR_RETURN(int64_t term, f->BecomePrimary());   // before serving
//             f->Start(followed);                              // renews the term
//   Standby:  ... Create(..., Role::kStandby, ...); f->Start(followed); // watches; takes over
//
// A standby takes over once the primary's lease expired (a killed, paused or
// cut-off primary), or at once when workers that lost their primary knock on
// it and the primary's address refuses connections (its process is gone, its
// host is not): it ends that term early (Election::EndTerm), which the
// fencing above makes safe even if the primary were alive.
//
// `stop(why)` is called when this daemon must not act as primary any more
// (its term is over); it must not return (the daemon exits: fail-stop).
//
// Threading: BecomePrimary before Start, on the owning thread. Start runs
// one thread of its own (renewing, or watching, taking over and keeping
// the standby present) until the destructor. StandbyInSync and StandbyOutOfSync are called by the
// primary's ReplicaLink (a worker call's thread), and StandbyOutOfSync also
// by ShardServer::Join when a new daemon replaces the standby (a gRPC
// thread); every etcd call is made under mu_, one request of at most a
// second each.
#ifndef TESSERA_SERVER_FAILOVER_H_
#define TESSERA_SERVER_FAILOVER_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/config.h"
#include "common/election.h"
#include "server/shard.h"

namespace tessera {

class Failover {
 public:
  enum class Role { kPrimary, kStandby };

  // `address`: this daemon's (its candidate name). INVALID_ARGUMENT without
  // cluster.etcd.
  static absl::StatusOr<std::unique_ptr<Failover>> Create(
      const JobConfig& config, uint32_t shard_index, Role role, const std::string& address,
      Shard* shard, std::function<void(const std::string&)> stop);
  ~Failover();

  // A primary: wins the shard's term, only where no standby is named in
  // sync (a standby that holds newer state takes over instead), retrying for
  // up to 3 lease TTLs + 5 s. The term, also set on the shard. ALREADY_EXISTS
  // when another daemon is primary (this one must not serve: it cannot
  // rejoin as a standby yet); FAILED_PRECONDITION when the standby named in
  // sync never took over; UNAVAILABLE when etcd does not answer.
  absl::StatusOr<int64_t> BecomePrimary();
  // Starts the thread: a primary renews its term every TTL / 3 (and stops
  // the daemon once etcd says it is over); a standby polls every 100 ms
  // and takes over once the primary's term ended. `followed_before_serving`:
  // the shard's followed() read before it began to serve (its checkpoint's,
  // or the copy it joined with): a standby campaigns as the one named in
  // sync only once it has followed more than that. (Read at Start instead,
  // a mutation that came between serving and Start did not count: a joiner
  // named in sync by it, whose primary then died, never took over.)
  void Start(uint64_t followed_before_serving);
  // A daemon that joined the primary as its standby (ShardServer::
  // JoinAsStandby: started as primary and found another, or a standby
  // started while a primary serves), with a copy of the primary's state.
  // Before Start, with the address of the primary it joined. Such a daemon
  // may take over even unnamed in sync when the primary is gone (no term,
  // and the last holder's address refuses connections: its process is not
  // merely paused or cut off, which could still answer a call alone) and
  // nobody is named (the primary lost before this one caught up, or after it
  // went on alone): no daemon has a newer state it could be named for, and
  // what this one lacks, the workers count as lost clocks when they register.
  void BecomeStandby(const std::string& primary) {
    role_.store(Role::kStandby);
    joined_ = true;
    last_holder_ = primary;
  }
  // The current primary, as etcd names it.
  absl::StatusOr<Election::Holder> Holder();
  // A standby that starts while no primary serves: if it is the one named in
  // sync, it no longer holds what it was named for (it restarted), so it
  // unnames itself, and a primary may start from its checkpoint (the clocks
  // since are lost, and counted). Logged; etcd's failures too.
  void RenounceInSync();
  // The primary's standby at `address` acknowledged a mutation: names it in
  // sync (once per standby). A failure is logged; FAILED_PRECONDITION (the
  // term is over) stops.
  void StandbyInSync(const std::string& address);
  // Before the primary goes on without its standby: unnames it. Returns
  // only when that was written; otherwise stops the daemon.
  void StandbyOutOfSync(const std::string& why);
  // At a clean end: stops the thread, unnames the standby (so that it does
  // not take over a finished job) and resigns the term.
  void Resign();
  // A primary's link whose standby at `address` has gone silent: whether
  // that daemon is present in etcd (renewing its key, above). UNAVAILABLE
  // when etcd does not answer (then nothing is known). Any thread.
  absl::StatusOr<bool> StandbyPresent(const std::string& address) const;

  int64_t term() const { return election_->term(); }
  // Standby: when it took over (0: not yet), in ms since the epoch.
  int64_t promoted_at_ms() const { return promoted_at_ms_.load(); }

 private:
  Failover(const JobConfig& config, uint32_t shard_index, Role role, std::string address,
           Shard* shard, std::function<void(const std::string&)> stop,
           std::unique_ptr<Election> election);
  void Run();
  // A standby's one look: campaigns when the primary's term ended.
  void Watch();
  // A standby's presence, renewed every ttl / 3 (the thread's). Stops the
  // daemon once its primary no longer names it in sync: after its presence
  // lapsed, or, having followed in this life, at two looks in a row with
  // nothing followed between them (cut off from its primary alone).
  void KeepPresent();
  // A primary's one renewal.
  void Renew();

  const uint32_t shard_index_;
  const std::string address_;
  const std::string in_sync_key_;
  const std::string present_prefix_;  // present/, above
  const absl::Duration ttl_;
  Shard* const shard_;
  const std::function<void(const std::string&)> stop_;
  std::atomic<Role> role_;
  absl::Mutex mu_;  // every call on election_
  std::unique_ptr<Election> election_;
  std::string named_in_sync_ ABSL_GUARDED_BY(mu_);  // "" : none
  uint64_t followed_at_start_ = 0;  // the thread's
  bool joined_ = false;             // BecomeStandby, before Start
  std::string last_holder_;         // the thread's: the last primary it saw
  uint64_t refused_seen_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time present_until_ = absl::InfinitePast();  // the thread's: next KeepPresent after
  bool present_failed_ = false;                      // the thread's: the last one failed
  // The thread's: followed() at the last look that found this standby given
  // up on (kNotGivenUp: it was not).
  static constexpr uint64_t kNotGivenUp = ~uint64_t{0};
  uint64_t given_up_at_ = kNotGivenUp;
  std::atomic<int64_t> promoted_at_ms_{0};
  absl::Notification done_;
  std::thread thread_;
};

}  // namespace tessera

#endif  // TESSERA_SERVER_FAILOVER_H_
