// The worker's parameter cache: when cached values may be reused.
#include "worker/parameter_cache.h"

#include <catch2/catch.hpp>

namespace tessera {
namespace {

ConsistencyConfig Mode(ConsistencyMode mode, uint32_t staleness) {
  ConsistencyConfig c;
  c.mode = mode;
  c.staleness = staleness;
  return c;
}

TEST_CASE("nothing is fresh before the first pull") {
  for (auto mode : {ConsistencyMode::kBsp, ConsistencyMode::kSsp, ConsistencyMode::kAsp}) {
    CHECK_FALSE(ParameterCache(Mode(mode, 3)).FreshFor(0));
  }
}

TEST_CASE("SSP reuses values while their guarantee is within s of the clock") {
  ParameterCache cache(Mode(ConsistencyMode::kSsp, 3));
  cache.Filled(/*guaranteed_min_clock=*/2, /*for_clock=*/4);
  for (int64_t clock = 0; clock <= 5; ++clock) CHECK(cache.FreshFor(clock));
  CHECK_FALSE(cache.FreshFor(6));  // would miss updates of clock 2
}

TEST_CASE("BSP needs values that hold every clock below the current one") {
  ParameterCache cache(Mode(ConsistencyMode::kBsp, 3));  // staleness ignored under BSP
  cache.Filled(5, 5);
  CHECK(cache.FreshFor(5));
  CHECK_FALSE(cache.FreshFor(6));
}

TEST_CASE("ASP uses values only for the clock they were pulled for") {
  ParameterCache cache(Mode(ConsistencyMode::kAsp, 0));
  cache.Filled(0, 7);  // e.g. fused into the push of clock 6
  CHECK(cache.FreshFor(7));
  CHECK_FALSE(cache.FreshFor(8));
  CHECK_FALSE(cache.FreshFor(6));
}

TEST_CASE("ASP with the push pipeline also serves the next clock, no further") {
  ParameterCache cache(Mode(ConsistencyMode::kAsp, 0), /*asp_lag=*/1);
  cache.Filled(0, 7);
  CHECK(cache.FreshFor(7));
  CHECK(cache.FreshFor(8));  // step 8 computes while push 7 (pull for 8) travels
  CHECK_FALSE(cache.FreshFor(9));
  CHECK_FALSE(cache.FreshFor(6));
}

}  // namespace
}  // namespace tessera
