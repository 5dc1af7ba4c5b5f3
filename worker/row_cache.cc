#include "worker/row_cache.h"

#include <algorithm>

namespace tessera {

RowCache::RowCache(const ConsistencyConfig& consistency, uint64_t max_rows)
    : enabled_(consistency.mode == ConsistencyMode::kSsp && consistency.staleness >= 1 &&
               max_rows > 0),
      staleness_(consistency.staleness),
      max_rows_(max_rows) {}

std::vector<uint32_t> RowCache::Serve(int64_t clock, RowSet* rows) {
  last_clock_ = clock;
  const std::vector<uint64_t>& keys = (*rows)[0].keys;
  for (SparseRows& r : *rows) r.values.resize(r.keys.size() * size_t{r.dim});
  std::vector<uint32_t> missing;
  for (uint32_t k = 0; k < keys.size(); ++k) {
    auto it = enabled_ ? index_.find(keys[k]) : index_.end();
    if (it == index_.end() || !Fresh(it->second, clock)) {
      missing.push_back(k);
      continue;
    }
    const float* from = slab_.data() + size_t{it->second.slot} * width_;
    for (SparseRows& r : *rows) {
      std::copy_n(from, r.dim, r.values.data() + size_t{k} * r.dim);
      from += r.dim;
    }
  }
  misses_ += static_cast<int64_t>(missing.size());
  hits_ += static_cast<int64_t>(keys.size() - missing.size());
  return missing;
}

void RowCache::Store(const RowSet& rows, const std::vector<uint32_t>& positions,
                     int64_t guaranteed) {
  // A batch with more new rows than the cache holds is not kept at all.
  if (!enabled_ || positions.empty() || positions.size() > max_rows_) return;
  if (width_ == 0) {
    for (const SparseRows& r : rows) width_ += r.dim;
  }
  MakeRoom(positions.size(), last_clock_);
  const std::vector<uint64_t>& keys = rows[0].keys;
  for (uint32_t k : positions) {
    auto [it, fresh] = index_.try_emplace(keys[k], Entry{guaranteed, 0});
    if (fresh) {
      if (!free_slots_.empty()) {
        it->second.slot = free_slots_.back();
        free_slots_.pop_back();
      } else {
        it->second.slot = static_cast<uint32_t>(slab_.size() / width_);
        slab_.resize(slab_.size() + width_);
      }
    }
    it->second.guaranteed = guaranteed;
    float* to = slab_.data() + size_t{it->second.slot} * width_;
    for (const SparseRows& r : rows) {
      std::copy_n(r.values.data() + size_t{k} * r.dim, r.dim, to);
      to += r.dim;
    }
  }
}

void RowCache::MakeRoom(size_t wanted, int64_t clock) {
  if (index_.size() + wanted <= max_rows_) return;
  for (auto it = index_.begin(); it != index_.end();) {
    if (!Fresh(it->second, clock)) {
      free_slots_.push_back(it->second.slot);
      index_.erase(it++);
    } else {
      ++it;
    }
  }
  if (index_.size() + wanted > max_rows_) Invalidate();
}

void RowCache::Invalidate() {
  index_.clear();
  slab_.clear();
  free_slots_.clear();
}

}  // namespace tessera
