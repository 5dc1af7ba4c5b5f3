#include "worker/shard_requests.h"

#include <algorithm>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/partition.h"
#include "common/secret.h"
#include "common/status.h"
#include "common/wire.h"

namespace tessera {

ShardRequests ShardRequests::ForDense(const JobConfig& config, uint32_t split,
                                      uint64_t split_bytes) {
  ShardRequests r;
  r.bf16 = config.worker.wire_precision == WirePrecision::kBf16;
  const uint32_t num_shards = config.num_servers();
  r.pieces.resize(num_shards);
  const auto tables = config.Tables();
  for (size_t t = 0; t < tables.size(); ++t) {
    r.table_names.push_back(tables[t].name);
    r.dense_sizes.push_back(tables[t].kind == TableKind::kDense ? tables[t].size : 0);
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
                              v1::PullRequest* request) const {
  request->set_worker_rank(worker);
  request->set_session(session);
  request->set_clock(clock);
  request->set_encoding(bf16 ? v1::BFLOAT16 : v1::FLOAT32);
  for (const auto& p : pieces) FillSlice(p, request->add_slices());
}

void ShardRequests::BuildPush(const std::vector<Piece>& pieces, uint32_t worker, int64_t clock,
                              const ParameterSet& grads, bool advance, uint32_t piece,
                              v1::PushRequest* request, const SharedTarget* shared) const {
  request->set_worker_rank(worker);
  request->set_session(session);
  request->set_clock(clock);
  request->set_advance_clock(advance);
  request->set_piece(piece);
  request->set_encoding(bf16 ? v1::BFLOAT16 : v1::FLOAT32);
  if (shared != nullptr) request->mutable_gradients_shared()->set_offset(shared->offset);
  char* out = shared != nullptr ? shared->data : nullptr;
  for (const auto& p : pieces) {
    FillSlice(p, request->add_slices());
    const auto values = absl::MakeConstSpan(grads[p.table].data() + p.offset, p.length);
    if (out != nullptr && bf16) {
      EncodeBfloat16(values, out);
      out += values.size() * sizeof(uint16_t);
    } else if (out != nullptr) {
      std::memcpy(out, values.data(), values.size() * sizeof(float));
      out += values.size() * sizeof(float);
    } else if (bf16) {
      AppendBfloat16(values, request->add_gradients());
    } else {
      EncodeFloats(values, request->add_gradients());
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
  std::vector<absl::string_view> views;
  for (const auto& p : pieces) {
    views.emplace_back(packed, p.length * value_bytes());
    packed += views.back().size();
  }
  return Scatter(pieces, views, params);
}

absl::Status ShardRequests::ScatterPull(
    const std::vector<Piece>& pieces, const google::protobuf::RepeatedPtrField<std::string>& values,
    ParameterSet* params) const {
  if (values.size() != static_cast<int>(pieces.size())) {
    return absl::InternalError(
        absl::StrCat("pull answered ", values.size(), " slices, asked for ", pieces.size()));
  }
  return Scatter(pieces, std::vector<absl::string_view>(values.begin(), values.end()), params);
}

absl::Status ShardRequests::Scatter(const std::vector<Piece>& pieces,
                                    const std::vector<absl::string_view>& values,
                                    ParameterSet* params) const {
  for (size_t i = 0; i < pieces.size(); ++i) {
    const auto& p = pieces[i];
    const absl::string_view bytes = values[i];
    if (bytes.size() != p.length * value_bytes()) {
      return absl::InternalError(absl::StrCat("pull slice ", i, " holds ", bytes.size(),
                                              " bytes, expected ", p.length * value_bytes()));
    }
    float* out = (*params)[p.table].data() + p.offset;
    if (bf16) {
      DecodeBfloat16(bytes, out);
    } else {
      std::memcpy(out, bytes.data(), bytes.size());
    }
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
                                 google::protobuf::RepeatedPtrField<std::string>* payloads) const {
  std::vector<float> values;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (route[i].empty()) continue;
    const SparseRows& r = rows[i];
    v1::Slice* slice = slices->Add();
    slice->set_table(table_names[r.table]);
    // Keys and float32 values are written straight into the message's bytes.
    std::string* keys = slice->mutable_keys();
    keys->resize(route[i].size() * sizeof(uint64_t));
    char* at = keys->data();
    for (uint32_t k : route[i]) {
      std::memcpy(at, &r.keys[k], sizeof(uint64_t));
      at += sizeof(uint64_t);
    }
    if (payloads == nullptr) continue;
    const size_t row_bytes = size_t{r.dim} * sizeof(float);
    std::string* bytes = payloads->Add();
    if (!bf16) {
      bytes->resize(route[i].size() * row_bytes);
      at = bytes->data();
      for (uint32_t k : route[i]) {
        std::memcpy(at, r.values.data() + size_t{k} * r.dim, row_bytes);
        at += row_bytes;
      }
      continue;
    }
    values.resize(route[i].size() * size_t{r.dim});
    for (size_t j = 0; j < route[i].size(); ++j) {
      std::copy_n(r.values.data() + size_t{route[i][j]} * r.dim, r.dim, values.data() + j * r.dim);
    }
    AppendBfloat16(values, bytes);
  }
}

absl::Status ShardRequests::ScatterRows(
    const std::vector<std::vector<uint32_t>>& route,
    const google::protobuf::RepeatedPtrField<std::string>& values, RowSet* rows) const {
  int slice = 0;
  std::vector<float> decoded;
  for (size_t i = 0; i < rows->size(); ++i) {
    if (route[i].empty()) continue;
    SparseRows& r = (*rows)[i];
    r.values.resize(r.keys.size() * size_t{r.dim});
    const size_t floats = route[i].size() * size_t{r.dim};
    if (slice >= values.size() || values[slice].size() != floats * value_bytes()) {
      return absl::InternalError(absl::StrCat("row pull of table '", table_names[r.table],
                                              "' answered ",
                                              slice < values.size() ? values[slice].size() : 0,
                                              " bytes, expected ", floats * value_bytes()));
    }
    const float* in;
    if (bf16) {
      decoded.resize(floats);
      DecodeBfloat16(values[slice], decoded.data());
      in = decoded.data();
    } else {
      in = reinterpret_cast<const float*>(values[slice].data());
    }
    for (size_t j = 0; j < route[i].size(); ++j) {
      std::copy_n(in + j * r.dim, r.dim, r.values.data() + size_t{route[i][j]} * r.dim);
    }
    ++slice;
  }
  return absl::OkStatus();
}

}  // namespace tessera
