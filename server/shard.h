// Shard: everything one server shard holds — its part of every table, the
// optimizer state, the clock table — and the parameter-server logic over
// them. It speaks in proto messages but knows nothing of gRPC: the service
// layer (server/service.h) translates calls and statuses.
//
//   auto shard = Shard::Create(config, /*shard_index=*/0);
//   (*shard)->Register(req, &resp);
//   (*shard)->Pull(pull, &values, deadline, [](absl::Status s) { ... });
//
// Every request is validated in full before anything changes, so a bad
// request leaves the shard as it was:
//   INVALID_ARGUMENT    unknown table or worker, range or length mismatch,
//                       unsorted/duplicate keys, NaN/Inf gradients
//   OUT_OF_RANGE        a sparse key that lives on another shard
//   FAILED_PRECONDITION unregistered worker, clock ahead of (or behind) the
//                       worker's own, BSP push for a clock not yet open
//   RESOURCE_EXHAUSTED  a pull whose answer would exceed max_message_bytes
//
// Shared memory (DESIGN.md): a worker on this host may register a segment;
// its pushes then name where their gradients lie in it (SharedPayload) and
// its pulls where the values go. Ranges are checked against the mapping
// before anything changes (INVALID_ARGUMENT); a worker with no segment
// mapped that names one gets FAILED_PRECONDITION. The shard reads a push's
// gradients from the segment while it handles that push and writes a pull's
// values only while it answers that pull; the worker has one call in flight
// per range, so the two never touch the same bytes at once.
//
// Fault tolerance (docs/RELIABILITY.md): Snapshot() copies the shard's state
// for a checkpoint, Restore() loads one at start-up. A worker that registers
// with a resume_clock ahead of the clock this shard holds for it is moved
// there (the updates in between are lost here, and counted), so a shard
// restored from an older checkpoint, or a worker that died between shards,
// never leaves a rank stuck. A push names its piece; a piece already applied
// at the worker's clock is acknowledged and not applied again.
//
// Ranks are owned (docs/RELIABILITY.md "Hostile input"): Register carries a
// 16-byte session secret the worker process drew; every later call of that
// rank must carry the same (PERMISSION_DENIED otherwise, INVALID_ARGUMENT
// when missing). A Register of a rank whose holder is live (a call within
// security.rank_lease_s, or a pull parked) with another secret fails
// ALREADY_EXISTS and changes nothing; once the holder has been silent that
// long the rank passes to the new secret (a restarted worker). Secrets are
// not checkpointed: after a restart the first Register of a rank owns it.
//
// Threading: thread-safe, no lock over the whole shard. Tables lock their own
// chunks/stripes; the clock table has one short mutex; a worker's pushes to
// this shard are serialized by a per-worker mutex. Parked pulls hold no thread.
// Snapshot() holds every worker's mutex while it copies (pushes wait); a BSP
// cut is copied on the thread that raises min_clock, before it publishes.
// With a mutation log (a standby), every change the log carries is made and
// appended under one lock (log_mu_), so the standby gets them in the order
// they were made; a push under BSP with aggregation takes it only at a
// clock's close. A call's answer then waits for its mutation without that
// lock and, given a Hold, without its thread (MutationLog, WhenHeld), so
// calls wait for the standby side by side and none holds a thread.
#ifndef TESSERA_SERVER_SHARD_H_
#define TESSERA_SERVER_SHARD_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/codec.h"
#include "common/config.h"
#include "common/shared_memory.h"
#include "proto/checkpoint.pb.h"
#include "proto/replication.pb.h"
#include "proto/tessera.pb.h"
#include "server/checkpoint.h"
#include "server/clock_table.h"
#include "server/dense_table.h"
#include "server/epoch_planner.h"
#include "server/optimizer.h"
#include "server/part_barrier.h"
#include "server/sparse_table.h"
#include "server/staleness_tracker.h"

namespace tessera {

class Shard {
 public:
  using Done = std::function<void(absl::Status)>;

  // Builds shard `shard_index` of the job: creates and initializes its part of
  // every table. INVALID_ARGUMENT when the index is not below num_servers().
  static absl::StatusOr<std::unique_ptr<Shard>> Create(const JobConfig& config,
                                                       uint32_t shard_index);

  // What the answer of a call that changed this shard waits for, with a
  // standby (replication): the log holding mutation `sequence` (0: nothing
  // to wait for), after which min_clock `publish` (-1: none) is published.
  // A call fills it; WhenHeld releases it.
  struct Hold {
    uint64_t sequence = 0;
    int64_t publish = -1;
    std::function<void(uint64_t, std::function<void()>)> when_held;  // the log it went to
    bool waits() const { return sequence != 0 || publish >= 0; }
  };

  // The calls that change the shard (Register, Push, Clock, Finish, Plan)
  // take an optional Hold. Without one, the call returns once its change is
  // safe (the standby holds it): the calling thread waits. With one, it
  // returns as soon as the change is made, the Hold says what its answer
  // waits for, and the caller must answer (response and status) only from
  // WhenHeld(*hold, ...)'s callback, so no thread is held while the standby
  // acknowledges. (The ShardService does this; in-process callers and tests
  // pass none.)
  absl::Status Register(const v1::RegisterRequest& request, v1::RegisterResponse* response,
                        Hold* hold = nullptr);
  // Runs `done` once what `hold` names is safe, having published its
  // min_clock: at once on this thread when nothing is to wait for (no
  // standby, or nothing changed), else on the thread that learns the
  // standby holds it (server/replication.h: the link's sender) or that the
  // link was cut. Any thread.
  void WhenHeld(Hold hold, std::function<void()> done);

  // Answers `request` into *response once the consistency rule allows a pull
  // at request.clock, then calls done exactly once: inline (the rule already
  // holds, or the request is bad), or later from the thread that advanced the
  // clock, expired the deadline, cancelled or shut down. Returns the parked
  // pull's id, for CancelPull, when it waits.
  // REQUIRES: request and response stay valid until done runs.
  std::optional<ClockTable::WaiterId> Pull(const v1::PullRequest& request,
                                           v1::PullResponse* response, absl::Time deadline,
                                           Done done);
  void CancelPull(ClockTable::WaiterId id) { clock_.Cancel(id); }

  absl::Status Push(const v1::PushRequest& request, v1::PushResponse* response,
                    Hold* hold = nullptr);
  absl::Status Clock(const v1::ClockRequest& request, v1::ClockResponse* response,
                     Hold* hold = nullptr);
  absl::Status Finish(const v1::FinishRequest& request, v1::FinishResponse* response,
                      Hold* hold = nullptr);
  void Stats(v1::StatsResponse* response) const;
  // training.balance dynamic: the shares of request.epoch (EpochPlanner).
  // INVALID_ARGUMENT for a negative epoch or a rate that is not a finite
  // number >= 0; workers ask shard 0.
  absl::Status Plan(const v1::PlanRequest& request, v1::PlanResponse* response,
                    Hold* hold = nullptr);

  // Fails parked pulls whose deadline has passed; the server's reaper calls it.
  size_t ExpireDue(absl::Time now) { return clock_.ExpireDue(now); }
  absl::Time NextDeadline() const { return clock_.NextDeadline(); }
  // Fails every parked pull with UNAVAILABLE; later pulls still work.
  void FailParked();

  bool AllWorkersFinished() const { return clock_.AllFinished(); }

  // The largest clock a call or a checkpoint may name: 2^40 iterations (35
  // years at 1,000 a second), far from where clock arithmetic could overflow.
  static constexpr int64_t kMaxClock = int64_t{1} << 40;

  // --- Checkpoints ---
  // Who this shard's state belongs to: job, sharding, layout, optimizer.
  v1::CheckpointIdentity Identity() const;
  // A copy of the whole shard now, for a checkpoint: every worker's pushes
  // and advances wait while it is taken, so the clocks match the values.
  // The cut is min_clock (BSP with aggregation: the published one; a worker
  // past it is recorded at it, since its buffered gradients are not in the
  // values and it will push them again). Null under worker.bsp_parts while
  // the open clock has parts applied (its values mix two clocks until it
  // closes; BSP checkpoints are cut at closes, this is only a shutdown's).
  std::unique_ptr<ShardState> Snapshot();
  // Whether a checkpoint's manifest fits this shard, before its data is
  // read: every table's byte count exactly what the layout implies (sparse:
  // rows x row bytes, computed without overflow, within
  // server.max_sparse_rows), chunk steps, clocks and the lost-clock count
  // within [0, kMaxClock], epoch plans within training.epochs, the
  // replication log number within what kMaxClock clocks can send.
  // INVALID_ARGUMENT naming the first field that does not fit.
  absl::Status CheckManifest(const v1::CheckpointManifest& m) const;
  // Loads a checkpoint into a shard that has not served yet: CheckManifest,
  // then the data (every value and optimizer slot finite, each sparse key
  // once), then the state. INVALID_ARGUMENT when anything does not fit (the
  // identity was checked by the store); the shard must not serve then (a
  // sparse table may hold part of it), and its daemon exits.
  absl::Status Restore(const ShardState& state);
  // BSP: when min_clock rises to a clock `want` accepts, the shard copies its
  // state at that cut (that clock's updates applied, before it is published)
  // and hands it to `sink`, on the advancing thread; every shard of a job
  // then cuts at the same clocks. REQUIRES: before the shard serves.
  using CutSink = std::function<void(std::unique_ptr<ShardState>)>;
  void SetBspCuts(std::function<bool(int64_t)> want, CutSink sink);
  // training.balance dynamic (shard 0): `write` gets the plan log each time
  // an epoch plan is made, on the Plan call's thread, before that plan is
  // answered (so a plan a worker trains by is on disk first). REQUIRES:
  // before the shard serves.
  void SetPlanLog(std::function<void(const v1::EpochPlanLog&)> write);
  // Takes the plans of a plan log written after the checkpoint this shard
  // restored (EpochPlanner::Merge). INVALID_ARGUMENT when they do not fit.
  // REQUIRES: the shard has not served yet.
  absl::Status RestorePlanLog(const v1::EpochPlanLog& log);
  // The checkpointer reports each checkpoint written (for Stats), and hands
  // the written state back: the next cut copies into its dense tables'
  // buffers instead of fresh memory (first touching memory is slow on some
  // VMs; docs/PERFORMANCE.md). One spare is kept.
  void NoteCheckpoint(int64_t clock, int64_t bytes, double seconds);
  void Recycle(std::unique_ptr<ShardState> written);
  // consistency.evict_after_s (BSP/SSP): drops from the barrier every worker
  // at min_clock that has made no call for that long, so the others go on
  // (logged). An evicted worker that calls again rejoins at the published
  // min_clock. The server's reaper calls this. Returns how many it evicted.
  size_t EvictSilent(absl::Time now);

  // --- Replication (docs/DESIGN.md "Replication") ---
  // Where a primary's mutations go. `append` gets every mutation this
  // shard applies, in the order it applies them, on the applying thread
  // while it holds the log's lock (it must not call into this shard, nor
  // wait). `when_held`, when set, is then called (without that lock) with
  // the number of a call's last mutation and a callback, returns without
  // waiting, and runs the callback once that mutation and every one before
  // it are safe (a ReplicaLink: the standby holds them, or the link was
  // cut); the change is answered or published only then. So the changes
  // of several calls reach the standby in one message while none of their
  // threads waits (group commit).
  struct MutationLog {
    std::function<void(v1::Mutation)> append;
    std::function<void(uint64_t, std::function<void()>)> when_held;
  };
  // A primary: `log` gets every mutation this shard applies. Under BSP with
  // aggregation a worker's pushes and advances are not sent one by one: each clock's
  // close carries the clock's summed gradients and every worker's clock.
  // In every other mode (SSP, ASP, BSP without aggregation) each push is
  // sent as applied (its checked gradients in float32, and the values read
  // for staleness compensation) and each advance as made, all in one order
  // that the pushes take the log's lock for. With server.pull_creates_rows,
  // the close (or, without aggregation, every mutation) also names the rows
  // pulls created since the last one. Always OK.
  // REQUIRES: before the shard serves.
  absl::Status SetMutationLog(MutationLog log);
  // A primary that has no standby following it (one that took over, or one
  // whose standby was cut): from now on `log` gets every mutation (replacing
  // any log before), and the returned copy of the state (as Snapshot's)
  // names in its manifest the last mutation not sent to `log` (and, without
  // aggregation, the pieces each worker's open clock applied). Taken with
  // every change held, so a standby restored from it that follows `log`
  // holds this shard's state. FAILED_PRECONDITION on a standby. Any
  // thread, while serving.
  absl::StatusOr<std::unique_ptr<ShardState>> SnapshotAndLog(MutationLog log);
  // Makes this shard a standby: every worker's call fails UNAVAILABLE
  // (naming it), and Follow is allowed. REQUIRES: before it serves.
  void SetStandby() { standby_.store(true); }
  bool standby() const { return standby_.load(); }
  // A standby: worker calls refused so far (workers that lost their primary
  // try here: server/failover.h looks at the primary then).
  uint64_t refused_calls() const { return refused_calls_.load(std::memory_order_relaxed); }
  // A primary: the term its mutations carry (common/election.h), from the
  // election it won before serving. REQUIRES: before it serves.
  void SetTerm(int64_t term) { term_.store(term); }
  int64_t term() const { return term_.load(); }
  // A standby that won its shard's election (the primary's term ended and
  // it held every mutation the primary acknowledged): from now on it is
  // primary of `term`, serves workers, and refuses Follow (the old
  // primary's writes are fenced). Waits for a Follow being applied.
  // FAILED_PRECONDITION when not a standby, or `term` is not newer than
  // every term followed.
  absl::Status Promote(int64_t term);
  // A standby: applies one of its primary's mutations, in the primary's
  // order, to a shard that started from the primary's state (created from
  // the same config, or restored from the primary's Snapshot, whose
  // manifest names the last mutation in it) and serves no worker
  // (FAILED_PRECONDITION on a shard that is not a standby). A mutation it
  // already has (a resend) is acknowledged and not applied
  // again; FAILED_PRECONDITION when one is missing before it, and
  // INVALID_ARGUMENT when it does not fit this shard (unnumbered, or not
  // this job's layout): either way nothing changes, and the standby must
  // start again from its primary's state. Calls are applied one at a time
  // (a retry that overtakes its first try waits for it, then finds it applied).
  absl::Status Follow(const v1::Mutation& m);
  // The last mutation followed (a standby) or sent (a primary).
  uint64_t followed() const { return followed_.load(); }
  // When a standby last applied (or acknowledged) a mutation, steady clock.
  absl::Time last_followed() const { return absl::FromUnixNanos(last_followed_ns_.load()); }
  uint64_t log_sequence() const { return log_sequence_.load(); }

  // Unfinished workers at min_clock: whom a waiting pull waits for.
  std::vector<uint32_t> Laggards() const { return clock_.Laggards(); }
  int64_t published_min() const { return clock_.published_min(); }
  size_t parked() const { return clock_.parked(); }
  uint32_t index() const { return index_; }
  const JobConfig& config() const { return config_; }

 private:
  // A slice of the request, resolved against this shard's tables.
  struct Resolved {
    DenseTable* dense = nullptr;
    SparseTable* sparse = nullptr;
    uint64_t offset = 0;
    uint64_t count = 0;  // floats the slice covers
    uint32_t index = 0;  // the table's place in the job's tables (layout_)
    // The fixed-width codec the slice's values are answered (a pull) or
    // packed in shared memory (a push) in: Slice.codec.
    const Codec* codec = nullptr;
    // A delta pull (Slice.delta_base / delta_ratio; dense only).
    uint64_t delta_base = 0;
    float delta_ratio = 0;
    absl::Span<const uint64_t> keys;
  };

  Shard(const JobConfig& config, uint32_t index);

  // A worker's shared memory, replaced when it registers again. A pull holds
  // its own reference while it is parked.
  struct WorkerMemory {
    mutable absl::Mutex mu;
    std::shared_ptr<SharedSegment> segment ABSL_GUARDED_BY(mu);
  };
  // Where a payload of `bytes` at `at` lies in `worker`'s segment:
  // FAILED_PRECONDITION with none mapped, INVALID_ARGUMENT outside it. The
  // shard moves bytes in and out only with the segment's guarded copies (a
  // worker may shrink its file at any time; common/shared_memory.h).
  struct SharedRange {
    std::shared_ptr<SharedSegment> segment;  // keeps the mapping alive
    uint64_t offset = 0;
    uint64_t bytes = 0;
  };
  absl::StatusOr<SharedRange> Shared(uint32_t worker, const v1::SharedPayload& at,
                                     uint64_t bytes) const;
  // Reads `slices` packed (as ReadSlicesTo) and copies them into `range`.
  // DATA_LOSS when the worker's memory is gone under the mapping.
  absl::Status ReadSlicesToShared(const std::vector<Resolved>& slices, bool create_rows,
                                  const SharedRange& range);

  // UNAVAILABLE on a standby: no worker's call is served there.
  absl::Status CheckServing() const;
  // A call of `worker` carrying `session`: a known, registered rank whose
  // secret it is (INVALID_ARGUMENT / FAILED_PRECONDITION / PERMISSION_DENIED).
  absl::Status CheckCaller(uint32_t worker, const std::string& session) const;
  // Whether `session` may own `worker` now (ALREADY_EXISTS while another
  // live process holds it), and takes it. `memory` is the worker's, held
  // (registrations of one rank are serialized on it).
  absl::Status TakeRank(uint32_t worker, const std::string& session, WorkerMemory& memory)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(memory.mu);
  // A call from `worker` (REQUIRES: worker < num_workers_): it is not
  // silent; an evicted worker rejoins. Takes the worker's mutex only then:
  // call it before taking that mutex.
  void Touch(uint32_t worker, Hold* hold);
  absl::StatusOr<Resolved> Resolve(const v1::Slice& slice) const;
  absl::Status ResolveAll(const google::protobuf::RepeatedPtrField<v1::Slice>& slices,
                          std::vector<Resolved>* out) const;
  // Checks a push's gradient payloads (in the request or in shared memory)
  // against its slices and decodes them into *grads (views into the message
  // or into *shared_copy, the bytes copied out of shared memory, for
  // float32; into *decoded for every other codec). INVALID_ARGUMENT on a
  // payload that does not fit its slice (common/codec.h) or, by default,
  // NaN/Inf. *bytes: each slice's bytes as they travelled. Gradients in shared memory are copied out once
  // before they are checked, so the worker cannot change them in between.
  // *max_abs: each slice's largest |gradient| (one pass finds it and NaN/Inf).
  absl::Status DecodeGradients(const v1::PushRequest& request, const std::vector<Resolved>& slices,
                               std::string* shared_copy, std::vector<std::vector<float>>* decoded,
                               std::vector<absl::Span<const float>>* grads,
                               std::vector<float>* max_abs, std::vector<uint64_t>* bytes) const;
  // Appends the values of `slices` to *values (one payload per slice, in
  // the slice's codec). `create_rows`: a sparse key never pushed gets a row
  // kept (else it reads as its initial values, unkept).
  // A delta pull's slices are answered against what `worker` holds.
  void ReadSlices(uint32_t worker, const std::vector<Resolved>& slices, bool create_rows,
                  google::protobuf::RepeatedPtrField<v1::Payload>* values);
  // A delta pull's slice: the top delta_ratio of the change since the answer
  // `worker` holds (r.delta_base), when this shard remembers it; else the
  // whole slice in r.codec. Remembers what the worker holds after it.
  void AnswerDelta(uint32_t worker, const Resolved& r, v1::Payload* out);
  // The same bytes packed one slice after another at `out` (shared memory).
  void ReadSlicesTo(const std::vector<Resolved>& slices, bool create_rows, char* out);
  // Bytes `slices` take packed, each in its codec.
  static uint64_t PayloadBytes(const std::vector<Resolved>& slices);
  // RESOURCE_EXHAUSTED when reading `slices` would exceed max_message_bytes.
  absl::Status CheckReplySize(const std::vector<Resolved>& slices) const;
  // RESOURCE_EXHAUSTED when the sparse slices would grow a table past
  // server.max_sparse_rows (approximate under concurrent requests: each
  // checks alone, so several at once may pass the limit by their new keys).
  absl::Status CheckRowLimit(const std::vector<Resolved>& slices) const;
  // server.reject_nonfinite: INVALID_ARGUMENT, naming the table and the
  // value, when applying `grads` would make a value or optimizer slot
  // non-finite (computed on copies; nothing changes).
  absl::Status CheckUpdateFinite(const v1::PushRequest& request,
                                 const std::vector<absl::Span<const float>>& grads,
                                 const std::vector<float>& max_abs,
                                 const std::vector<Resolved>& slices) const;
  // --- One path of change (docs/DESIGN.md "One path of change") ---
  // What a call changes, once it has been checked in full. A call checks
  // its request against the shard's state (changing nothing), builds a
  // Mutation and hands it to Apply: the one place where a table, a worker's
  // clock, piece record or eviction, a plan or the lost-clock count
  // changes. A standby that applies a primary's mutations in the primary's
  // order holds the primary's state. (Not through it: the rows a pull
  // creates under server.pull_creates_rows, which the replication log
  // collects at each clock's close, and what pulls record for delta pulls
  // and delay compensation.)
  struct Mutation {
    enum class Kind {
      kPush,     // `worker`'s gradients for `clock` (a push that closes its
                 // clock is a kPush, then a kAdvance)
      kAdvance,  // `worker` finished `clock`
      kAdopt,    // `worker` resumes at `clock` (Register): a clock ahead of
                 // the held one skips the updates between (lost, counted)
      kFinish,   // `worker` finished training
      kEvict,    // `worker`, silent at min_clock, leaves the barrier
      kRejoin,   // an evicted `worker` called again: back at min_clock
      kPlan,     // `worker`'s rate for `epoch` (training.balance dynamic)
    };
    Kind kind = Kind::kAdvance;
    uint32_t worker = 0;
    int64_t clock = 0;
    // kPush: the piece's bit (0: piece 0, an update of its own, never
    // de-duplicated), and the checked gradients, their slices, and for
    // staleness compensation the updates published since their values were
    // read and, by slice, those values (null where not kept); the pointers
    // live for the call.
    uint64_t piece_bit = 0;
    const std::vector<Resolved>* slices = nullptr;
    const std::vector<absl::Span<const float>>* grads = nullptr;
    std::optional<int64_t> staleness;
    const std::vector<const float*>* reads = nullptr;
    // kPlan
    int64_t epoch = 0;
    double rate = 0;

    static Mutation Of(Kind kind, uint32_t worker, int64_t clock = 0) {
      Mutation m;
      m.kind = kind;
      m.worker = worker;
      m.clock = clock;
      return m;
    }
  };
  // What applying a mutation did, for the call's answer.
  struct Applied {
    int64_t clock = -1;            // the worker's clock after it
    int64_t lost_clocks = 0;       // kAdopt: clocks skipped
    bool changed = true;           // kRejoin: false when the worker was not evicted
    uint32_t workers_finished = 0; // kFinish: how many are, with this one
    std::vector<uint32_t> shares;  // kPlan
    uint32_t part_applied = 0;     // kPush of a BSP part (worker.bsp_parts) it completed
  };
  // Makes a checked mutation; with a log, appends it and adds to *hold
  // what the call's answer must wait for (null: a standby's Follow, which
  // has no log). REQUIRES: the worker's mutex
  // held, exclusively for every kind but kPush (shared is enough) and kPlan
  // (none). INTERNAL only if the check and the state disagree, which the
  // lock rules out.
  absl::StatusOr<Applied> Apply(const Mutation& m, Hold* hold);
  // Apply's changes, without the log.
  absl::StatusOr<Applied> Make(const Mutation& m);
  // Make, and the mutation appended to the log (none for the changes a BSP
  // close carries).
  absl::StatusOr<Applied> LogAndMake(const Mutation& m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(log_mu_);
  // A call's Hold: the caller's, or one of its own that it waits for when
  // it returns (after its locks are let go: declare it first).
  class CallHold {
   public:
    CallHold(Shard* shard, Hold* given) : shard_(shard), given_(given) {}
    ~CallHold();
    CallHold(const CallHold&) = delete;
    CallHold& operator=(const CallHold&) = delete;
    Hold* get() { return given_ != nullptr ? given_ : &own_; }

   private:
    Shard* const shard_;
    Hold* const given_;
    Hold own_;
  };
  // With a log: *hold waits for everything appended so far (a call that
  // answers about a change another call made, e.g. a retried piece).
  void HoldAll(Hold* hold);
  // A plan's epoch within [-1, training.epochs) and its rate a finite number
  // in [0, 1e12] (INVALID_ARGUMENT otherwise).
  absl::Status CheckPlan(int64_t epoch, double rate) const;
  // Follow's change, once the number fits.
  absl::Status FollowNext(const v1::Mutation& m);
  // Sends the close of clock `new_min` (the aggregation buffers, the rows
  // pulls created, `pushers`, every worker's clock) to the mutation log.
  void LogClose(int64_t new_min, uint32_t pushers)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(log_mu_, aggregate_mu_);
  // Writes the checked push `m` (kPush) as the standby applies it.
  void LogPush(const Mutation& m, v1::Mutation::Push* out) const;
  // A standby's part of Follow for a push (`m`, number `sequence`): checked
  // in full against this shard, then applied. REQUIRES: follow_mu_ held.
  absl::Status FollowPush(uint64_t sequence, const v1::Mutation::Push& m);
  // Appends `m` to the mutation log, numbered; without aggregation, with
  // the rows pulls created since the last. REQUIRES: a log is set.
  void Log(v1::Mutation m) ABSL_EXCLUSIVE_LOCKS_REQUIRED(log_mu_);
  // BSP with aggregation: applies the buffered gradients as the mean of
  // `pushers` workers' sums. REQUIRES: aggregate_mu_ held.
  void ApplyAggregate(uint32_t pushers) ABSL_EXCLUSIVE_LOCKS_REQUIRED(aggregate_mu_);
  // The checks of an advance of `worker` from clock `finished`, under its
  // exclusive mutex: FAILED_PRECONDITION unless it is at that clock.
  absl::Status CheckAdvance(uint32_t worker, int64_t finished) const;
  // Applies (or buffers, under BSP aggregation) validated gradients of
  // `worker`'s update at `clock` (-1: an update of its own, piece 0),
  // computed from `reads` (by slice; staleness compensation).
  void ApplyGradients(uint32_t worker, int64_t clock,
                      const std::vector<absl::Span<const float>>& grads,
                      const std::vector<Resolved>& slices, std::optional<int64_t> staleness,
                      const std::vector<const float*>& reads);
  // Tells the tracker `worker` was served `slices` at `clock`.
  void RecordServed(uint32_t worker, int64_t clock, const std::vector<Resolved>& slices);
  // A clock-table change's consequences: when min_clock rose, the BSP buffer
  // is applied and the new min_clock published to parked pulls.
  void AfterAdvance(const ClockTable::Advance& a);
  void OnMinClock(int64_t new_min);
  // Publishes new_min to parked pulls, or with a standby leaves it to the
  // call's Hold (REQUIRES then: log_mu_ held, as Apply holds it).
  void PublishMin(int64_t new_min);
  // Copies every table into a ShardState whose manifest says `cut`, `clocks`
  // (with `clamp`, none past the cut) and `finished`. Callers hold off
  // whatever would make the copy torn.
  std::unique_ptr<ShardState> CopyState(int64_t cut, std::vector<int64_t> clocks,
                                        const std::vector<bool>& finished, bool clamp);

  // const after construction
  const JobConfig config_;
  const uint32_t index_;
  const uint32_t num_workers_;
  const int64_t staleness_;                     // effective bound; ASP never waits
  const bool aggregate_;                        // BSP aggregation on
  const std::unique_ptr<Optimizer> optimizer_;  // the job's (optimizer.*)
  // Tables with an optimizer of their own (optimizer.tables), by name.
  std::map<std::string, std::unique_ptr<Optimizer>> table_optimizers_;
  // The optimizer table `name` trains with (built on first ask; construction only).
  const Optimizer* OptimizerOf(const std::string& name);
  std::vector<std::unique_ptr<DenseTable>> dense_;
  // worker.bsp_parts > 1 under BSP with aggregation: the dense tables'
  // buffers are applied part by part (else null). Set in the constructor.
  std::unique_ptr<PartBarrier> parts_;
  // OK unless parts_ is set and `slices` hold a dense slice: then they must
  // be exactly part `part`'s (INVALID_ARGUMENT otherwise).
  absl::Status CheckPart(uint32_t part, const std::vector<Resolved>& slices) const;
  std::vector<std::unique_ptr<SparseTable>> sparse_;
  absl::flat_hash_map<std::string, Resolved> tables_;  // name -> table
  std::vector<v1::TableLayout> layout_;
  // Bytes of values moved per table (layout_'s order) as they travelled,
  // and as float32 would have: gradients pushed, values pulled (fused
  // pulls included).
  struct Traffic {
    std::atomic<uint64_t> push_bytes{0};
    std::atomic<uint64_t> pull_bytes{0};
    std::atomic<uint64_t> push_raw_bytes{0};
    std::atomic<uint64_t> pull_raw_bytes{0};
  };
  std::unique_ptr<Traffic[]> traffic_;
  // Rows each sparse table may hold here, by table index (dense: 0):
  // server.max_sparse_rows, or derived from this machine's memory.
  std::vector<uint64_t> row_limits_;
  // Fills row_limits_ (construction, after the tables) and logs the derived ones.
  void SetRowLimits();
  // `values`: the answers in the message (the last slices.size() of them);
  // null when they went to shared memory.
  void NotePulled(const std::vector<Resolved>& slices,
                  const google::protobuf::RepeatedPtrField<v1::Payload>* values);
  // `bytes`: each slice's payload as it travelled.
  void NotePushed(const std::vector<Resolved>& slices, const std::vector<uint64_t>& bytes);
  void FillTraffic(const std::string& table, v1::TableStats* stats) const;
  ClockTable clock_;
  // Push staleness, and the values read for delay compensation.
  StalenessTracker staleness_tracker_;
  EpochPlanner planner_;  // training.balance dynamic

  // Serializes apply-then-publish of BSP clocks; taken only at a min_clock rise.
  // Lock order: a worker's mutex, then log_mu_, then aggregate_mu_.
  absl::Mutex aggregate_mu_;
  // Replication: the log (set before serving, then read-only), and the
  // lock that orders its mutations as their changes are ordered. Taken by
  // Apply only while a log is set, and never for a BSP push with aggregation.
  MutationLog mutation_log_;  // written under log_mu_
  absl::Mutex log_mu_;
  // With a log: the min_clock a change under the log's lock raised, which
  // the call's Hold publishes once the standby holds it (-1: none).
  int64_t unpublished_ ABSL_GUARDED_BY(log_mu_) = -1;
  // Whether mutation_log_ is set: written with every worker's mutex and
  // log_mu_ held, so a change made under a worker's mutex sees it fixed.
  std::atomic<bool> logging_{false};
  // The last mutation sent (written under log_mu_; a copy of the state
  // names it), and, on a standby, the last one followed (Follow's caller).
  std::atomic<uint64_t> log_sequence_{0};
  std::atomic<uint64_t> followed_{0};
  std::atomic<int64_t> last_followed_ns_{0};
  std::atomic<uint64_t> logged_bytes_{0};  // serialized mutations handed to the log
  std::atomic<uint64_t> promotions_{0};
  std::atomic<bool> standby_{false};
  mutable std::atomic<uint64_t> refused_calls_{0};
  // A primary: its term; a standby: the newest term it followed (written
  // under follow_mu_). A mutation of an older term is refused.
  std::atomic<int64_t> term_{0};
  // Serializes Follow and Promote. Lock order: this, then a worker's mutex, then aggregate_mu_.
  absl::Mutex follow_mu_;
  // Delta pulls: by worker, what it holds of each slice it pulled so (keyed
  // by table index and offset; at most kMaxMirrors slices a worker, all
  // dropped beyond, and each answered whole again). Memory: the dense
  // values each delta-pulling worker holds, once more.
  struct PullMirror {
    struct Held {
      uint64_t version = 0;
      std::vector<float> values;
    };
    absl::Mutex mu;
    absl::flat_hash_map<std::pair<uint32_t, uint64_t>, Held> held ABSL_GUARDED_BY(mu);
  };
  static constexpr size_t kMaxMirrors = 256;
  // Delta pulls: the last answer made for each slice (keyed as mirrors are),
  // given again to a worker that pulls from the same version, in the same
  // codec and ratio, while the table still shows the values it was made
  // from (DenseTable::QuietWrites). Under BSP every worker pulls the same
  // values from the same version each clock, so the change is selected and
  // encoded once a clock, not once a worker, and the workers keep holding
  // one version. A worker that pulls while the answer is made waits for it
  // (one top-k of a slice). Memory: a slice's last answer (a whole slice's
  // bytes at most), at most kMaxMirrors of them.
  struct DeltaAnswer {
    absl::Mutex mu;  // lock order: this, then a worker's mirror
    uint64_t base ABSL_GUARDED_BY(mu) = 0;  // the version it is from (0: whole)
    std::optional<uint64_t> writes ABSL_GUARDED_BY(mu);  // the values it was made from
    uint64_t count ABSL_GUARDED_BY(mu) = 0;
    v1::Codec codec ABSL_GUARDED_BY(mu) = v1::FLOAT32;
    float ratio ABSL_GUARDED_BY(mu) = 0;
    v1::Payload payload ABSL_GUARDED_BY(mu);
  };
  // The slice's entry, made on first use.
  std::shared_ptr<DeltaAnswer> LastDeltaAnswer(std::pair<uint32_t, uint64_t> slice);
  absl::Mutex delta_answers_mu_;
  absl::flat_hash_map<std::pair<uint32_t, uint64_t>, std::shared_ptr<DeltaAnswer>> delta_answers_
      ABSL_GUARDED_BY(delta_answers_mu_);
  // Everything this shard keeps about one worker, in one place; each on
  // cache lines of its own, since every call of that worker writes to it.
  struct alignas(64) WorkerSlot {
    // Its pushes hold it shared, its clock advances (Clock, Finish, a push
    // that advances) exclusively, so an advance follows every push of the
    // clock it closes. Lock order: this, then aggregate_mu_.
    absl::Mutex mu;
    WorkerMemory memory;
    // BSP aggregation: whether it pushed gradients for the open clock (the
    // buffer is applied as the pushers' mean). Set on the push path, read
    // and cleared under aggregate_mu_ once every worker has advanced.
    std::atomic<bool> pushed_this_clock{false};
    // Bit p set once piece p of its current clock was applied; cleared
    // (under mu, exclusively) when its clock moves.
    std::atomic<uint64_t> pieces_applied{0};
    // When it last called (unix ms), for evict_after_s and the rank lease.
    std::atomic<int64_t> last_seen_ms{0};
    // Its session secret as two words (both 0: none yet), written under
    // memory.mu, read lock-free by every call.
    std::atomic<uint64_t> session[2] = {0, 0};
    // Its pulls in flight here (a worker parked on the barrier is live).
    std::atomic<int32_t> pulls_in_flight{0};
    PullMirror mirror;  // delta pulls
  };
  std::vector<std::unique_ptr<WorkerSlot>> workers_;  // by rank
  // Versions are unique to this shard process: a random high half, a count.
  const uint64_t version_base_;
  const std::string layout_text_;  // config_.LayoutText(), what Register compares
  std::atomic<uint64_t> versions_{0};

  // Checkpoints: set before serving, then read-only.
  std::function<bool(int64_t)> want_cut_;
  CutSink cut_sink_;
  absl::Mutex spare_mu_;  // taken alone, never with another lock held inside it
  std::unique_ptr<ShardState> spare_ ABSL_GUARDED_BY(spare_mu_);

  std::atomic<uint64_t> updates_applied_{0};
  std::atomic<uint64_t> duplicate_pushes_{0};
  std::atomic<int64_t> restored_clock_{-1};
  std::atomic<int64_t> lost_before_{0};  // from earlier restores (the checkpoint says)
  std::atomic<int64_t> lost_here_{0};    // largest clock jump adopted since start
  std::atomic<int64_t> last_checkpoint_clock_{-1};
  std::atomic<int64_t> last_checkpoint_unix_ms_{0};
  std::atomic<int64_t> last_checkpoint_bytes_{0};
  std::atomic<int64_t> last_checkpoint_us_{0};  // how long writing it took
  std::atomic<uint64_t> checkpoints_written_{0};
};

}  // namespace tessera

#endif  // TESSERA_SERVER_SHARD_H_
