// SortedIndex: the key -> row index of one sparse-table stripe, built for
// requests whose keys arrive sorted (Tessera's wire rule).
//
// Keys live in a sorted main array plus a small sorted delta. A lookup walks
// the request's keys forward through both with galloping search, so a request
// touches memory in order instead of probing a hash table at random (reads
// and updates of existing rows stream). New keys go into the delta; once the
// delta outgrows a quarter of the main array it is merged in, so a request
// that adds a few keys to a large stripe costs O(delta), not O(stripe), and
// each key is moved O(1) times on average.
//
// Both arrays live in the table's HugePageArena (huge pages, growth without
// copying) and merges run in place from the back, so a growing stripe needs
// no second buffer and faults in only the pages it grows into.
//
// Not thread-safe: the owning stripe's mutex guards it.
#ifndef TESSERA_SERVER_SORTED_INDEX_H_
#define TESSERA_SERVER_SORTED_INDEX_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/huge_page_arena.h"

namespace tessera {

class SortedIndex {
 public:
  static constexpr uint32_t kMissing = UINT32_MAX;

  // `arena` holds the arrays and must outlive the index.
  explicit SortedIndex(HugePageArena* arena);

  // For each keys[j] (j < n), writes its row to rows[j], or kMissing.
  // Returns how many were missing. REQUIRES: keys[0, n) strictly increasing.
  size_t Find(const uint64_t* keys, size_t n, uint32_t* rows) const;

  // Adds keys[j] -> rows[j] for j < n.
  // REQUIRES: keys[0, n) strictly increasing, none of them present.
  void Insert(const uint64_t* keys, const uint32_t* rows, size_t n);

  size_t size() const { return main_.size() + delta_.size(); }

  // Appends every key and its row to *keys and *rows (not in key order).
  void Export(std::vector<uint64_t>* keys, std::vector<uint32_t>* rows) const;

  // Makes room for n keys in all and faults the memory in now, so that
  // inserts up to n keys neither fault pages nor move arrays.
  void Reserve(size_t n);

 private:
  // Sorted keys with their rows.
  struct Run {
    explicit Run(HugePageArena* arena) : keys(arena), rows(arena) {}
    size_t size() const { return keys.size(); }
    void Resize(size_t n) {
      keys.Resize(n);
      rows.Resize(n);
    }
    void Reserve(size_t n) {
      keys.Reserve(n);
      rows.Reserve(n);
    }
    HugeArray<uint64_t> keys;
    HugeArray<uint32_t> rows;
  };

  // Merges sorted keys[0, n) with their rows into *run, in place.
  static void MergeInto(Run* run, const uint64_t* keys, const uint32_t* rows, size_t n);

  Run main_, delta_;
};

}  // namespace tessera

#endif  // TESSERA_SERVER_SORTED_INDEX_H_
