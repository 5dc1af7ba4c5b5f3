// Subnormal floats flushed to zero on the calling thread, for a scope.
//
// Training drives many values towards zero: Adam's first moment of a weight
// whose gradient stays 0 (a dead ReLU unit) shrinks by beta1 each update and
// falls below FLT_MIN (~1.2e-38) after ~800 updates. From then on every
// arithmetic instruction that reads or makes such a value takes a microcode
// assist on x86, ~100 cycles instead of ~4. Measured: the CNN's 3.3M-value
// Adam pass on the server slowed 2.3x once that happened, at clock ~670 of a
// GPU-worker run (docs/PERFORMANCE.md). Flushing subnormals to zero loses
// nothing a float32 model can use; TensorFlow and PyTorch do the same.
//
// Threads: the setting is per thread (MXCSR on x86-64, FPCR on AArch64), so
// the guard acts on the thread that constructs it and must be destroyed on
// that thread. Guards nest: each restores what it found. Elsewhere a no-op.
//
//   ScopedFlushDenormal flush;  // server handler or trainer thread, at entry
#ifndef TESSERA_COMMON_DENORMAL_H_
#define TESSERA_COMMON_DENORMAL_H_

#include <cstdint>

namespace tessera {

class ScopedFlushDenormal {
 public:
  ScopedFlushDenormal();
  ~ScopedFlushDenormal();
  ScopedFlushDenormal(const ScopedFlushDenormal&) = delete;
  ScopedFlushDenormal& operator=(const ScopedFlushDenormal&) = delete;

 private:
  uint64_t saved_;
};

// True when subnormals are flushed on the calling thread (for tests).
bool FlushingDenormals();

}  // namespace tessera

#endif  // TESSERA_COMMON_DENORMAL_H_
