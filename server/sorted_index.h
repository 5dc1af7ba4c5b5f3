// SortedIndex: the key -> row index of one sparse-table stripe, built for
// requests whose keys arrive sorted (Tessera's wire rule).
//
// Keys live in a sorted main array plus a small sorted delta. A lookup walks
// the request's keys forward through both with galloping search, so a request
// touches memory in order instead of probing a hash table at random. New keys
// go into the delta; once the delta outgrows an eighth of the main array it is
// merged in, so a request that adds a few keys to a large stripe costs O(delta),
// not O(stripe), and each key is moved O(1) times on average.
//
// Not thread-safe: the owning stripe's mutex guards it.
#ifndef TESSERA_SERVER_SORTED_INDEX_H_
#define TESSERA_SERVER_SORTED_INDEX_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tessera {

class SortedIndex {
 public:
  static constexpr uint32_t kMissing = UINT32_MAX;

  // For each keys[idx[j]] (j < n; ascending in j), writes its row to rows[j],
  // or kMissing. Returns how many were missing.
  // REQUIRES: the keys visited are strictly increasing.
  size_t Find(const uint64_t* keys, const uint32_t* idx, size_t n, uint32_t* rows) const;

  // Adds keys[idx[j]] -> rows[j] for j < n.
  // REQUIRES: the keys visited are strictly increasing and none is present.
  void Insert(const uint64_t* keys, const uint32_t* idx, const uint32_t* rows, size_t n);

  size_t size() const { return main_keys_.size() + delta_keys_.size(); }

 private:
  // Merges (a_keys, a_rows) with (b_keys, b_rows) into (out_keys, out_rows).
  static void Merge(const std::vector<uint64_t>& a_keys, const std::vector<uint32_t>& a_rows,
                    const std::vector<uint64_t>& b_keys, const std::vector<uint32_t>& b_rows,
                    std::vector<uint64_t>* out_keys, std::vector<uint32_t>* out_rows);

  std::vector<uint64_t> main_keys_, delta_keys_;
  std::vector<uint32_t> main_rows_, delta_rows_;
  std::vector<uint64_t> scratch_keys_;  // reused merge buffers
  std::vector<uint32_t> scratch_rows_;
};

}  // namespace tessera

#endif  // TESSERA_SERVER_SORTED_INDEX_H_
