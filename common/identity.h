// Process identity from flags or the environment, so that the same command
// line works on a laptop and in Kubernetes:
//   server shard index: --shard N, else the ordinal at the end of the pod name
//     ($POD_NAME or $HOSTNAME, "tessera-server-3" -> 3; StatefulSet pods)
//   worker rank: --rank N, else $JOB_COMPLETION_INDEX (Indexed Job)
// A flag always wins over the environment.
#ifndef TESSERA_COMMON_IDENTITY_H_
#define TESSERA_COMMON_IDENTITY_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace tessera {

// The ordinal N of a name ending in "-N"; nullopt when it has none.
std::optional<uint32_t> OrdinalOf(const std::string& name);

// flag_value: the flag's value when given. `what` names the identity in errors.
absl::StatusOr<uint32_t> ResolveShardIndex(const std::optional<int64_t>& flag_value);
absl::StatusOr<uint32_t> ResolveWorkerRank(const std::optional<int64_t>& flag_value);

}  // namespace tessera

#endif  // TESSERA_COMMON_IDENTITY_H_
