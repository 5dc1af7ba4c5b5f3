// Partitioning: dense ranges cover every index exactly once; sparse routing
// follows the documented hash.
#include "common/partition.h"

#include <catch2/catch.hpp>
#include <algorithm>
#include <set>
#include <utility>
#include <vector>

namespace tessera {
namespace {

TEST_CASE("dense ranges tile [0, N) with sizes differing by at most one") {
  for (uint64_t total : {1ull, 2ull, 7ull, 10ull, 1000ull, 1000003ull}) {
    for (uint32_t shards : {1u, 2u, 3u, 7u, 16u}) {
      uint64_t next = 0, min_size = ~0ull, max_size = 0;
      for (uint32_t s = 0; s < shards; ++s) {
        DenseRange r = DenseShardRange(total, s, shards);
        CHECK(r.begin == next);  // contiguous, nothing lost or repeated
        next = r.end;
        min_size = std::min(min_size, r.size());
        max_size = std::max(max_size, r.size());
      }
      CHECK(next == total);
      CHECK(max_size - min_size <= 1);
    }
  }
}

TEST_CASE("more shards than values leaves some shards empty but loses nothing") {
  uint64_t covered = 0;
  for (uint32_t s = 0; s < 5; ++s) covered += DenseShardRange(3, s, 5).size();
  CHECK(covered == 3);
}

TEST_CASE("DenseShardOf inverts the split") {
  for (uint64_t total : {5ull, 97ull, 1024ull}) {
    for (uint32_t shards : {1u, 3u, 4u, 9u}) {
      for (uint64_t i = 0; i < total; ++i) {
        uint32_t s = DenseShardOf(i, total, shards);
        DenseRange r = DenseShardRange(total, s, shards);
        REQUIRE(r.begin <= i);
        REQUIRE(i < r.end);
      }
    }
  }
}

TEST_CASE("huge tables do not overflow") {
  const uint64_t total = 1ull << 40;
  DenseRange last = DenseShardRange(total, 999, 1000);
  CHECK(last.end == total);
}

TEST_CASE("Contains rejects ranges outside, including overflowing ones") {
  DenseRange r{10, 20};
  CHECK(r.Contains(10, 10));
  CHECK(r.Contains(15, 0));
  CHECK_FALSE(r.Contains(9, 2));
  CHECK_FALSE(r.Contains(15, 6));
  CHECK_FALSE(r.Contains(15, ~0ull));
  CHECK_FALSE(r.Contains(~0ull, 2));
}

TEST_CASE("SplitMix64 is the documented function and spreads keys evenly") {
  // Reference values of SplitMix64 seeded with 0 (Steele et al.'s first outputs).
  CHECK(SplitMix64(0) == 0xe220a8397b1dcdafULL);
  CHECK(SplitMix64(0x9e3779b97f4a7c15ULL) == 0x6e789e6aa1b965f4ULL);
  std::vector<int> count(4, 0);
  for (uint64_t k = 0; k < 40000; ++k) ++count[SparseShardOf(k, 4)];
  for (int c : count) CHECK(std::abs(c - 10000) < 500);
}

TEST_CASE("BspParts cuts a shard's dense ranges into aligned runs in table order") {
  // Tables: 100 floats, a sparse table, 70 floats; shard 1 of 2 owns
  // [50, 100) of the first and [35, 70) of the third: 85 floats.
  const std::vector<uint64_t> sizes = {100, 0, 70};
  const auto parts = BspParts(sizes, 1, 2, 3);
  // Cuts at 28 and 56 move back to 16 (16 floats into table 0's range) and
  // to 50 + 0 (56 falls 6 floats into table 2's range).
  REQUIRE(parts.size() == 3);
  CHECK(parts[0] == std::vector<DensePiece>{{0, 50, 16}});
  CHECK(parts[1] == std::vector<DensePiece>{{0, 66, 34}});
  CHECK(parts[2] == std::vector<DensePiece>{{2, 35, 35}});
  // Every float once, in order, each part starting on a multiple of 16
  // floats into its first table's range, whatever the count.
  for (uint32_t p = 1; p <= 12; ++p) {
    const auto cut = BspParts(sizes, 1, 2, p);
    CHECK(cut.size() <= p);
    CHECK_FALSE(cut.empty());
    std::vector<std::pair<size_t, uint64_t>> seen;
    for (const auto& part : cut) {
      REQUIRE_FALSE(part.empty());
      const uint64_t begin = part.front().table == 0 ? 50 : 35;
      CHECK((part.front().offset - begin) % kBspPartAlign == 0);
      for (const DensePiece& piece : part) {
        CHECK(piece.length > 0);
        for (uint64_t i = 0; i < piece.length; ++i) seen.emplace_back(piece.table, piece.offset + i);
      }
    }
    std::vector<std::pair<size_t, uint64_t>> want;
    for (uint64_t i = 50; i < 100; ++i) want.emplace_back(0, i);
    for (uint64_t i = 35; i < 70; ++i) want.emplace_back(2, i);
    CHECK(seen == want);
  }
  CHECK(BspParts(sizes, 1, 2, 4).size() == 4);
  CHECK(BspParts({0, 0}, 0, 1, 4).empty());  // no dense table: no parts
  CHECK(BspParts({10}, 0, 1, 4).size() == 1);  // too small to cut on 16 floats
}

}  // namespace
}  // namespace tessera
