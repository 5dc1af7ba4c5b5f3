#include "worker/shard_requests.h"

#include <algorithm>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/partition.h"
#include "common/secret.h"
#include "common/status.h"
#include "common/codec.h"
#include "common/wire.h"

namespace tessera {

ShardRequests ShardRequests::ForDense(const JobConfig& config, uint32_t split,
                                      uint64_t split_bytes) {
  ShardRequests r;
  const uint32_t num_shards = config.num_servers();
  r.pieces.resize(num_shards);
  const auto tables = config.Tables();
  for (size_t t = 0; t < tables.size(); ++t) {
    r.table_names.push_back(tables[t].name);
    r.dense_sizes.push_back(tables[t].kind == TableKind::kDense ? tables[t].size : 0);
  }
  if (config.worker.bsp_parts > 1) {
    for (uint32_t s = 0; s < num_shards; ++s) {
      r.parts.push_back(BspParts(r.dense_sizes, s, num_shards, config.worker.bsp_parts));
      for (const auto& part : r.parts.back()) {
        r.pieces[s].insert(r.pieces[s].end(), part.begin(), part.end());
      }
    }
  }
  for (size_t t = 0; t < tables.size() && r.parts.empty(); ++t) {
    if (tables[t].kind != TableKind::kDense) continue;
    for (uint32_t s = 0; s < num_shards; ++s) {
      DenseRange range = DenseShardRange(tables[t].size, s, num_shards);
      if (range.size() == 0) continue;
      const uint64_t n = range.size() * sizeof(float) > split_bytes ? split : 1;
      for (uint64_t k = 0; k < n; ++k) {
        uint64_t lo = range.begin + range.size() * k / n;
        uint64_t hi = range.begin + range.size() * (k + 1) / n;
        if (hi > lo) r.pieces[s].push_back({t, lo, hi - lo});
      }
    }
  }
  r.encoder =
      std::make_shared<WireCodecs>(config.worker.compression, r.table_names, r.dense_sizes);
  for (const auto& shard : r.pieces) {
    for (const Piece& p : shard) r.encoder->AddPiece(p.table, p.offset, p.length);
  }
  return r;
}

void ShardRequests::ShapeParameters(ParameterSet* params) const {
  params->resize(dense_sizes.size());
  for (size_t t = 0; t < dense_sizes.size(); ++t) (*params)[t].resize(dense_sizes[t]);
}

void ShardRequests::FillSlice(const Piece& piece, v1::Slice* slice) const {
  slice->set_table(table_names[piece.table]);
  slice->set_offset(piece.offset);
  slice->set_length(piece.length);
}

std::string ShardRequests::NewSession() {
  absl::StatusOr<std::string> bytes = RandomBytes(16);
  if (bytes.ok() && bytes->find_first_not_of('\0') != std::string::npos) return *bytes;
  // getrandom failed (it does not on Linux >= 3.17): the C++ library's
  // device, still unique per process.
  std::random_device device;
  std::string fallback(16, '\0');
  for (char& c : fallback) c = static_cast<char>(device());
  fallback[0] |= 1;
  return fallback;
}

void ShardRequests::BuildPlan(uint32_t worker, int64_t epoch, double examples_per_second,
                              v1::PlanRequest* request) const {
  request->set_worker_rank(worker);
  request->set_session(session);
  request->set_epoch(epoch);
  request->set_examples_per_second(examples_per_second);
}

std::vector<uint32_t> ShardRequests::SharesOf(const v1::PlanResponse& response) {
  return std::vector<uint32_t>(response.shares().begin(), response.shares().end());
}

void ShardRequests::BuildPull(const std::vector<Piece>& pieces, uint32_t worker, int64_t clock,
                              v1::PullRequest* request, bool shared) const {
  request->set_worker_rank(worker);
  request->set_session(session);
  request->set_clock(clock);
  for (const auto& p : pieces) {
    v1::Slice* slice = request->add_slices();
    FillSlice(p, slice);
    encoder->SetPull(clock, p.table, slice, shared);
  }
}

void ShardRequests::BuildPush(const std::vector<Piece>& pieces, uint32_t worker, int64_t clock,
                              const ParameterSet& grads, bool advance, uint32_t piece,
                              v1::PushRequest* request, const SharedTarget* shared) const {
  request->set_worker_rank(worker);
  request->set_session(session);
  request->set_clock(clock);
  request->set_advance_clock(advance);
  request->set_piece(piece);
  if (shared != nullptr) request->mutable_gradients_shared()->set_offset(shared->offset);
  char* out = shared != nullptr ? shared->data : nullptr;
  for (const auto& p : pieces) {
    FillSlice(p, request->add_slices());
    const auto values = absl::MakeConstSpan(grads[p.table].data() + p.offset, p.length);
    if (out != nullptr) {
      std::memcpy(out, values.data(), values.size() * sizeof(float));
      out += values.size() * sizeof(float);
      encoder->Count(/*push=*/true, values.size() * sizeof(float), values.size());
    } else {
      v1::Payload* payload = request->add_gradients();
      encoder->Encode(clock, p.table, p.offset, values, payload);
      encoder->Count(/*push=*/true, PayloadBytes(*payload), values.size());
    }
  }
}

uint64_t ShardRequests::MaxBytes(const std::vector<Piece>& pieces) {
  uint64_t bytes = 0;
  for (const auto& p : pieces) bytes += p.length * sizeof(float);
  return bytes;
}

absl::Status ShardRequests::ScatterPull(const std::vector<Piece>& pieces, const char* packed,
                                        ParameterSet* params) const {
  for (const auto& p : pieces) {
    std::memcpy((*params)[p.table].data() + p.offset, packed, p.length * sizeof(float));
    packed += p.length * sizeof(float);
    encoder->Count(/*push=*/false, p.length * sizeof(float), p.length);
  }
  return absl::OkStatus();
}

absl::Status ShardRequests::ScatterPull(
    const std::vector<Piece>& pieces,
    const google::protobuf::RepeatedPtrField<v1::Payload>& values, ParameterSet* params) const {
  if (values.size() != static_cast<int>(pieces.size())) {
    return absl::InternalError(
        absl::StrCat("pull answered ", values.size(), " slices, asked for ", pieces.size()));
  }
  for (size_t i = 0; i < pieces.size(); ++i) {
    const auto& p = pieces[i];
    const v1::Payload& payload = values[static_cast<int>(i)];
    absl::Status s = encoder->Receive(p.table, p.offset, payload,
                                      absl::MakeSpan((*params)[p.table].data() + p.offset, p.length));
    if (!s.ok()) {
      return absl::InternalError(absl::StrCat("pull slice ", i, " of table '",
                                              table_names[p.table], "': ", s.message()));
    }
    encoder->Count(/*push=*/false, PayloadBytes(payload), p.length);
  }
  return absl::OkStatus();
}

ShardRequests::RowRoute ShardRequests::RouteRows(const RowSet& rows, uint32_t num_shards) {
  RowRoute route(num_shards, std::vector<std::vector<uint32_t>>(rows.size()));
  std::vector<std::vector<std::pair<uint64_t, uint32_t>>> by_shard(num_shards);
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::vector<uint64_t>& keys = rows[i].keys;
    if (i > 0 && keys == rows[i - 1].keys) {
      // A ctr model's tables share the batch's keys: route them once.
      for (auto& shard : route) shard[i] = shard[i - 1];
      continue;
    }
    for (auto& pairs : by_shard) pairs.clear();
    for (uint32_t k = 0; k < keys.size(); ++k) {
      by_shard[SparseShardOf(keys[k], num_shards)].emplace_back(keys[k], k);
    }
    for (uint32_t s = 0; s < num_shards; ++s) {
      // Sorting (key, position) pairs reads no key through an index.
      std::sort(by_shard[s].begin(), by_shard[s].end());
      route[s][i].reserve(by_shard[s].size());
      for (const auto& [key, k] : by_shard[s]) route[s][i].push_back(k);
    }
  }
  return route;
}

void ShardRequests::AddRowSlices(const RowSet& rows,
                                 const std::vector<std::vector<uint32_t>>& route,
                                 google::protobuf::RepeatedPtrField<v1::Slice>* slices,
                                 google::protobuf::RepeatedPtrField<v1::Payload>* payloads) const {
  std::vector<float> values;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (route[i].empty()) continue;
    const SparseRows& r = rows[i];
    v1::Slice* slice = slices->Add();
    slice->set_table(table_names[r.table]);
    slice->set_codec(encoder->RowCodec(r.table, /*push=*/false).id());
    // Keys are written straight into the message's bytes.
    std::string* keys = slice->mutable_keys();
    keys->resize(route[i].size() * sizeof(uint64_t));
    char* at = keys->data();
    for (uint32_t k : route[i]) {
      std::memcpy(at, &r.keys[k], sizeof(uint64_t));
      at += sizeof(uint64_t);
    }
    if (payloads == nullptr) continue;
    const Codec& codec = encoder->RowCodec(r.table, /*push=*/true);
    v1::Payload* payload = payloads->Add();
    payload->set_codec(codec.id());
    std::string* bytes = payload->mutable_values();
    bytes->resize(route[i].size() * size_t{r.dim} * codec.width());
    at = bytes->data();
    for (uint32_t k : route[i]) {
      codec.EncodeTo(absl::MakeConstSpan(r.values.data() + size_t{k} * r.dim, r.dim), at);
      at += size_t{r.dim} * codec.width();
    }
    encoder->Count(/*push=*/true, bytes->size(), route[i].size() * size_t{r.dim});
  }
}

absl::Status ShardRequests::ScatterRows(
    const std::vector<std::vector<uint32_t>>& route,
    const google::protobuf::RepeatedPtrField<v1::Payload>& values, RowSet* rows) const {
  int slice = 0;
  std::vector<float> decoded;
  for (size_t i = 0; i < rows->size(); ++i) {
    if (route[i].empty()) continue;
    SparseRows& r = (*rows)[i];
    r.values.resize(r.keys.size() * size_t{r.dim});
    const size_t floats = route[i].size() * size_t{r.dim};
    decoded.resize(floats);
    absl::Status s = slice < values.size()
                         ? absl::OkStatus()
                         : absl::InternalError(absl::StrCat("no payload for slice ", slice));
    absl::StatusOr<const Codec*> codec =
        s.ok() ? FindCodec(values[slice].codec()) : absl::StatusOr<const Codec*>(s);
    if (s.ok()) s = codec.status();
    if (s.ok()) s = (*codec)->Decode(values[slice], absl::MakeSpan(decoded));
    if (!s.ok()) {
      return absl::InternalError(absl::StrCat("row pull of table '", table_names[r.table],
                                              "': ", s.message()));
    }
    encoder->Count(/*push=*/false, PayloadBytes(values[slice]), floats);
    for (size_t j = 0; j < route[i].size(); ++j) {
      std::copy_n(decoded.data() + j * r.dim, r.dim,
                  r.values.data() + size_t{route[i][j]} * r.dim);
    }
    ++slice;
  }
  return absl::OkStatus();
}

}  // namespace tessera
