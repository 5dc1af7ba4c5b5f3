// PsClient: how a worker talks to the parameter server — pull every dense
// table at a clock, push gradients and advance the clock, finish.
//
// The implementation is ShardedPsClient (worker/sharded_ps_client.h), one
// protocol over a transport per shard: GrpcPsClient (worker/grpc_ps_client.h)
// talks to real shards over gRPC; LocalPsClient (worker/local_ps_client.h)
// calls Shard objects in this process, for unit tests and for the one-process
// baseline that measures what the PS costs. This header is the interface
// only: code that trains against a PsClient links neither gRPC's client nor
// the server.
//
// Threading: one worker thread uses a client; calls do not overlap.
#ifndef TESSERA_WORKER_PS_CLIENT_H_
#define TESSERA_WORKER_PS_CLIENT_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/config.h"
#include "worker/parameter_set.h"

namespace tessera {

// Rows of one sparse table for one step: unique keys and, row after row,
// dim floats per key (pulled values, or the gradients to push).
struct SparseRows {
  size_t table = 0;  // index in JobConfig::Tables()
  uint32_t dim = 1;
  std::vector<uint64_t> keys;  // unique, any order
  std::vector<float> values;   // keys.size() * dim
};
using RowSet = std::vector<SparseRows>;

// What a row pull is for (PullRows): training, or an evaluation that must
// leave the shards' tables as they were.
enum class RowPull { kTrain, kEvaluate };

// The push piece that carries a clock's sparse rows (dense pieces are
// 1..worker.channels_per_shard <= 63), so that a retried row push is
// applied once, like a dense piece.
inline constexpr uint32_t kRowPiece = 64;

class PsClient {
 public:
  virtual ~PsClient() = default;

  // Registers this worker with every shard and returns the clock it goes on
  // from: the highest of `resume_clock` (the clock the worker believes it is
  // at: 0 when it starts, its own clock when it reconnects after a lost
  // shard) and the clocks the shards hold for it. A shard that holds an
  // earlier clock (restored from an older checkpoint, or the worker died
  // between shards) is moved to that one, so every shard agrees. Safe to call
  // again at any time. UNAVAILABLE naming the shard when one does not answer
  // within worker.connect_timeout_ms.
  virtual absl::StatusOr<int64_t> Connect(int64_t resume_clock = 0) = 0;

  // The staleness the shards measured for this client's dense pushes
  // (PushResponse.staleness: updates published between the read of the
  // values and the push; per push the most any shard saw).
  struct PushStaleness {
    int64_t measured = 0;  // pushes with a staleness
    int64_t unknown = 0;   // pushes no shard could measure
    int64_t sum = 0;
    int64_t max = 0;
    void Add(int64_t staleness);  // -1: unknown
  };
  virtual PushStaleness push_staleness() const { return {}; }

  // Clocks of this worker's updates that shards lost (restored from older
  // checkpoints) as its Connect calls found: per call the most any shard lost.
  virtual int64_t lost_clocks() const { return 0; }
  // Bytes of values this client moved as they travelled (encoded), and as
  // float32 would have taken: raw / bytes is each direction's compression.
  struct WireTraffic {
    uint64_t push_bytes = 0, push_raw_bytes = 0;
    uint64_t pull_bytes = 0, pull_raw_bytes = 0;
  };
  virtual WireTraffic traffic() const { return {}; }

  // Pulls every dense table whole, as allowed at `clock` by the consistency
  // mode, into *params (resized to the tables). Returns the smallest
  // min_clock over the shards: the values hold every update of the clocks
  // below it. DEADLINE_EXCEEDED when the clock does not allow it in time.
  virtual absl::StatusOr<int64_t> PullDense(int64_t clock, ParameterSet* params) = 0;

  // Pushes the gradients of every dense table for `clock`, then advances
  // this worker's clock to clock + 1 on every shard. `values_clock`: the
  // clock the values the gradients were computed from were pulled for
  // (PullDense's `clock`; a fused pull's is clock + 1 of its push), from
  // which the shards measure the push's staleness and compensate it
  // (optimizer.staleness_compensation); nullopt: not known.
  virtual absl::Status PushDense(int64_t clock, const ParameterSet& grads,
                                 std::optional<int64_t> values_clock) = 0;

  // PushDense, and in the same round trip a pull at clock + 1 wherever the
  // consistency rule already allows it without waiting. Returns the pulled
  // values' min_clock guarantee when every shard answered (then *params
  // holds them), nullopt otherwise (pull as usual; *params may hold some
  // newer values already). A client may instead pull the shards that did
  // not answer itself, waiting as PullDense would (ShardedPsClient does
  // where pushes are not overlapped, so that no shard is pulled twice).
  // The default pushes and returns nullopt.
  virtual absl::StatusOr<std::optional<int64_t>> PushDenseAndPull(
      int64_t clock, const ParameterSet& grads, std::optional<int64_t> values_clock,
      ParameterSet* params);

  // Pulls the rows of rows[i].keys from the shards that own them (keys
  // routed by SparseShardOf, every shard asked at once), as allowed at
  // `clock` like PullDense, into rows[i].values (resized). kEvaluate: keys
  // never pushed read as their initial values and the shards keep no row
  // for them (kTrain: server.pull_creates_rows decides). Returns the
  // smallest min_clock of the shards asked (INT64_MAX when none was).
  virtual absl::StatusOr<int64_t> PullRows(int64_t clock, RowSet* rows, RowPull mode) = 0;

  // Pushes row gradients (rows[i].values for rows[i].keys) for `clock`
  // without advancing the clock: PushDense, which follows, advances it.
  // Under BSP the shards sum every worker's rows of a clock and apply them
  // once, as for dense tables.
  virtual absl::Status PushRows(int64_t clock, const RowSet& grads) = 0;

  // Tells every shard this worker is done.
  virtual absl::Status Finish() = 0;

  // The fewest finished workers any shard has seen.
  virtual absl::StatusOr<uint32_t> WorkersFinished() = 0;

  // training.balance dynamic: the shares of `epoch` by rank (PlanResponse),
  // from shard 0, reporting this worker's compute rate over its last epoch
  // (0: none yet). The default: UNIMPLEMENTED.
  virtual absl::StatusOr<std::vector<uint32_t>> PlanEpoch(int64_t epoch,
                                                          double examples_per_second);
};

}  // namespace tessera

#endif  // TESSERA_WORKER_PS_CLIENT_H_
