// ParameterCache: the worker's copy of the parameters, tagged with the
// min_clock the shards guaranteed when they were pulled (the values hold
// every update of the clocks below it).
//
// Reuse rule: values pulled with guarantee g may be used to compute at clock
// c while g >= c - s. Under SSP that skips pulls while the bound allows; under
// BSP (s = 0) a worker pulls every clock; under ASP values serve only the
// clock they were pulled for (there is no bound to lean on, so fresher is
// better), which includes a pull fused into the previous push.
// With the push pipeline (worker.overlap_push), ASP values also serve the
// clock after the one they were pulled for: step c computes while push c-1,
// which carries the pull for c, is still in flight.
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
  // `asp_lag`: how many clocks past the one they were pulled for ASP values
  // may serve (0, or 1 with the push pipeline).
  explicit ParameterCache(const ConsistencyConfig& consistency, int64_t asp_lag = 0)
      : asp_(consistency.mode == ConsistencyMode::kAsp),
        staleness_(consistency.mode == ConsistencyMode::kBsp ? 0 : consistency.staleness),
        asp_lag_(asp_lag) {}

  // Whether the cached values may be used to compute at `clock`.
  bool FreshFor(int64_t clock) const {
    if (!valid_) return false;
    return asp_ ? pulled_for_ <= clock && pulled_for_ >= clock - asp_lag_
                : guaranteed_ >= clock - staleness_;
  }
  // After a pull into values() made for computing at `for_clock`: the
  // shards' min_clock guarantee.
  void Filled(int64_t guaranteed_min_clock, int64_t for_clock) {
    valid_ = true;
    guaranteed_ = guaranteed_min_clock;
    pulled_for_ = for_clock;
    ++version_;
  }
  // Forgets the values (after a reconnect: a restored shard's differ).
  void Invalidate() { valid_ = false; }
  int64_t guaranteed() const { return guaranteed_; }
  // The clock the values were pulled for (what a push names as its
  // values_clock); -1 before the first pull.
  int64_t pulled_for() const { return pulled_for_; }
  // Changes with every Filled(): names the values for Model::TrainStep.
  // Whoever writes values() calls Filled() before the next step.
  uint64_t version() const { return version_; }
  ParameterSet& values() { return values_; }

 private:
  const bool asp_;
  const int64_t staleness_;
  const int64_t asp_lag_;
  bool valid_ = false;
  int64_t guaranteed_ = -1;
  int64_t pulled_for_ = -1;
  uint64_t version_ = 0;
  ParameterSet values_;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_PARAMETER_CACHE_H_
