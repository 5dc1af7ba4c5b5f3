#include "common/partition.h"

namespace tessera {
namespace {

// floor(a * b / c) without overflow for a, b, c below 2^64 and b <= c.
uint64_t MulDiv(uint64_t a, uint64_t b, uint64_t c) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(a) * b) / c);
}

}  // namespace

DenseRange DenseShardRange(uint64_t total, uint32_t shard, uint32_t num_shards) {
  return DenseRange{MulDiv(total, shard, num_shards), MulDiv(total, shard + 1, num_shards)};
}

uint32_t DenseShardOf(uint64_t index, uint64_t total, uint32_t num_shards) {
  // First guess from the inverse of the split, then correct by at most one.
  uint32_t s = static_cast<uint32_t>(MulDiv(index, num_shards, total));
  while (s + 1 < num_shards && DenseShardRange(total, s + 1, num_shards).begin <= index) ++s;
  while (s > 0 && DenseShardRange(total, s, num_shards).begin > index) --s;
  return s;
}

}  // namespace tessera
