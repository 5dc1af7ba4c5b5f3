// Election: which process is primary of one replicated thing (a shard), and
// for which term, decided by etcd rather than by a protocol of our own.
//
//   auto election = Election::Create("127.0.0.1:2379", "/tessera/JOB/shard-0/primary",
//                                    "server-0a", /*ttl_s=*/2);
//   absl::StatusOr<int64_t> term = (*election)->Campaign();   // primary for `*term`
//   ... every ttl_s / 3:  if (!(*election)->Renew().ok()) stop accepting writes
//
// etcd is spoken to through its v3 JSON gateway (HTTP, cpp-httplib), so no
// etcd client library is needed. Campaign grants a lease of ttl_s and writes
// `key` under it only if the key does not exist (one transaction), so at most
// one candidate holds it at a time; the key disappears when its lease expires
// (its holder stopped renewing: killed, paused, cut off) or is revoked
// (Resign). The term is the key's create revision: etcd's revisions only
// grow, so every later term is larger, and a write that carries an older term
// can be refused by whoever holds a newer one (fencing). A holder that cannot
// renew must stop acting as primary once ttl_s has passed since its last
// successful renewal, before anyone else can have won: etcd expires the lease
// no sooner than ttl_s after that renewal.
//
// A campaign may also require another key to hold a value (or to be
// absent), checked in the same transaction; and a primary may write keys
// only while its term holds (PutWhileHeld, DeleteWhileHeld: one transaction
// that compares the election key's create revision with its term). The
// replicated shard uses both for its `in_sync` key (docs/DESIGN.md
// "Failover"): a standby wins only while the primary says it holds every
// acknowledged change.
//
// Threading: Campaign, Renew, Resign, PutWhileHeld, DeleteWhileHeld and
// KeepPresent from one owning thread (or under the owner's lock); Current, Get and term()
// from any thread. Each call is one HTTP request with a deadline of
// `timeout`; nothing waits longer.
#ifndef TESSERA_COMMON_ELECTION_H_
#define TESSERA_COMMON_ELECTION_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace tessera {

class Election {
 public:
  struct Holder {
    std::string name;  // the candidate's name, as it campaigned
    int64_t term = 0;  // the key's create revision
    int64_t lease = 0;  // the lease it holds the key under
  };

  // `endpoint`: etcd's client address, host:port. `ttl_s` >= 1 (etcd
  // grants at least 1.5 of its election timeouts: 2 s with its defaults).
  // INVALID_ARGUMENT for a bad argument.
  static absl::StatusOr<std::unique_ptr<Election>> Create(const std::string& endpoint,
                                                          const std::string& key,
                                                          const std::string& name, int64_t ttl_s,
                                                          absl::Duration timeout = absl::Seconds(1));
  ~Election();

  // A key's required state: holding `value`, or absent (nullopt).
  struct Condition {
    std::string key;
    std::optional<std::string> value;
  };

  // One attempt to become primary. The term on success; ALREADY_EXISTS
  // naming the holder and its term when another holds it; FAILED_PRECONDITION
  // when nobody holds it but `require` is not met; UNAVAILABLE when etcd does
  // not answer. Campaigning again while primary returns the term.
  absl::StatusOr<int64_t> Campaign(const std::optional<Condition>& require = std::nullopt);
  // Renews this term's lease. FAILED_PRECONDITION once it has expired (the
  // term is over); UNAVAILABLE when etcd does not answer (see above).
  absl::Status Renew();
  // Ends this term now (revokes its lease), so that a standby need not wait
  // for the lease to expire. OK when not primary.
  absl::Status Resign();
  // Writes (deletes) `key` only if this candidate's term still holds:
  // FAILED_PRECONDITION when it is over (or it never was primary),
  // UNAVAILABLE when etcd does not answer. Either way nothing was written.
  absl::Status PutWhileHeld(const std::string& key, const std::string& value);
  absl::Status DeleteWhileHeld(const std::string& key);
  // Deletes `key` only while nobody is primary and `key` holds `value`
  // (one transaction): for a standby named in sync that restarted and so no
  // longer holds what it was named for. FAILED_PRECONDITION when either
  // does not hold.
  absl::Status DeleteIfVacant(const std::string& key, const std::string& value);
  // The current holder; NOT_FOUND when there is none.
  absl::StatusOr<Holder> Current() const;
  // Ends `holder`'s term now (revokes its lease), for a candidate that knows
  // the holder is gone (its process no longer accepts connections) and need
  // not wait for the lease to expire. Safe against a holder that is in fact
  // alive only where its writes are fenced otherwise (server/failover.h).
  absl::Status EndTerm(const Holder& holder);
  // `key`'s value; nullopt when it is absent.
  absl::StatusOr<std::optional<std::string>> Get(const std::string& key) const;
  // Presence, for a daemon that must be seen alive without a term (a
  // standby): writes `key` = `value` under a lease of ttl_s of its own,
  // granted by the first call and renewed by each later one (granted and
  // written again once it expired). A daemon that calls this every
  // ttl_s / 3 is present (Get finds `key`) until ttl_s after the last
  // renewal etcd took: the key of a daemon that is paused, or cut off from
  // etcd, goes then. Its key stays while the daemon stays present; the
  // lease is not revoked when the Election goes (a killed daemon's expires).
  // Whether the presence had lapsed since the last call (its lease expired,
  // or was revoked, and `key` is written again); false on the first call.
  // UNAVAILABLE when etcd does not answer.
  absl::StatusOr<bool> KeepPresent(const std::string& key, const std::string& value);
  // This candidate's term while primary, else 0.
  int64_t term() const { return term_.load(); }

 private:
  Election(std::string endpoint, std::string key, std::string name, int64_t ttl_s,
           absl::Duration timeout);
  // POSTs `body` (JSON) to etcd's `path`; the parsed reply as text.
  absl::StatusOr<std::string> Post(const std::string& path, const std::string& body) const;
  // A new lease of ttl_s.
  absl::StatusOr<int64_t> GrantLease() const;
  // Renews `lease`: whether it was still alive (false: it expired, and its
  // keys are gone).
  absl::StatusOr<bool> KeepAlive(int64_t lease) const;
  // Revokes `lease`, best effort (its keys go; an unanswered one expires).
  void Revoke(int64_t lease) const;
  // One transaction: `request` (a put or delete, as JSON) if this term holds.
  absl::Status WhileHeld(const std::string& what, const std::string& op, const std::string& request);

  const std::string host_;
  const int port_;
  const std::string key_;  // base64, as the gateway takes keys
  const std::string name_;
  const int64_t ttl_s_;
  const absl::Duration timeout_;
  int64_t lease_ = 0;  // owner thread only; 0: none
  int64_t presence_lease_ = 0;  // KeepPresent's; owner thread only; 0: none
  std::atomic<int64_t> term_{0};
};

}  // namespace tessera

#endif  // TESSERA_COMMON_ELECTION_H_
