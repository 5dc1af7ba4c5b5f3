#include "worker/call_group.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace tessera {

ShardTransport::Done CallGroup::Add(size_t shard, ShardCall* call,
                                    std::function<absl::Status()> on_ok) {
  bool failed;
  {
    absl::MutexLock lock(&mu_);
    ++pending_;
    pending_hint_.store(pending_, std::memory_order_release);
    calls_.push_back(call);
    failed = failed_;
  }
  if (failed) call->Cancel();
  return [this, shard, on_ok = std::move(on_ok)](absl::Status status) {
    absl::Status local = status.ok() && on_ok ? on_ok() : absl::OkStatus();
    std::vector<ShardCall*> cancel;
    {
      absl::MutexLock lock(&mu_);
      if (!status.ok() && !failed_) {
        failed_ = true;
        failed_shard_ = shard;
        error_ = gave_up_ && absl::IsCancelled(status)
                     ? absl::DeadlineExceededError(
                           absl::StrCat("no answer by the call's deadline and ",
                                        absl::FormatDuration(kAnswerMargin), " more"))
                     : status;
        cancel = calls_;
      } else if (!local.ok() && error_.ok()) {
        error_ = local;
      }
    }
    // Outside the lock (a cancelled call may answer on this thread), and
    // while this call still counts as pending, so that Wait cannot return
    // and the calls stay alive.
    for (ShardCall* c : cancel) c->Cancel();
    absl::MutexLock lock(&mu_);
    --pending_;
    pending_hint_.store(pending_, std::memory_order_release);
  };
}

void CallGroup::Wait(absl::Duration bound, absl::Duration spin) {
  if (spin > absl::ZeroDuration()) {
    const absl::Time until = absl::Now() + spin;
    while (pending_hint_.load(std::memory_order_acquire) != 0 && absl::Now() < until) {
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
    }
  }
  auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return pending_ == 0; };
  std::vector<ShardCall*> cancel;
  {
    absl::MutexLock lock(&mu_);
    if (mu_.AwaitWithTimeout(absl::Condition(&done), bound)) return;
    gave_up_ = true;
    cancel = calls_;
  }
  for (ShardCall* c : cancel) c->Cancel();
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(&done));
}

bool CallGroup::failed() {
  absl::MutexLock lock(&mu_);
  return failed_;
}

size_t CallGroup::failed_shard() {
  absl::MutexLock lock(&mu_);
  return failed_shard_;
}

absl::Status CallGroup::call_error() {
  absl::MutexLock lock(&mu_);
  return failed_ ? error_ : absl::OkStatus();
}

}  // namespace tessera
