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
// Threading: Campaign, Renew and Resign from one owning thread; Current and
// term() from any thread. Each call is one HTTP request with a deadline of
// `timeout`; nothing waits longer.
#ifndef TESSERA_COMMON_ELECTION_H_
#define TESSERA_COMMON_ELECTION_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace tessera {

class Election {
 public:
  struct Holder {
    std::string name;  // the candidate's name, as it campaigned
    int64_t term = 0;  // the key's create revision
  };

  // `endpoint`: etcd's client address, host:port. `ttl_s` >= 2 (etcd's
  // shortest lease is about 1.5 s). INVALID_ARGUMENT for a bad argument.
  static absl::StatusOr<std::unique_ptr<Election>> Create(const std::string& endpoint,
                                                          const std::string& key,
                                                          const std::string& name, int64_t ttl_s,
                                                          absl::Duration timeout = absl::Seconds(1));
  ~Election();

  // One attempt to become primary. The term on success; ALREADY_EXISTS
  // naming the holder and its term when another holds it; UNAVAILABLE when
  // etcd does not answer. Campaigning again while primary returns the term.
  absl::StatusOr<int64_t> Campaign();
  // Renews this term's lease. FAILED_PRECONDITION once it has expired (the
  // term is over); UNAVAILABLE when etcd does not answer (see above).
  absl::Status Renew();
  // Ends this term now (revokes its lease), so that a standby need not wait
  // for the lease to expire. OK when not primary.
  absl::Status Resign();
  // The current holder; NOT_FOUND when there is none.
  absl::StatusOr<Holder> Current() const;
  // This candidate's term while primary, else 0.
  int64_t term() const { return term_.load(); }

 private:
  Election(std::string endpoint, std::string key, std::string name, int64_t ttl_s,
           absl::Duration timeout);
  // POSTs `body` (JSON) to etcd's `path`; the parsed reply as text.
  absl::StatusOr<std::string> Post(const std::string& path, const std::string& body) const;

  const std::string host_;
  const int port_;
  const std::string key_;  // base64, as the gateway takes keys
  const std::string name_;
  const int64_t ttl_s_;
  const absl::Duration timeout_;
  int64_t lease_ = 0;  // owner thread only; 0: none
  std::atomic<int64_t> term_{0};
};

}  // namespace tessera

#endif  // TESSERA_COMMON_ELECTION_H_
