#include "common/partition.h"

#include <algorithm>

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

std::vector<std::vector<DensePiece>> BspParts(const std::vector<uint64_t>& dense_sizes,
                                              uint32_t shard, uint32_t num_shards, uint32_t parts) {
  std::vector<DensePiece> owned;  // this shard's range of each dense table, in order
  std::vector<uint64_t> starts;   // where each begins in the sequence
  uint64_t total = 0;
  for (size_t t = 0; t < dense_sizes.size(); ++t) {
    if (dense_sizes[t] == 0) continue;
    const DenseRange range = DenseShardRange(dense_sizes[t], shard, num_shards);
    if (range.size() == 0) continue;
    owned.push_back({t, range.begin, range.size()});
    starts.push_back(total);
    total += range.size();
  }
  // The cuts, each moved back to a multiple of kBspPartAlign floats into
  // its table's range; cuts that meet are one.
  std::vector<uint64_t> cuts = {0};
  for (uint64_t k = 1; k <= parts && total > 0; ++k) {
    uint64_t cut = MulDiv(total, k, parts);
    if (k < parts) {
      const size_t i = std::upper_bound(starts.begin(), starts.end(), cut) - starts.begin() - 1;
      cut = starts[i] + (cut - starts[i]) / kBspPartAlign * kBspPartAlign;
    }
    if (cut > cuts.back()) cuts.push_back(cut);
  }
  std::vector<std::vector<DensePiece>> out(cuts.size() - 1);
  for (size_t k = 0; k + 1 < cuts.size(); ++k) {
    for (size_t i = 0; i < owned.size(); ++i) {
      const uint64_t lo = std::max(cuts[k], starts[i]);
      const uint64_t hi = std::min(cuts[k + 1], starts[i] + owned[i].length);
      if (lo < hi) out[k].push_back({owned[i].table, owned[i].offset + (lo - starts[i]), hi - lo});
    }
  }
  return out;
}

}  // namespace tessera
