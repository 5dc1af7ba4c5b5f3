#include "worker/ps_client.h"

#include <algorithm>

namespace tessera {

void PsClient::PushStaleness::Add(int64_t staleness) {
  if (staleness < 0) {
    ++unknown;
    return;
  }
  ++measured;
  sum += staleness;
  max = std::max(max, staleness);
}

absl::StatusOr<std::vector<uint32_t>> PsClient::PlanEpoch(int64_t, double) {
  return absl::UnimplementedError("this PS client cannot plan epochs (training.balance dynamic)");
}

absl::StatusOr<std::optional<int64_t>> PsClient::PushDenseAndPull(
    int64_t clock, const ParameterSet& grads, std::optional<int64_t> values_clock, ParameterSet*) {
  absl::Status s = PushDense(clock, grads, values_clock);
  if (!s.ok()) return s;
  return std::optional<int64_t>();
}

}  // namespace tessera
