#include "worker/shard_transport.h"

#include <utility>

namespace tessera {

void ShardCall::Cancel() {
  std::function<void()> cancel;
  {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    cancel = cancel_;
  }
  // Outside the lock: a transport may answer the call on this thread.
  if (cancel) cancel();
}

void ShardCall::SetCancel(std::function<void()> cancel) {
  bool cancelled;
  {
    absl::MutexLock lock(&mu_);
    cancel_ = cancel;
    cancelled = cancelled_;
  }
  if (cancelled && cancel) cancel();
}

}  // namespace tessera
