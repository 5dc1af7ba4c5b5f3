#include "server/sparse_table.h"

#include <algorithm>
#include <cstring>

#include "common/partition.h"

namespace tessera {

SparseTable::SparseTable(const TableConfig& config, const Optimizer* optimizer,
                         uint32_t num_stripes)
    : name_(config.name),
      dim_(config.dim),
      optimizer_(optimizer),
      num_slots_(optimizer->num_slots()),
      row_floats_(static_cast<size_t>(config.dim) * (1 + optimizer->num_slots())),
      init_(config.init, config.name) {
  for (uint32_t i = 0; i < std::max(num_stripes, 1u); ++i) {
    stripes_.push_back(std::make_unique<Stripe>());
  }
}

uint32_t SparseTable::StripeOf(uint64_t key) const {
  // The high bits: the shard choice (hash mod S) leans on the low ones.
  return static_cast<uint32_t>((SplitMix64(key) >> 40) % stripes_.size());
}

float* SparseTable::FindOrCreate(Stripe& stripe, uint64_t key, uint32_t* row_index) {
  auto [it, inserted] = stripe.rows.try_emplace(key, static_cast<uint32_t>(stripe.steps.size()));
  const size_t offset = static_cast<size_t>(it->second) * row_floats_;
  if (inserted) {
    stripe.steps.push_back(0);
    stripe.data.resize(offset + row_floats_);
    float* row = stripe.data.data() + offset;
    init_.Fill(key * dim_, absl::MakeSpan(row, dim_));
    optimizer_->InitSlots(absl::MakeSpan(row + dim_, row_floats_ - dim_));
  }
  *row_index = it->second;
  return stripe.data.data() + offset;
}

template <typename Fn>
void SparseTable::ForEachByStripe(absl::Span<const uint64_t> keys, Fn fn) {
  const uint32_t n = static_cast<uint32_t>(stripes_.size());
  // Counting sort of key positions by stripe.
  std::vector<uint32_t> stripe_of(keys.size());
  std::vector<uint32_t> start(n + 1, 0);
  for (size_t i = 0; i < keys.size(); ++i) {
    stripe_of[i] = StripeOf(keys[i]);
    ++start[stripe_of[i] + 1];
  }
  for (uint32_t s = 0; s < n; ++s) start[s + 1] += start[s];
  std::vector<uint32_t> order(keys.size());
  {
    std::vector<uint32_t> fill(start.begin(), start.end() - 1);
    for (size_t i = 0; i < keys.size(); ++i) order[fill[stripe_of[i]]++] = static_cast<uint32_t>(i);
  }
  const uint32_t first = next_start_.fetch_add(1, std::memory_order_relaxed) % n;
  for (uint32_t k = 0; k < n; ++k) {
    const uint32_t s = (first + k) % n;
    if (start[s] == start[s + 1]) continue;
    Stripe& stripe = *stripes_[s];
    absl::MutexLock lock(&stripe.mu);
    for (uint32_t j = start[s]; j < start[s + 1]; ++j) fn(stripe, order[j]);
  }
}

void SparseTable::Read(absl::Span<const uint64_t> keys, absl::Span<float> out) {
  pulls_.fetch_add(1, std::memory_order_relaxed);
  ForEachByStripe(keys, [&](Stripe& stripe, uint32_t i) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    uint32_t row_index;
    const float* row = FindOrCreate(stripe, keys[i], &row_index);
    std::memcpy(out.data() + static_cast<size_t>(i) * dim_, row, dim_ * sizeof(float));
  });
}

void SparseTable::Apply(absl::Span<const uint64_t> keys, absl::Span<const float> grads,
                        float scale) {
  pushes_.fetch_add(1, std::memory_order_relaxed);
  ForEachByStripe(keys, [&](Stripe& stripe, uint32_t i) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    uint32_t r;
    float* row = FindOrCreate(stripe, keys[i], &r);
    optimizer_->Apply(row, grads.data() + static_cast<size_t>(i) * dim_, row + dim_, dim_, dim_,
                      ++stripe.steps[r], scale);
  });
}

void SparseTable::Accumulate(absl::Span<const uint64_t> keys, absl::Span<const float> grads) {
  pushes_.fetch_add(1, std::memory_order_relaxed);
  ForEachByStripe(keys, [&](Stripe& stripe, uint32_t i) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    auto [it, inserted] =
        stripe.pending.try_emplace(keys[i], static_cast<uint32_t>(stripe.pending.size()));
    const size_t offset = static_cast<size_t>(it->second) * dim_;
    if (inserted) stripe.accum.resize(offset + dim_, 0.0f);
    const float* g = grads.data() + static_cast<size_t>(i) * dim_;
    for (uint32_t j = 0; j < dim_; ++j) stripe.accum[offset + j] += g[j];
  });
}

void SparseTable::ApplyAccumulated(float scale) {
  for (auto& stripe_ptr : stripes_) {
    Stripe& stripe = *stripe_ptr;
    absl::MutexLock lock(&stripe.mu);
    for (const auto& [key, accum_row] : stripe.pending) {
      uint32_t r;
      float* row = FindOrCreate(stripe, key, &r);
      optimizer_->Apply(row, stripe.accum.data() + static_cast<size_t>(accum_row) * dim_,
                        row + dim_, dim_, dim_, ++stripe.steps[r], scale);
    }
    stripe.pending.clear();
    stripe.accum.clear();
  }
}

uint64_t SparseTable::rows() const {
  uint64_t total = 0;
  for (const auto& stripe : stripes_) {
    absl::MutexLock lock(&stripe->mu);
    total += stripe->rows.size();
  }
  return total;
}

}  // namespace tessera
