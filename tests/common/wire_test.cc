// bfloat16 on the wire: rounding to nearest even, NaN and range, and the bulk
// forms against the scalar ones.
#include "common/wire.h"

#include <catch2/catch.hpp>
#include <cfloat>
#include <cmath>
#include <cmath>
#include <limits>
#include <random>

namespace tessera {
namespace {

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

TEST_CASE("bfloat16 keeps representable values and rounds to nearest even") {
  for (float f : {0.0f, -0.0f, 1.0f, -2.5f, 0.15625f, 65536.0f}) {
    CHECK(FromBfloat16(ToBfloat16(f)) == f);
  }
  CHECK(ToBfloat16(FromBits(0x3f808000u)) == 0x3f80);  // tie, 0x3f80 is even: down
  CHECK(ToBfloat16(FromBits(0x3f818000u)) == 0x3f82);  // tie, 0x3f81 is odd: up
  CHECK(ToBfloat16(FromBits(0x3f808001u)) == 0x3f81);  // above the tie: up
  CHECK(ToBfloat16(FromBits(0x3f807fffu)) == 0x3f80);  // below the tie: down
}

TEST_CASE("bfloat16 keeps NaN a NaN and sends overflow to infinity") {
  CHECK(std::isnan(FromBfloat16(ToBfloat16(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(std::isnan(FromBfloat16(ToBfloat16(FromBits(0x7f800001u)))));  // low-bit NaN payload
  const float inf = std::numeric_limits<float>::infinity();
  CHECK(FromBfloat16(ToBfloat16(inf)) == inf);
  CHECK(FromBfloat16(ToBfloat16(-std::numeric_limits<float>::max())) == -inf);
}

TEST_CASE("bulk bfloat16 appends after what is there and decodes to the scalar result") {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 10.0f);
  std::vector<float> values(1001);
  for (float& v : values) v = normal(rng);
  std::string bytes = "ab";  // something already there, as in a proto bytes field
  AppendBfloat16(values, &bytes);
  REQUIRE(bytes.size() == 2 + values.size() * 2);
  CHECK(bytes.substr(0, 2) == "ab");
  std::vector<float> back(values.size());
  DecodeBfloat16(bytes.substr(2), back.data());
  for (size_t i = 0; i < values.size(); ++i) {
    INFO(i);
    CHECK(back[i] == FromBfloat16(ToBfloat16(values[i])));
    CHECK(std::fabs(back[i] - values[i]) <= std::fabs(values[i]) / 256);  // 8-bit mantissa
  }
}

TEST_CASE("AllFinite finds any NaN or Inf, anywhere, and passes every finite value") {
  std::vector<float> values(1031);
  for (size_t i = 0; i < values.size(); ++i) values[i] = (i % 7 == 0 ? -1.0f : 1.0f) * i;
  values[3] = std::numeric_limits<float>::max();
  values[4] = -std::numeric_limits<float>::max();
  values[5] = std::numeric_limits<float>::denorm_min();
  values[6] = -0.0f;
  CHECK(AllFinite(values));
  CHECK(AllFinite({}));
  const float bad[] = {std::numeric_limits<float>::infinity(),
                       -std::numeric_limits<float>::infinity(),
                       std::numeric_limits<float>::quiet_NaN(), -std::nanf(""),
                       FromBits(0x7f800001u) /* signalling NaN */, FromBits(0xffffffffu)};
  for (float b : bad) {
    for (size_t at : {size_t{0}, size_t{17}, values.size() - 1}) {
      std::vector<float> v = values;
      v[at] = b;
      INFO("bits " << std::hex << Bits(b) << " at " << std::dec << at);
      CHECK_FALSE(AllFinite(v));
    }
  }
}

TEST_CASE("MaxAbs finds the largest magnitude and reports NaN or Inf as Inf") {
  CHECK(MaxAbs({}) == 0.0f);
  CHECK(MaxAbs(std::vector<float>{1.0f, -7.5f, 3.0f}) == 7.5f);
  CHECK(MaxAbs(std::vector<float>{-0.0f}) == 0.0f);
  CHECK(MaxAbs(std::vector<float>{FLT_MAX, -FLT_MAX}) == FLT_MAX);
  CHECK(std::isinf(MaxAbs(std::vector<float>{1.0f, std::nanf(""), 2.0f})));
  CHECK(std::isinf(MaxAbs(std::vector<float>{-INFINITY})));
  std::vector<float> many(1001, 0.25f);
  many[777] = -1e30f;
  CHECK(MaxAbs(many) == 1e30f);
}

}  // namespace
}  // namespace tessera
