#include "worker/wire_codecs.h"

#include <algorithm>

#include "Eigen/Core"
#include "common/status.h"

namespace tessera {

WireCodecs::WireCodecs(const CompressionConfig& config,
                         const std::vector<std::string>& table_names,
                         const std::vector<uint64_t>& dense_sizes)
    : config_(config), tables_(table_names.size()) {
  for (size_t t = 0; t < table_names.size(); ++t) {
    const CodecChoice& choice = config.For(table_names[t]);
    Table& table = tables_[t];
    table.push = MakeCodec(choice.push, config.topk_ratio, CodecId(config.topk_values));
    table.delta = choice.pull == CodecKind::kTopk;
    table.pull = table.delta ? CodecId(config.topk_values) : CodecId(choice.pull);
    table.feedback = choice.push == CodecKind::kTopk || choice.push == CodecKind::kOnebit;
    if (table.feedback && dense_sizes[t] > 0) {
      table.residual.assign(dense_sizes[t], 0.0f);
      table.before.assign(dense_sizes[t], 0.0f);
    }
  }
}

void WireCodecs::AddPiece(size_t table, uint64_t offset, uint64_t length) {
  if (tables_[table].delta) held_[{table, offset}].values.resize(length);
}

void WireCodecs::SetPull(int64_t clock, size_t table, v1::Slice* slice, bool shared) const {
  if (shared) return;  // float32 into shared memory
  slice->set_codec(PullCodec(clock, table, slice->length()));
  auto it = held_.find({table, slice->offset()});
  if (!tables_[table].delta || it == held_.end() || it->second.values.size() != slice->length() ||
      Uncompressed(clock, slice->length())) {
    return;
  }
  slice->set_delta_ratio(static_cast<float>(config_.pull_topk_ratio));
  slice->set_delta_base(it->second.version);
}

absl::Status WireCodecs::Receive(size_t table, uint64_t offset, const v1::Payload& payload,
                                 absl::Span<float> out) const {
  TESSERA_ASSIGN_OR_RETURN(const Codec* codec, FindCodec(payload.codec()));
  if (payload.version() == 0) return codec->Decode(payload, out);
  auto it = held_.find({table, offset});
  if (it == held_.end() || it->second.values.size() != out.size()) {
    return absl::InvalidArgumentError("a delta answer for a piece this worker does not delta-pull");
  }
  Held& held = it->second;
  if (!payload.delta()) {
    TESSERA_RETURN_IF_ERROR(codec->Decode(payload, absl::MakeSpan(held.values)));
  } else {
    if (held.version == 0) return absl::InvalidArgumentError("a delta on values never received");
    if (payload.codec() != v1::TOPK) return absl::InvalidArgumentError("a delta that is not TOPK");
    // Checked as a decode would (sizes, positions increasing and in range),
    // then each change added where it goes.
    thread_local std::vector<uint32_t> at;
    thread_local std::vector<float> change;
    TESSERA_RETURN_IF_ERROR(DecodeTopk(payload, out.size(), &at, &change));
    for (size_t j = 0; j < at.size(); ++j) held.values[at[j]] += change[j];
  }
  held.version = payload.version();
  std::copy(held.values.begin(), held.values.end(), out.begin());
  return absl::OkStatus();
}

void WireCodecs::Count(bool push, uint64_t bytes, uint64_t values) const {
  (push ? push_bytes_ : pull_bytes_).fetch_add(bytes, std::memory_order_relaxed);
  (push ? push_raw_ : pull_raw_).fetch_add(values * sizeof(float), std::memory_order_relaxed);
}

PsClient::WireTraffic WireCodecs::traffic() const {
  PsClient::WireTraffic t;
  t.push_bytes = push_bytes_.load(std::memory_order_relaxed);
  t.push_raw_bytes = push_raw_.load(std::memory_order_relaxed);
  t.pull_bytes = pull_bytes_.load(std::memory_order_relaxed);
  t.pull_raw_bytes = pull_raw_.load(std::memory_order_relaxed);
  return t;
}

bool WireCodecs::Uncompressed(int64_t clock, uint64_t length) const {
  return clock < static_cast<int64_t>(config_.warmup_steps) ||
         length * sizeof(float) < config_.min_bytes;
}

v1::Codec WireCodecs::PullCodec(int64_t clock, size_t table, uint64_t length) const {
  return Uncompressed(clock, length) ? v1::FLOAT32 : tables_[table].pull;
}

const Codec& WireCodecs::RowCodec(size_t table, bool push) const {
  const v1::Codec id = push ? tables_[table].push->id() : tables_[table].pull;
  const Codec& codec = CodecOf(id);
  return codec.width() > 0 ? codec : CodecOf(v1::FLOAT32);
}

void WireCodecs::Encode(int64_t clock, size_t t, uint64_t offset, absl::Span<const float> values,
                         v1::Payload* out) {
  Table& table = tables_[t];
  if (Uncompressed(clock, values.size())) {
    // Float32 sends everything; whatever residual this range holds waits
    // for the first compressed clock (it is not lost, and not sent twice).
    CodecOf(v1::FLOAT32).Encode(values, out);
    return;
  }
  if (!table.feedback) {
    table.push->Encode(values, out);
    return;
  }
  if (clock != table.clock) {
    // A new clock: what is left now is what this clock adds to. A swap, not
    // a copy: every compressed range of the table is written again below
    // this clock (a push carries all of a dense table's pieces), so what the
    // old `before` held there is never read.
    std::swap(table.before, table.residual);
    table.clock = clock;
  }
  // The gradient plus what earlier clocks left, encoded; what the shard
  // will decode is taken out of it, and the rest stays for the next clock.
  const size_t n = values.size();
  const float* before = table.before.data() + offset;
  float* residual = table.residual.data() + offset;
  const Eigen::Index len = static_cast<Eigen::Index>(n);
  Eigen::Map<Eigen::ArrayXf>(residual, len) = Eigen::Map<const Eigen::ArrayXf>(values.data(), len) +
                                              Eigen::Map<const Eigen::ArrayXf>(before, len);
  table.push->EncodeWithFeedback(absl::MakeSpan(residual, n), out);
}

}  // namespace tessera
