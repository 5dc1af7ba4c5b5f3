// Initial values are a function of (config, table, index) alone.
#include "common/initializer.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

namespace tessera {
namespace {

TEST_CASE("values do not depend on how the table is split") {
  InitConfig c;
  c.type = InitType::kNormal;
  c.stddev = 0.5f;
  c.seed = 3;
  Initializer init(c, "fc0.weight");
  std::vector<float> whole(100), part(40);
  init.Fill(0, absl::MakeSpan(whole));
  init.Fill(60, absl::MakeSpan(part));
  for (int i = 0; i < 40; ++i) CHECK(part[i] == whole[60 + i]);
}

TEST_CASE("seed and table name change the stream") {
  InitConfig c;
  c.type = InitType::kUniform;
  Initializer a(c, "a"), b(c, "b");
  c.seed = 2;
  Initializer a2(c, "a");
  CHECK(a.ValueAt(5) != b.ValueAt(5));
  CHECK(a.ValueAt(5) != a2.ValueAt(5));
  CHECK(a.ValueAt(5) == Initializer(InitConfig{.type = InitType::kUniform}, "a").ValueAt(5));
}

TEST_CASE("distributions have the configured moments and bounds") {
  InitConfig u{.type = InitType::kUniform, .low = -2.0f, .high = 3.0f};
  InitConfig n{.type = InitType::kNormal, .mean = 1.0f, .stddev = 2.0f};
  Initializer uni(u, "t"), nor(n, "t");
  double sum = 0, sq = 0;
  const int kN = 200000;
  for (int i = 0; i < kN; ++i) {
    float x = uni.ValueAt(i);
    REQUIRE(x >= -2.0f);
    REQUIRE(x <= 3.0f);
    float y = nor.ValueAt(i);
    REQUIRE(std::isfinite(y));
    sum += y;
    sq += y * y;
  }
  double mean = sum / kN, var = sq / kN - mean * mean;
  CHECK(mean == Approx(1.0).margin(0.02));
  CHECK(std::sqrt(var) == Approx(2.0).margin(0.02));
}

TEST_CASE("zeros and constant") {
  std::vector<float> v(8, 7.0f);
  Initializer(InitConfig{}, "t").Fill(0, absl::MakeSpan(v));
  for (float x : v) CHECK(x == 0.0f);
  Initializer(InitConfig{.type = InitType::kConstant, .value = 0.25f}, "t").Fill(3, absl::MakeSpan(v));
  for (float x : v) CHECK(x == 0.25f);
}

TEST_CASE("FillRows writes each row's values as Fill does, and nothing between rows") {
  for (InitType type : {InitType::kUniform, InitType::kNormal, InitType::kConstant, InitType::kZeros}) {
    INFO(NameOf(type));
    InitConfig c;
    c.type = type;
    c.value = 0.25f;
    c.seed = 7;
    Initializer init(c, "emb");
    const uint32_t dim = 3;
    const size_t stride = 5;  // dim values, then two slots the call must not touch
    const std::vector<uint64_t> keys = {0, 9, 12345678901ull};
    std::vector<float> rows(keys.size() * stride, -7.0f);
    init.FillRows(keys.data(), keys.size(), dim, rows.data(), stride);
    for (size_t k = 0; k < keys.size(); ++k) {
      std::vector<float> expected(dim);
      init.Fill(keys[k] * dim, absl::MakeSpan(expected));
      for (uint32_t j = 0; j < dim; ++j) CHECK(rows[k * stride + j] == expected[j]);
      for (size_t j = dim; j < stride; ++j) CHECK(rows[k * stride + j] == -7.0f);
    }
  }
}

}  // namespace
}  // namespace tessera
