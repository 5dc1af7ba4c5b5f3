// TOPK (common/codec.h): the k values of largest magnitude and their
// positions. Its selection is most of a top-k push's encoding time, so it is
// written for that: a sampled bar, then branch-free passes (see Select).
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "common/codec_internal.h"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "absl/base/casts.h"
#include "absl/strings/str_cat.h"
#include "common/codec.h"
#include "common/status.h"

namespace tessera {
namespace {

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
    const size_t k = std::min(n, std::max<size_t>(1, static_cast<size_t>(std::ceil(ratio_ * n))));
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
    // A magnitude's bit pattern orders as the magnitude does (all are > 0).
    thread_local std::vector<uint32_t> bits;
    bits.resize(candidates.size());
    for (size_t j = 0; j < candidates.size(); ++j) bits[j] = MagnitudeBits(values[candidates[j]]);
    size_t above = 0;
    const float kth = absl::bit_cast<float>(KthLargest(bits, k, &above));
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

  static uint32_t MagnitudeBits(float v) { return absl::bit_cast<uint32_t>(v) & 0x7fffffffu; }

  // The k-th largest of `bits` (1 <= k <= size), and in `above` how many are
  // larger. A radix select, most significant digit first: a count of each
  // digit (11, 11, then 9 bits) among the values that share the digits found
  // so far, walked down from the largest until the k-th is reached. Two
  // passes over the candidates (the first digit's count, then gathering those
  // that share it) and short ones over what shares it; std::nth_element on
  // the candidates' magnitudes cost about three times as much.
  static uint32_t KthLargest(std::vector<uint32_t>& bits, size_t k, size_t* above) {
    static constexpr int kShifts[3] = {20, 9, 0};
    static constexpr uint32_t kDigits[3] = {0x7ff, 0x7ff, 0x1ff};
    thread_local std::vector<uint32_t> sharing;
    uint32_t prefix = 0;
    size_t need = k;
    *above = 0;
    absl::Span<const uint32_t> rest = bits;
    for (int level = 0; level < 3; ++level) {
      uint32_t count[0x800] = {};
      const int shift = kShifts[level];
      const uint32_t digits = kDigits[level];
      for (uint32_t b : rest) ++count[(b >> shift) & digits];
      uint32_t digit = digits;
      while (count[digit] < need) {
        need -= count[digit];
        *above += count[digit];
        --digit;
      }
      prefix |= digit << shift;
      if (level == 2) break;
      // Those that share the digits so far, gathered without a branch.
      const uint32_t high = ~uint32_t{0} << shift;
      sharing.resize(rest.size());
      size_t kept = 0;
      for (uint32_t b : rest) {
        sharing[kept] = b;
        kept += (b & high) == prefix;
      }
      sharing.resize(kept);
      bits.swap(sharing);
      rest = bits;
    }
    return prefix;
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

}  // namespace

std::unique_ptr<Codec> MakeTopkCodec(double ratio, const Codec& values) {
  return std::make_unique<TopkCodec>(ratio, values);
}

absl::Status DecodeTopk(const v1::Payload& payload, size_t limit, std::vector<uint32_t>* positions,
                        std::vector<float>* values) {
  positions->clear();
  values->clear();
  if (payload.codec() != v1::TOPK) return BadPayload(payload, "expected TOPK");
  if (!payload.signs().empty() || payload.scale() != 0) {
    return BadPayload(payload, "signs and scale must be unset");
  }
  const v1::Codec value_id = payload.value_codec();
  if (value_id != v1::FLOAT32 && value_id != v1::BFLOAT16 && value_id != v1::FLOAT16) {
    return BadPayload(
        payload, absl::StrCat("value_codec ", value_id, " is not FLOAT32, BFLOAT16 or FLOAT16"));
  }
  const Codec& value_codec = CodecOf(value_id);
  const size_t width = value_codec.width();
  if (payload.values().size() % width != 0) {
    return BadPayload(payload, absl::StrCat(payload.values().size(), " bytes of values: expected ",
                                            width, " bytes a value"));
  }
  const size_t k = payload.values().size() / width;
  if (k > limit) return BadPayload(payload, absl::StrCat(k, " values for a slice of ", limit));
  positions->reserve(k);
  const auto* at = reinterpret_cast<const unsigned char*>(payload.indices().data());
  const auto* end = at + payload.indices().size();
  uint64_t next = 0;  // the smallest position the next may take
  for (size_t j = 0; j < k; ++j) {
    uint64_t gap = 0;
    for (int shift = 0;; shift += 7) {
      if (at == end || shift > 28) {
        return BadPayload(payload,
                          absl::StrCat("position ", j, " of ", k,
                                       at == end ? " is cut short" : " takes over 5 bytes"));
      }
      gap |= uint64_t{*at & 0x7fu} << shift;
      if ((*at++ & 0x80) == 0) break;
    }
    const uint64_t position = next + gap;
    if (position >= limit) {
      return BadPayload(
          payload, absl::StrCat("position ", position, " (value ", j, ") is not below ", limit));
    }
    positions->push_back(static_cast<uint32_t>(position));
    next = position + 1;
  }
  if (at != end) {
    return BadPayload(payload,
                      absl::StrCat(end - at, " bytes of positions left after ", k, " values"));
  }
  values->resize(k);
  value_codec.DecodeFrom(payload.values().data(), absl::MakeSpan(*values));
  return absl::OkStatus();
}

}  // namespace tessera
