// Wire codecs (common/codec.h): each round-trips within its stated error,
// refuses payloads that do not fit, and the worker's error feedback
// (worker/wire_codecs.h) sends, over N clocks, the sum of the gradients
// less the residual left.
#include "common/codec.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "worker/wire_codecs.h"

namespace tessera {
namespace {

std::vector<float> Gaussian(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

std::vector<float> RoundTrip(const Codec& codec, const std::vector<float>& in) {
  v1::Payload p;
  codec.Encode(in, &p);
  std::vector<float> out(in.size());
  REQUIRE(codec.Decode(p, absl::MakeSpan(out)).ok());
  return out;
}

TEST_CASE("float32 is lossless; bf16 and fp16 are within half a unit of their last place") {
  const std::vector<float> v = Gaussian(10'000, 1);
  CHECK(RoundTrip(CodecOf(v1::FLOAT32), v) == v);
  const std::vector<float> bf16 = RoundTrip(CodecOf(v1::BFLOAT16), v);
  const std::vector<float> fp16 = RoundTrip(CodecOf(v1::FLOAT16), v);
  for (size_t i = 0; i < v.size(); ++i) {
    CHECK(std::fabs(bf16[i] - v[i]) <= std::fabs(v[i]) * 0x1p-8f);
    // fp16: 10 bits of mantissa for normals, 2^-24 absolute below 2^-14.
    CHECK(std::fabs(fp16[i] - v[i]) <= std::max(std::fabs(v[i]) * 0x1p-11f, 0x1p-25f));
  }
  // fp16 saturates finite values instead of making them Inf; NaN stays NaN.
  const std::vector<float> big = {1e6f, -1e6f, 65504.0f};
  CHECK(RoundTrip(CodecOf(v1::FLOAT16), big) == std::vector<float>{65504.0f, -65504.0f, 65504.0f});
  CHECK(std::isnan(FromFloat16(ToFloat16(NAN))));
  // The vector path (F16C, 8 at a time, where the CPU has it) agrees with
  // the scalar one bit for bit, saturation, Inf and NaN included.
  std::vector<float> mixed = Gaussian(1001, 3, 1000.0f);
  mixed[0] = INFINITY, mixed[1] = -INFINITY, mixed[2] = NAN, mixed[3] = 1e9f, mixed[4] = -7e4f;
  mixed[5] = 1e-8f, mixed[6] = -0.0f;
  v1::Payload half;
  CodecOf(v1::FLOAT16).Encode(mixed, &half);
  const uint16_t* bits = reinterpret_cast<const uint16_t*>(half.values().data());
  for (size_t i = 0; i < mixed.size(); ++i) {
    INFO(i << ": " << mixed[i]);
    if (std::isnan(mixed[i])) {
      CHECK(std::isnan(FromFloat16(bits[i])));
    } else {
      CHECK(bits[i] == ToFloat16(mixed[i]));
    }
  }
  const std::vector<float> back = RoundTrip(CodecOf(v1::FLOAT16), mixed);
  CHECK(std::isinf(back[0]));
  CHECK(back[3] == 65504.0f);
  CHECK(back[4] == -65504.0f);
  CHECK(std::isinf(FromFloat16(ToFloat16(INFINITY))));
}

TEST_CASE("topk keeps the k largest magnitudes, in order, and zeros the rest") {
  std::unique_ptr<Codec> topk = MakeCodec(CodecKind::kTopk, 0.25);
  const std::vector<float> v = {0.1f, -5, 2, 0.3f, -0.2f, 4, 0, 1};
  v1::Payload p;
  topk->Encode(v, &p);
  CHECK(p.codec() == v1::TOPK);
  // ceil(0.25 x 8) = 2 values: positions 1 and 5, as gaps 1 and 3, a byte each.
  CHECK(p.indices() == std::string("\x01\x03", 2));
  CHECK(PayloadBytes(p) == 10);
  CHECK(RoundTrip(*topk, v) == std::vector<float>{0, -5, 0, 0, 0, 4, 0, 0});
  // Ties at the threshold fill up to k, first positions first.
  const std::vector<float> ties = {1, 1, 1, 1};
  CHECK(RoundTrip(*MakeCodec(CodecKind::kTopk, 0.5), ties) == std::vector<float>{1, 1, 0, 0});
  // Zeros are never sent: fewer than k nonzeros go alone.
  const std::vector<float> sparse = {0, 0, 3, 0, 0, 0, 0, -1};
  MakeCodec(CodecKind::kTopk, 0.5)->Encode(sparse, &p);
  CHECK(p.values().size() == 2 * sizeof(float));
  CHECK(RoundTrip(*MakeCodec(CodecKind::kTopk, 0.5), sparse) == sparse);
  MakeCodec(CodecKind::kTopk, 0.5)->Encode(std::vector<float>(8, 0.0f), &p);
  CHECK(p.values().empty());
  CHECK(p.indices().empty());
}

TEST_CASE("topk on a large slice that is mostly zeros sends its nonzeros, the largest first") {
  // A delta pull under lazy Adam: most values did not move since the last
  // pull. The sampled bar is then 0; the selection must not take zeros.
  std::vector<float> v(200'000, 0.0f);
  const std::vector<float> g = Gaussian(v.size(), 5);
  for (size_t i = 0; i < v.size(); i += 50) v[i] = g[i];  // 2% nonzero
  v1::Payload p;
  MakeCodec(CodecKind::kTopk, 0.05)->Encode(v, &p);  // k = 10,000 > 4,000 nonzeros
  CHECK(p.values().size() == 4000 * sizeof(float));
  CHECK(RoundTrip(*MakeCodec(CodecKind::kTopk, 0.05), v) == v);
  // At 1% (k = 2,000) the 2,000 largest of them, exactly.
  const std::vector<float> out = RoundTrip(*MakeCodec(CodecKind::kTopk, 0.01), v);
  std::vector<float> mags;
  for (size_t i = 0; i < v.size(); i += 50) mags.push_back(std::fabs(v[i]));
  std::sort(mags.begin(), mags.end(), std::greater<float>());
  size_t kept = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    if (out[i] == 0) continue;
    ++kept;
    CHECK(out[i] == v[i]);
    CHECK(std::fabs(v[i]) >= mags[1999]);
  }
  CHECK(kept == 2000);
}

TEST_CASE("topk on a large slice (sampled threshold) keeps exactly the k largest magnitudes") {
  for (double ratio : {0.001, 0.01, 0.1}) {
    const std::vector<float> v = Gaussian(200'000, 11);
    v1::Payload p;
    MakeCodec(CodecKind::kTopk, ratio)->Encode(v, &p);
    const size_t k = static_cast<size_t>(std::ceil(ratio * v.size()));
    REQUIRE(p.values().size() == k * sizeof(float));
    // A gap of g costs 1 + floor(log2(g) / 7) bytes: at most 2 here, about 1
    // at 1% (a mean gap of 100).
    CHECK(p.indices().size() >= k);
    CHECK(p.indices().size() <= 2 * k);
    if (ratio >= 0.01) CHECK(p.indices().size() < k + k / 2);
    // The exact answer: the k-th largest magnitude bounds every kept one.
    std::vector<float> mags(v.size());
    for (size_t i = 0; i < v.size(); ++i) mags[i] = std::fabs(v[i]);
    std::nth_element(mags.begin(), mags.begin() + (v.size() - k), mags.end());
    const float kth = mags[v.size() - k];
    const std::vector<float> out = RoundTrip(*MakeCodec(CodecKind::kTopk, ratio), v);
    size_t kept = 0;
    for (size_t i = 0; i < v.size(); ++i) {
      if (out[i] != 0) {
        ++kept;
        CHECK(out[i] == v[i]);
        CHECK(std::fabs(v[i]) >= kth);
      }
    }
    CHECK(kept == k);
  }
}

// The reference top-k: nonzeros by magnitude, ties by position, the first k.
std::vector<float> SortedTopk(const std::vector<float>& v, size_t k) {
  std::vector<uint32_t> order;
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] != 0) order.push_back(static_cast<uint32_t>(i));
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](uint32_t a, uint32_t b) { return std::fabs(v[a]) > std::fabs(v[b]); });
  order.resize(std::min(order.size(), k));
  std::vector<float> want(v.size(), 0.0f);
  for (uint32_t i : order) want[i] = v[i];
  return want;
}

TEST_CASE("topk matches a sort at every length, with ties and zeros, across the four-wide pass") {
  // Lengths that end inside a group of four, below and above the sampled
  // bar's threshold (16,384); values on few levels, so ties are common.
  for (size_t n : {1, 3, 5, 7, 13, 1'001, 16'385, 20'003}) {
    const std::vector<float> g = Gaussian(n, 17);
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = std::round(g[i] * 2000.0f) / 4.0f;  // zeros included
    // The same with magnitudes from denormals to infinity, so that the k-th
    // largest differs from its neighbours in any of its bits.
    std::vector<float> wide(n);
    for (size_t i = 0; i < n; ++i) {
      wide[i] = i % 97 == 5   ? std::numeric_limits<float>::denorm_min() * (1 + i % 3)
                : i % 89 == 7 ? -std::numeric_limits<float>::infinity()
                              : g[i] * std::pow(10.0f, static_cast<float>(i * 7919 % 61) - 30);
    }
    for (double ratio : {0.01, 0.3}) {
      const size_t k = std::min(n, std::max<size_t>(1, static_cast<size_t>(std::ceil(ratio * n))));
      INFO("wide magnitudes, n = " << n << ", ratio " << ratio);
      CHECK(RoundTrip(*MakeCodec(CodecKind::kTopk, ratio), wide) == SortedTopk(wide, k));
    }
    for (double ratio : {0.01, 0.3}) {
      const size_t k = std::min(n, std::max<size_t>(1, static_cast<size_t>(std::ceil(ratio * n))));
      INFO("n = " << n << ", ratio " << ratio);
      CHECK(RoundTrip(*MakeCodec(CodecKind::kTopk, ratio), v) == SortedTopk(v, k));
    }
  }
}

TEST_CASE("onebit sends signs and the mean magnitude") {
  const std::vector<float> v = {1, -3, 2, -2, 0.5f, 0.5f, -1, 2, 3};  // 9 values: 2 bytes of signs
  v1::Payload p;
  CodecOf(v1::ONEBIT).Encode(v, &p);
  CHECK(p.signs().size() == 2);
  CHECK(p.scale() == Approx(15.0 / 9));
  const std::vector<float> out = RoundTrip(CodecOf(v1::ONEBIT), v);
  for (size_t i = 0; i < v.size(); ++i) CHECK(out[i] == (v[i] < 0 ? -p.scale() : p.scale()));
}

TEST_CASE("a payload that does not fit its slice is refused with what is wrong") {
  std::vector<float> out(4);
  v1::Payload p;
  CodecOf(v1::BFLOAT16).Encode(std::vector<float>(3, 1.0f), &p);
  absl::Status s = CodecOf(v1::BFLOAT16).Decode(p, absl::MakeSpan(out));
  CHECK(s.message() == "payload (BFLOAT16): values hold 6 bytes, expected 8 (4 values)");
  // Top-k positions (varint gaps) past the slice, cut short, too long, or
  // more than the values; and values that are not whole floats.
  v1::Payload topk;
  topk.set_codec(v1::TOPK);
  topk.set_values(std::string(8, '\0'));
  auto refused = [&](const std::string& indices) {
    topk.set_indices(indices);
    return std::string(CodecOf(v1::TOPK).Decode(topk, absl::MakeSpan(out)).message());
  };
  CHECK(refused(std::string("\x01\x01", 2)).empty());  // positions 1 and 3
  CHECK(refused(std::string("\x01\x02", 2)) ==
        "payload (TOPK): position 4 (value 1) is not below 4");
  CHECK(refused(std::string("\x01\x81", 2)) == "payload (TOPK): position 1 of 2 is cut short");
  CHECK(refused(std::string("\x01", 1)) == "payload (TOPK): position 1 of 2 is cut short");
  CHECK(refused(std::string("\x00\x80\x80\x80\x80\x80\x00", 7)) ==
        "payload (TOPK): position 1 of 2 takes over 5 bytes");
  CHECK(refused(std::string("\x00\x00\x00", 3)) ==
        "payload (TOPK): 1 bytes of positions left after 2 values");
  // A gap as large as a uint32 goes past any slice, never wraps around.
  CHECK(refused(std::string("\x00\xff\xff\xff\xff\x0f", 6)) ==
        "payload (TOPK): position 4294967296 (value 1) is not below 4");
  topk.set_values(std::string(7, '\0'));
  CHECK(refused(std::string("\x01\x01", 2)) ==
        "payload (TOPK): 7 bytes of values: expected 4 bytes a value");
  topk.set_values(std::string(20, '\0'));
  CHECK(refused(std::string(5, '\0')) == "payload (TOPK): 5 values for a slice of 4");
  v1::Payload sign;
  sign.set_codec(v1::ONEBIT);
  sign.set_signs(std::string(1, '\0'));
  sign.set_scale(NAN);
  CHECK(CodecOf(v1::ONEBIT).Decode(sign, absl::MakeSpan(out)).message() ==
        "payload (ONEBIT): scale nan is not a finite number >= 0");
  CHECK(!FindCodec(9).ok());
}

// Error feedback: sent so far + residual now == sum of the gradients.
void CheckFeedback(CodecKind kind, CodecKind topk_values = CodecKind::kNone) {
  CompressionConfig config;
  config.all.push = kind;
  config.topk_values = topk_values;
  config.topk_ratio = 0.05;
  config.min_bytes = 0;
  const size_t n = 1000;
  WireCodecs encoder(config, {"w"}, {n});
  std::vector<double> sent(n, 0), total(n, 0);
  std::vector<float> decoded(n);
  for (int64_t clock = 0; clock < 50; ++clock) {
    const std::vector<float> g = Gaussian(n, 100 + clock);
    // Two pieces, as a push split over two shards.
    for (uint64_t offset : {uint64_t{0}, uint64_t{600}}) {
      const size_t len = offset == 0 ? 600 : 400;
      v1::Payload p;
      encoder.Encode(clock, 0, offset, absl::MakeConstSpan(g.data() + offset, len), &p);
      if (clock == 7) {
        // A retried step: the same clock encoded again must add its
        // residual once, and send the same thing.
        v1::Payload again;
        encoder.Encode(clock, 0, offset, absl::MakeConstSpan(g.data() + offset, len), &again);
        CHECK(again.SerializeAsString() == p.SerializeAsString());
      }
      REQUIRE(CodecOf(p.codec()).Decode(p, absl::MakeSpan(decoded.data() + offset, len)).ok());
    }
    for (size_t i = 0; i < n; ++i) sent[i] += decoded[i], total[i] += g[i];
  }
  const absl::Span<const float> residual = encoder.residual(0);
  double worst = 0;
  for (size_t i = 0; i < n; ++i) worst = std::max(worst, std::fabs(sent[i] + residual[i] - total[i]));
  CHECK(worst < 1e-4);  // float32 sums of 50 clocks of N(0,1)
  double norm = 0;
  for (float r : residual) norm += double(r) * r;
  CHECK(norm > 0);  // something was held back
}

TEST_CASE("topk and onebit with error feedback send the sum of the gradients less the residual") {
  SECTION("topk") { CheckFeedback(CodecKind::kTopk); }
  // A sent value's rounding stays in the residual.
  SECTION("topk, values in bf16") { CheckFeedback(CodecKind::kTopk, CodecKind::kBf16); }
  SECTION("topk, values in fp16") { CheckFeedback(CodecKind::kTopk, CodecKind::kFp16); }
  SECTION("onebit") { CheckFeedback(CodecKind::kOnebit); }
}

TEST_CASE("topk values in half width: 2 bytes a value, rounded, and what rounding left behind") {
  std::vector<float> x = Gaussian(1000, 3);
  const std::vector<float> before = x;
  v1::Payload p;
  MakeCodec(CodecKind::kTopk, 0.1, v1::BFLOAT16)->EncodeWithFeedback(absl::MakeSpan(x), &p);
  CHECK(p.value_codec() == v1::BFLOAT16);
  CHECK(p.values().size() == 100 * 2);
  std::vector<float> out(1000);
  REQUIRE(CodecOf(v1::TOPK).Decode(p, absl::MakeSpan(out)).ok());
  size_t sent = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == 0) {
      CHECK(x[i] == before[i]);  // not sent: all of it stays
      continue;
    }
    ++sent;
    CHECK(out[i] == FromBfloat16(ToBfloat16(before[i])));
    CHECK(out[i] + x[i] == before[i]);  // sent: its rounding stays
  }
  CHECK(sent == 100);
  // A float32 payload does not name its value codec (the default).
  MakeCodec(CodecKind::kTopk, 0.1)->Encode(before, &p);
  CHECK(p.value_codec() == v1::FLOAT32);
  CHECK(p.values().size() == 100 * 4);
  // A value codec that is not fixed-width, or values that are not whole.
  p.set_value_codec(v1::TOPK);
  CHECK(CodecOf(v1::TOPK).Decode(p, absl::MakeSpan(out)).message() ==
        "payload (TOPK): value_codec 3 is not FLOAT32, BFLOAT16 or FLOAT16");
  p.set_value_codec(v1::FLOAT16);
  p.mutable_values()->push_back('\0');
  CHECK(CodecOf(v1::TOPK).Decode(p, absl::MakeSpan(out)).message() ==
        "payload (TOPK): 401 bytes of values: expected 2 bytes a value");
}

TEST_CASE("warm-up clocks and small slices travel as float32") {
  CompressionConfig config;
  config.all = {CodecKind::kTopk, CodecKind::kFp16};
  config.warmup_steps = 3;
  config.min_bytes = 1024;
  WireCodecs encoder(config, {"w", "b"}, {1000, 10});
  const std::vector<float> g = Gaussian(1000, 5);
  v1::Payload p;
  encoder.Encode(2, 0, 0, g, &p);
  CHECK(p.codec() == v1::FLOAT32);
  CHECK(encoder.PullCodec(2, 0, 1000) == v1::FLOAT32);
  encoder.Encode(3, 0, 0, g, &p);
  CHECK(p.codec() == v1::TOPK);
  CHECK(encoder.PullCodec(3, 0, 1000) == v1::FLOAT16);
  encoder.Encode(3, 1, 0, absl::MakeConstSpan(g.data(), 10), &p);  // 40 bytes < 1024
  CHECK(p.codec() == v1::FLOAT32);
  CHECK(encoder.PullCodec(3, 1, 10) == v1::FLOAT32);
}

TEST_CASE("EncodeWithFeedback leaves exactly what the receiver does not see, for every codec") {
  // Lengths with every tail the vectorised paths leave (n % 8) and one
  // past a 1024-value block.
  for (const size_t n : {1, 7, 8, 9, 15, 1023, 1025, 20000}) {
    for (const CodecKind kind :
         {CodecKind::kNone, CodecKind::kBf16, CodecKind::kFp16, CodecKind::kTopk,
          CodecKind::kOnebit}) {
      INFO("n " << n << ", codec " << NameOf(kind));
      std::vector<float> x = Gaussian(n, 7 + n);
      x[0] = -0.0f;  // a negative zero is sent as -scale
      const std::unique_ptr<Codec> codec = MakeCodec(kind, 0.1);
      v1::Payload plain, with_feedback;
      codec->Encode(x, &plain);
      std::vector<float> sent(n);
      REQUIRE(codec->Decode(plain, absl::MakeSpan(sent)).ok());
      std::vector<float> residual = x;
      codec->EncodeWithFeedback(absl::MakeSpan(residual), &with_feedback);
      CHECK(with_feedback.SerializeAsString() == plain.SerializeAsString());
      for (size_t i = 0; i < n; ++i) CHECK(residual[i] == x[i] - sent[i]);
    }
  }
}

TEST_CASE("onebit's scale is the mean magnitude, to float precision, over many values") {
  const std::vector<float> x = Gaussian(100'003, 11, 0.01f);
  double sum = 0;
  for (float v : x) sum += std::fabs(v);
  v1::Payload p;
  CodecOf(v1::ONEBIT).Encode(x, &p);
  CHECK(p.scale() == Approx(sum / x.size()).epsilon(1e-6));
  std::vector<float> out(x.size());
  REQUIRE(CodecOf(v1::ONEBIT).Decode(p, absl::MakeSpan(out)).ok());
  for (size_t i = 0; i < x.size(); ++i) CHECK(out[i] == std::copysign(p.scale(), x[i]));
}

}  // namespace
}  // namespace tessera
