// ShardRequests: how a worker's calls are cut into per-shard requests —
// which pieces of each dense table every shard owns, the pull and push
// requests built from them (each table's values in its codec on the wire,
// float32 through shared memory), and sparse rows routed to the shards that
// own their keys.
// Used by ShardedPsClient (worker/sharded_ps_client.h), whichever transport
// carries the calls.
//
// Threading: const after construction; any thread may build pulls, plans
// and row requests. BuildPush encodes through the client's WireCodecs,
// whose residual only the client's calling thread touches.
#ifndef TESSERA_WORKER_SHARD_REQUESTS_H_
#define TESSERA_WORKER_SHARD_REQUESTS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/config.h"
#include "common/partition.h"
#include "proto/tessera.pb.h"
#include "worker/parameter_set.h"
#include "worker/ps_client.h"
#include "worker/wire_codecs.h"

namespace tessera {

// The requests one call sends, per shard.
struct ShardRequests {
  // pieces[s]: the dense (table index, offset, length) pieces shard s owns.
  using Piece = DensePiece;
  std::vector<std::vector<Piece>> pieces;
  // worker.bsp_parts > 1: parts[s][k], part k + 1 of shard s's pieces
  // (common/partition.h BspParts, the same cut the shard makes); pieces[s]
  // then holds them in that order. Empty otherwise.
  std::vector<std::vector<std::vector<Piece>>> parts;
  // By table index (JobConfig::Tables() order), computed once.
  std::vector<std::string> table_names;
  std::vector<uint64_t> dense_sizes;  // 0 for sparse tables
  // worker.compression: each table's codecs, and the push residual. Shared
  // by copies of this object (one client, one encoder).
  std::shared_ptr<WireCodecs> encoder;
  // This worker process's registration secret (RegisterRequest.session),
  // carried by every request built here.
  std::string session = NewSession();

  // 16 random bytes, drawn once per client.
  static std::string NewSession();

  // Splits every dense table of `config` over its shards; a shard's share of
  // a table larger than split_bytes is cut into `split` pieces, so that large
  // transfers can travel on several channels at once. With worker.bsp_parts
  // > 1 the pieces are the parts' instead.
  static ShardRequests ForDense(const JobConfig& config, uint32_t split, uint64_t split_bytes);

  // A plan request of `worker` for `epoch`, reporting its compute rate.
  void BuildPlan(uint32_t worker, int64_t epoch, double examples_per_second,
                 v1::PlanRequest* request) const;
  // The shares a plan answer gives, by rank.
  static std::vector<uint32_t> SharesOf(const v1::PlanResponse& response);
  // Fills `request` with `pieces` (some of this->pieces), for `worker` at
  // `clock`, each answered in its table's pull codec (float32 when
  // `shared`: the answer goes to shared memory).
  void BuildPull(const std::vector<Piece>& pieces, uint32_t worker, int64_t clock,
                 v1::PullRequest* request, bool shared = false) const;
  // With `shared`, the gradients are written packed at shared->data and the
  // request names shared->offset instead of carrying them.
  struct SharedTarget {
    char* data;
    uint64_t offset;
  };
  // `piece`: which of this clock's requests to the shard this is, from 1 (the
  // shard applies each piece once, so a retried one is not applied twice).
  // Without `shared`, each piece travels in its table's push codec (the
  // encoder's error feedback applies).
  void BuildPush(const std::vector<Piece>& pieces, uint32_t worker, int64_t clock,
                 const ParameterSet& grads, bool advance, uint32_t piece, v1::PushRequest* request,
                 const SharedTarget* shared = nullptr) const;
  // Sizes *params to the dense tables.
  void ShapeParameters(ParameterSet* params) const;
  // The dense slice that `piece` names.
  void FillSlice(const Piece& piece, v1::Slice* slice) const;
  // Bytes `pieces` take packed one after another, as float32 (the most).
  static uint64_t MaxBytes(const std::vector<Piece>& pieces);

  // Sparse rows: which keys each shard owns. route[s][i] lists the positions
  // in rows[i].keys of the keys shard s owns, in increasing key order (a
  // slice's keys must be sorted).
  using RowRoute = std::vector<std::vector<std::vector<uint32_t>>>;
  static RowRoute RouteRows(const RowSet& rows, uint32_t num_shards);
  // Appends shard s's slices of `rows` to *slices (tables with no key there
  // are left out), each answered in its table's row codec; with
  // `payloads`, also each slice's values encoded so (a push's gradients).
  void AddRowSlices(const RowSet& rows, const std::vector<std::vector<uint32_t>>& route,
                    google::protobuf::RepeatedPtrField<v1::Slice>* slices,
                    google::protobuf::RepeatedPtrField<v1::Payload>* payloads = nullptr) const;
  // Copies a pull's row values (one payload per slice AddRowSlices added,
  // in order) into rows[i].values. INTERNAL when they do not fit.
  absl::Status ScatterRows(const std::vector<std::vector<uint32_t>>& route,
                           const google::protobuf::RepeatedPtrField<v1::Payload>& values,
                           RowSet* rows) const;
  // Decodes pulled values (one payload per piece) into *params. INTERNAL
  // when they do not fit.
  absl::Status ScatterPull(const std::vector<Piece>& pieces,
                           const google::protobuf::RepeatedPtrField<v1::Payload>& values,
                           ParameterSet* params) const;
  // The same from float32 values packed one piece after another at `packed`
  // (shared memory).
  absl::Status ScatterPull(const std::vector<Piece>& pieces, const char* packed,
                           ParameterSet* params) const;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_SHARD_REQUESTS_H_
