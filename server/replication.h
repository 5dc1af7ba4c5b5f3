// Replication over the network (docs/DESIGN.md "Replication"): the two ends
// of the stream a primary shard sends its standby.
//
//   ReplicaService  on the standby (tessera-server --standby): the
//                   Replica.Follow call, which hands each mutation of a
//                   batch to Shard::Follow. Every call must carry the job's
//                   token.
//   ReplicaLink     on the primary: Shard::SetMutationLog's log. Append
//                   queues a mutation; WhenHeld runs a callback once the
//                   standby holds it (synchronous replication: the call
//                   that made the change is answered from there). A sender
//                   thread of the link's own sends what is queued; the
//                   mutations appended while a batch is in flight go
//                   together in the next (group commit), so calls that
//                   change the shard wait for the standby side by side,
//                   and none holds a thread meanwhile. An unreachable standby
//                   is retried for server.replication_timeout_s; past that,
//                   when the standby refuses a mutation (it missed one or
//                   does not fit), when a standby that served refuses
//                   connections for a second (its daemon is gone), or when
//                   one that served is silent and its presence in etcd has
//                   lapsed (paused, or cut off from etcd too; with
//                   failover), the link is cut for good: the primary goes
//                   on alone and says so once, as an error.
//
// With failover (cluster.etcd), the link names its standby in sync once it
// acknowledged a mutation, and must unname it before it goes on alone
// (server/failover.h): a link that cannot is not cut, the daemon stops.
//
//   auto link = std::make_unique<ReplicaLink>(config, shard_index, address, security);
//   link->SetFailover(failover.get());   // with cluster.etcd, before serving
//   shard->SetMutationLog(link->Log());
//
// Threading: ReplicaService's handler runs on gRPC's callback threads;
// Shard::Follow applies their calls one at a time. ReplicaLink::Append is
// called with the shard's log lock held (so in the mutations' order);
// WhenHeld and Await from any thread without it. The link's sender thread
// sends one batch at a time (the oldest, all that is queued, up to
// kBatchBytes), each send bounded by server.replication_timeout_s, and
// runs the callbacks of what the standby then holds (or of everything,
// once the link is cut), without the link's lock: a callback must not
// wait. Counters may be read from any thread, and Abandon called from any
// (it cancels the call in flight). The destructor stops the sender
// (cancelling its call) and runs the callbacks still waiting.
#ifndef TESSERA_SERVER_REPLICATION_H_
#define TESSERA_SERVER_REPLICATION_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "common/config.h"
#include "common/security.h"
#include "server/checkpoint.h"
#include "proto/replication.grpc.pb.h"
#include "server/failover.h"
#include "server/shard.h"

namespace tessera {

class ReplicaService final : public v1::Replica::CallbackService {
 public:
  // What a primary does for a daemon that joins as its standby at `address`:
  // from now on it sends every mutation there, and returns the state the
  // joiner starts from (ShardServer::Join). Null: Join is refused.
  using JoinFn = std::function<absl::StatusOr<std::unique_ptr<ShardState>>(const std::string&)>;

  ReplicaService(Shard* shard, std::shared_ptr<const TransportSecurity> security,
                 JoinFn join = nullptr)
      : shard_(shard), security_(std::move(security)), join_(std::move(join)) {}

  grpc::ServerUnaryReactor* Follow(grpc::CallbackServerContext* context,
                                   const v1::Mutations* request,
                                   v1::FollowReply* response) override;
  // Streams the state join_ returns, 1 MiB a part, with the shard's term.
  grpc::ServerWriteReactor<v1::SnapshotPart>* Join(grpc::CallbackServerContext* context,
                                                   const v1::JoinRequest* request) override;

 private:
  Shard* const shard_;
  const std::shared_ptr<const TransportSecurity> security_;
  const JoinFn join_;
};

// The joining end: asks the primary at `primary` for its state, for a
// standby that will serve at `address`. The state and the primary's term;
// FAILED_PRECONDITION when the state is not of `shard`'s job and layout,
// UNAVAILABLE when the primary does not answer (or stops) within 5 minutes.
struct JoinedState {
  ShardState state;
  int64_t term = 0;
};
absl::StatusOr<JoinedState> JoinPrimary(const JobConfig& config, const Shard& shard,
                                        const std::string& primary, const std::string& address,
                                        const TransportSecurity& security);

class ReplicaLink {
 public:
  // To the standby at `address` (cluster.standbys[shard_index], or a
  // daemon that joined), with the job's credentials.
  ReplicaLink(const JobConfig& config, uint32_t shard_index, const std::string& address,
              std::shared_ptr<const TransportSecurity> security);
  ~ReplicaLink();
  ReplicaLink(const ReplicaLink&) = delete;
  ReplicaLink& operator=(const ReplicaLink&) = delete;

  // Queues `m`, whose number follows the last one's, for the sender. Under
  // the shard's log lock; never blocks on the network.
  void Append(v1::Mutation m);
  // Runs `done` once the standby holds mutation `sequence` (appended
  // before) and every one before it, or once the link is cut: at most
  // server.replication_timeout_s after the batch that carries it was first
  // tried. At once (on this thread) when it holds it already, when the link
  // is cut, or while it catches up (below). Never waits.
  void WhenHeld(uint64_t sequence, std::function<void()> done);
  // WhenHeld, waiting on this thread (tests; at most the timeout above,
  // and a margin).
  void Await(uint64_t sequence);
  // Append and WhenHeld, as the shard's log.
  Shard::MutationLog Log();

  // With cluster.etcd: the election the standby's standing is written to.
  // REQUIRES: before the first Append.
  void SetFailover(Failover* failover) { failover_ = failover; }

  // The link a primary starts with (its standby follows from the first
  // mutation), not one a joiner asked for. REQUIRES: before the first Append.
  void SetFromStart() { from_start_ = true; }

  // A link to a daemon that joins (ShardServer::Join): that daemon serves
  // only once it has the state it was sent, so until it acknowledges,
  // nobody waits for it (WhenHeld runs its callback at once): the sender
  // offers the queue (short tries, no waiting for a connection, kOfferPause
  // apart); the first complete delivery names it in sync and ends the
  // catch-up, after which WhenHeld waits as usual. Not named in sync, it holds no change a worker saw
  // answered that it lacks, so the primary answers meanwhile (rule 2 of
  // docs/DESIGN.md "Failover"). A joiner not caught up within
  // server.replication_timeout_s of the first queued mutation, or before
  // server.replication_queue_bytes of mutations are queued for it, is cut.
  // (Waiting instead stalled the join for the whole timeout: the joiner
  // serves only once it has its state.)
  // REQUIRES: before the first Append.
  void SetCatchingUp();
  bool from_start() const { return from_start_; }

  // Its standby is known to be gone (a new daemon at its address joins):
  // a send in progress stops retrying now, and this and every later send
  // cuts the link, saying `why`, without unnaming the standby in etcd (the
  // Join unnamed it first, and may name the new daemon later). Any thread.
  void Abandon(const std::string& why);

  const std::string& address() const { return address_; }
  bool connected() const { return !cut_.load(); }
  uint64_t sent() const { return sent_.load(); }
  uint64_t bytes() const { return bytes_.load(); }

  // At most this many serialized bytes a batch (one mutation at least).
  static constexpr uint64_t kBatchBytes = uint64_t{64} << 20;

 private:
  // The sender thread: sends what is queued, runs the callbacks of what
  // the standby holds, until the destructor.
  void SendLoop();
  // Whether the sender has something to do (or must stop).
  bool SendReady() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Under mu_: the callbacks whose mutations the standby holds (all of
  // them once the link is cut), taken out of waiters_.
  std::vector<std::function<void()>> TakeReady() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends `batch` until the standby holds it (true) or the link is cut.
  bool Deliver(const v1::Mutations& batch);
  // Catching up: one short try; false when it did not land (the link may
  // be cut: refused, or not caught up within the timeout of `oldest`, when
  // the batch's first mutation was queued).
  bool Offer(const v1::Mutations& batch, absl::Time oldest);
  // The standby holds `batch`: counted, and (with failover) named in sync.
  void Delivered(const v1::Mutations& batch);
  // Gives up on the standby for good, saying why.
  void Cut(const std::string& why);

  const uint32_t shard_index_;
  const std::string address_;
  const absl::Duration timeout_;
  const uint64_t queue_limit_;  // server.replication_queue_bytes
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Replica::Stub> stub_;
  Failover* failover_ = nullptr;
  bool from_start_ = false;

  mutable absl::Mutex mu_;
  std::deque<v1::Mutation> queue_ ABSL_GUARDED_BY(mu_);  // appended, not yet sent
  // Their serialized bytes, and those of the batch in flight.
  uint64_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // Catching up: the queue outgrew queue_limit_ (Append dropped it; the
  // sender cuts the link, outside the shard's log lock).
  bool overflowed_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t held_ ABSL_GUARDED_BY(mu_) = 0;  // the last mutation the standby holds
  // WhenHeld's callbacks, by the mutation each waits for.
  std::vector<std::pair<uint64_t, std::function<void()>>> waiters_ ABSL_GUARDED_BY(mu_);
  bool catching_up_ ABSL_GUARDED_BY(mu_) = false;
  // Catching up: the next offer not before this (a refused one waits).
  absl::Time offer_after_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;  // the destructor's
  std::atomic<bool> stopped_{false};  // the same, for a send in progress
  absl::Time queued_since_ ABSL_GUARDED_BY(mu_);  // catching up: the oldest queued's
  std::atomic<bool> cut_{false};
  absl::Mutex try_mu_;
  grpc::ClientContext* trying_ ABSL_GUARDED_BY(try_mu_) = nullptr;  // the call in flight
  std::string abandoned_ ABSL_GUARDED_BY(try_mu_);                   // Abandon's why

  std::atomic<uint64_t> sent_{0};   // mutations the standby acknowledged
  std::atomic<uint64_t> bytes_{0};  // their serialized bytes
  std::thread sender_;  // SendLoop; last, started once the rest is built
};

}  // namespace tessera

#endif  // TESSERA_SERVER_REPLICATION_H_
