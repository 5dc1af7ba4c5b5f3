// Logging set-up for the daemons: spdlog to stderr with the process's role in
// every line ("server-0", "worker-3"), level from the config or a flag.
// Call SetupLogging once from main() before other threads start.
#ifndef TESSERA_COMMON_LOGGING_H_
#define TESSERA_COMMON_LOGGING_H_

#include <string>

#include "absl/status/status.h"

namespace tessera {

// Level is one of trace, debug, info, warn, error, off.
// Returns INVALID_ARGUMENT naming the level when it is not one of these.
absl::Status SetupLogging(const std::string& role, const std::string& level);

// Whether `level` names a spdlog level (used by config validation).
bool IsLogLevel(const std::string& level);

}  // namespace tessera

#endif  // TESSERA_COMMON_LOGGING_H_
