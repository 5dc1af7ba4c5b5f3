#include "server/sparse_table.h"

#include <algorithm>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/partition.h"
#include "common/wire.h"

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
  // The high bits (the shard choice, hash mod S, leans on the low ones),
  // mapped onto [0, stripes) by a multiply instead of a division.
  const uint64_t high = SplitMix64(key) >> 32;
  return static_cast<uint32_t>((high * stripes_.size()) >> 32);
}

namespace {

// One request's regrouping by stripe, per thread, kept between requests so
// that its memory stays warm (no allocation, no page faults per request).
// Grows to the largest request the thread served, up to kKeepScratchBytes;
// the buffers of a larger request are let go after it.
constexpr size_t kKeepScratchBytes = size_t{64} << 20;
struct StripeScratch {
  std::vector<uint16_t> stripe_of;  // server.sparse_stripes <= 4096
  std::vector<uint32_t> order, start, fill, pending;
  std::vector<uint64_t> keys;
  std::vector<float> values;
};
thread_local StripeScratch t_scratch;

// Scratch for the rows a stripe creates.
thread_local std::vector<uint64_t> t_new_keys;
thread_local std::vector<uint32_t> t_new_rows;

template <typename T>
T* AtLeast(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

}  // namespace

void SparseTable::FindOrCreateAll(Stripe& stripe, const uint64_t* keys, size_t n,
                                  std::vector<uint32_t>* rows, std::vector<uint64_t>* created) {
  rows->resize(n);
  const size_t missing = stripe.index.Find(keys, n, rows->data());
  if (missing == 0) return;
  uint64_t* new_keys = AtLeast(t_new_keys, missing);
  uint32_t* new_rows = AtLeast(t_new_rows, missing);
  const uint32_t first = static_cast<uint32_t>(stripe.index.size());
  stripe.data.Resize((first + missing) * row_floats_);
  for (size_t j = 0, k = 0; j < n; ++j) {
    if ((*rows)[j] != SortedIndex::kMissing) continue;
    (*rows)[j] = new_rows[k] = first + static_cast<uint32_t>(k);
    new_keys[k++] = keys[j];
  }
  // The new rows are contiguous: one InitSlots over the whole block (it
  // writes the values' places too), then the values over those.
  float* block = RowData(stripe, first);
  if (num_slots_ > 0) optimizer_->InitSlots(absl::MakeSpan(block, missing * row_floats_));
  init_.FillRows(new_keys, missing, dim_, block, row_floats_);
  stripe.index.Insert(new_keys, new_rows, missing);
  row_count_.fetch_add(missing, std::memory_order_relaxed);
  if (created != nullptr) created->insert(created->end(), new_keys, new_keys + missing);
}

template <typename Fn>
void SparseTable::ForEachByStripe(absl::Span<const uint64_t> keys, absl::Span<const float> values,
                                  Fn fn) {
  const uint32_t n = static_cast<uint32_t>(stripes_.size());
  const size_t count = keys.size();
  StripeScratch& s = t_scratch;
  // Counting sort of the keys by stripe (stable: request order kept).
  uint16_t* stripe_of = AtLeast(s.stripe_of, count);
  s.start.assign(n + 1, 0);
  uint32_t* start = s.start.data();
  for (size_t i = 0; i < count; ++i) {
    stripe_of[i] = static_cast<uint16_t>(StripeOf(keys[i]));
    ++start[stripe_of[i] + 1];
  }
  for (uint32_t k = 0; k < n; ++k) start[k + 1] += start[k];
  s.fill.assign(start, start + n);
  uint32_t* fill = s.fill.data();
  uint64_t* gathered_keys = AtLeast(s.keys, count);
  // Pulls need each key's place in the request (to write the answer), pushes
  // each key's values; neither needs both, and every array written here is
  // one more write stream per stripe.
  uint32_t* order = values.empty() ? AtLeast(s.order, count) : nullptr;
  float* gathered_values = values.empty() ? nullptr : AtLeast(s.values, count * dim_);
  // Reads stream in request order; writes go to one stream per stripe.
  auto scatter = [&](auto copy_rest) {
    for (size_t i = 0; i < count; ++i) {
      const uint32_t at = fill[stripe_of[i]]++;
      gathered_keys[at] = keys[i];
      copy_rest(at, i);
    }
  };
  if (order != nullptr) {
    scatter([&](size_t at, size_t i) { order[at] = static_cast<uint32_t>(i); });
  } else if (dim_ == 1) {
    scatter([&](size_t at, size_t i) { gathered_values[at] = values.data()[i]; });
  } else {
    scatter([&](size_t at, size_t i) {
      std::memcpy(gathered_values + at * dim_, values.data() + i * dim_, dim_ * sizeof(float));
    });
  }
  auto run = [&](uint32_t stripe) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    const uint32_t begin = start[stripe], end = start[stripe + 1];
    fn(*stripes_[stripe],
       StripeBatch{gathered_keys + begin, order == nullptr ? nullptr : order + begin,
                   gathered_values == nullptr ? nullptr : gathered_values + size_t{begin} * dim_,
                   end - begin});
  };
  // Stripes from a rotating start; one that another request holds is passed
  // over and come back to, so concurrent requests work on different stripes
  // instead of queueing behind each other (in step, each would wait at every
  // stripe). Only when every stripe left is held does the request block.
  std::vector<uint32_t>& pending = s.pending;
  pending.clear();
  const uint32_t first = next_start_.fetch_add(1, std::memory_order_relaxed) % n;
  for (uint32_t k = 0; k < n; ++k) {
    const uint32_t stripe = (first + k) % n;
    if (start[stripe] != start[stripe + 1]) pending.push_back(stripe);
  }
  while (!pending.empty()) {
    size_t left = 0;
    for (uint32_t stripe : pending) {
      absl::Mutex& mu = stripes_[stripe]->mu;
      if (!mu.TryLock()) {
        pending[left++] = stripe;
        continue;
      }
      run(stripe);
      mu.Unlock();
    }
    if (left == pending.size()) {  // all held by others: wait for the first
      absl::MutexLock lock(&stripes_[pending[0]]->mu);
      run(pending[0]);
      pending.erase(pending.begin());
      continue;
    }
    pending.resize(left);
  }
  if (count * (sizeof(uint16_t) + sizeof(uint32_t) + sizeof(uint64_t)) +
          s.values.size() * sizeof(float) >
      kKeepScratchBytes) {
    s = StripeScratch();
  }
}

void SparseTable::ApplyToRows(Stripe& stripe, const std::vector<uint32_t>& rows,
                              const float* grads, int64_t step, float scale) {
  thread_local std::vector<float*> row_ptrs;
  thread_local std::vector<const float*> grad_ptrs;
  row_ptrs.resize(rows.size());
  grad_ptrs.resize(rows.size());
  for (size_t j = 0; j < rows.size(); ++j) {
    row_ptrs[j] = RowData(stripe, rows[j]);
    grad_ptrs[j] = grads + j * dim_;
  }
  optimizer_->ApplyRows(row_ptrs, grad_ptrs, dim_, step, scale);
}

void SparseTable::Read(absl::Span<const uint64_t> keys, absl::Span<float> out, bool create) {
  pulls_.fetch_add(1, std::memory_order_relaxed);
  std::vector<uint32_t> rows;
  ForEachByStripe(keys, {},
                  [&](Stripe& stripe, const StripeBatch& b) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                    if (create) {
                      FindOrCreateAll(stripe, b.keys, b.n, &rows,
                                      record_created_.load(std::memory_order_relaxed)
                                          ? &stripe.created
                                          : nullptr);
                    } else {
                      rows.resize(b.n);
                      stripe.index.Find(b.keys, b.n, rows.data());
                    }
                    for (size_t j = 0; j < b.n; ++j) {
                      float* to = out.data() + size_t{b.idx[j]} * dim_;
                      if (rows[j] == SortedIndex::kMissing) {
                        init_.FillRows(&b.keys[j], 1, dim_, to, dim_);
                      } else {
                        std::memcpy(to, RowData(stripe, rows[j]), dim_ * sizeof(float));
                      }
                    }
                  });
}

uint64_t SparseTable::CountMissing(absl::Span<const uint64_t> keys) {
  uint64_t missing = 0;
  std::vector<uint32_t> rows;
  ForEachByStripe(keys, {},
                  [&](Stripe& stripe, const StripeBatch& b) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                    rows.resize(b.n);
                    missing += stripe.index.Find(b.keys, b.n, rows.data());
                  });
  return missing;
}

std::optional<uint64_t> SparseTable::FirstNonFinite(absl::Span<const uint64_t> keys,
                                                    absl::Span<const float> grads, float scale,
                                                    bool accumulate, float max_value) {
  const int64_t step = step_.load(std::memory_order_relaxed) + 1;
  std::optional<uint64_t> bad;
  std::vector<uint32_t> rows;
  std::vector<float> row(row_floats_), g(dim_);
  ForEachByStripe(
      keys, grads, [&](Stripe& stripe, const StripeBatch& b) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        if (bad) return;
        rows.resize(b.n);
        stripe.index.Find(b.keys, b.n, rows.data());
        for (size_t j = 0; j < b.n && !bad; ++j) {
          if (rows[j] == SortedIndex::kMissing) {  // as FindOrCreateAll would make it
            if (num_slots_ > 0) optimizer_->InitSlots(absl::MakeSpan(row));
            init_.FillRows(&b.keys[j], 1, dim_, row.data(), row_floats_);
          } else {
            std::memcpy(row.data(), RowData(stripe, rows[j]), row_floats_ * sizeof(float));
          }
          const float* from = b.values + j * dim_;
          float step_scale = scale;
          std::copy(from, from + dim_, g.begin());
          if (accumulate) {
            step_scale = 1.0f;
            auto it = stripe.pending.find(b.keys[j]);
            if (it != stripe.pending.end()) {
              const float* sum = stripe.accum.data() + size_t{it->second} * dim_;
              for (uint32_t d = 0; d < dim_; ++d) g[d] += sum[d];
            }
          }
          float* row_ptr = row.data();
          const float* grad_ptr = g.data();
          if (AllFinite(g)) {
            optimizer_->ApplyRows(absl::MakeConstSpan(&row_ptr, 1),
                                  absl::MakeConstSpan(&grad_ptr, 1), dim_, step, step_scale);
          }
          // The row's values within the bound, its slots finite.
          if (!AllFinite(g) || !AllFinite(row) ||
              !AllWithin(absl::MakeConstSpan(row.data(), dim_), max_value)) {
            bad = b.keys[j];
          }
        }
      });
  return bad;
}

void SparseTable::Apply(absl::Span<const uint64_t> keys, absl::Span<const float> grads,
                        float scale) {
  pushes_.fetch_add(1, std::memory_order_relaxed);
  const int64_t step = step_.fetch_add(1, std::memory_order_relaxed) + 1;
  std::vector<uint32_t> rows;
  ForEachByStripe(keys, grads,
                  [&](Stripe& stripe, const StripeBatch& b) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                    FindOrCreateAll(stripe, b.keys, b.n, &rows);
                    ApplyToRows(stripe, rows, b.values, step, scale);
                  });
}

void SparseTable::Accumulate(absl::Span<const uint64_t> keys, absl::Span<const float> grads) {
  pushes_.fetch_add(1, std::memory_order_relaxed);
  ForEachByStripe(
      keys, grads, [&](Stripe& stripe, const StripeBatch& b) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        for (size_t j = 0; j < b.n; ++j) {
          auto [it, inserted] =
              stripe.pending.try_emplace(b.keys[j], static_cast<uint32_t>(stripe.pending.size()));
          const size_t offset = static_cast<size_t>(it->second) * dim_;
          if (inserted) stripe.accum.resize(offset + dim_, 0.0f);
          const float* g = b.values + j * dim_;
          for (uint32_t d = 0; d < dim_; ++d) stripe.accum[offset + d] += g[d];
        }
      });
}

void SparseTable::ApplyAccumulated(float scale) {
  const int64_t step = step_.fetch_add(1, std::memory_order_relaxed) + 1;
  std::vector<uint64_t> keys;
  std::vector<uint32_t> rows;
  std::vector<float> grads;
  for (auto& stripe_ptr : stripes_) {
    Stripe& stripe = *stripe_ptr;
    absl::MutexLock lock(&stripe.mu);
    if (stripe.pending.empty()) continue;
    keys.clear();
    for (const auto& [key, accum_row] : stripe.pending) keys.push_back(key);
    std::sort(keys.begin(), keys.end());
    FindOrCreateAll(stripe, keys.data(), keys.size(), &rows);
    grads.resize(keys.size() * dim_);
    for (size_t j = 0; j < keys.size(); ++j) {
      std::memcpy(grads.data() + j * dim_,
                  stripe.accum.data() + static_cast<size_t>(stripe.pending[keys[j]]) * dim_,
                  dim_ * sizeof(float));
    }
    ApplyToRows(stripe, rows, grads.data(), step, scale);
    stripe.pending.clear();
    stripe.accum.clear();
  }
}

void SparseTable::ExportAccumulated(v1::TableAggregate* out) const {
  std::vector<std::pair<uint64_t, std::vector<float>>> rows;
  for (const auto& stripe : stripes_) {
    absl::MutexLock lock(&stripe->mu);
    for (const auto& [key, accum_row] : stripe->pending) {
      const float* at = stripe->accum.data() + static_cast<size_t>(accum_row) * dim_;
      rows.emplace_back(key, std::vector<float>(at, at + dim_));
    }
  }
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [key, values] : rows) {
    out->add_keys(key);
    out->mutable_values()->Add(values.begin(), values.end());
  }
}

void SparseTable::ExportCreated(v1::TableAggregate* out) {
  std::vector<uint64_t> keys;
  for (const auto& stripe : stripes_) {
    absl::MutexLock lock(&stripe->mu);
    keys.insert(keys.end(), stripe->created.begin(), stripe->created.end());
    stripe->created.clear();
  }
  std::sort(keys.begin(), keys.end());
  out->mutable_created_keys()->Add(keys.begin(), keys.end());
}

absl::Status SparseTable::CheckAggregate(const v1::TableAggregate& in) const {
  if (in.chunks_size() > 0) {
    return absl::InvalidArgumentError(absl::StrCat("table ", name_, " is sparse, not chunked"));
  }
  for (int i = 1; i < in.created_keys_size(); ++i) {
    if (in.created_keys(i) <= in.created_keys(i - 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("table ", name_, ": created keys not increasing at ", i));
    }
  }
  if (static_cast<uint64_t>(in.values_size()) != uint64_t{dim_} * in.keys_size()) {
    return absl::InvalidArgumentError(absl::StrCat("table ", name_, ": ", in.values_size(),
                                                   " aggregated values for ", in.keys_size(),
                                                   " keys of dim ", dim_));
  }
  for (int i = 1; i < in.keys_size(); ++i) {
    if (in.keys(i) <= in.keys(i - 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("table ", name_, ": aggregated keys not increasing at ", i));
    }
  }
  if (!AllFinite(absl::MakeConstSpan(in.values().data(), in.values_size()))) {
    return absl::InvalidArgumentError(
        absl::StrCat("table ", name_, ": an aggregated gradient is NaN or Inf"));
  }
  return absl::OkStatus();
}

absl::Status SparseTable::ImportCreated(const v1::TableAggregate& in) {
  if (absl::Status s = CheckAggregate(in); !s.ok()) return s;
  if (in.created_keys_size() == 0) return absl::OkStatus();
  std::vector<float> values(static_cast<size_t>(in.created_keys_size()) * dim_);
  Read(absl::MakeConstSpan(in.created_keys().data(), in.created_keys_size()),
       absl::MakeSpan(values), /*create=*/true);
  return absl::OkStatus();
}

absl::Status SparseTable::ImportAccumulated(const v1::TableAggregate& in) {
  if (absl::Status s = CheckAggregate(in); !s.ok()) return s;
  // Into an empty buffer the sums are copied exactly (0 + x == x).
  Accumulate(absl::MakeConstSpan(in.keys().data(), in.keys_size()),
             absl::MakeConstSpan(in.values().data(), in.values_size()));
  return absl::OkStatus();
}

uint64_t SparseTable::rows() const {
  uint64_t total = 0;
  for (const auto& stripe : stripes_) {
    absl::MutexLock lock(&stripe->mu);
    total += stripe->index.size();
  }
  return total;
}

uint64_t SparseTable::Snapshot(const std::function<char*(uint64_t bytes)>& allocate,
                              int64_t* step) const {
  *step = step_.load(std::memory_order_relaxed);
  const size_t row_bytes = row_floats_ * sizeof(float);
  std::vector<uint64_t> keys;  // one stripe's
  std::vector<uint32_t> at;
  uint64_t slack = 1024;
  while (true) {
    uint64_t counted = 0;
    for (const auto& stripe : stripes_) {
      absl::MutexLock lock(&stripe->mu);
      counted += stripe->index.size();
    }
    const uint64_t capacity = counted + counted / 64 + slack;
    char* const out = allocate(capacity * (sizeof(uint64_t) + row_bytes));
    char* const rows = out + capacity * sizeof(uint64_t);
    uint64_t n = 0;
    bool fits = true;
    for (const auto& stripe_ptr : stripes_) {
      Stripe& stripe = *stripe_ptr;
      absl::MutexLock lock(&stripe.mu);
      if (n + stripe.index.size() > capacity) {
        fits = false;
        break;
      }
      keys.clear();
      at.clear();
      stripe.index.Export(&keys, &at);
      if (keys.empty()) continue;
      std::memcpy(out + n * sizeof(uint64_t), keys.data(), keys.size() * sizeof(uint64_t));
      for (size_t j = 0; j < at.size(); ++j) {
        std::memcpy(rows + (n + j) * row_bytes, stripe.data.data() + size_t{at[j]} * row_floats_,
                    row_bytes);
      }
      n += keys.size();
    }
    if (!fits) {
      slack = 2 * (slack + counted / 64);  // pulls created many rows meanwhile
      continue;
    }
    // The rows follow the n keys directly.
    if (n > 0 && n < capacity) std::memmove(out + n * sizeof(uint64_t), rows, n * row_bytes);
    return n;
  }
}

absl::Status SparseTable::Restore(const char* keys, const char* rows, uint64_t n, int64_t step) {
  // Each stripe's keys in increasing order, as FindOrCreateAll needs them;
  // all sorted and checked before the first row is written.
  std::vector<std::vector<std::pair<uint64_t, uint64_t>>> by_stripe(stripes_.size());
  for (uint64_t i = 0; i < n; ++i) {
    uint64_t key;
    std::memcpy(&key, keys + i * sizeof(uint64_t), sizeof(key));  // any alignment
    by_stripe[StripeOf(key)].emplace_back(key, i);
  }
  for (auto& list : by_stripe) {
    std::sort(list.begin(), list.end());
    for (size_t j = 1; j < list.size(); ++j) {
      if (list[j].first == list[j - 1].first) {
        return absl::InvalidArgumentError(absl::StrCat(
            "table '", name_, "': key ", list[j].first, " appears twice in the checkpoint"));
      }
    }
  }
  step_.store(step, std::memory_order_relaxed);
  std::vector<uint64_t> sorted;
  std::vector<uint32_t> at;
  for (size_t s = 0; s < stripes_.size(); ++s) {
    const auto& list = by_stripe[s];
    if (list.empty()) continue;
    sorted.clear();
    for (const auto& [key, i] : list) sorted.push_back(key);
    Stripe& stripe = *stripes_[s];
    absl::MutexLock lock(&stripe.mu);
    FindOrCreateAll(stripe, sorted.data(), sorted.size(), &at);
    for (size_t j = 0; j < list.size(); ++j) {
      std::memcpy(RowData(stripe, at[j]), rows + list[j].second * row_floats_ * sizeof(float),
                  row_floats_ * sizeof(float));
    }
  }
  return absl::OkStatus();
}

}  // namespace tessera
