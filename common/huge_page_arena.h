// HugePageArena: memory for the server's large, growing arrays (sparse rows
// and their sorted index), backed by transparent huge pages.
//
// Why: on the machines Tessera is measured on (and on many VMs), a 4 KiB page
// fault costs ~12 µs, so faulting in the ~400 MB that 10M fresh sparse rows
// need took over a second; in 2 MiB pages it takes 0.02-0.07 s
// (docs/PERFORMANCE.md). A sparse table keeps one array per lock stripe, and
// most of those arrays are far smaller than a huge page, so they cannot each
// get huge pages of their own: blocks below 2 MiB are carved, buddy-style,
// out of shared 2 MiB chunks advised MADV_HUGEPAGE, and freed blocks merge
// with their buddies and are reused by the next growth of any array. Blocks
// of 2 MiB and more get their own mapping and grow with mremap, which moves
// page tables instead of copying.
//
// Sizes are rounded up to a power of two (4 KiB minimum) below 2 MiB and to
// whole 2 MiB pages above. Where huge pages are off the advice is ignored and
// everything still works, in 4 KiB pages.
//
// Thread-safe: one mutex, taken only to allocate or free (array growth, a
// logarithmic number of times per array), never on reads or writes of the
// memory. Allocation failure throws std::bad_alloc, as operator new does.
#ifndef TESSERA_COMMON_HUGE_PAGE_ARENA_H_
#define TESSERA_COMMON_HUGE_PAGE_ARENA_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"

namespace tessera {

class HugePageArena {
 public:
  static constexpr size_t kHugePage = size_t{2} << 20;

  HugePageArena() = default;
  HugePageArena(const HugePageArena&) = delete;
  HugePageArena& operator=(const HugePageArena&) = delete;
  // REQUIRES: every block was freed or is never used again.
  ~HugePageArena();

  // A block of at least `bytes` (> 0), aligned to 4 KiB; contents unspecified.
  void* Allocate(size_t bytes);
  // Grows the block at p (from Allocate(old_bytes)) to new_bytes > old_bytes,
  // keeping its first old_bytes. Returns the block's new address; p is no
  // longer valid.
  void* Grow(void* p, size_t old_bytes, size_t new_bytes);
  // Gives back a block from Allocate(bytes) / Grow(..., bytes).
  void Free(void* p, size_t bytes);

  // The size a request for `bytes` really occupies.
  static size_t BlockBytes(size_t bytes);

  // Faults in [p, p + bytes) now (writing to it: contents become
  // unspecified), so that first writes later cost no page fault. On VMs that
  // hand freed memory back to the host, first touch costs ~2 ms/MB in any
  // page size; a table reserved at start-up pays it there, not in a request.
  static void Populate(void* p, size_t bytes);

 private:
  static constexpr int kOrders = 10;  // 4 KiB << 0 ... 4 KiB << 9 (one chunk)

  void* AllocateSmall(int order) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FreeSmall(uintptr_t block, int order) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  // Free blocks of each order, by address.
  absl::flat_hash_set<uintptr_t> free_[kOrders] ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<uintptr_t> chunks_ ABSL_GUARDED_BY(mu_);  // mapped 2 MiB chunks
};

// HugeArray<T>: a growable array of trivially copyable T in a HugePageArena.
//
//   HugePageArena arena;
//   HugeArray<float> rows(&arena);
//   rows.Resize(n);  // rows[0, n) valid; elements past the old size unspecified
//
// Not thread-safe: one owner, or the owner's lock. Resize may move the data,
// invalidating pointers into it. The arena must outlive the array.
template <typename T>
class HugeArray {
  static_assert(std::is_trivially_copyable_v<T>, "HugeArray moves bytes, not objects");

 public:
  explicit HugeArray(HugePageArena* arena) : arena_(arena) {}
  HugeArray(const HugeArray&) = delete;
  HugeArray& operator=(const HugeArray&) = delete;
  HugeArray(HugeArray&& other) noexcept { *this = std::move(other); }
  HugeArray& operator=(HugeArray&& other) noexcept {
    if (this != &other) {
      Release();
      arena_ = other.arena_;
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
      capacity_bytes_ = std::exchange(other.capacity_bytes_, 0);
    }
    return *this;
  }
  ~HugeArray() { Release(); }

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return size_; }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }

  // Makes the array n elements long, keeping the first min(n, size()); those
  // past the old size are unspecified. Capacity never shrinks, and at least
  // doubles when it grows, so n appends cost O(n) in all.
  void Resize(size_t n) {
    const size_t bytes = n * sizeof(T);
    if (bytes > capacity_bytes_) GrowTo(std::max(bytes, 2 * capacity_bytes_));
    size_ = n;
  }

  // Makes room for n elements and faults their memory in now, so that
  // growing to n later neither moves the array nor faults a page. Keeps the
  // elements [0, size()); the memory past them is unspecified.
  void Reserve(size_t n) {
    const size_t bytes = n * sizeof(T);
    if (bytes > capacity_bytes_) GrowTo(bytes);
    const size_t used = size_ * sizeof(T);
    HugePageArena::Populate(reinterpret_cast<char*>(data_) + used, capacity_bytes_ - used);
  }

  size_t capacity() const { return capacity_bytes_ / sizeof(T); }

 private:
  void GrowTo(size_t bytes) {
    const size_t want = HugePageArena::BlockBytes(bytes);
    data_ = static_cast<T*>(data_ == nullptr ? arena_->Allocate(want)
                                             : arena_->Grow(data_, capacity_bytes_, want));
    capacity_bytes_ = want;
  }

  void Release() {
    if (data_ != nullptr) arena_->Free(data_, capacity_bytes_);
    data_ = nullptr;
    size_ = capacity_bytes_ = 0;
  }

  HugePageArena* arena_ = nullptr;
  T* data_ = nullptr;
  size_t size_ = 0;
  size_t capacity_bytes_ = 0;
};

}  // namespace tessera

#endif  // TESSERA_COMMON_HUGE_PAGE_ARENA_H_
