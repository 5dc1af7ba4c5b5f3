// ShardRequests: how a worker's calls are cut into per-shard requests —
// which pieces of each dense table every shard owns, the pull and push
// requests built from them (fp32 or bf16 on the wire, shared memory where
// it applies), and sparse rows routed to the shards that own their keys.
// Shared by both PsClient implementations, so that they split tables
// identically.
//
// Threading: const after construction; any thread may build requests.
#ifndef TESSERA_WORKER_SHARD_REQUESTS_H_
#define TESSERA_WORKER_SHARD_REQUESTS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/config.h"
#include "proto/tessera.pb.h"
#include "worker/parameter_set.h"
#include "worker/ps_client.h"

namespace tessera {

// The requests one call sends, per shard.
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

  // A plan request of `worker` for `epoch`, reporting its compute rate.
  void BuildPlan(uint32_t worker, int64_t epoch, double examples_per_second,
                 v1::PlanRequest* request) const;
  // The shares a plan answer gives, by rank.
  static std::vector<uint32_t> SharesOf(const v1::PlanResponse& response);
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
                 const ParameterSet& grads, bool advance, uint32_t piece, v1::PushRequest* request,
                 const SharedTarget* shared = nullptr) const;
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

}  // namespace tessera

#endif  // TESSERA_WORKER_SHARD_REQUESTS_H_
