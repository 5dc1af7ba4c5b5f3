#include "server/sparse_table.h"

#include <algorithm>
#include <cstring>
#include <memory>

#include "common/partition.h"

namespace tessera {

SparseTable::SparseTable(const TableConfig& config, const Optimizer* optimizer,
                         uint32_t num_stripes, uint64_t reserve_rows)
    : name_(config.name),
      dim_(config.dim),
      optimizer_(optimizer),
      num_slots_(optimizer->num_slots()),
      row_floats_(static_cast<size_t>(config.dim) * (1 + optimizer->num_slots())),
      init_(config.init, config.name) {
  for (uint32_t i = 0; i < std::max(num_stripes, 1u); ++i) {
    stripes_.push_back(std::make_unique<Stripe>(&arena_));
  }
  if (reserve_rows == 0) return;
  // Keys hash evenly over stripes: a stripe's count is binomial, its standard
  // deviation below sqrt(mean); the slack covers far more than that.
  const uint64_t mean = reserve_rows / stripes_.size();
  const uint64_t per_stripe = mean + mean / 32 + 256;
  for (auto& stripe : stripes_) {
    absl::MutexLock lock(&stripe->mu);
    stripe->index.Reserve(per_stripe);
    stripe->data.Reserve(per_stripe * row_floats_);
  }
}

uint32_t SparseTable::StripeOf(uint64_t key) const {
  // The high bits: the shard choice (hash mod S) leans on the low ones.
  return static_cast<uint32_t>((SplitMix64(key) >> 40) % stripes_.size());
}

void SparseTable::FindOrCreateAll(Stripe& stripe, absl::Span<const uint64_t> keys,
                                  const uint32_t* idx, size_t n, std::vector<uint32_t>* rows) {
  rows->resize(n);
  const size_t missing = stripe.index.Find(keys.data(), idx, n, rows->data());
  if (missing == 0) return;
  std::vector<uint32_t> new_idx(missing), new_rows(missing);
  uint32_t next_row = static_cast<uint32_t>(stripe.index.size());
  stripe.data.Resize((next_row + missing) * row_floats_);
  for (size_t j = 0, k = 0; j < n; ++j) {
    if ((*rows)[j] != SortedIndex::kMissing) continue;
    const uint32_t r = next_row++;
    (*rows)[j] = r;
    float* row = RowData(stripe, r);
    init_.Fill(keys[idx[j]] * dim_, absl::MakeSpan(row, dim_));
    optimizer_->InitSlots(absl::MakeSpan(row + dim_, row_floats_ - dim_));
    new_idx[k] = idx[j];
    new_rows[k++] = r;
  }
  stripe.index.Insert(keys.data(), new_idx.data(), new_rows.data(), missing);
}

template <typename Fn>
void SparseTable::ForEachByStripe(absl::Span<const uint64_t> keys, Fn fn) {
  const uint32_t n = static_cast<uint32_t>(stripes_.size());
  // Counting sort of key positions by stripe (stable: request order kept).
  // Uninitialized scratch: every element is written before it is read.
  std::unique_ptr<uint32_t[]> stripe_of(new uint32_t[keys.size()]);
  std::vector<uint32_t> start(n + 1, 0);
  for (size_t i = 0; i < keys.size(); ++i) {
    stripe_of[i] = StripeOf(keys[i]);
    ++start[stripe_of[i] + 1];
  }
  for (uint32_t s = 0; s < n; ++s) start[s + 1] += start[s];
  std::unique_ptr<uint32_t[]> order(new uint32_t[keys.size()]);
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
    fn(stripe, order.get() + start[s], static_cast<size_t>(start[s + 1] - start[s]));
  }
}

void SparseTable::ApplyToRows(Stripe& stripe, const std::vector<uint32_t>& rows,
                              const std::vector<const float*>& grads, int64_t step, float scale) {
  std::vector<float*> ptrs(rows.size());
  for (size_t j = 0; j < rows.size(); ++j) ptrs[j] = RowData(stripe, rows[j]);
  optimizer_->ApplyRows(ptrs, grads, dim_, step, scale);
}

void SparseTable::Read(absl::Span<const uint64_t> keys, absl::Span<float> out) {
  pulls_.fetch_add(1, std::memory_order_relaxed);
  std::vector<uint32_t> rows;
  ForEachByStripe(
      keys, [&](Stripe& stripe, const uint32_t* idx, size_t n) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        FindOrCreateAll(stripe, keys, idx, n, &rows);
        for (size_t j = 0; j < n; ++j) {
          std::memcpy(out.data() + static_cast<size_t>(idx[j]) * dim_, RowData(stripe, rows[j]),
                      dim_ * sizeof(float));
        }
      });
}

void SparseTable::Apply(absl::Span<const uint64_t> keys, absl::Span<const float> grads,
                        float scale) {
  pushes_.fetch_add(1, std::memory_order_relaxed);
  const int64_t step = step_.fetch_add(1, std::memory_order_relaxed) + 1;
  std::vector<uint32_t> rows;
  std::vector<const float*> row_grads;
  ForEachByStripe(
      keys, [&](Stripe& stripe, const uint32_t* idx, size_t n) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        FindOrCreateAll(stripe, keys, idx, n, &rows);
        row_grads.resize(n);
        for (size_t j = 0; j < n; ++j) {
          row_grads[j] = grads.data() + static_cast<size_t>(idx[j]) * dim_;
        }
        ApplyToRows(stripe, rows, row_grads, step, scale);
      });
}

void SparseTable::Accumulate(absl::Span<const uint64_t> keys, absl::Span<const float> grads) {
  pushes_.fetch_add(1, std::memory_order_relaxed);
  ForEachByStripe(
      keys, [&](Stripe& stripe, const uint32_t* idx, size_t n) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        for (size_t j = 0; j < n; ++j) {
          const uint64_t key = keys[idx[j]];
          auto [it, inserted] =
              stripe.pending.try_emplace(key, static_cast<uint32_t>(stripe.pending.size()));
          const size_t offset = static_cast<size_t>(it->second) * dim_;
          if (inserted) stripe.accum.resize(offset + dim_, 0.0f);
          const float* g = grads.data() + static_cast<size_t>(idx[j]) * dim_;
          for (uint32_t d = 0; d < dim_; ++d) stripe.accum[offset + d] += g[d];
        }
      });
}

void SparseTable::ApplyAccumulated(float scale) {
  const int64_t step = step_.fetch_add(1, std::memory_order_relaxed) + 1;
  std::vector<uint64_t> keys;
  std::vector<uint32_t> order, rows;
  std::vector<const float*> row_grads;
  for (auto& stripe_ptr : stripes_) {
    Stripe& stripe = *stripe_ptr;
    absl::MutexLock lock(&stripe.mu);
    if (stripe.pending.empty()) continue;
    keys.clear();
    for (const auto& [key, accum_row] : stripe.pending) keys.push_back(key);
    std::sort(keys.begin(), keys.end());
    order.resize(keys.size());
    for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
    FindOrCreateAll(stripe, keys, order.data(), keys.size(), &rows);
    row_grads.resize(keys.size());
    for (size_t j = 0; j < keys.size(); ++j) {
      row_grads[j] = stripe.accum.data() + static_cast<size_t>(stripe.pending[keys[j]]) * dim_;
    }
    ApplyToRows(stripe, rows, row_grads, step, scale);
    stripe.pending.clear();
    stripe.accum.clear();
  }
}

uint64_t SparseTable::rows() const {
  uint64_t total = 0;
  for (const auto& stripe : stripes_) {
    absl::MutexLock lock(&stripe->mu);
    total += stripe->index.size();
  }
  return total;
}

}  // namespace tessera
