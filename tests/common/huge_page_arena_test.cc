// HugePageArena: block sizes, alignment, buddy reuse and merging, growth that
// keeps contents on every path (small -> small, small -> large, large ->
// larger), and HugeArray on top of it.
#include "common/huge_page_arena.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstring>
#include <vector>

namespace tessera {
namespace {

constexpr size_t kMiB = size_t{1} << 20;

uintptr_t Address(const void* p) { return reinterpret_cast<uintptr_t>(p); }

void Fill(void* p, size_t bytes, uint8_t seed) {
  auto* b = static_cast<uint8_t*>(p);
  for (size_t i = 0; i < bytes; ++i) b[i] = static_cast<uint8_t>(seed + i * 7);
}

bool Holds(const void* p, size_t bytes, uint8_t seed) {
  const auto* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i < bytes; ++i) {
    if (b[i] != static_cast<uint8_t>(seed + i * 7)) return false;
  }
  return true;
}

TEST_CASE("HugePageArena rounds small blocks to powers of two and large ones to 2 MiB") {
  CHECK(HugePageArena::BlockBytes(1) == 4096);
  CHECK(HugePageArena::BlockBytes(4096) == 4096);
  CHECK(HugePageArena::BlockBytes(4097) == 8192);
  CHECK(HugePageArena::BlockBytes(kMiB) == kMiB);
  CHECK(HugePageArena::BlockBytes(kMiB + 1) == 2 * kMiB);
  CHECK(HugePageArena::BlockBytes(2 * kMiB + 1) == 4 * kMiB);
  CHECK(HugePageArena::BlockBytes(5 * kMiB) == 6 * kMiB);  // whole huge pages, not 8 MiB
}

TEST_CASE("HugePageArena blocks are aligned and never overlap") {
  HugePageArena arena;
  std::vector<std::pair<void*, size_t>> blocks;
  const size_t sizes[] = {100, 4096, 5000, 65536, 300000, kMiB, 3 * kMiB};
  for (int round = 0; round < 3; ++round) {
    for (size_t bytes : sizes) {
      void* p = arena.Allocate(bytes);
      CHECK(Address(p) % 4096 == 0);
      if (bytes > kMiB) CHECK(Address(p) % HugePageArena::kHugePage == 0);
      Fill(p, bytes, static_cast<uint8_t>(blocks.size()));
      blocks.emplace_back(p, bytes);
    }
  }
  for (size_t i = 0; i < blocks.size(); ++i) {
    INFO("block " << i << " of " << blocks[i].second << " bytes");
    CHECK(Holds(blocks[i].first, blocks[i].second, static_cast<uint8_t>(i)));
  }
  for (auto [p, bytes] : blocks) arena.Free(p, bytes);
}

TEST_CASE("HugePageArena merges freed buddies and hands the memory out again") {
  HugePageArena arena;
  void* a = arena.Allocate(4096);
  void* b = arena.Allocate(4096);
  REQUIRE((Address(a) ^ Address(b)) == 4096);  // buddies: split from one chunk
  void* c = arena.Allocate(512 * 1024);
  arena.Free(a, 4096);
  arena.Free(b, 4096);
  arena.Free(c, 512 * 1024);
  // Everything merged back into the whole chunk, which a 1 MiB block reuses.
  void* d = arena.Allocate(kMiB);
  CHECK(Address(d) == std::min(Address(a), Address(b)));
  // A freed block is reused before a new chunk is mapped.
  void* e = arena.Allocate(8192);
  arena.Free(e, 8192);
  CHECK(Address(arena.Allocate(8192)) == Address(e));
}

TEST_CASE("HugePageArena::Grow keeps the contents on every path") {
  HugePageArena arena;
  size_t bytes = 3000;
  void* p = arena.Allocate(bytes);
  Fill(p, bytes, 11);
  // 4 KiB ... 1 MiB inside chunks, then own mappings moved by mremap.
  for (size_t next : {size_t{9000}, 200 * size_t{1024}, kMiB, 2 * kMiB + 5, 7 * kMiB, 20 * kMiB}) {
    INFO("growing " << bytes << " -> " << next);
    p = arena.Grow(p, bytes, next);
    REQUIRE(Holds(p, bytes, 11));
    if (next > kMiB) CHECK(Address(p) % HugePageArena::kHugePage == 0);
    Fill(p, next, 11);  // the whole new block is writable
    bytes = next;
  }
  arena.Free(p, bytes);
}

TEST_CASE("HugeArray resizes through small and large blocks and moves") {
  HugePageArena arena;
  HugeArray<uint64_t> a(&arena);
  CHECK(a.size() == 0);
  for (size_t n = 1; n <= 600'000; n = n * 3 + 1) {  // up to 4.8 MB
    const size_t old = a.size();
    a.Resize(n);
    for (size_t i = old; i < n; ++i) a[i] = i * 2654435761ull;
    for (size_t i = 0; i < n; i += 997) REQUIRE(a[i] == i * 2654435761ull);
  }
  const size_t n = a.size();
  a.Resize(10);  // shrinking keeps the prefix
  CHECK(a[9] == 9 * 2654435761ull);
  a.Resize(n);
  HugeArray<uint64_t> b = std::move(a);
  CHECK(a.size() == 0);
  CHECK(a.data() == nullptr);
  CHECK(b.size() == n);
  CHECK(b[5] == 5 * 2654435761ull);
}

TEST_CASE("HugeArray::Reserve keeps the contents and growth within it never moves the array") {
  HugePageArena arena;
  for (size_t reserve : {size_t{1000}, size_t{3'000'000}}) {  // a small block, then 24 MB
    INFO("reserve " << reserve);
    HugeArray<uint64_t> a(&arena);
    a.Resize(100);
    for (size_t i = 0; i < 100; ++i) a[i] = i + 7;
    a.Reserve(reserve);
    CHECK(a.capacity() >= reserve);
    CHECK(a.size() == 100);
    for (size_t i = 0; i < 100; ++i) REQUIRE(a[i] == i + 7);
    const uint64_t* at = a.data();
    for (size_t n = 200; n < reserve; n *= 2) {
      a.Resize(n);
      REQUIRE(a.data() == at);
    }
    a.Resize(reserve);
    REQUIRE(a.data() == at);
    for (size_t i = 100; i < reserve; ++i) a[i] = i + 7;
    for (size_t i = 0; i < reserve; i += 101) REQUIRE(a[i] == i + 7);
    a.Reserve(reserve / 2);  // never shrinks
    CHECK(a.data() == at);
    CHECK(a.capacity() >= reserve);
  }
}

}  // namespace
}  // namespace tessera
