#include "common/huge_page_arena.h"

#include <sys/mman.h>

#include <cstring>
#include <new>

namespace tessera {
namespace {

constexpr size_t kPage = 4096;
constexpr int kChunkOrder = 9;  // kPage << 9 == 2 MiB
// Whole free chunks kept mapped for the next growth; beyond this they go back
// to the kernel.
constexpr size_t kKeepFreeChunks = 8;

size_t RoundUp(size_t bytes, size_t to) { return (bytes + to - 1) / to * to; }

int OrderOf(size_t block_bytes) { return __builtin_ctzll(block_bytes / kPage); }

void AdviseHuge(void* p, size_t bytes) {
#ifdef MADV_HUGEPAGE
  madvise(p, bytes, MADV_HUGEPAGE);  // advice: where THP is off this fails harmlessly
#endif
}

// An address range of `bytes` (a multiple of 2 MiB) aligned to 2 MiB,
// reserved with no access. Huge pages need that alignment.
char* ReserveAligned(size_t bytes) {
  const size_t span = bytes + HugePageArena::kHugePage;
  void* p = mmap(nullptr, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  const uintptr_t start = reinterpret_cast<uintptr_t>(p);
  const uintptr_t aligned = RoundUp(start, HugePageArena::kHugePage);
  if (aligned > start) munmap(p, aligned - start);
  const uintptr_t end = start + span, used_end = aligned + bytes;
  if (end > used_end) munmap(reinterpret_cast<void*>(used_end), end - used_end);
  return reinterpret_cast<char*>(aligned);
}

// Fresh zeroed read-write memory, 2 MiB aligned, advised for huge pages.
void* MapHuge(size_t bytes) {
  char* at = ReserveAligned(bytes);
  void* p = mmap(at, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  if (p == MAP_FAILED) {
    munmap(at, bytes);
    throw std::bad_alloc();
  }
  AdviseHuge(p, bytes);
  return p;
}

}  // namespace

size_t HugePageArena::BlockBytes(size_t bytes) {
  if (bytes > kHugePage / 2) return RoundUp(bytes, kHugePage);
  size_t block = kPage;
  while (block < bytes) block *= 2;
  return block;
}

void HugePageArena::Populate(void* p, size_t bytes) {
  if (bytes == 0) return;
#ifdef MADV_POPULATE_WRITE
  // Page-aligned inner range in one call (Linux 5.14+); the edges by hand.
  const uintptr_t start = RoundUp(reinterpret_cast<uintptr_t>(p), kPage);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + bytes) / kPage * kPage;
  if (end > start && madvise(reinterpret_cast<void*>(start), end - start, MADV_POPULATE_WRITE) == 0) {
    static_cast<volatile char*>(p)[0] = 0;
    static_cast<volatile char*>(p)[bytes - 1] = 0;
    return;
  }
#endif
  // Older kernels and sandboxes: one write per page.
  volatile char* c = static_cast<char*>(p);
  for (size_t i = 0; i < bytes; i += kPage) c[i] = 0;
  c[bytes - 1] = 0;
}

HugePageArena::~HugePageArena() {
  for (uintptr_t chunk : chunks_) munmap(reinterpret_cast<void*>(chunk), kHugePage);
}

void* HugePageArena::Allocate(size_t bytes) {
  const size_t block = BlockBytes(bytes);
  if (block >= kHugePage) return MapHuge(block);
  absl::MutexLock lock(&mu_);
  return AllocateSmall(OrderOf(block));
}

void* HugePageArena::AllocateSmall(int order) {
  int from = order;
  while (from < kOrders && free_[from].empty()) ++from;
  uintptr_t block;
  if (from == kOrders) {
    block = reinterpret_cast<uintptr_t>(MapHuge(kHugePage));
    chunks_.insert(block);
    from = kChunkOrder;
  } else {
    block = *free_[from].begin();
    free_[from].erase(free_[from].begin());
  }
  // Split down to the order asked for; the upper halves become free blocks.
  for (; from > order; --from) free_[from - 1].insert(block + (kPage << (from - 1)));
  return reinterpret_cast<void*>(block);
}

void* HugePageArena::Grow(void* p, size_t old_bytes, size_t new_bytes) {
  const size_t old_block = BlockBytes(old_bytes), new_block = BlockBytes(new_bytes);
  if (new_block <= old_block) return p;
  if (old_block >= kHugePage) {
    // Page tables move to a fresh aligned range; nothing is copied.
    char* at = ReserveAligned(new_block);
    void* q = mremap(p, old_block, new_block, MREMAP_MAYMOVE | MREMAP_FIXED, at);
    if (q != MAP_FAILED) {
      AdviseHuge(q, new_block);
      return q;
    }
    // A kernel without MREMAP_FIXED (some sandboxes): copy instead.
    munmap(at, new_block);
    q = MapHuge(new_block);
    std::memcpy(q, p, old_block);
    munmap(p, old_block);
    return q;
  }
  void* q = Allocate(new_block);
  std::memcpy(q, p, old_block);
  Free(p, old_block);
  return q;
}

void HugePageArena::Free(void* p, size_t bytes) {
  const size_t block = BlockBytes(bytes);
  if (block >= kHugePage) {
    munmap(p, block);
    return;
  }
  absl::MutexLock lock(&mu_);
  FreeSmall(reinterpret_cast<uintptr_t>(p), OrderOf(block));
}

void HugePageArena::FreeSmall(uintptr_t block, int order) {
  // Chunks are 2 MiB aligned, so a block's buddy differs in one address bit.
  for (; order < kChunkOrder; ++order) {
    auto buddy = free_[order].find(block ^ (kPage << order));
    if (buddy == free_[order].end()) break;
    block = std::min(block, *buddy);
    free_[order].erase(buddy);
  }
  if (order == kChunkOrder && free_[kChunkOrder].size() >= kKeepFreeChunks) {
    munmap(reinterpret_cast<void*>(block), kHugePage);
    chunks_.erase(block);
    return;
  }
  free_[order].insert(block);
}

}  // namespace tessera
