#include "server/sorted_index.h"

#include <algorithm>

namespace tessera {
namespace {

// The delta is merged into main once it holds more than main / 4 + this.
constexpr size_t kDeltaSlack = 1024;

// The first position >= `from` in keys[0, size) whose key is >= `key`, by
// galloping search.
size_t Gallop(const uint64_t* keys, size_t size, size_t from, uint64_t key) {
  size_t lo = from, step = 1, hi = from;
  while (hi < size && keys[hi] < key) {
    lo = hi + 1;
    hi = from + step;
    step *= 2;
  }
  hi = std::min(hi, size);
  // Branch-free lower bound in [lo, hi): the comparisons are coin flips.
  const uint64_t* base = keys + lo;
  size_t len = hi - lo;
  while (len > 1) {
    const size_t half = len / 2;
    base = base[half - 1] < key ? base + half : base;
    len -= half;
  }
  return (base - keys) + (len == 1 && *base < key);
}

// The first position >= `from` in keys[0, size) whose key is >= `key`. A
// request's keys are usually dense in a stripe (a few entries apart), so a
// short linear scan, which the branch predictor and the prefetcher follow,
// comes before the galloping search for longer jumps.
size_t Seek(const uint64_t* keys, size_t size, size_t from, uint64_t key) {
  const size_t linear_end = std::min(size, from + 16);
  while (from < linear_end && keys[from] < key) ++from;
  if (from < linear_end || from == size) return from;
  return Gallop(keys, size, from, key);
}

}  // namespace

// Merges sorted keys[0, n) with their rows into *run in place: the run
// grows (without copying, see HugeArray) and is filled from the back, so
// every element moves at most once and no second buffer is needed.
// Branch-free: keys interleave at random, so a branch on which side is
// larger would be mispredicted half the time.
void SortedIndex::MergeInto(Run* run, const uint64_t* b_keys, const uint32_t* b_rows, size_t n) {
  size_t i = run->size(), j = n;
  run->Resize(i + n);
  uint64_t* keys = run->keys.data();
  uint32_t* rows = run->rows.data();
  while (i > 0 && j > 0) {
    const uint64_t a_key = keys[i - 1], b_key = b_keys[j - 1];
    const uint32_t a_row = rows[i - 1], b_row = b_rows[j - 1];
    const bool take_a = a_key > b_key;
    keys[i + j - 1] = take_a ? a_key : b_key;
    rows[i + j - 1] = take_a ? a_row : b_row;
    i -= take_a;
    j -= !take_a;
  }
  // What is left of the run is already in place.
  std::copy(b_keys, b_keys + j, keys);
  std::copy(b_rows, b_rows + j, rows);
}

SortedIndex::SortedIndex(HugePageArena* arena) : main_(arena), delta_(arena) {}

size_t SortedIndex::Find(const uint64_t* keys, size_t n, uint32_t* rows) const {
  const uint64_t* main_keys = main_.keys.data();
  const uint64_t* delta_keys = delta_.keys.data();
  const size_t main_size = main_.size(), delta_size = delta_.size();
  size_t missing = 0, m = 0, d = 0;
  for (size_t j = 0; j < n; ++j) {
    const uint64_t key = keys[j];
    m = Seek(main_keys, main_size, m, key);
    if (m < main_size && main_keys[m] == key) {
      rows[j] = main_.rows[m];
      continue;
    }
    d = Seek(delta_keys, delta_size, d, key);
    if (d < delta_size && delta_keys[d] == key) {
      rows[j] = delta_.rows[d];
      continue;
    }
    rows[j] = kMissing;
    ++missing;
  }
  return missing;
}

void SortedIndex::Reserve(size_t n) {
  main_.Reserve(n);
  // The delta's largest size before a merge empties it (a request that tips
  // it over may still grow it, once).
  delta_.Reserve(n / 4 + kDeltaSlack);
}

void SortedIndex::Insert(const uint64_t* keys, const uint32_t* rows, size_t n) {
  if (n == 0) return;
  MergeInto(&delta_, keys, rows, n);
  if (delta_.size() <= main_.size() / 4 + kDeltaSlack) return;
  MergeInto(&main_, delta_.keys.data(), delta_.rows.data(), delta_.size());
  delta_.Resize(0);
}

void SortedIndex::Export(std::vector<uint64_t>* keys, std::vector<uint32_t>* rows) const {
  for (const Run* run : {&main_, &delta_}) {
    keys->insert(keys->end(), run->keys.data(), run->keys.data() + run->size());
    rows->insert(rows->end(), run->rows.data(), run->rows.data() + run->size());
  }
}

}  // namespace tessera
