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

#include <cstddef>
#include <cstdint>
#include <vector>

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

// A run of one dense table's global indices [offset, offset + length);
// `table` is the table's place in the job's tables (JobConfig::Tables()).
struct DensePiece {
  size_t table = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  bool operator==(const DensePiece& o) const {
    return table == o.table && offset == o.offset && length == o.length;
  }
};

// worker.bsp_parts: the parts a BSP step moves shard `shard`'s dense values
// in. Its ranges of every dense table (`dense_sizes[t]` floats, 0 for a
// sparse table), one after another in table order, are cut at
// floor(total*k/P) for k = 1..P-1, each cut moved back to a multiple of
// kBspPartAlign floats into the table range it falls in; cuts that meet
// are one, so there are at most P parts, none empty, each a list of pieces
// of one table each. Worker and shard both compute it, so a push or pull of
// part k names the same values on both sides.
// REQUIRES: num_shards > 0, shard < num_shards, parts > 0.
//
// The alignment keeps a shard's arithmetic the same whatever the parts:
// a part's values start where a vector register's would in the whole
// range, and Eigen's vectorized float math (its fast square root) can
// differ from its scalar path in the last bit.
inline constexpr uint64_t kBspPartAlign = 16;
std::vector<std::vector<DensePiece>> BspParts(const std::vector<uint64_t>& dense_sizes,
                                              uint32_t shard, uint32_t num_shards, uint32_t parts);

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
