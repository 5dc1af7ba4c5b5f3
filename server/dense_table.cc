#include "server/dense_table.h"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/initializer.h"
#include "common/wire.h"

namespace tessera {

DenseTable::DenseTable(const TableConfig& config, DenseRange range, const Optimizer* optimizer,
                       bool aggregate, const OptimizerConfig& compensation)
    : name_(config.name),
      total_size_(config.size),
      range_(range),
      optimizer_(optimizer),
      num_slots_(optimizer->num_slots()),
      compensation_(compensation.staleness_compensation),
      dc_lambda_(compensation.dc_lambda),
      dc_decay_(compensation.dc_decay),
      gap_decay_(compensation.gap_decay),
      values_(range.size()),
      slots_(num_slots_ * range.size()),
      num_chunks_((range.size() + kChunkFloats - 1) / kChunkFloats) {
  Initializer(config.init, config.name).Fill(range.begin, absl::MakeSpan(values_));
  optimizer_->InitSlots(absl::MakeSpan(slots_));
  if (aggregate) accum_.assign(range.size(), 0.0f);
  if (compensation_ == StalenessCompensation::kDc) dc_mean_square_.assign(range.size(), 0.0f);
  if (compensation_ == StalenessCompensation::kGapAware) gap_step_.assign(range.size(), 0.0f);
  chunks_ = std::make_unique<Chunk[]>(std::max<size_t>(num_chunks_, 1));
}

template <typename Fn>
void DenseTable::ForEachChunk(uint64_t begin, uint64_t end, Fn fn) const {
  for (uint64_t c = begin / kChunkFloats; c * kChunkFloats < end; ++c) {
    uint64_t lo = std::max(begin, c * kChunkFloats);
    uint64_t hi = std::min(end, (c + 1) * kChunkFloats);
    fn(chunks_[c], lo, hi);
  }
}

void DenseTable::AppendBytes(uint64_t offset, uint64_t length, const Codec& codec,
                             std::string* out) const {
  pulls_.fetch_add(1, std::memory_order_relaxed);
  // Appended chunk by chunk under its lock: no zero-filled buffer first
  // (resizing would write every byte once more). Other codecs than float32
  // encode a chunk into this thread's staging buffer, then append it.
  out->reserve(out->size() + length * codec.width());
  const bool raw = codec.id() == v1::FLOAT32;
  thread_local std::vector<char> staging;
  const uint64_t begin = offset - range_.begin;
  ForEachChunk(begin, begin + length, [&](Chunk& chunk, uint64_t lo, uint64_t hi) {
    absl::ReaderMutexLock lock(&chunk.mu);
    const auto values = absl::MakeConstSpan(values_.data() + lo, hi - lo);
    if (raw) {
      out->append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
      return;
    }
    staging.resize(values.size() * codec.width());
    codec.EncodeTo(values, staging.data());
    out->append(staging.data(), staging.size());
  });
}

void DenseTable::CopyBytes(uint64_t offset, uint64_t length, const Codec& codec, char* out) const {
  pulls_.fetch_add(1, std::memory_order_relaxed);
  const uint64_t begin = offset - range_.begin;
  const size_t value_bytes = codec.width();
  ForEachChunk(begin, begin + length, [&](Chunk& chunk, uint64_t lo, uint64_t hi) {
    absl::ReaderMutexLock lock(&chunk.mu);
    codec.EncodeTo(absl::MakeConstSpan(values_.data() + lo, hi - lo),
                   out + (lo - begin) * value_bytes);
  });
}

void DenseTable::CopyValues(uint64_t offset, absl::Span<float> out) const {
  const uint64_t begin = offset - range_.begin;
  ForEachChunk(begin, begin + out.size(), [&](Chunk& chunk, uint64_t lo, uint64_t hi) {
    absl::ReaderMutexLock lock(&chunk.mu);
    std::memcpy(out.data() + (lo - begin), values_.data() + lo, (hi - lo) * sizeof(float));
  });
}

std::optional<uint64_t> DenseTable::QuietWrites() const {
  // Ended first: if no write was running then and none began until begun is
  // read, the two are equal (ended never passes begun).
  const uint64_t ended = writes_ended_.load();
  const uint64_t begun = writes_begun_.load();
  if (ended != begun) return std::nullopt;
  return begun;
}

std::optional<uint64_t> DenseTable::CopyValuesAt(uint64_t offset, absl::Span<float> out) const {
  const std::optional<uint64_t> before = QuietWrites();
  CopyValues(offset, out);
  if (!before || writes_begun_.load() != *before) return std::nullopt;
  return before;
}

void DenseTable::Apply(uint64_t offset, absl::Span<const float> grad, float scale, uint32_t worker,
                       int64_t clock, std::optional<int64_t> staleness, const float* read) {
  pushes_.fetch_add(1, std::memory_order_relaxed);
  WriteScope write(this);
  const uint64_t begin = offset - range_.begin;
  const size_t stride = range_.size();
  const float lr_factor = compensation_ == StalenessCompensation::kLrScale && staleness
                              ? 1.0f / static_cast<float>(std::max<int64_t>(*staleness, 1))
                              : 1.0f;
  const bool dc = compensation_ == StalenessCompensation::kDc && read != nullptr;
  // Gap-Aware learns each value's typical step from every update, damping
  // only those whose read is known.
  const bool gap = compensation_ == StalenessCompensation::kGapAware;
  thread_local std::vector<float> compensated, before;
  auto* self = this;
  ForEachChunk(begin, begin + grad.size(), [&](Chunk& chunk, uint64_t lo, uint64_t hi) {
    absl::MutexLock lock(&chunk.mu);
    if (clock < 0) {
      ++chunk.step;
    } else if (auto [it, fresh] = chunk.counted.try_emplace(worker, clock);
               fresh || it->second != clock) {
      it->second = clock;
      ++chunk.step;
    }
    const float* g = grad.data() + (lo - begin);
    float step_scale = scale;
    if (dc) {
      compensated.resize(hi - lo);
      ++chunk.dc_updates;
      Compensate(lo, hi, g, read + (lo - begin), scale, chunk.dc_updates, compensated.data());
      g = compensated.data();
      step_scale = 1.0f;
    }
    if (gap) {
      before.assign(self->values_.begin() + lo, self->values_.begin() + hi);
      ++chunk.gap_updates;
    }
    optimizer_->Apply(self->values_.data() + lo, g, self->SlotsFrom(lo), stride, hi - lo,
                      chunk.step, step_scale, lr_factor);
    if (gap) {
      DampByGap(lo, hi, before.data(), read ? read + (lo - begin) : nullptr, chunk.gap_updates);
    }
  });
}

void DenseTable::DampByGap(uint64_t lo, uint64_t hi, const float* before, const float* read,
                           int64_t updates) {
  // Barkai et al.'s gap, per value: how far the value moved between the read
  // and this push, in units of its typical step. Their rule divides the
  // gradient; under Adam that would be undone by the second moment (a value
  // always damped gets a smaller v too), so the optimizer runs undamped and
  // the step it took is divided instead.
  constexpr float kTiny = 1e-30f;
  const float correction =
      1.0f / static_cast<float>(1.0 - std::pow(double{gap_decay_}, static_cast<double>(updates)));
  const Eigen::Index n = static_cast<Eigen::Index>(hi - lo);
  Eigen::Map<Eigen::ArrayXf> now(values_.data() + lo, n);
  const Eigen::Map<const Eigen::ArrayXf> was(before, n);
  Eigen::Map<Eigen::ArrayXf> mean_step(gap_step_.data() + lo, n);
  mean_step = gap_decay_ * mean_step + (1.0f - gap_decay_) * (now - was).abs();
  if (read == nullptr) return;
  const Eigen::Map<const Eigen::ArrayXf> then(read, n);
  now = was + (now - was) / ((was - then).abs() / (mean_step * correction + kTiny)).max(1.0f);
}

void DenseTable::Compensate(uint64_t lo, uint64_t hi, const float* grad, const float* read,
                            float scale, int64_t updates, float* out) {
  // DC-ASGD-a: ms = d ms + (1 - d) g^2;  g + lambda0 / sqrt(ms + eps) * g^2 * (w - w_read),
  // with ms divided by 1 - d^t (t: this chunk's compensated updates) as Adam
  // corrects its second moment: from a zero start, the first updates' lambda
  // would otherwise be up to 1 / sqrt(1 - d) times too large.
  constexpr float kEpsilon = 1e-7f;
  const float correction =
      1.0f / static_cast<float>(1.0 - std::pow(double{dc_decay_}, static_cast<double>(updates)));
  const Eigen::Index n = static_cast<Eigen::Index>(hi - lo);
  thread_local std::vector<float> scaled;  // kept between pushes: no allocation each time
  scaled.resize(hi - lo);
  Eigen::Map<Eigen::ArrayXf> g(scaled.data(), n);
  g = scale * Eigen::Map<const Eigen::ArrayXf>(grad, n);
  Eigen::Map<Eigen::ArrayXf> ms(dc_mean_square_.data() + lo, n);
  ms = dc_decay_ * ms + (1.0f - dc_decay_) * g.square();
  const Eigen::Map<const Eigen::ArrayXf> now(values_.data() + lo, n), then(read, n);
  Eigen::Map<Eigen::ArrayXf>(out, n) =
      g + dc_lambda_ * (ms * correction + kEpsilon).rsqrt() * g.square() * (now - then);
}

std::optional<uint64_t> DenseTable::FirstNonFinite(uint64_t offset, absl::Span<const float> grad,
                                                   float scale, bool accumulate,
                                                   float max_value) const {
  // Blocks small enough to stay in L1: values, slots and the gradient of a
  // block are copied, updated and checked there.
  constexpr size_t kBlock = 512;
  float w[kBlock], g[kBlock];
  std::vector<float>& slots = scratch_slots();
  slots.resize(kBlock * num_slots_);
  const uint64_t begin = offset - range_.begin;
  const uint64_t n = range_.size();
  std::optional<uint64_t> bad;
  ForEachChunk(begin, begin + grad.size(), [&](Chunk& chunk, uint64_t lo, uint64_t hi) {
    if (bad) return;
    absl::ReaderMutexLock lock(&chunk.mu);
    for (uint64_t b = lo; b < hi && !bad; b += kBlock) {
      const size_t m = static_cast<size_t>(std::min<uint64_t>(kBlock, hi - b));
      std::memcpy(w, values_.data() + b, m * sizeof(float));
      for (size_t k = 0; k < num_slots_; ++k) {
        std::memcpy(slots.data() + k * kBlock, slots_.data() + k * n + b, m * sizeof(float));
      }
      const float* from = grad.data() + (b - begin);
      float step_scale = scale;
      if (accumulate) {
        // The buffer as the clock's apply will see it, at scale 1.
        for (size_t i = 0; i < m; ++i) g[i] = (chunk.accumulated ? accum_[b + i] : 0.0f) + from[i];
        step_scale = 1.0f;
      } else {
        std::memcpy(g, from, m * sizeof(float));
      }
      if (!AllFinite(absl::MakeConstSpan(g, m))) {
        for (size_t i = 0; i < m && !bad; ++i) {
          if (!std::isfinite(g[i])) bad = range_.begin + b + i;
        }
        break;
      }
      optimizer_->Apply(w, g, slots.data(), kBlock, m, chunk.step + 1, step_scale, 1.0f);
      bool finite = AllWithin(absl::MakeConstSpan(w, m), max_value);
      for (size_t k = 0; k < num_slots_ && finite; ++k) {
        finite = AllFinite(absl::MakeConstSpan(slots.data() + k * kBlock, m));
      }
      if (finite) continue;
      for (size_t i = 0; i < m && !bad; ++i) {
        bool ok = std::fabs(w[i]) <= max_value;
        for (size_t k = 0; k < num_slots_; ++k) ok = ok && std::isfinite(slots[k * kBlock + i]);
        if (!ok) bad = range_.begin + b + i;
      }
    }
  });
  return bad;
}

std::vector<float>& DenseTable::scratch_slots() {
  thread_local std::vector<float> slots;
  return slots;
}

void DenseTable::Accumulate(uint64_t offset, absl::Span<const float> grad) {
  pushes_.fetch_add(1, std::memory_order_relaxed);
  const uint64_t begin = offset - range_.begin;
  auto* self = this;
  ForEachChunk(begin, begin + grad.size(), [&](Chunk& chunk, uint64_t lo, uint64_t hi) {
    absl::MutexLock lock(&chunk.mu);
    float* acc = self->accum_.data() + lo;
    const float* g = grad.data() + (lo - begin);
    // The clock's first gradients are copied, so the buffer needs no clearing
    // after an apply. A chunk only partly covered by this push is cleared first.
    if (!chunk.accumulated) {
      const uint64_t chunk_lo = lo / kChunkFloats * kChunkFloats;
      const uint64_t chunk_hi = std::min<uint64_t>(chunk_lo + kChunkFloats, self->range_.size());
      if (lo != chunk_lo || hi != chunk_hi) {
        std::fill(self->accum_.data() + chunk_lo, self->accum_.data() + chunk_hi, 0.0f);
      } else {
        std::memcpy(acc, g, (hi - lo) * sizeof(float));
        chunk.accumulated = true;
        return;
      }
      chunk.accumulated = true;
    }
    Eigen::Map<Eigen::ArrayXf>(acc, hi - lo) += Eigen::Map<const Eigen::ArrayXf>(g, hi - lo);
  });
}

void DenseTable::ApplyAccumulated(float scale) {
  WriteScope write(this);
  const size_t stride = range_.size();
  auto* self = this;
  ForEachChunk(0, range_.size(), [&](Chunk& chunk, uint64_t lo, uint64_t hi) {
    absl::MutexLock lock(&chunk.mu);
    if (!chunk.accumulated) return;
    chunk.accumulated = false;
    ++chunk.step;
    float* acc = self->accum_.data() + lo;
    optimizer_->Apply(self->values_.data() + lo, acc, self->SlotsFrom(lo), stride, hi - lo,
                      chunk.step, scale, 1.0f);
  });
}

void DenseTable::ApplyAccumulatedRange(uint64_t offset, uint64_t length, float scale,
                                       int64_t clock) {
  WriteScope write(this);
  const size_t stride = range_.size();
  const uint64_t begin = offset - range_.begin;
  auto* self = this;
  ForEachChunk(begin, begin + length, [&](Chunk& chunk, uint64_t lo, uint64_t hi) {
    absl::MutexLock lock(&chunk.mu);
    if (chunk.range_clock != clock) {
      chunk.range_clock = clock;
      ++chunk.step;
    }
    float* acc = self->accum_.data() + lo;
    optimizer_->Apply(self->values_.data() + lo, acc, self->SlotsFrom(lo), stride, hi - lo,
                      chunk.step, scale, 1.0f);
    std::fill(acc, acc + (hi - lo), 0.0f);
  });
}

void DenseTable::ExportAccumulated(v1::TableAggregate* out) const {
  auto* self = this;
  ForEachChunk(0, range_.size(), [&](Chunk& chunk, uint64_t lo, uint64_t hi) {
    absl::ReaderMutexLock lock(&chunk.mu);
    if (!chunk.accumulated) return;
    out->add_chunks(static_cast<uint32_t>(lo / kChunkFloats));
    out->mutable_values()->Add(self->accum_.data() + lo, self->accum_.data() + hi);
  });
}

absl::Status DenseTable::CheckAggregate(const v1::TableAggregate& in) const {
  if (in.keys_size() > 0 || in.created_keys_size() > 0) {
    return absl::InvalidArgumentError(absl::StrCat("table ", name_, " is dense, not keyed"));
  }
  if (accum_.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("table ", name_, " does not aggregate (not BSP)"));
  }
  uint64_t floats = 0;
  for (uint32_t c : in.chunks()) {
    if (c >= num_chunks_) {
      return absl::InvalidArgumentError(
          absl::StrCat("table ", name_, ": chunk ", c, " of ", num_chunks_));
    }
    floats += std::min<uint64_t>(kChunkFloats, range_.size() - uint64_t{c} * kChunkFloats);
  }
  if (floats != static_cast<uint64_t>(in.values_size())) {
    return absl::InvalidArgumentError(absl::StrCat("table ", name_, ": ", in.values_size(),
                                                   " aggregated values for chunks of ", floats));
  }
  if (!AllFinite(absl::MakeConstSpan(in.values().data(), in.values_size()))) {
    return absl::InvalidArgumentError(
        absl::StrCat("table ", name_, ": an aggregated gradient is NaN or Inf"));
  }
  return absl::OkStatus();
}

absl::Status DenseTable::ImportAccumulated(const v1::TableAggregate& in) {
  if (absl::Status s = CheckAggregate(in); !s.ok()) return s;
  const float* from = in.values().data();
  for (uint32_t c : in.chunks()) {
    Chunk& chunk = chunks_[c];
    const uint64_t lo = uint64_t{c} * kChunkFloats;
    const uint64_t n = std::min<uint64_t>(kChunkFloats, range_.size() - lo);
    absl::MutexLock lock(&chunk.mu);
    std::memcpy(accum_.data() + lo, from, n * sizeof(float));
    chunk.accumulated = true;
    from += n;
  }
  return absl::OkStatus();
}

void DenseTable::Snapshot(char* out, v1::CheckpointTable* meta) const {
  const uint64_t n = range_.size();
  const size_t arrays = SnapshotBytes() / sizeof(float) / std::max<uint64_t>(n, 1);
  meta->clear_chunk_steps();
  meta->clear_counted();
  meta->clear_chunk_compensated();
  const float* statistic = this->statistic();
  ForEachChunk(0, n, [&](Chunk& chunk, uint64_t lo, uint64_t hi) {
    absl::ReaderMutexLock lock(&chunk.mu);
    const uint32_t c = static_cast<uint32_t>(lo / kChunkFloats);
    meta->add_chunk_steps(chunk.step);
    // Sorted, so that two copies of one state are the same bytes.
    std::vector<std::pair<uint32_t, int64_t>> counted(chunk.counted.begin(), chunk.counted.end());
    std::sort(counted.begin(), counted.end());
    for (const auto& [worker, clock] : counted) {
      v1::CheckpointTable::Counted* entry = meta->add_counted();
      entry->set_chunk(c);
      entry->set_worker(worker);
      entry->set_clock(clock);
    }
    if (statistic != nullptr) {
      meta->add_chunk_compensated(dc_mean_square_.empty() ? chunk.gap_updates : chunk.dc_updates);
    }
    for (size_t k = 0; k < arrays; ++k) {
      const float* from = k == 0                ? values_.data()
                          : k <= num_slots_     ? slots_.data() + (k - 1) * n
                                                : statistic;
      std::memcpy(out + (k * n + lo) * sizeof(float), from + lo, (hi - lo) * sizeof(float));
    }
  });
}

absl::Status DenseTable::CheckSnapshot(const v1::CheckpointTable& meta, uint64_t bytes,
                                       uint32_t num_workers, int64_t max_step,
                                       int64_t max_clock) const {
  auto bad = [this](auto&&... what) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint table '", name_, "' ", what...));
  };
  // Written before the statistic was kept: no counts, data up to the slots.
  const uint64_t without_statistic = (1 + num_slots_) * range_.size() * sizeof(float);
  const bool older = has_statistic() && meta.chunk_compensated_size() == 0 &&
                     bytes == without_statistic;
  if ((bytes != SnapshotBytes() && !older) ||
      meta.chunk_steps_size() != static_cast<int>(num_chunks_)) {
    return bad("holds ", bytes, " bytes in ", meta.chunk_steps_size(), " chunks; the table needs ",
               SnapshotBytes(), " in ", num_chunks_);
  }
  const int expected_counts = has_statistic() && !older ? static_cast<int>(num_chunks_) : 0;
  if (meta.chunk_compensated_size() != expected_counts) {
    return bad("holds ", meta.chunk_compensated_size(),
               " chunks' compensated updates; the table needs ", expected_counts);
  }
  for (int64_t step : meta.chunk_steps()) {
    if (step < 0 || step > max_step) {
      return bad("chunk step ", step, " is outside [0, ", max_step, "]");
    }
  }
  for (int64_t updates : meta.chunk_compensated()) {
    if (updates < 0 || updates > max_step) {
      return bad("compensated updates ", updates, " are outside [0, ", max_step, "]");
    }
  }
  absl::flat_hash_set<std::pair<uint32_t, uint32_t>> seen;
  for (const v1::CheckpointTable::Counted& c : meta.counted()) {
    if (c.chunk() >= num_chunks_ || c.worker() >= num_workers || c.clock() < 0 ||
        c.clock() > max_clock) {
      return bad("counts chunk ", c.chunk(), " for worker ", c.worker(), " at clock ", c.clock(),
                 "; the table has ", num_chunks_, " chunks, the job ", num_workers,
                 " workers, clocks [0, ", max_clock, "]");
    }
    if (!seen.insert({c.chunk(), c.worker()}).second) {
      return bad("counts chunk ", c.chunk(), " for worker ", c.worker(), " twice");
    }
  }
  return absl::OkStatus();
}

void DenseTable::Restore(const char* data, uint64_t bytes, const v1::CheckpointTable& meta) {
  WriteScope write(this);
  const uint64_t n = range_.size();
  const size_t arrays = bytes / sizeof(float) / std::max<uint64_t>(n, 1);
  float* statistic = this->statistic();
  std::vector<std::vector<std::pair<uint32_t, int64_t>>> counted(num_chunks_);
  for (const v1::CheckpointTable::Counted& c : meta.counted()) {
    counted[c.chunk()].emplace_back(c.worker(), c.clock());
  }
  ForEachChunk(0, n, [&](Chunk& chunk, uint64_t lo, uint64_t hi) {
    absl::MutexLock lock(&chunk.mu);
    const uint64_t c = lo / kChunkFloats;
    chunk.step = meta.chunk_steps(static_cast<int>(c));
    chunk.accumulated = false;
    chunk.counted.clear();
    for (const auto& [worker, clock] : counted[c]) chunk.counted[worker] = clock;
    // Only the table's own compensation reads its count.
    chunk.dc_updates = chunk.gap_updates =
        meta.chunk_compensated_size() > 0 ? meta.chunk_compensated(static_cast<int>(c)) : 0;
    // An older checkpoint's data ends at the slots: the statistic starts again.
    if (statistic != nullptr && arrays == 1 + num_slots_) {
      std::fill(statistic + lo, statistic + hi, 0.0f);
    }
    for (size_t k = 0; k < arrays; ++k) {
      float* to = k == 0            ? values_.data()
                  : k <= num_slots_ ? slots_.data() + (k - 1) * n
                                    : statistic;
      std::memcpy(to + lo, data + (k * n + lo) * sizeof(float), (hi - lo) * sizeof(float));
    }
  });
}

}  // namespace tessera
