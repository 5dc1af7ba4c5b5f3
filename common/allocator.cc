#include "common/allocator.h"

#include <malloc.h>

#include <cstdlib>

namespace tessera {

void ConfigureAllocatorForLargeTransfers() {
  if (std::getenv("TESSERA_DEFAULT_MALLOC") != nullptr) return;  // escape hatch
  // glibc's ceiling for the mmap threshold on 64-bit hosts is 32 MiB.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 64 << 20);
}

}  // namespace tessera
