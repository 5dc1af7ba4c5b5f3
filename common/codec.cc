#include "common/codec.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

#include "Eigen/Core"
#include "absl/strings/str_cat.h"
#include "common/codec_internal.h"
#include "common/status.h"
#include "common/wire.h"

namespace tessera {
namespace {

// A fixed-width payload holds its values and nothing else.
absl::Status CheckFixed(const v1::Payload& p, size_t width, size_t count) {
  if (p.values().size() != count * width) {
    return BadPayload(p, absl::StrCat("values hold ", p.values().size(), " bytes, expected ",
                                      count * width, " (", count, " values)"));
  }
  if (!p.indices().empty() || !p.signs().empty() || p.scale() != 0) {
    return BadPayload(p, "only values may be set");
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
      return BadPayload(p, absl::StrCat("signs hold ", p.signs().size(), " bytes, expected ",
                                        (out.size() + 7) / 8, " (", out.size(), " values)"));
    }
    if (!std::isfinite(p.scale()) || p.scale() < 0) {
      return BadPayload(p, absl::StrCat("scale ", p.scale(), " is not a finite number >= 0"));
    }
    if (!p.values().empty() || !p.indices().empty()) {
      return BadPayload(p, "only signs and scale may be set");
    }
    const uint32_t scale = Eigen::numext::bit_cast<uint32_t>(p.scale());
    const unsigned char* bits = reinterpret_cast<const unsigned char*>(p.signs().data());
    float* o = out.data();
    size_t i = 0;
#if defined(__SSE2__)
    const __m128i magnitude = _mm_set1_epi32(static_cast<int>(scale));
    for (; i + 8 <= out.size(); i += 8) {
      const unsigned byte = bits[i / 8];
      const __m128i low = _mm_load_si128(reinterpret_cast<const __m128i*>(kNibbleSigns[byte & 15]));
      const __m128i high =
          _mm_load_si128(reinterpret_cast<const __m128i*>(kNibbleSigns[byte >> 4]));
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
#define TESSERA_NIBBLE(n) \
  {TESSERA_SIGN(n, 0), TESSERA_SIGN(n, 1), TESSERA_SIGN(n, 2), TESSERA_SIGN(n, 3)}
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
  static const std::unique_ptr<Codec> topk = MakeTopkCodec(kDefaultTopkRatio, f32);
  static const OnebitCodec onebit;
  switch (id) {
    case v1::BFLOAT16: return bf16;
    case v1::FLOAT16: return f16;
    case v1::TOPK: return *topk;
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
      return MakeTopkCodec(topk_ratio, values.width() > 0 ? values : CodecOf(v1::FLOAT32));
    }
    case CodecKind::kOnebit: return std::make_unique<OnebitCodec>();
    case CodecKind::kNone: break;
  }
  return std::make_unique<Float32Codec>();
}

absl::StatusOr<absl::Span<const float>> ViewFloat32(const v1::Payload& payload, size_t count) {
  if (payload.codec() != v1::FLOAT32) return BadPayload(payload, "expected FLOAT32");
  TESSERA_RETURN_IF_ERROR(CheckFixed(payload, sizeof(float), count));
  return FloatView(payload.values());
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
