#include "common/initializer.h"

#include <cmath>

#include "common/partition.h"

namespace tessera {
namespace {

// Uniform in (0, 1), from the top 24 bits of a mixed counter.
float UnitUniform(uint64_t bits) {
  return (static_cast<float>(bits >> 40) + 0.5f) * (1.0f / 16777216.0f);
}

}  // namespace

Initializer::Initializer(const InitConfig& config, const std::string& table_name)
    : config_(config),
      kind_(config.type),
      stream_(SplitMix64(config.seed)) {
  for (unsigned char c : table_name) stream_ = SplitMix64(stream_ ^ c);
}

inline float Initializer::UniformAt(uint64_t index) const {
  return config_.low +
         (config_.high - config_.low) * UnitUniform(SplitMix64(stream_ ^ SplitMix64(index)));
}

float Initializer::ValueAt(uint64_t index) const {
  if (kind_ == InitType::kZeros) return 0.0f;
  if (kind_ == InitType::kConstant) return config_.value;
  if (kind_ == InitType::kUniform) return UniformAt(index);
  uint64_t bits = SplitMix64(stream_ ^ SplitMix64(index));
  // normal: Box-Muller on two uniforms drawn from one counter.
  float u1 = UnitUniform(bits);
  float u2 = UnitUniform(SplitMix64(bits));
  float z = std::sqrt(-2.0f * std::log(u1)) * std::cos(6.28318530718f * u2);
  return config_.mean + config_.stddev * z;
}

void Initializer::FillRows(const uint64_t* keys, size_t n, uint32_t dim, float* rows,
                           size_t stride) const {
  if (kind_ == InitType::kUniform) {
    // The common case without the per-value dispatch of ValueAt.
    for (size_t k = 0; k < n; ++k) {
      for (uint32_t j = 0; j < dim; ++j) rows[k * stride + j] = UniformAt(keys[k] * dim + j);
    }
    return;
  }
  for (size_t k = 0; k < n; ++k) Fill(keys[k] * dim, absl::MakeSpan(rows + k * stride, dim));
}

void Initializer::Fill(uint64_t first, absl::Span<float> out) const {
  if (kind_ == InitType::kZeros || kind_ == InitType::kConstant) {
    std::fill(out.begin(), out.end(), ValueAt(0));
    return;
  }
  for (size_t i = 0; i < out.size(); ++i) out[i] = ValueAt(first + i);
}

}  // namespace tessera
