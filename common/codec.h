// Wire codecs: how one slice of float values travels (v1::Codec, v1::Payload).
// The sender encodes, the receiver decodes to float32; both clients and the
// shard use these and nothing else, so a new encoding is one new Codec.
//
//   FLOAT32   raw little-endian floats (lossless)
//   BFLOAT16  float32's upper half, rounded to nearest even
//   FLOAT16   IEEE half, nearest even; finite values beyond +-65504 saturate
//   TOPK      the k = ceil(ratio x n) values of largest magnitude (zeros never:
//             fewer where fewer are nonzero), in FLOAT32, BFLOAT16 or FLOAT16
//             (Payload.value_codec), and their positions, each a varint of
//             its gap from the one before
//   ONEBIT    each value's sign, and one scale (the mean magnitude)
//
// Lossy codecs lose what they do not send; a worker keeps that in its
// residual and adds it to the next clock's gradient (error feedback,
// worker/wire_codecs.h). Pulls use the fixed-width codecs only.
//
//   const Codec& bf16 = CodecOf(v1::BFLOAT16);
//   v1::Payload p;  bf16.Encode(values, &p);
//   std::vector<float> out(values.size());
//   TESSERA_RETURN_IF_ERROR(bf16.Decode(p, absl::MakeSpan(out)));
//
// Codecs are immutable; any thread may use one.
#ifndef TESSERA_COMMON_CODEC_H_
#define TESSERA_COMMON_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/config.h"
#include "common/wire.h"
#include "proto/tessera.pb.h"

namespace tessera {

class Codec {
 public:
  virtual ~Codec() = default;
  virtual v1::Codec id() const = 0;
  // Bytes per value in Payload.values for a fixed-width codec (FLOAT32 4,
  // BFLOAT16 and FLOAT16 2); 0 for TOPK and ONEBIT, whose size depends on
  // the values.
  virtual size_t width() const = 0;
  // Replaces *out with `values` encoded.
  virtual void Encode(absl::Span<const float> values, v1::Payload* out) const = 0;
  // Decodes a payload that must hold exactly out.size() values.
  // INVALID_ARGUMENT naming what is wrong when it does not fit: another
  // codec, sizes, positions out of order or range, a non-finite scale.
  // `out` is unspecified then.
  virtual absl::Status Decode(const v1::Payload& payload, absl::Span<float> out) const = 0;

  // Encodes `x` as Encode does and leaves in `x` what the receiver will not
  // see: x - Decode(Encode(x)), the error-feedback residual. Lossless
  // codecs leave zeros. Codecs override it where one pass does both.
  virtual void EncodeWithFeedback(absl::Span<float> x, v1::Payload* out) const;

  // Fixed-width codecs only (width() > 0): values written to / read from
  // raw memory, width() bytes each (a table's chunks, shared memory).
  virtual void EncodeTo(absl::Span<const float> values, char* out) const;
  virtual void DecodeFrom(const char* in, absl::Span<float> out) const;
};

// The codec of `id` (TOPK with the default ratio: only encoding depends on
// the ratio). INVALID_ARGUMENT for a number this build does not know.
absl::StatusOr<const Codec*> FindCodec(int id);
const Codec& CodecOf(v1::Codec id);
// The config's word as a codec: none is FLOAT32.
v1::Codec CodecId(CodecKind kind);
// An encoder for `kind`; topk keeps ceil(topk_ratio x n) values (at least 1,
// none of them 0), sent in `topk_values` (FLOAT32, BFLOAT16 or FLOAT16).
std::unique_ptr<Codec> MakeCodec(CodecKind kind, double topk_ratio,
                                 v1::Codec topk_values = v1::FLOAT32);

// A FLOAT32 payload of `count` values viewed in place (no copy);
// INVALID_ARGUMENT as Decode when it does not fit. The view lives as long
// as the payload.
absl::StatusOr<absl::Span<const float>> ViewFloat32(const v1::Payload& payload, size_t count);

// A TOPK payload's positions, increasing and each below `limit`, and its
// values decoded to float32, one for each position. INVALID_ARGUMENT naming
// what is wrong when they do not fit (another codec, a value codec that is
// not fixed-width, a position cut short, out of range, or bytes left over).
absl::Status DecodeTopk(const v1::Payload& payload, size_t limit, std::vector<uint32_t>* positions,
                        std::vector<float>* values);

// Bytes a payload's fields take on the wire (what the link carries, less
// the few bytes of protobuf framing).
uint64_t PayloadBytes(const v1::Payload& payload);

// A FLOAT32 payload of `values` (tools and tests), and a payload's values
// decoded to floats (an empty vector when it does not decode).
inline void EncodeFloats(absl::Span<const float> values, v1::Payload* out) {
  CodecOf(v1::FLOAT32).Encode(values, out);
}
std::vector<float> DecodeFloats(const v1::Payload& payload);

// IEEE half precision, nearest even; finite values beyond the largest half
// saturate to +-65504 (a gradient clipped, not turned into Inf); NaN stays
// NaN, Inf stays Inf.
uint16_t ToFloat16(float f);
float FromFloat16(uint16_t h);

}  // namespace tessera

#endif  // TESSERA_COMMON_CODEC_H_
