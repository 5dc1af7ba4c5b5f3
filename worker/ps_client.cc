#include "worker/ps_client.h"

namespace tessera {

absl::StatusOr<std::optional<int64_t>> PsClient::PushDenseAndPull(int64_t clock,
                                                                  const ParameterSet& grads,
                                                                  ParameterSet*) {
  absl::Status s = PushDense(clock, grads);
  if (!s.ok()) return s;
  return std::optional<int64_t>();
}

}  // namespace tessera
