// Status helpers shared by every component. Errors cross component boundaries
// as absl::Status / absl::StatusOr; the gRPC service layer converts them.
//
//   TESSERA_RETURN_IF_ERROR(ValidateSlice(slice));
//   TESSERA_ASSIGN_OR_RETURN(auto config, LoadJobConfig(path, overrides));
#ifndef TESSERA_COMMON_STATUS_H_
#define TESSERA_COMMON_STATUS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define TESSERA_STATUS_CONCAT_INNER_(a, b) a##b
#define TESSERA_STATUS_CONCAT_(a, b) TESSERA_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function when `expr` (an absl::Status) is not OK.
#define TESSERA_RETURN_IF_ERROR(expr)                  \
  do {                                                 \
    ::absl::Status tessera_status_ = (expr);           \
    if (!tessera_status_.ok()) return tessera_status_; \
  } while (0)

// Declares `lhs` from a StatusOr expression, returning its status on error.
#define TESSERA_ASSIGN_OR_RETURN(lhs, expr) \
  TESSERA_ASSIGN_OR_RETURN_IMPL_(TESSERA_STATUS_CONCAT_(tessera_or_, __LINE__), lhs, expr)

#define TESSERA_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                   \
  if (!tmp.ok()) return tmp.status();                  \
  lhs = std::move(tmp).value()

namespace tessera {

// Whether a failed call to a server may succeed when made again later: the
// server was unreachable, restarting, paused past the deadline, or the call
// was cut off. A worker retries these (and exits 3, "a restart can help",
// when they persist).
inline bool IsTransient(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s) || absl::IsAborted(s) ||
         absl::IsCancelled(s);
}

// A daemon's exit codes, as the launcher reads them: 0 done; 1 failed; 2 a
// bad config or input (a restart cannot help); 3 a worker that lost its
// servers (a restart can help); kExitSuperseded a server whose shard another
// daemon serves now (its standby took over, or its term ended:
// server/failover.h), neither restarted nor a failure.
inline constexpr int kExitSuperseded = 4;

}  // namespace tessera

#endif  // TESSERA_COMMON_STATUS_H_
