// Wire encoding of values and keys: raw little-endian bytes in proto `bytes`
// fields (float32 values, uint64 keys), so a large transfer is one memcpy;
// values may also travel as bfloat16 (half the bytes, see v1::Encoding).
// Tessera's hosts are little-endian (x86-64, aarch64); a big-endian build
// fails at compile time rather than sending scrambled numbers.
//
// Pure functions; safe from any thread.
#ifndef TESSERA_COMMON_WIRE_H_
#define TESSERA_COMMON_WIRE_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "Tessera's wire format is little-endian; this host is not");

namespace tessera {

// Appends nothing: replaces *out with the bytes of `values`.
inline void EncodeFloats(absl::Span<const float> values, std::string* out) {
  out->assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

inline void EncodeKeys(absl::Span<const uint64_t> keys, std::string* out) {
  out->assign(reinterpret_cast<const char*>(keys.data()), keys.size() * sizeof(uint64_t));
}

// Views `bytes` as floats / keys without copying. The caller checks the length
// (bytes.size() % 4 or % 8) first; a ragged tail is ignored here.
// The std::string's buffer is suitably aligned for both (operator new).
inline absl::Span<const float> FloatView(absl::string_view bytes) {
  return {reinterpret_cast<const float*>(bytes.data()), bytes.size() / sizeof(float)};
}

inline absl::Span<const uint64_t> KeyView(const std::string& bytes) {
  return {reinterpret_cast<const uint64_t*>(bytes.data()), bytes.size() / sizeof(uint64_t)};
}

// bfloat16: the upper 16 bits of a float32, rounded to nearest even; NaN
// stays NaN, and values beyond bfloat16's range become +-Inf. The bulk
// forms (wire.cc) are compiled to vector code.
inline uint16_t ToBfloat16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (u >> 16) | 0x40u;
  return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
}

inline float FromBfloat16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// Writes `values` as bfloat16 to out[0, 2 * values.size()); `out` is 2-byte aligned.
void EncodeBfloat16(absl::Span<const float> values, char* out);

// Appends `values` as bfloat16 (2 bytes each) to *out.
void AppendBfloat16(absl::Span<const float> values, std::string* out);

// Whether no value is NaN or +-Inf.
bool AllFinite(absl::Span<const float> values);
// Whether every |value| <= bound (NaN is not). REQUIRES: 0 <= bound <= FLT_MAX.
bool AllWithin(absl::Span<const float> values, float bound);
// The largest |v| of values (0 when empty), or +Inf when any is NaN or Inf:
// finiteness and a magnitude bound in one pass.
float MaxAbs(absl::Span<const float> values);

// Decodes bfloat16 bytes into out[0, bytes.size() / 2).
void DecodeBfloat16(absl::string_view bytes, float* out);

// Copies decoded floats into a vector (for callers that keep them).
inline std::vector<float> DecodeFloats(const std::string& bytes) {
  auto view = FloatView(bytes);
  return std::vector<float>(view.begin(), view.end());
}

}  // namespace tessera

#endif  // TESSERA_COMMON_WIRE_H_
