#include "server/sorted_index.h"

#include <algorithm>

namespace tessera {
namespace {

// The first position >= `from` whose key is >= `key`, by galloping search.
size_t Gallop(const std::vector<uint64_t>& keys, size_t from, uint64_t key) {
  size_t lo = from, step = 1, hi = from;
  while (hi < keys.size() && keys[hi] < key) {
    lo = hi + 1;
    hi = from + step;
    step *= 2;
  }
  hi = std::min(hi, keys.size());
  return std::lower_bound(keys.begin() + lo, keys.begin() + hi, key) - keys.begin();
}

}  // namespace

size_t SortedIndex::Find(const uint64_t* keys, const uint32_t* idx, size_t n,
                         uint32_t* rows) const {
  size_t missing = 0, m = 0, d = 0;
  for (size_t j = 0; j < n; ++j) {
    const uint64_t key = keys[idx[j]];
    m = Gallop(main_keys_, m, key);
    if (m < main_keys_.size() && main_keys_[m] == key) {
      rows[j] = main_rows_[m];
      continue;
    }
    d = Gallop(delta_keys_, d, key);
    if (d < delta_keys_.size() && delta_keys_[d] == key) {
      rows[j] = delta_rows_[d];
      continue;
    }
    rows[j] = kMissing;
    ++missing;
  }
  return missing;
}

void SortedIndex::Merge(const std::vector<uint64_t>& a_keys, const std::vector<uint32_t>& a_rows,
                        const std::vector<uint64_t>& b_keys, const std::vector<uint32_t>& b_rows,
                        std::vector<uint64_t>* out_keys, std::vector<uint32_t>* out_rows) {
  // Filled by push_back into reserved space: no zero-fill of what is about to
  // be overwritten, and headroom so a growing stripe does not reallocate (and
  // fault fresh pages in) on every merge.
  const size_t total = a_keys.size() + b_keys.size();
  out_keys->clear();
  out_rows->clear();
  if (out_keys->capacity() < total) {
    out_keys->reserve(total + total / 2);
    out_rows->reserve(total + total / 2);
  }
  size_t i = 0, j = 0;
  while (i < a_keys.size() && j < b_keys.size()) {
    if (a_keys[i] < b_keys[j]) {
      out_keys->push_back(a_keys[i]);
      out_rows->push_back(a_rows[i++]);
    } else {
      out_keys->push_back(b_keys[j]);
      out_rows->push_back(b_rows[j++]);
    }
  }
  out_keys->insert(out_keys->end(), a_keys.begin() + i, a_keys.end());
  out_rows->insert(out_rows->end(), a_rows.begin() + i, a_rows.end());
  out_keys->insert(out_keys->end(), b_keys.begin() + j, b_keys.end());
  out_rows->insert(out_rows->end(), b_rows.begin() + j, b_rows.end());
}

void SortedIndex::Insert(const uint64_t* keys, const uint32_t* idx, const uint32_t* rows,
                         size_t n) {
  if (n == 0) return;
  std::vector<uint64_t> new_keys(n);
  std::vector<uint32_t> new_rows(rows, rows + n);
  for (size_t j = 0; j < n; ++j) new_keys[j] = keys[idx[j]];
  Merge(delta_keys_, delta_rows_, new_keys, new_rows, &scratch_keys_, &scratch_rows_);
  delta_keys_.swap(scratch_keys_);
  delta_rows_.swap(scratch_rows_);
  if (delta_keys_.size() > main_keys_.size() / 8 + 1024) {
    Merge(main_keys_, main_rows_, delta_keys_, delta_rows_, &scratch_keys_, &scratch_rows_);
    main_keys_.swap(scratch_keys_);
    main_rows_.swap(scratch_rows_);
    delta_keys_.clear();
    delta_rows_.clear();
  }
}

}  // namespace tessera
