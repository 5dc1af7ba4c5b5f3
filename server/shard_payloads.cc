// Shard's payloads: a request's slices resolved against the tables and a
// worker's shared memory, each slice's values as they travel
// (common/codec.h), read out of the tables into messages or shared memory, delta pulls
// against what a worker holds, a push's gradients decoded and checked, and
// the bytes counted both ways. Part of Shard (server/shard.h); the locking
// rules are that header's.
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/codec.h"
#include "common/status.h"
#include "common/wire.h"
#include "server/shard.h"

namespace tessera {

absl::StatusOr<Shard::SharedRange> Shard::Shared(uint32_t worker, const v1::SharedPayload& at,
                                                 uint64_t bytes) const {
  SharedRange range;
  {
    const WorkerMemory& memory = workers_[worker]->memory;
    absl::MutexLock lock(&memory.mu);
    range.segment = memory.segment;
  }
  if (range.segment == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("worker ", worker, " names shared memory, but none is mapped on shard ",
                     index_, " for it; register with a segment, or send the bytes in the message"));
  }
  TESSERA_RETURN_IF_ERROR(range.segment->Bytes(at.offset(), bytes).status());
  range.offset = at.offset();
  range.bytes = bytes;
  return range;
}

absl::StatusOr<Shard::Resolved> Shard::Resolve(const v1::Slice& slice) const {
  auto it = tables_.find(slice.table());
  if (it == tables_.end()) {
    std::vector<std::string> names;
    for (const auto& layout : layout_) names.push_back(layout.name());
    // A client's string is echoed only in part: an error must fit gRPC's metadata.
    constexpr size_t kEcho = 64;
    const std::string shown = slice.table().size() <= kEcho
                                  ? slice.table()
                                  : absl::StrCat(slice.table().substr(0, kEcho), "... (",
                                                 slice.table().size(), " bytes)");
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown table '", shown, "'; this job's tables are: ", absl::StrJoin(names, ", ")));
  }
  Resolved r = it->second;
  TESSERA_ASSIGN_OR_RETURN(r.codec, FindCodec(slice.codec()));
  if (r.codec->width() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "table '", slice.table(), "': slice codec ", v1::Codec_Name(slice.codec()),
        " is not one values can be answered or packed in: expected FLOAT32, BFLOAT16 or "
        "FLOAT16"));
  }
  if (!(slice.delta_ratio() >= 0 && slice.delta_ratio() <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "table '", slice.table(), "': delta_ratio ", slice.delta_ratio(), " is not in [0, 1]"));
  }
  r.delta_ratio = slice.delta_ratio();
  r.delta_base = slice.delta_base();
  if (r.delta_ratio > 0 && !r.dense) {
    return absl::InvalidArgumentError(
        absl::StrCat("table '", slice.table(), "' is sparse: rows are not delta-pulled"));
  }
  if (r.dense) {
    DenseRange range = r.dense->range();
    if (!slice.keys().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("table '", slice.table(), "' is dense: send offset and length, not keys"));
    }
    if (!range.Contains(slice.offset(), slice.length())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "table '", slice.table(), "': [", slice.offset(), ", +", slice.length(),
          ") is outside shard ", index_, "'s range [", range.begin, ", ", range.end, ")"));
    }
    r.offset = slice.offset();
    r.count = slice.length();
    return r;
  }
  if (slice.keys().size() % sizeof(uint64_t) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("table '", slice.table(), "': keys hold ",
                                                   slice.keys().size(),
                                                   " bytes, not a whole number of uint64"));
  }
  if (slice.offset() != 0 || slice.length() != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("table '", slice.table(), "' is sparse: send keys, not offset/length"));
  }
  r.keys = KeyView(slice.keys());
  const uint32_t num_shards = config_.num_servers();
  for (size_t i = 0; i < r.keys.size(); ++i) {
    if (i > 0 && r.keys[i] <= r.keys[i - 1]) {
      return absl::InvalidArgumentError(absl::StrCat("table '", slice.table(),
                                                     "': keys must be sorted and unique (key ",
                                                     r.keys[i], " at position ", i, ")"));
    }
    if (num_shards > 1 && SparseShardOf(r.keys[i], num_shards) != index_) {
      return absl::OutOfRangeError(
          absl::StrCat("table '", slice.table(), "': key ", r.keys[i], " lives on shard ",
                       SparseShardOf(r.keys[i], num_shards), ", not shard ", index_));
    }
  }
  r.count = r.keys.size() * static_cast<uint64_t>(r.sparse->dim());
  return r;
}

absl::Status Shard::ResolveAll(const google::protobuf::RepeatedPtrField<v1::Slice>& slices,
                               std::vector<Resolved>* out) const {
  out->reserve(slices.size());
  for (const auto& slice : slices) {
    TESSERA_ASSIGN_OR_RETURN(Resolved r, Resolve(slice));
    out->push_back(r);
  }
  return absl::OkStatus();
}

absl::Status Shard::CheckReplySize(const std::vector<Resolved>& slices) const {
  const uint64_t bytes = PayloadBytes(slices);
  if (bytes + 1024 > static_cast<uint64_t>(config_.server.max_message_bytes)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("pull would return ", bytes, " bytes, over server.max_message_bytes (",
                     config_.server.max_message_bytes, "); split it into smaller pulls"));
  }
  return absl::OkStatus();
}

void Shard::NotePulled(const std::vector<Resolved>& slices,
                       const google::protobuf::RepeatedPtrField<v1::Payload>* values) {
  const int first = values != nullptr ? values->size() - static_cast<int>(slices.size()) : 0;
  for (size_t i = 0; i < slices.size(); ++i) {
    const Resolved& r = slices[i];
    Traffic& t = traffic_[r.index];
    const uint64_t bytes = values != nullptr
                               ? tessera::PayloadBytes((*values)[first + static_cast<int>(i)])
                               : r.count * r.codec->width();
    t.pull_bytes.fetch_add(bytes, std::memory_order_relaxed);
    t.pull_raw_bytes.fetch_add(r.count * sizeof(float), std::memory_order_relaxed);
  }
}

std::shared_ptr<Shard::DeltaAnswer> Shard::LastDeltaAnswer(std::pair<uint32_t, uint64_t> slice) {
  {
    absl::ReaderMutexLock lock(&delta_answers_mu_);
    auto it = delta_answers_.find(slice);
    if (it != delta_answers_.end()) return it->second;
  }
  absl::MutexLock lock(&delta_answers_mu_);
  if (!delta_answers_.contains(slice) && delta_answers_.size() >= kMaxMirrors) {
    delta_answers_.clear();
  }
  std::shared_ptr<DeltaAnswer>& entry = delta_answers_[slice];
  if (entry == nullptr) entry = std::make_shared<DeltaAnswer>();
  return entry;
}

void Shard::AnswerDelta(uint32_t worker, const Resolved& r, v1::Payload* out) {
  const std::pair<uint32_t, uint64_t> key(r.index, r.offset);
  const std::shared_ptr<DeltaAnswer> last = LastDeltaAnswer(key);
  absl::MutexLock answer_lock(&last->mu);
  PullMirror& mirror = workers_[worker]->mirror;
  absl::MutexLock lock(&mirror.mu);
  if (!mirror.held.contains(key) && mirror.held.size() >= kMaxMirrors) mirror.held.clear();
  PullMirror::Held& held = mirror.held[key];
  const bool from_held =
      held.version != 0 && held.version == r.delta_base && held.values.size() == r.count;
  const uint64_t base = from_held ? held.version : 0;
  if (last->writes && last->base == base && last->count == r.count &&
      last->codec == r.codec->id() && last->ratio == r.delta_ratio &&
      r.dense->QuietWrites() == last->writes) {
    *out = last->payload;  // another worker's answer from this version, these values
  } else {
    thread_local std::vector<float> now;
    now.resize(r.count);
    last->writes = r.dense->CopyValuesAt(r.offset, absl::MakeSpan(now));
    if (from_held) {
      // The change the worker has not seen; what is not sent now stays in
      // it. Its values travel in the slice's codec (float32 unless the
      // worker asked for half width).
      for (size_t i = 0; i < r.count; ++i) now[i] -= held.values[i];
      MakeCodec(CodecKind::kTopk, r.delta_ratio, r.codec->id())->Encode(now, out);
      out->set_delta(true);
    } else {
      r.codec->Encode(now, out);
    }
    out->set_version(version_base_ | (versions_.fetch_add(1, std::memory_order_relaxed) + 1));
    last->base = base;
    last->count = r.count;
    last->codec = r.codec->id();
    last->ratio = r.delta_ratio;
    last->payload = *out;
  }
  // What the worker holds now: the change added where it goes, as decoded
  // (as the worker adds it), or the whole slice as decoded.
  if (from_held) {
    thread_local std::vector<uint32_t> at;
    thread_local std::vector<float> change;
    (void)DecodeTopk(*out, r.count, &at, &change);  // encoded here: they fit
    for (size_t j = 0; j < at.size(); ++j) held.values[at[j]] += change[j];
  } else {
    held.values.resize(r.count);
    (void)r.codec->Decode(*out, absl::MakeSpan(held.values));
  }
  held.version = out->version();
}

void Shard::NotePushed(const std::vector<Resolved>& slices, const std::vector<uint64_t>& bytes) {
  for (size_t i = 0; i < slices.size(); ++i) {
    Traffic& t = traffic_[slices[i].index];
    t.push_bytes.fetch_add(bytes[i], std::memory_order_relaxed);
    t.push_raw_bytes.fetch_add(slices[i].count * sizeof(float), std::memory_order_relaxed);
  }
}

uint64_t Shard::PayloadBytes(const std::vector<Resolved>& slices) {
  uint64_t bytes = 0;
  for (const Resolved& r : slices) bytes += r.count * r.codec->width();
  return bytes;
}

absl::Status Shard::ReadSlicesToShared(const std::vector<Resolved>& slices, bool create_rows,
                                       const SharedRange& range) {
  // Staged in this thread's buffer: the tables' locks are never held while
  // touching memory the worker could take away. Kept between calls up to
  // 64 MiB (first-touching fresh pages costs more than the copy).
  thread_local std::vector<char> staging;
  staging.resize(range.bytes);
  ReadSlicesTo(slices, create_rows, staging.data());
  absl::Status copied = range.segment->CopyIn(range.offset, staging.data(), range.bytes);
  if (staging.size() > (size_t{64} << 20)) std::vector<char>().swap(staging);
  return copied;
}

void Shard::ReadSlicesTo(const std::vector<Resolved>& slices, bool create_rows, char* out) {
  for (const Resolved& r : slices) {
    if (r.dense) {
      r.dense->CopyBytes(r.offset, r.count, *r.codec, out);
    } else if (r.codec->id() == v1::FLOAT32) {
      r.sparse->Read(r.keys, absl::Span<float>(reinterpret_cast<float*>(out), r.count),
                     create_rows);
    } else {
      std::vector<float> rows(r.count);
      r.sparse->Read(r.keys, absl::MakeSpan(rows), create_rows);
      r.codec->EncodeTo(rows, out);
    }
    out += r.count * r.codec->width();
  }
}

void Shard::ReadSlices(uint32_t worker, const std::vector<Resolved>& slices, bool create_rows,
                       google::protobuf::RepeatedPtrField<v1::Payload>* values) {
  for (const Resolved& r : slices) {
    v1::Payload* payload = values->Add();
    if (r.delta_ratio > 0) {
      AnswerDelta(worker, r, payload);
      continue;
    }
    payload->set_codec(r.codec->id());
    std::string* bytes = payload->mutable_values();
    if (r.dense) {
      r.dense->AppendBytes(r.offset, r.count, *r.codec, bytes);
      continue;
    }
    bytes->resize(r.count * r.codec->width());
    if (r.codec->id() == v1::FLOAT32) {
      r.sparse->Read(r.keys, absl::Span<float>(reinterpret_cast<float*>(bytes->data()), r.count),
                     create_rows);
    } else {
      std::vector<float> rows(r.count);
      r.sparse->Read(r.keys, absl::MakeSpan(rows), create_rows);
      r.codec->EncodeTo(rows, bytes->data());
    }
  }
}

absl::Status Shard::DecodeGradients(const v1::PushRequest& request,
                                    const std::vector<Resolved>& slices, std::string* shared_copy,
                                    std::vector<std::vector<float>>* decoded,
                                    std::vector<absl::Span<const float>>* grads,
                                    std::vector<float>* max_abs,
                                    std::vector<uint64_t>* bytes) const {
  decoded->resize(slices.size());
  bytes->assign(slices.size(), 0);
  // Packed in shared memory (each slice in its fixed-width codec), or one
  // payload per slice in the message.
  const char* packed = nullptr;
  if (request.has_gradients_shared()) {
    if (request.gradients_size() != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("push has its gradients in shared memory and also ",
                       request.gradients_size(), " gradient payloads in the message"));
    }
    TESSERA_ASSIGN_OR_RETURN(
        SharedRange range,
        Shared(request.worker_rank(), request.gradients_shared(), PayloadBytes(slices)));
    shared_copy->resize(range.bytes);
    TESSERA_RETURN_IF_ERROR(range.segment->CopyOut(range.offset, shared_copy->data(), range.bytes));
    packed = shared_copy->data();
  } else if (request.gradients_size() != request.slices_size()) {
    return absl::InvalidArgumentError(absl::StrCat("push has ", request.slices_size(),
                                                   " slices but ", request.gradients_size(),
                                                   " gradient payloads"));
  }
  for (size_t i = 0; i < slices.size(); ++i) {
    const Resolved& r = slices[i];
    std::vector<float>& out = (*decoded)[i];
    if (packed != nullptr) {
      (*bytes)[i] = r.count * r.codec->width();
      if (r.codec->id() == v1::FLOAT32) {
        grads->push_back(FloatView(absl::string_view(packed, (*bytes)[i])));
      } else {
        out.resize(r.count);
        r.codec->DecodeFrom(packed, absl::MakeSpan(out));
        grads->push_back(out);
      }
      packed += (*bytes)[i];
    } else {
      const v1::Payload& payload = request.gradients(static_cast<int>(i));
      TESSERA_ASSIGN_OR_RETURN(const Codec* codec, FindCodec(payload.codec()));
      (*bytes)[i] = tessera::PayloadBytes(payload);
      absl::Status decoded_ok;
      if (codec->id() == v1::FLOAT32) {
        // Viewed in place: float32 needs no copy.
        absl::StatusOr<absl::Span<const float>> view = ViewFloat32(payload, r.count);
        decoded_ok = view.status();
        if (view.ok()) grads->push_back(*view);
      } else {
        out.resize(r.count);
        decoded_ok = codec->Decode(payload, absl::MakeSpan(out));
        grads->push_back(out);
      }
      if (!decoded_ok.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("table '", request.slices(i).table(),
                                                       "': gradient ", decoded_ok.message()));
      }
    }
    max_abs->push_back(MaxAbs(grads->back()));
    if (config_.server.reject_nonfinite) {
      if (!std::isfinite(max_abs->back())) {
        return absl::InvalidArgumentError(
            absl::StrCat("table '", request.slices(i).table(),
                         "': gradient holds NaN or Inf (server.reject_nonfinite is on)"));
      }
    }
    if (const double bound = config_.server.max_gradient_abs;
        bound > 0 && !(max_abs->back() <= bound)) {
      const absl::Span<const float> g = grads->back();
      for (size_t j = 0; j < g.size(); ++j) {
        if (!(std::fabs(g[j]) <= bound)) {
          return absl::InvalidArgumentError(absl::StrCat(
              "table '", request.slices(i).table(), "': gradient ", g[j], " at position ", j,
              " exceeds server.max_gradient_abs (", bound, "); refused, nothing changed"));
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace tessera
