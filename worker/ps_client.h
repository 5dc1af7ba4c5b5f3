// PsClient: how a worker talks to the parameter server — pull every dense
// table at a clock, push gradients and advance the clock, finish.
//
// Implementations: GrpcPsClient (worker/grpc_ps_client.h) talks to real
// shards over gRPC, fanning every call out to all shards at once;
// LocalPsClient (below) calls Shard objects in this process, for unit tests
// and for the one-process baseline that measures what the PS costs.
//
// Threading: one worker thread uses a client; calls do not overlap.
#ifndef TESSERA_WORKER_PS_CLIENT_H_
#define TESSERA_WORKER_PS_CLIENT_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/config.h"
#include "proto/tessera.pb.h"
#include "worker/model.h"

namespace tessera {

class Shard;

// Rows of one sparse table for one step: unique keys and, row after row,
// dim floats per key (pulled values, or the gradients to push).
struct SparseRows {
  size_t table = 0;  // index in JobConfig::Tables()
  uint32_t dim = 1;
  std::vector<uint64_t> keys;  // unique, any order
  std::vector<float> values;   // keys.size() * dim
};
using RowSet = std::vector<SparseRows>;

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

  // Clocks of this worker's updates that shards lost (restored from older
  // checkpoints) as its Connect calls found: per call the most any shard lost.
  virtual int64_t lost_clocks() const { return 0; }

  // Pulls every dense table whole, as allowed at `clock` by the consistency
  // mode, into *params (resized to the tables). Returns the smallest
  // min_clock over the shards: the values hold every update of the clocks
  // below it. DEADLINE_EXCEEDED when the clock does not allow it in time.
  virtual absl::StatusOr<int64_t> PullDense(int64_t clock, ParameterSet* params) = 0;

  // Pushes the gradients of every dense table for `clock`, then advances
  // this worker's clock to clock + 1 on every shard.
  virtual absl::Status PushDense(int64_t clock, const ParameterSet& grads) = 0;

  // PushDense, and in the same round trip a pull at clock + 1 wherever the
  // consistency rule already allows it without waiting. Returns the pulled
  // values' min_clock guarantee when every shard answered (then *params
  // holds them), nullopt otherwise (pull as usual; *params may hold some
  // newer values already). The default pushes and returns nullopt.
  virtual absl::StatusOr<std::optional<int64_t>> PushDenseAndPull(int64_t clock,
                                                                  const ParameterSet& grads,
                                                                  ParameterSet* params);

  // Pulls the rows of rows[i].keys from the shards that own them (keys
  // routed by SparseShardOf, every shard asked at once), as allowed at
  // `clock` like PullDense, into rows[i].values (resized). Returns the
  // smallest min_clock of the shards asked (INT64_MAX when none was).
  virtual absl::StatusOr<int64_t> PullRows(int64_t clock, RowSet* rows) = 0;

  // Pushes row gradients (rows[i].values for rows[i].keys) for `clock`
  // without advancing the clock: PushDense, which follows, advances it.
  // Under BSP the shards sum every worker's rows of a clock and apply them
  // once, as for dense tables.
  virtual absl::Status PushRows(int64_t clock, const RowSet& grads) = 0;

  // Tells every shard this worker is done.
  virtual absl::Status Finish() = 0;

  // The fewest finished workers any shard has seen.
  virtual absl::StatusOr<uint32_t> WorkersFinished() = 0;
};

// The requests one call sends, per shard. Shared by both implementations so
// that they split tables identically.
struct ShardRequests {
  // pieces[s]: the dense (table index, offset, length) pieces shard s owns.
  struct Piece {
    size_t table;
    uint64_t offset;
    uint64_t length;
  };
  std::vector<std::vector<Piece>> pieces;
  // By table index (JobConfig::Tables() order), computed once.
  std::vector<std::string> table_names;
  std::vector<uint64_t> dense_sizes;  // 0 for sparse tables
  bool bf16 = false;                  // values travel as bfloat16 (worker.wire_precision)
  // This worker process's registration secret (RegisterRequest.session),
  // carried by every request built here.
  std::string session = NewSession();

  // 16 random bytes, drawn once per client.
  static std::string NewSession();

  // Splits every dense table of `config` over its shards; a shard's share of
  // a table larger than split_bytes is cut into `split` pieces, so that large
  // transfers can travel on several channels at once.
  static ShardRequests ForDense(const JobConfig& config, uint32_t split, uint64_t split_bytes);

  // Fills `request` with `pieces` (some of this->pieces), for `worker` at `clock`.
  void BuildPull(const std::vector<Piece>& pieces, uint32_t worker, int64_t clock,
                 v1::PullRequest* request) const;
  // With `shared`, the gradients are written packed at shared->data and the
  // request names shared->offset instead of carrying them.
  struct SharedTarget {
    char* data;
    uint64_t offset;
  };
  // `piece`: which of this clock's requests to the shard this is, from 1 (the
  // shard applies each piece once, so a retried one is not applied twice).
  void BuildPush(const std::vector<Piece>& pieces, uint32_t worker, int64_t clock,
                 const ParameterSet& grads, bool advance, uint32_t piece,
                 v1::PushRequest* request, const SharedTarget* shared = nullptr) const;
  // Sizes *params to the dense tables.
  void ShapeParameters(ParameterSet* params) const;
  // The dense slice that `piece` names.
  void FillSlice(const Piece& piece, v1::Slice* slice) const;
  // Bytes one value takes on the wire.
  size_t value_bytes() const { return bf16 ? sizeof(uint16_t) : sizeof(float); }
  // Bytes `pieces` take packed one after another, as float32 (the most).
  static uint64_t MaxBytes(const std::vector<Piece>& pieces);

  // Sparse rows: which keys each shard owns. route[s][i] lists the positions
  // in rows[i].keys of the keys shard s owns, in increasing key order (a
  // slice's keys must be sorted).
  using RowRoute = std::vector<std::vector<std::vector<uint32_t>>>;
  static RowRoute RouteRows(const RowSet& rows, uint32_t num_shards);
  // Appends shard s's slices of `rows` to *slices (tables with no key there
  // are left out); with `payloads`, also each slice's values packed in this
  // encoding (a push's gradients).
  void AddRowSlices(const RowSet& rows, const std::vector<std::vector<uint32_t>>& route,
                    google::protobuf::RepeatedPtrField<v1::Slice>* slices,
                    google::protobuf::RepeatedPtrField<std::string>* payloads = nullptr) const;
  // Copies a pull's row values (one bytes field per slice AddRowSlices
  // added, in order) into rows[i].values. INTERNAL when the sizes disagree.
  absl::Status ScatterRows(const std::vector<std::vector<uint32_t>>& route,
                           const google::protobuf::RepeatedPtrField<std::string>& values,
                           RowSet* rows) const;
  // Copies pulled values (one bytes field per piece, in this encoding) into
  // *params. INTERNAL when the sizes disagree.
  absl::Status ScatterPull(const std::vector<Piece>& pieces,
                           const google::protobuf::RepeatedPtrField<std::string>& values,
                           ParameterSet* params) const;
  // The same from values packed one piece after another at `packed`.
  absl::Status ScatterPull(const std::vector<Piece>& pieces, const char* packed,
                           ParameterSet* params) const;

 private:
  absl::Status Scatter(const std::vector<Piece>& pieces,
                       const std::vector<absl::string_view>& values, ParameterSet* params) const;
};

// The PS in this process: calls the given shards directly (no network).
class LocalPsClient : public PsClient {
 public:
  // `shards` (one per configured server) must outlive the client.
  LocalPsClient(const JobConfig& config, uint32_t rank, std::vector<Shard*> shards);

  absl::StatusOr<int64_t> Connect(int64_t resume_clock = 0) override;
  absl::StatusOr<int64_t> PullDense(int64_t clock, ParameterSet* params) override;
  absl::Status PushDense(int64_t clock, const ParameterSet& grads) override;
  absl::StatusOr<int64_t> PullRows(int64_t clock, RowSet* rows) override;
  absl::Status PushRows(int64_t clock, const RowSet& grads) override;
  absl::Status Finish() override;
  absl::StatusOr<uint32_t> WorkersFinished() override;

 private:
  // Sends `request` to shard s as a pull and waits (bounded) for it.
  absl::Status PullFrom(size_t s, const v1::PullRequest& request, v1::PullResponse* response);

  const JobConfig config_;
  const uint32_t rank_;
  const std::vector<Shard*> shards_;
  const ShardRequests requests_;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_PS_CLIENT_H_
