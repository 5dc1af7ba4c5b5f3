// Partitioning of tables over S server shards.
//
// Dense tables of N floats are split into S contiguous ranges whose sizes
// differ by at most one: shard s owns [floor(N*s/S), floor(N*(s+1)/S)).
// Sparse rows live on shard SparseShardOf(key, S) = SplitMix64(key) mod S.
// SplitMix64 is fixed and documented here so that any client, in any
// language, can route keys: it is the finalizer of Steele et al.'s SplitMix64
// (x ^= x>>30; x *= 0xbf58476d1ce4e5b9; x ^= x>>27; x *= 0x94d049bb133111eb;
// x ^= x>>31), applied to the key plus 0x9e3779b97f4a7c15.
//
// Pure functions; safe from any thread.
#ifndef TESSERA_COMMON_PARTITION_H_
#define TESSERA_COMMON_PARTITION_H_

#include <cstdint>

namespace tessera {

// A half-open range [begin, end) of a dense table's global indices.
struct DenseRange {
  uint64_t begin = 0;
  uint64_t end = 0;
  uint64_t size() const { return end - begin; }
  bool Contains(uint64_t offset, uint64_t length) const {
    return offset >= begin && length <= end - begin && offset - begin <= end - begin - length;
  }
  bool operator==(const DenseRange& o) const { return begin == o.begin && end == o.end; }
};

// The range of a table of `total` floats owned by `shard` of `num_shards`.
// REQUIRES: num_shards > 0, shard < num_shards.
DenseRange DenseShardRange(uint64_t total, uint32_t shard, uint32_t num_shards);

// The shard that owns the dense index `index`. REQUIRES: index < total.
uint32_t DenseShardOf(uint64_t index, uint64_t total, uint32_t num_shards);

// The fixed 64-bit mixer described above.
// Inline: the server hashes every key of every sparse request.
inline uint64_t SplitMix64(uint64_t key) {
  uint64_t x = key + 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// The shard that owns sparse row `key`. REQUIRES: num_shards > 0.
inline uint32_t SparseShardOf(uint64_t key, uint32_t num_shards) {
  return static_cast<uint32_t>(SplitMix64(key) % num_shards);
}

}  // namespace tessera

#endif  // TESSERA_COMMON_PARTITION_H_
