// Server-side update rules (SGD, momentum/Nesterov, Adagrad, Adam, FTRL), applied per
// table to the values a shard owns. Optimizer state lives next to the values
// it belongs to, partitioned exactly like the table.
//
// State layout: an optimizer keeps num_slots() floats of state per value.
// Slot k of value i sits at slots[k * slot_stride + i], so each slot is a
// contiguous vector Eigen can map; a dense table uses its length as the
// stride, a sparse row its dim.
//
// The learning rate follows optimizer.lr_schedule over `step`, the count of
// updates the values have seen (constant, or cosine decay to min_lr).
//
// Stateless after construction: one instance may be used from many threads
// at once on disjoint values.
#ifndef TESSERA_SERVER_OPTIMIZER_H_
#define TESSERA_SERVER_OPTIMIZER_H_

#include <cstdint>
#include <memory>

#include "absl/types/span.h"
#include "common/config.h"

namespace tessera {

class Optimizer {
 public:
  virtual ~Optimizer() = default;

  // Floats of state per value (0 for SGD, 1 for momentum/Adagrad, 2 for Adam/FTRL).
  virtual int num_slots() const = 0;

  // Writes the initial state of `slots` (zeros, or Adagrad's accumulator).
  // Every slot float starts at the same value, so one call may cover many
  // rows' slots at once (and the values between them, rewritten after).
  virtual void InitSlots(absl::Span<float> slots) const;

  // One update of w[0..n) with gradient scale * g[0..n).
  // `step` counts the updates these values have seen, this one included (>= 1);
  // Adam uses it for bias correction. `lr_factor` multiplies this update's
  // learning rate (staleness compensation lr_scale; FTRL ignores it).
  // REQUIRES: slot_stride >= n; slots laid out as above.
  virtual void Apply(float* w, const float* g, float* slots, size_t slot_stride, size_t n,
                     int64_t step, float scale, float lr_factor) const = 0;

  // The same update on many short rows at once (sparse tables): rows[i] holds
  // dim values followed by num_slots() slots of dim floats; grads[i] its
  // gradient. One call per request keeps per-step constants out of the loop.
  virtual void ApplyRows(absl::Span<float* const> rows, absl::Span<const float* const> grads,
                         uint32_t dim, int64_t step, float scale) const;
};

// The optimizer named by config.type. REQUIRES: a validated config.
std::unique_ptr<Optimizer> MakeOptimizer(const OptimizerConfig& config);

}  // namespace tessera

#endif  // TESSERA_SERVER_OPTIMIZER_H_
