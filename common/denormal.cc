#include "common/denormal.h"

#if defined(__x86_64__) || defined(__SSE__)
#include <xmmintrin.h>
#endif

namespace tessera {
namespace {

#if defined(__x86_64__) || defined(__SSE__)
constexpr uint64_t kFlushBits = 0x8040;  // MXCSR: FTZ (bit 15) and DAZ (bit 6)
uint64_t ReadControl() { return _mm_getcsr(); }
void WriteControl(uint64_t value) { _mm_setcsr(static_cast<unsigned int>(value)); }
#elif defined(__aarch64__)
constexpr uint64_t kFlushBits = uint64_t{1} << 24;  // FPCR.FZ
uint64_t ReadControl() {
  uint64_t value;
  __asm__ __volatile__("mrs %0, fpcr" : "=r"(value));
  return value;
}
void WriteControl(uint64_t value) { __asm__ __volatile__("msr fpcr, %0" : : "r"(value)); }
#else
constexpr uint64_t kFlushBits = 0;
uint64_t ReadControl() { return 0; }
void WriteControl(uint64_t) {}
#endif

}  // namespace

ScopedFlushDenormal::ScopedFlushDenormal() : saved_(ReadControl()) {
  if ((saved_ & kFlushBits) != kFlushBits) WriteControl(saved_ | kFlushBits);
}

ScopedFlushDenormal::~ScopedFlushDenormal() {
  if ((saved_ & kFlushBits) != kFlushBits) WriteControl(saved_);
}

bool FlushingDenormals() { return kFlushBits != 0 && (ReadControl() & kFlushBits) == kFlushBits; }

}  // namespace tessera
