// ShardedPsClient: the worker's protocol with its shards, written once over
// a ShardTransport per shard (worker/shard_transport.h), so that a worker
// talking gRPC (GrpcPsClient, worker/grpc_ps_client.h) and one calling shards
// in its own process (LocalPsClient, worker/local_ps_client.h) register,
// pull, push, count and fail over the same way.
//
// Every call fans out to all shards at once and waits for all of them; the
// first that fails cancels the others (one of them may be a pull parked on a
// clock that only moves once this worker has recovered). A shard's share of
// a large table is cut into pieces, grouped into one request per lane, that
// travel side by side; a shard whose push is one request advances its clock
// in it and can answer a fused pull of the next clock in the same round trip.
// Every call has a deadline (worker.rpc_timeout_ms, pulls
// worker.pull_timeout_ms).
//
// Connect() registers with every shard and agrees on one clock: shards that
// hold an earlier clock are moved on; clocks a shard lost (restored from an
// older checkpoint) are counted (lost_clocks). A rank still held by a dead
// predecessor is waited for (security.rank_lease_s).
//
// Shared memory (worker.shared_memory: auto, transports that offer it):
// Connect() offers every shard a segment of its own (common/shared_memory.h)
// with a push area and a pull area per request group; a shard on this host
// maps it, and from then on gradients and pulled values go through it while
// the transport carries the call. A shard that cannot map it gets the bytes
// in the messages. Calls never overlap, so one area per group suffices; after
// a failed call the shard may still be touching an area, so the client stops
// using shared memory.
//
// Failover (a transport with a standby): Connect tries a shard's current
// daemon with short tries (kFailoverTryMs, no waiting for a connection) and,
// when it does not serve workers (gone, or a standby), the other, until
// worker.connect_timeout_ms. A standby that took over holds every clock its
// primary closed, but not the pushes of the clock that was open: the client
// keeps a reference to its last push's gradients (dense and rows; the caller
// leaves them unchanged until its next push, as the trainer does) and, when
// Connect finds a shard one clock behind the others at that push's clock,
// sends it again to that shard alone, instead of moving the shard on (which
// would lose the push). With a security.session_file the push is also kept in
// a file that outlives the process (worker/held_push.h). Each push's answer
// names the term that accepted it; a term older than one seen before is
// logged as an error (two primaries).
//
// Threading: one caller at a time (the worker's training thread, or the push
// pipeline's while it owns the client); transports answer on their threads
// into per-call state that the caller waits for (bounded).
#ifndef TESSERA_WORKER_SHARDED_PS_CLIENT_H_
#define TESSERA_WORKER_SHARDED_PS_CLIENT_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/config.h"
#include "common/shared_memory.h"
#include "proto/tessera.pb.h"
#include "worker/held_push.h"
#include "worker/ps_client.h"
#include "worker/shard_requests.h"
#include "worker/shard_transport.h"

namespace tessera {

class ShardedPsClient : public PsClient {
 public:
  // `transports`: one per configured server, in order. `spin`: how long a
  // wait spins before it sleeps (worker.spin_wait_us, resolved).
  ShardedPsClient(const JobConfig& config, uint32_t rank,
                  std::vector<std::unique_ptr<ShardTransport>> transports,
                  absl::Duration spin = absl::ZeroDuration());

  absl::StatusOr<int64_t> Connect(int64_t resume_clock = 0) override;
  int64_t lost_clocks() const override { return lost_clocks_; }
  WireTraffic traffic() const override { return requests_.encoder->traffic(); }
  PushStaleness push_staleness() const override { return push_staleness_; }
  absl::StatusOr<int64_t> PullDense(int64_t clock, ParameterSet* params) override;
  absl::Status PushDense(int64_t clock, const ParameterSet& grads,
                         std::optional<int64_t> values_clock) override;
  // Fused when every shard's push is one request (no split over lanes).
  absl::StatusOr<std::optional<int64_t>> PushDenseAndPull(int64_t clock, const ParameterSet& grads,
                                                          std::optional<int64_t> values_clock,
                                                          ParameterSet* params) override;
  absl::StatusOr<std::vector<uint32_t>> PlanEpoch(int64_t epoch,
                                                  double examples_per_second) override;
  // Rows travel in the messages (not shared memory), one request per shard
  // that owns any of the keys, all shards at once.
  absl::StatusOr<int64_t> PullRows(int64_t clock, RowSet* rows, RowPull mode) override;
  absl::Status PushRows(int64_t clock, const RowSet& grads) override;
  absl::Status Finish() override;
  absl::StatusOr<uint32_t> WorkersFinished() override;

  // How many shards take this worker's bytes through shared memory now.
  size_t shared_memory_shards() const;
  // The names of the segments in use (unlinked once Connect returns).
  std::vector<std::string> shared_memory_names() const;
  // The daemon shard s's calls go to now.
  const std::string& address(size_t s) const { return shards_[s].transport->address(); }

 protected:
  const JobConfig config_;
  const uint32_t rank_;

 private:
  struct ShardState {
    std::unique_ptr<ShardTransport> transport;
    // The pieces of a dense pull/push, grouped into one request per lane.
    std::vector<std::vector<ShardRequests::Piece>> groups;
    // Shared memory with this shard, when it mapped it; per group, where its
    // push's gradients and its pull's values lie in the segment.
    std::unique_ptr<SharedSegment> memory;
    std::vector<uint64_t> push_at, pull_at;
    std::vector<char*> push_area, pull_area;  // the same, in `memory` (set with it)
    uint64_t capacity = 0;                    // bytes the segment needs (0: no dense pieces)
    int64_t term = 0;  // PushResponse.term of the last push it accepted
  };

  // After shard `s` accepted a push of `clock` under `term`: a new term is
  // logged with the clock it starts at ("pushes accepted under term T from
  // clock C"), one older than the last is logged as an error (two primaries).
  void NoteTerm(size_t s, int64_t term, int64_t clock);
  // Creates the segments offered in Connect; a failure leaves that shard
  // on messages (logged).
  void CreateSharedMemory();
  // Stops using shared memory (after a failed call).
  void DropSharedMemory();
  // Copies a pull's values (in the response, or in shared memory at
  // `shared` when the shard put them there) into *params.
  // (Instantiated for PullResponse and PushResponse.)
  template <typename Response>
  absl::Status Scatter(const std::vector<ShardRequests::Piece>& pieces, const Response& response,
                       const char* shared, ParameterSet* params) const;
  // Names the shard in an error from it.
  absl::Status ShardError(size_t shard, const absl::Status& status) const;
  // Now plus `ms`, a call's deadline.
  static absl::Time DeadlineIn(int64_t ms);
  // 0, 1, ..., shards - 1.
  std::vector<size_t> AllShards() const;
  // The push of PushDense; with `pull_into`, single-request shards also
  // answer a fused pull: *unanswered gets the shards whose answer did not
  // come (in order), *min_clock the smallest min_clock of those that did
  // (INT64_MAX if none). `only`: to these shards alone (else all).
  absl::Status Push(int64_t clock, const ParameterSet& grads, std::optional<int64_t> values_clock,
                    ParameterSet* pull_into, std::vector<size_t>* unanswered, int64_t* min_clock,
                    const std::vector<size_t>* only = nullptr);
  // PullDense from `shards` alone; the smallest of their min_clocks. Does not
  // release the held push (the caller knows whether every shard answered).
  absl::StatusOr<int64_t> PullFrom(int64_t clock, const std::vector<size_t>& shards,
                                   ParameterSet* params);
  absl::Status PushRowsTo(int64_t clock, const RowSet& grads, const std::vector<size_t>* only);
  // worker.bsp_parts: PushDenseAndPull with the dense values in parts. The
  // pulls of every part of clock + 1 go first and wait on the shards; then
  // each shard gets part 1, 2, ... of the push, the next once it took the
  // last (the last advances the clock), so that a part's values come back
  // while the later parts still travel.
  absl::StatusOr<std::optional<int64_t>> PushPullParts(int64_t clock, const ParameterSet& grads,
                                                      std::optional<int64_t> values_clock,
                                                      ParameterSet* params);
  // Failover: sends the held push again to `behind` (shards that took over
  // without it), which then hold clock held_.clock + 1.
  absl::Status Resend(const std::vector<size_t>& behind);
  // Registers with shards `which` at `resume_clock`, offering their shared
  // memory; answers land in (*responses)[s].
  // *failed_shard: the first that failed, when one did.
  absl::Status RegisterWith(const std::vector<size_t>& which, int64_t resume_clock,
                            std::vector<v1::RegisterResponse>* responses,
                            size_t* failed_shard = nullptr);
  // The routing of `rows`' keys; a step's push reuses its pull's.
  const ShardRequests::RowRoute& RouteFor(const RowSet& rows);
  // Checks that shard `s` serves this job's tables with the expected ranges.
  absl::Status CheckLayout(size_t s, const v1::RegisterResponse& layout) const;

  const absl::Duration spin_;
  absl::Status setup_error_;  // security.session_file unusable: Connect says so
  // Every dense piece, split for the lanes. Set in the constructor (its
  // session from security.session_file), read-only after.
  ShardRequests requests_;
  std::vector<ShardState> shards_;
  // Some shard has a standby: hold each push until its clock closed.
  bool failover_ = false;
  int64_t lost_clocks_ = 0;
  PushStaleness push_staleness_;                    // written by the thread that pushes
  ShardRequests::RowRoute route_;                   // of routed_keys_
  std::vector<std::vector<uint64_t>> routed_keys_;  // per table
  // Failover: the last push, as the caller's buffers (see above); cleared
  // once a pull of the next clock came back from every shard (every shard
  // closed the push's clock, and so did its standby).
  struct Held {
    int64_t clock = -1;  // -1: none
    const ParameterSet* grads = nullptr;
    std::optional<int64_t> values_clock;
    const RowSet* rows = nullptr;  // pushed at `rows_clock`
    int64_t rows_clock = -1;
  };
  Held held_;
  // Forgets the held push.
  void ReleaseHeld();
  // Takes the push a previous life of this rank kept in held_file_.
  void RestoreHeld();
  // With a standby and a session file: the held push, also kept in a file
  // that outlives this process (worker/held_push.h); restored_ owns a push
  // loaded from it until every shard has closed its clock.
  std::unique_ptr<HeldPushFile> held_file_;
  bool held_file_failed_ = false;  // said once
  std::optional<HeldPush> restored_;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_SHARDED_PS_CLIENT_H_
