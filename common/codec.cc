#include "common/codec.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

#include "Eigen/Core"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/wire.h"

namespace tessera {
namespace {

absl::Status Bad(const v1::Payload& p, const std::string& what) {
  return absl::InvalidArgumentError(
      absl::StrCat("payload (", v1::Codec_Name(p.codec()), "): ", what));
}

// A fixed-width payload holds its values and nothing else.
absl::Status CheckFixed(const v1::Payload& p, size_t width, size_t count) {
  if (p.values().size() != count * width) {
    return Bad(p, absl::StrCat("values hold ", p.values().size(), " bytes, expected ",
                               count * width, " (", count, " values)"));
  }
  if (!p.indices().empty() || !p.signs().empty() || p.scale() != 0) {
    return Bad(p, "only values may be set");
  }
  return absl::OkStatus();
}

class Float32Codec final : public Codec {
 public:
  v1::Codec id() const override { return v1::FLOAT32; }
  size_t width() const override { return sizeof(float); }
  void Encode(absl::Span<const float> values, v1::Payload* out) const override {
    out->Clear();
    EncodeFloats(values, out->mutable_values());
  }
  absl::Status Decode(const v1::Payload& p, absl::Span<float> out) const override {
    if (absl::Status s = CheckFixed(p, width(), out.size()); !s.ok()) return s;
    if (!out.empty()) std::memcpy(out.data(), p.values().data(), out.size() * sizeof(float));
    return absl::OkStatus();
  }
  void EncodeTo(absl::Span<const float> values, char* out) const override {
    if (!values.empty()) std::memcpy(out, values.data(), values.size() * sizeof(float));
  }
  void DecodeFrom(const char* in, absl::Span<float> out) const override {
    if (!out.empty()) std::memcpy(out.data(), in, out.size() * sizeof(float));
  }
};

// FLOAT16 8 values at a time with the F16C instructions, where the CPU has
// them (checked once at run time; the build targets plain x86-64): the
// conversion rounds to nearest even as ToFloat16 does, finite values beyond
// the largest half are clamped first, and Inf and NaN pass as they are.
#if defined(__x86_64__)
__attribute__((target("avx,f16c"))) void ToFloat16F16c(const float* in, size_t n, uint16_t* out) {
  const __m256 most = _mm256_set1_ps(65504.0f), least = _mm256_set1_ps(-65504.0f);
  const __m256 inf = _mm256_set1_ps(INFINITY);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(in + i);
    // min/max return their second operand when either is NaN: x stays NaN.
    __m256 clamped = _mm256_max_ps(least, _mm256_min_ps(most, x));
    const __m256 is_inf = _mm256_cmp_ps(_mm256_andnot_ps(sign, x), inf, _CMP_EQ_OQ);
    clamped = _mm256_blendv_ps(clamped, x, is_inf);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm256_cvtps_ph(clamped, _MM_FROUND_TO_NEAREST_INT));
  }
  for (; i < n; ++i) out[i] = ToFloat16(in[i]);
}

__attribute__((target("avx,f16c"))) void FromFloat16F16c(const uint16_t* in, size_t n, float* out) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i,
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
  }
  for (; i < n; ++i) out[i] = FromFloat16(in[i]);
}

bool HasF16c() {
  // CPUID leaf 1: ECX bit 29 is F16C, bit 28 AVX (clang's __builtin_cpu_supports
  // does not know "f16c").
  static const bool has = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid(1, &a, &b, &c, &d) != 0 && ((c >> 29) & 1) != 0 && ((c >> 28) & 1) != 0;
  }();
  return has;
}
#else
bool HasF16c() { return false; }
void ToFloat16F16c(const float*, size_t, uint16_t*) {}
void FromFloat16F16c(const uint16_t*, size_t, float*) {}
#endif

// The two 16-bit codecs differ only in the conversion.
template <v1::Codec kId, uint16_t (*kTo)(float), float (*kFrom)(uint16_t)>
class HalfCodec final : public Codec {
 public:
  v1::Codec id() const override { return kId; }
  size_t width() const override { return sizeof(uint16_t); }
  void Encode(absl::Span<const float> values, v1::Payload* out) const override {
    out->Clear();
    out->set_codec(kId);
    std::string* bytes = out->mutable_values();
    bytes->resize(values.size() * sizeof(uint16_t));
    EncodeTo(values, bytes->data());
  }
  absl::Status Decode(const v1::Payload& p, absl::Span<float> out) const override {
    if (absl::Status s = CheckFixed(p, width(), out.size()); !s.ok()) return s;
    DecodeFrom(p.values().data(), out);
    return absl::OkStatus();
  }
  void EncodeTo(absl::Span<const float> values, char* out) const override {
    if (kId == v1::BFLOAT16) return EncodeBfloat16(values, out);
    if (HasF16c()) {
      return ToFloat16F16c(values.data(), values.size(), reinterpret_cast<uint16_t*>(out));
    }
    for (size_t i = 0; i < values.size(); ++i) {
      const uint16_t h = kTo(values[i]);
      std::memcpy(out + 2 * i, &h, sizeof(h));
    }
  }
  void DecodeFrom(const char* in, absl::Span<float> out) const override {
    if (kId == v1::BFLOAT16) {
      return DecodeBfloat16(absl::string_view(in, out.size() * sizeof(uint16_t)), out.data());
    }
    if (HasF16c()) {
      return FromFloat16F16c(reinterpret_cast<const uint16_t*>(in), out.size(), out.data());
    }
    for (size_t i = 0; i < out.size(); ++i) {
      uint16_t h;
      std::memcpy(&h, in + 2 * i, sizeof(h));
      out[i] = kFrom(h);
    }
  }
};

using Bfloat16Codec = HalfCodec<v1::BFLOAT16, ToBfloat16, FromBfloat16>;
using Float16Codec = HalfCodec<v1::FLOAT16, ToFloat16, FromFloat16>;

// TOPK's positions: each the LEB128 varint (7 bits a byte, low first; the
// high bit says another byte follows) of its gap from the one before less
// one (the first's: the position itself). Positions are increasing, so a
// gap is small where values are dense: about one byte at a ratio of 1%,
// where a uint32 took four.
void AppendVarint(uint32_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

// The positions the last TopkCodec::Encode on this thread chose (what
// EncodeWithFeedback zeroes, without parsing them back).
std::vector<uint32_t>& LastChosen() {
  thread_local std::vector<uint32_t> chosen;
  return chosen;
}

void WriteTopk(const std::vector<uint32_t>& chosen, absl::Span<const float> values,
               const Codec& value_codec, v1::Payload* out) {
  std::string* indices = out->mutable_indices();
  indices->reserve(chosen.size() + chosen.size() / 4 + 8);
  thread_local std::vector<float> kept;
  kept.resize(chosen.size());
  uint32_t next = 0;  // the smallest position the next may take
  for (size_t j = 0; j < chosen.size(); ++j) {
    AppendVarint(chosen[j] - next, indices);
    next = chosen[j] + 1;
    kept[j] = values[chosen[j]];
  }
  out->mutable_values()->resize(chosen.size() * value_codec.width());
  value_codec.EncodeTo(kept, out->mutable_values()->data());
  if (value_codec.id() != v1::FLOAT32) out->set_value_codec(value_codec.id());
}

class TopkCodec final : public Codec {
 public:
  // `values`: the fixed-width codec the k values travel in.
  TopkCodec(double ratio, const Codec& values) : ratio_(ratio), values_(values) {}
  v1::Codec id() const override { return v1::TOPK; }
  size_t width() const override { return 0; }

  void Encode(absl::Span<const float> values, v1::Payload* out) const override {
    out->Clear();
    out->set_codec(v1::TOPK);
    const size_t n = values.size();
    if (n == 0) return;
    const size_t k =
        std::min(n, std::max<size_t>(1, static_cast<size_t>(std::ceil(ratio_ * n))));
    std::vector<uint32_t>& chosen = LastChosen();
    chosen.clear();
    Select(values, k, &chosen);
    WriteTopk(chosen, values, values_, out);
  }

  void EncodeWithFeedback(absl::Span<float> x, v1::Payload* out) const override {
    Encode(x, out);
    // What a sent value leaves behind: nothing in float32, its rounding in
    // a half-width codec.
    const std::vector<uint32_t>& sent = LastChosen();
    if (values_.id() == v1::FLOAT32) {
      for (uint32_t position : sent) x[position] = 0;
      return;
    }
    thread_local std::vector<float> decoded;
    decoded.resize(sent.size());
    values_.DecodeFrom(out->values().data(), absl::MakeSpan(decoded));
    for (size_t j = 0; j < sent.size(); ++j) x[sent[j]] -= decoded[j];
  }

  absl::Status Decode(const v1::Payload& p, absl::Span<float> out) const override {
    thread_local std::vector<uint32_t> positions;
    thread_local std::vector<float> values;
    TESSERA_RETURN_IF_ERROR(DecodeTopk(p, out.size(), &positions, &values));
    std::fill(out.begin(), out.end(), 0.0f);
    for (size_t j = 0; j < positions.size(); ++j) out[positions[j]] = values[j];
    return absl::OkStatus();
  }

 private:
  // Below this many values every nonzero is a candidate.
  static constexpr size_t kSampledFrom = 16384;

  // The positions of the k largest magnitudes, increasing; ties at the k-th
  // magnitude go to the first positions. Zeros are never chosen (a zero sent
  // decodes as one not sent), so a slice with fewer than k nonzeros sends
  // them all and no more: a delta pull under lazy Adam, where most values
  // did not move, or a gradient of inputs that are always 0.
  //
  // As DGC does on large slices: a bar from a strided 1/64 sample of the
  // magnitudes at twice the ratio, so that about 2k values pass it; one pass
  // collecting the nonzero values that do (in order), and the k-th largest
  // magnitude among them; then one pass over them keeps what is above it and
  // as many equal to it as k allows. Where the sample's bar lets fewer than k
  // through, or the slice is small, every nonzero is a candidate.
  static void Select(absl::Span<const float> values, size_t k, std::vector<uint32_t>* chosen) {
    const size_t n = values.size();
    float bar = 0;
    if (n >= kSampledFrom) {
      thread_local std::vector<float> sample;
      sample.clear();
      for (size_t i = kStride / 2; i < n; i += kStride) sample.push_back(std::fabs(values[i]));
      const size_t m = sample.size();
      const size_t want = std::min(m, std::max<size_t>(1, (2 * k * m + n - 1) / n));
      std::nth_element(sample.begin(), sample.begin() + (m - want), sample.end());
      bar = sample[m - want];
    }
    absl::Span<const uint32_t> candidates = Collect(values, bar);
    if (candidates.size() < k && bar > 0) candidates = Collect(values, 0);
    chosen->clear();
    if (candidates.size() <= k) {
      chosen->assign(candidates.begin(), candidates.end());
      return;
    }
    thread_local std::vector<float> mags;
    mags.resize(candidates.size());
    for (size_t j = 0; j < candidates.size(); ++j) mags[j] = std::fabs(values[candidates[j]]);
    std::nth_element(mags.begin(), mags.begin() + (k - 1), mags.end(), std::greater<float>());
    const float kth = mags[k - 1];
    size_t above = 0;
    for (size_t j = 0; j < k; ++j) above += mags[j] > kth;
    size_t ties = k - above;
    // Without branches: which candidate passes is as good as random, and a
    // mispredicted branch per candidate cost more than the pass itself.
    chosen->resize(candidates.size());
    uint32_t* out = chosen->data();
    size_t taken = 0;
    for (uint32_t c : candidates) {
      const float m = std::fabs(values[c]);
      const bool tie = (m == kth) & (ties > 0);
      ties -= tie;
      out[taken] = c;
      taken += (m > kth) | tie;
    }
    chosen->resize(taken);
  }

  // The positions, increasing, of the values whose magnitude is above 0 and
  // at least `bar`, in this thread's buffer (valid until its next call).
  static absl::Span<const uint32_t> Collect(absl::Span<const float> values, float bar) {
    const size_t n = values.size();
    // Room for every position plus a group's spare writes, never cleared:
    // each group writes its lanes in place and the count moves by how many
    // passed, without a branch on which did.
    thread_local std::unique_ptr<uint32_t[]> buffer;
    thread_local size_t capacity = 0;
    if (capacity < n + 4) {
      capacity = n + 4;
      buffer.reset(new uint32_t[capacity]);
    }
    uint32_t* at = buffer.get();
    size_t count = 0;
    size_t i = 0;
#if defined(__SSE2__)
    // Four at a time: each group's passing lanes (a 4-bit mask) are written
    // as their positions from a table, and the count moves by how many.
    const __m128 magnitude = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
    const __m128 at_least = _mm_set1_ps(bar);
    const __m128 zero = _mm_setzero_ps();
    for (; i + 4 <= n; i += 4) {
      const __m128 mag = _mm_and_ps(_mm_loadu_ps(values.data() + i), magnitude);
      const int hits =
          _mm_movemask_ps(_mm_and_ps(_mm_cmpge_ps(mag, at_least), _mm_cmpgt_ps(mag, zero)));
      const __m128i lanes = _mm_load_si128(reinterpret_cast<const __m128i*>(kLanes[hits]));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(at + count),
                       _mm_add_epi32(lanes, _mm_set1_epi32(static_cast<int>(i))));
      count += kCount[hits];  // a table: without -mpopcnt, popcount is a call
    }
#endif
    for (; i < n; ++i) {
      const float mag = std::fabs(values[i]);
      at[count] = static_cast<uint32_t>(i);
      count += (mag >= bar) & (mag > 0);
    }
    return absl::MakeConstSpan(at, count);
  }

  // For each 4-bit mask, the lanes it sets in increasing order (the rest 0).
  alignas(16) static constexpr uint32_t kLanes[16][4] = {
      {0, 0, 0, 0}, {0, 0, 0, 0}, {1, 0, 0, 0}, {0, 1, 0, 0}, {2, 0, 0, 0}, {0, 2, 0, 0},
      {1, 2, 0, 0}, {0, 1, 2, 0}, {3, 0, 0, 0}, {0, 3, 0, 0}, {1, 3, 0, 0}, {0, 1, 3, 0},
      {2, 3, 0, 0}, {0, 2, 3, 0}, {1, 2, 3, 0}, {0, 1, 2, 3}};
  // For each 4-bit mask, how many lanes it sets.
  static constexpr uint8_t kCount[16] = {0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4};

  static constexpr size_t kStride = 64;
  const double ratio_;
  const Codec& values_;
};

// Scaled signs, eight to a byte (bit j of byte b: value 8b + j is
// negative), with the mean magnitude as the scale. SSE2 (every x86-64) does
// eight values at a time: a sign mask per four, a nibble table back.
class OnebitCodec final : public Codec {
 public:
  v1::Codec id() const override { return v1::ONEBIT; }
  size_t width() const override { return 0; }

  void Encode(absl::Span<const float> values, v1::Payload* out) const override {
    out->Clear();
    out->set_codec(v1::ONEBIT);
    const size_t n = values.size();
    std::string* signs = out->mutable_signs();
    signs->resize((n + 7) / 8);
    out->set_scale(PackSigns(values.data(), n, reinterpret_cast<unsigned char*>(signs->data())));
  }

  void EncodeWithFeedback(absl::Span<float> x, v1::Payload* out) const override {
    Encode(x, out);
    // What is sent for x[i] is the scale with x[i]'s own sign.
    const uint32_t scale = Eigen::numext::bit_cast<uint32_t>(out->scale());
    float* v = x.data();
    size_t i = 0;
#if defined(__SSE2__)
    const __m128 magnitude = _mm_castsi128_ps(_mm_set1_epi32(static_cast<int>(scale)));
    const __m128 sign = _mm_castsi128_ps(_mm_set1_epi32(static_cast<int>(0x80000000u)));
    for (; i + 4 <= x.size(); i += 4) {
      const __m128 r = _mm_loadu_ps(v + i);
      _mm_storeu_ps(v + i, _mm_sub_ps(r, _mm_or_ps(magnitude, _mm_and_ps(r, sign))));
    }
#endif
    for (; i < x.size(); ++i) {
      const uint32_t s = Eigen::numext::bit_cast<uint32_t>(v[i]) & 0x80000000u;
      v[i] -= Eigen::numext::bit_cast<float>(scale | s);
    }
  }

  absl::Status Decode(const v1::Payload& p, absl::Span<float> out) const override {
    if (p.signs().size() != (out.size() + 7) / 8) {
      return Bad(p, absl::StrCat("signs hold ", p.signs().size(), " bytes, expected ",
                                 (out.size() + 7) / 8, " (", out.size(), " values)"));
    }
    if (!std::isfinite(p.scale()) || p.scale() < 0) {
      return Bad(p, absl::StrCat("scale ", p.scale(), " is not a finite number >= 0"));
    }
    if (!p.values().empty() || !p.indices().empty()) return Bad(p, "only signs and scale may be set");
    const uint32_t scale = Eigen::numext::bit_cast<uint32_t>(p.scale());
    const unsigned char* bits = reinterpret_cast<const unsigned char*>(p.signs().data());
    float* o = out.data();
    size_t i = 0;
#if defined(__SSE2__)
    const __m128i magnitude = _mm_set1_epi32(static_cast<int>(scale));
    for (; i + 8 <= out.size(); i += 8) {
      const unsigned byte = bits[i / 8];
      const __m128i low = _mm_load_si128(reinterpret_cast<const __m128i*>(kNibbleSigns[byte & 15]));
      const __m128i high = _mm_load_si128(reinterpret_cast<const __m128i*>(kNibbleSigns[byte >> 4]));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + i), _mm_or_si128(magnitude, low));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + i + 4), _mm_or_si128(magnitude, high));
    }
#endif
    for (; i < out.size(); ++i) {
      const uint32_t bit = (bits[i / 8] >> (i % 8)) & 1u;
      o[i] = Eigen::numext::bit_cast<float>(scale | (bit << 31));
    }
    return absl::OkStatus();
  }

 private:
  // Sign masks of four values from a nibble of signs.
  alignas(16) static constexpr uint32_t kNibbleSigns[16][4] = {
#define TESSERA_SIGN(n, j) (((n) >> (j)) & 1u ? 0x80000000u : 0u)
#define TESSERA_NIBBLE(n) {TESSERA_SIGN(n, 0), TESSERA_SIGN(n, 1), TESSERA_SIGN(n, 2), TESSERA_SIGN(n, 3)}
      TESSERA_NIBBLE(0),  TESSERA_NIBBLE(1),  TESSERA_NIBBLE(2),  TESSERA_NIBBLE(3),
      TESSERA_NIBBLE(4),  TESSERA_NIBBLE(5),  TESSERA_NIBBLE(6),  TESSERA_NIBBLE(7),
      TESSERA_NIBBLE(8),  TESSERA_NIBBLE(9),  TESSERA_NIBBLE(10), TESSERA_NIBBLE(11),
      TESSERA_NIBBLE(12), TESSERA_NIBBLE(13), TESSERA_NIBBLE(14), TESSERA_NIBBLE(15)};
#undef TESSERA_NIBBLE
#undef TESSERA_SIGN

  // Writes the signs of v[0, n) to bits and returns their mean magnitude.
  static float PackSigns(const float* v, size_t n, unsigned char* bits) {
    double sum = 0;
    size_t i = 0;
#if defined(__SSE2__)
    const __m128 magnitude = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
    while (i + 8 <= n) {
      // Float lanes summed over at most 1024 values, then into the double.
      __m128 part = _mm_setzero_ps();
      const size_t end = std::min(n / 8 * 8, i + 1024);
      for (; i < end; i += 8) {
        const __m128 a = _mm_loadu_ps(v + i), b = _mm_loadu_ps(v + i + 4);
        bits[i / 8] = static_cast<unsigned char>(_mm_movemask_ps(a) | (_mm_movemask_ps(b) << 4));
        part = _mm_add_ps(part, _mm_add_ps(_mm_and_ps(a, magnitude), _mm_and_ps(b, magnitude)));
      }
      alignas(16) float lanes[4];
      _mm_store_ps(lanes, part);
      sum += double(lanes[0]) + lanes[1] + lanes[2] + lanes[3];
    }
#endif
    for (; i < n; i += 8) {
      unsigned byte = 0;
      for (size_t j = i; j < std::min(n, i + 8); ++j) {
        byte |= (Eigen::numext::bit_cast<uint32_t>(v[j]) >> 31) << (j - i);
        sum += std::fabs(v[j]);
      }
      bits[i / 8] = static_cast<unsigned char>(byte);
    }
    return n > 0 ? static_cast<float>(sum / n) : 0.0f;
  }
};

constexpr double kDefaultTopkRatio = 0.01;

}  // namespace

void Codec::EncodeWithFeedback(absl::Span<float> x, v1::Payload* out) const {
  Encode(x, out);
  thread_local std::vector<float> sent;
  sent.resize(x.size());
  const absl::Status decoded = Decode(*out, absl::MakeSpan(sent));
  assert(decoded.ok());  // what Encode wrote always decodes
  (void)decoded;
  const Eigen::Index n = static_cast<Eigen::Index>(x.size());
  Eigen::Map<Eigen::ArrayXf>(x.data(), n) -= Eigen::Map<const Eigen::ArrayXf>(sent.data(), n);
}

void Codec::EncodeTo(absl::Span<const float>, char*) const { std::abort(); }
void Codec::DecodeFrom(const char*, absl::Span<float>) const { std::abort(); }

uint16_t ToFloat16(float f) {
  if (std::isfinite(f) && std::fabs(f) > 65504.0f) f = std::copysign(65504.0f, f);
  return Eigen::numext::bit_cast<uint16_t>(Eigen::half(f));
}

float FromFloat16(uint16_t h) {
  return static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(h));
}

const Codec& CodecOf(v1::Codec id) {
  static const Float32Codec f32;
  static const Bfloat16Codec bf16;
  static const Float16Codec f16;
  static const TopkCodec topk(kDefaultTopkRatio, f32);
  static const OnebitCodec onebit;
  switch (id) {
    case v1::BFLOAT16: return bf16;
    case v1::FLOAT16: return f16;
    case v1::TOPK: return topk;
    case v1::ONEBIT: return onebit;
    default: return f32;
  }
}

absl::StatusOr<const Codec*> FindCodec(int id) {
  if (!v1::Codec_IsValid(id)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "codec ", id, " is unknown: expected FLOAT32, BFLOAT16, FLOAT16, TOPK or ONEBIT"));
  }
  return &CodecOf(static_cast<v1::Codec>(id));
}

v1::Codec CodecId(CodecKind kind) {
  switch (kind) {
    case CodecKind::kBf16: return v1::BFLOAT16;
    case CodecKind::kFp16: return v1::FLOAT16;
    case CodecKind::kTopk: return v1::TOPK;
    case CodecKind::kOnebit: return v1::ONEBIT;
    case CodecKind::kNone: break;
  }
  return v1::FLOAT32;
}

std::unique_ptr<Codec> MakeCodec(CodecKind kind, double topk_ratio, v1::Codec topk_values) {
  switch (kind) {
    case CodecKind::kBf16: return std::make_unique<Bfloat16Codec>();
    case CodecKind::kFp16: return std::make_unique<Float16Codec>();
    case CodecKind::kTopk: {
      const Codec& values = CodecOf(topk_values);
      return std::make_unique<TopkCodec>(topk_ratio,
                                         values.width() > 0 ? values : CodecOf(v1::FLOAT32));
    }
    case CodecKind::kOnebit: return std::make_unique<OnebitCodec>();
    case CodecKind::kNone: break;
  }
  return std::make_unique<Float32Codec>();
}

absl::StatusOr<absl::Span<const float>> ViewFloat32(const v1::Payload& payload, size_t count) {
  if (payload.codec() != v1::FLOAT32) return Bad(payload, "expected FLOAT32");
  TESSERA_RETURN_IF_ERROR(CheckFixed(payload, sizeof(float), count));
  return FloatView(payload.values());
}

absl::Status DecodeTopk(const v1::Payload& payload, size_t limit, std::vector<uint32_t>* positions,
                        std::vector<float>* values) {
  positions->clear();
  values->clear();
  if (payload.codec() != v1::TOPK) return Bad(payload, "expected TOPK");
  if (!payload.signs().empty() || payload.scale() != 0) {
    return Bad(payload, "signs and scale must be unset");
  }
  const v1::Codec value_id = payload.value_codec();
  if (value_id != v1::FLOAT32 && value_id != v1::BFLOAT16 && value_id != v1::FLOAT16) {
    return Bad(payload, absl::StrCat("value_codec ", value_id,
                                     " is not FLOAT32, BFLOAT16 or FLOAT16"));
  }
  const Codec& value_codec = CodecOf(value_id);
  const size_t width = value_codec.width();
  if (payload.values().size() % width != 0) {
    return Bad(payload, absl::StrCat(payload.values().size(), " bytes of values: expected ",
                                     width, " bytes a value"));
  }
  const size_t k = payload.values().size() / width;
  if (k > limit) return Bad(payload, absl::StrCat(k, " values for a slice of ", limit));
  positions->reserve(k);
  const auto* at = reinterpret_cast<const unsigned char*>(payload.indices().data());
  const auto* end = at + payload.indices().size();
  uint64_t next = 0;  // the smallest position the next may take
  for (size_t j = 0; j < k; ++j) {
    uint64_t gap = 0;
    for (int shift = 0;; shift += 7) {
      if (at == end || shift > 28) {
        return Bad(payload, absl::StrCat("position ", j, " of ", k,
                                         at == end ? " is cut short" : " takes over 5 bytes"));
      }
      gap |= uint64_t{*at & 0x7fu} << shift;
      if ((*at++ & 0x80) == 0) break;
    }
    const uint64_t position = next + gap;
    if (position >= limit) {
      return Bad(payload, absl::StrCat("position ", position, " (value ", j,
                                       ") is not below ", limit));
    }
    positions->push_back(static_cast<uint32_t>(position));
    next = position + 1;
  }
  if (at != end) {
    return Bad(payload, absl::StrCat(end - at, " bytes of positions left after ", k, " values"));
  }
  values->resize(k);
  value_codec.DecodeFrom(payload.values().data(), absl::MakeSpan(*values));
  return absl::OkStatus();
}

std::vector<float> DecodeFloats(const v1::Payload& payload) {
  absl::StatusOr<const Codec*> codec = FindCodec(payload.codec());
  if (!codec.ok()) return {};
  size_t count = 0;
  if ((*codec)->width() > 0) {
    count = payload.values().size() / (*codec)->width();
  } else if (payload.codec() == v1::ONEBIT) {
    count = payload.signs().size() * 8;
  } else {
    // TOPK: up to the last position sent.
    std::vector<uint32_t> positions;
    std::vector<float> values;
    if (!DecodeTopk(payload, size_t{1} << 32, &positions, &values).ok()) return {};
    count = positions.empty() ? 0 : size_t{positions.back()} + 1;
  }
  std::vector<float> out(count);
  if (!(*codec)->Decode(payload, absl::MakeSpan(out)).ok()) return {};
  return out;
}

uint64_t PayloadBytes(const v1::Payload& payload) {
  return payload.values().size() + payload.indices().size() + payload.signs().size() +
         (payload.scale() != 0 ? sizeof(float) : 0);
}

}  // namespace tessera
