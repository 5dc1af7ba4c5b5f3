#include "worker/push_encoder.h"

#include <algorithm>

namespace tessera {

PushEncoder::PushEncoder(const CompressionConfig& config,
                         const std::vector<std::string>& table_names,
                         const std::vector<uint64_t>& dense_sizes)
    : config_(config), tables_(table_names.size()) {
  for (size_t t = 0; t < table_names.size(); ++t) {
    const CodecChoice& choice = config.For(table_names[t]);
    Table& table = tables_[t];
    table.push = MakeCodec(choice.push, config.topk_ratio);
    table.pull = CodecId(choice.pull);
    table.feedback = choice.push == CodecKind::kTopk || choice.push == CodecKind::kOnebit;
    if (table.feedback && dense_sizes[t] > 0) {
      table.residual.assign(dense_sizes[t], 0.0f);
      table.before.assign(dense_sizes[t], 0.0f);
    }
  }
}

bool PushEncoder::lossy() const {
  return std::any_of(tables_.begin(), tables_.end(), [](const Table& t) { return t.feedback; });
}

void PushEncoder::Count(bool push, uint64_t bytes, uint64_t values) const {
  (push ? push_bytes_ : pull_bytes_).fetch_add(bytes, std::memory_order_relaxed);
  (push ? push_raw_ : pull_raw_).fetch_add(values * sizeof(float), std::memory_order_relaxed);
}

PsClient::WireTraffic PushEncoder::traffic() const {
  PsClient::WireTraffic t;
  t.push_bytes = push_bytes_.load(std::memory_order_relaxed);
  t.push_raw_bytes = push_raw_.load(std::memory_order_relaxed);
  t.pull_bytes = pull_bytes_.load(std::memory_order_relaxed);
  t.pull_raw_bytes = pull_raw_.load(std::memory_order_relaxed);
  return t;
}

bool PushEncoder::Uncompressed(int64_t clock, uint64_t length) const {
  return clock < static_cast<int64_t>(config_.warmup_steps) ||
         length * sizeof(float) < config_.min_bytes;
}

v1::Codec PushEncoder::PullCodec(int64_t clock, size_t table, uint64_t length) const {
  return Uncompressed(clock, length) ? v1::FLOAT32 : tables_[table].pull;
}

const Codec& PushEncoder::RowCodec(size_t table, bool push) const {
  const v1::Codec id = push ? tables_[table].push->id() : tables_[table].pull;
  const Codec& codec = CodecOf(id);
  return codec.width() > 0 ? codec : CodecOf(v1::FLOAT32);
}

void PushEncoder::Encode(int64_t clock, size_t t, uint64_t offset, absl::Span<const float> values,
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
    // A new clock: what is left now is what this clock adds to.
    table.before = table.residual;
    table.clock = clock;
  }
  const size_t n = values.size();
  table.scratch.resize(n);
  table.sent.resize(n);
  const float* before = table.before.data() + offset;
  for (size_t i = 0; i < n; ++i) table.scratch[i] = values[i] + before[i];
  table.push->Encode(table.scratch, out);
  // What the shard will decode, exactly; the rest stays here.
  (void)table.push->Decode(*out, absl::MakeSpan(table.sent));
  float* residual = table.residual.data() + offset;
  for (size_t i = 0; i < n; ++i) residual[i] = table.scratch[i] - table.sent[i];
}

}  // namespace tessera
