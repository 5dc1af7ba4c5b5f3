// Allocator settings for Tessera's daemons.
//
// A parameter transfer allocates several megabyte-sized buffers per call
// (response bytes, serialized slices, parsed messages). By default glibc
// serves every allocation above 128 KiB (a threshold that only adapts slowly)
// with a fresh mmap and returns it on free, so each call faults every page of
// every buffer in anew; on a VM a page fault costs microseconds. Keeping
// buffers of up to 32 MiB on the heap, and not trimming the heap, lets calls
// reuse warm memory: a 1 MiB pull went from 4.2 ms to 0.9 ms on the build
// machine (docs/PERFORMANCE.md).
//
// Trade-off: freed memory stays in the process for reuse instead of going
// back to the kernel, so resident memory sits near its peak.
//
// Setting TESSERA_DEFAULT_MALLOC (to anything) keeps glibc's defaults.
// Call once at the start of main(), before other threads start.
#ifndef TESSERA_COMMON_ALLOCATOR_H_
#define TESSERA_COMMON_ALLOCATOR_H_

namespace tessera {

void ConfigureAllocatorForLargeTransfers();

}  // namespace tessera

#endif  // TESSERA_COMMON_ALLOCATOR_H_
