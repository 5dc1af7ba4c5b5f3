// ScopedFlushDenormal: subnormal inputs and results become zero inside the
// scope, and the thread's previous mode comes back after it.
#include "common/denormal.h"

#include <catch2/catch.hpp>
#include <cfloat>

namespace tessera {
namespace {

// Through volatile so the compiler cannot fold the arithmetic.
float Times(float a, float b) {
  volatile float x = a, y = b;
  return x * y;
}

TEST_CASE("subnormals are flushed inside the scope and kept outside it") {
  const float tiny = FLT_MIN / 8;  // subnormal
  REQUIRE(tiny > 0.0f);
  REQUIRE_FALSE(FlushingDenormals());
  CHECK(Times(tiny, 1.0f) == tiny);         // DAZ off: the input is read as is
  CHECK(Times(FLT_MIN, 0.25f) > 0.0f);      // FTZ off: a subnormal result survives
  {
    ScopedFlushDenormal flush;
    CHECK(FlushingDenormals());
    CHECK(Times(tiny, 1.0f) == 0.0f);       // read as zero
    CHECK(Times(FLT_MIN, 0.25f) == 0.0f);   // written as zero
    CHECK(Times(FLT_MIN, 2.0f) == 2 * FLT_MIN);  // normal numbers untouched
    {
      ScopedFlushDenormal nested;
      CHECK(FlushingDenormals());
    }
    CHECK(FlushingDenormals());  // the inner guard restored what it found
  }
  CHECK_FALSE(FlushingDenormals());
  CHECK(Times(tiny, 1.0f) == tiny);
}

}  // namespace
}  // namespace tessera
