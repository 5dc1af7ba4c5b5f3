// ParameterCache: the worker's copy of the parameters, tagged with the
// min_clock the shards guaranteed when they were pulled (the values hold
// every update of the clocks below it).
//
// Reuse rule: values pulled with guarantee g may be used to compute at clock
// c while g >= c - s. Under SSP that skips pulls while the bound allows; under
// BSP (s = 0) a worker pulls every clock; under ASP values serve only the
// clock they were pulled for (there is no bound to lean on, so fresher is
// better), which includes a pull fused into the previous push.
// The cache does not hold the worker's own pushes since its pull: updates are
// applied by the server's optimizer, which the worker does not replay.
//
// Threading: the worker's training thread only.
#ifndef TESSERA_WORKER_PARAMETER_CACHE_H_
#define TESSERA_WORKER_PARAMETER_CACHE_H_

#include <cstdint>

#include "common/config.h"
#include "worker/model.h"

namespace tessera {

class ParameterCache {
 public:
  explicit ParameterCache(const ConsistencyConfig& consistency)
      : asp_(consistency.mode == ConsistencyMode::kAsp),
        staleness_(consistency.mode == ConsistencyMode::kBsp ? 0 : consistency.staleness) {}

  // Whether the cached values may be used to compute at `clock`.
  bool FreshFor(int64_t clock) const {
    if (!valid_) return false;
    return asp_ ? pulled_for_ == clock : guaranteed_ >= clock - staleness_;
  }
  // After a pull into values() made for computing at `for_clock`: the
  // shards' min_clock guarantee.
  void Filled(int64_t guaranteed_min_clock, int64_t for_clock) {
    valid_ = true;
    guaranteed_ = guaranteed_min_clock;
    pulled_for_ = for_clock;
  }
  int64_t guaranteed() const { return guaranteed_; }
  ParameterSet& values() { return values_; }

 private:
  const bool asp_;
  const int64_t staleness_;
  bool valid_ = false;
  int64_t guaranteed_ = -1;
  int64_t pulled_for_ = -1;
  ParameterSet values_;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_PARAMETER_CACHE_H_
