// CallGroup: waits for a set of asynchronous shard calls (ShardTransport,
// worker/shard_transport.h) and remembers the first error. The first call
// that fails cancels the others: the group has failed whatever they answer,
// and one of them may be a pull parked on a clock that only moves once this
// worker has recovered (a lost shard restored elsewhere waits for this worker
// to reconnect, while this worker would wait for that pull).
//
//   CallGroup group;
//   transport->Pull(0, &call, &request, &response, group.Add(s, &call, on_ok));
//   group.Wait(timeout + CallGroup::kAnswerMargin);
//   absl::Status s = group.Outcome(name_shard);
//
// Threading: one thread adds calls and waits; the callbacks Add returns run on
// any thread (the transports'), each once. Wait returns only when every
// callback has run, so the calls, requests and responses may be destroyed then.
#ifndef TESSERA_WORKER_CALL_GROUP_H_
#define TESSERA_WORKER_CALL_GROUP_H_

#include <atomic>
#include <cstddef>
#include <functional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "worker/shard_transport.h"

namespace tessera {

class CallGroup {
 public:
  // How long past its deadline a call may take to answer before Wait gives
  // up on it (a transport answers at its deadline by itself).
  static constexpr absl::Duration kAnswerMargin = absl::Seconds(5);

  CallGroup() = default;
  CallGroup(const CallGroup&) = delete;
  CallGroup& operator=(const CallGroup&) = delete;

  // Returns the callback for one more call to shard `shard`, before the call
  // starts; `on_ok` runs (on the answering thread) when it succeeds. A call
  // added after the group failed is cancelled as it starts.
  ShardTransport::Done Add(size_t shard, ShardCall* call, std::function<absl::Status()> on_ok = {});

  // Blocks until every call has answered. Each call has its own deadline,
  // after which its transport answers it; should `bound` pass first, the
  // calls are cancelled (they then answer at once) and one that answers
  // CANCELLED counts as DEADLINE_EXCEEDED. No callback outlives this.
  //
  // With `spin` > 0 the caller first spins up to that long on an atomic copy
  // of the count (worker.spin_wait_us): a reply that comes within it finds
  // this CPU awake instead of halted, which saves a wake-up.
  void Wait(absl::Duration bound, absl::Duration spin = absl::ZeroDuration());

  // After Wait: whether a call failed (not an on_ok step), which shard's
  // first, and its status as its transport gave it (OK when none failed).
  bool failed();
  size_t failed_shard();
  absl::Status call_error();
  // After Wait: the first failed call's status as `name_shard(shard,
  // status)` words it, else the first error of an on_ok step, else OK.
  template <typename NameShard>
  absl::Status Outcome(NameShard name_shard) {
    absl::MutexLock lock(&mu_);
    if (failed_) return name_shard(failed_shard_, error_);
    return error_;
  }

 private:
  absl::Mutex mu_;
  std::atomic<int> pending_hint_{0};  // pending_, readable without mu_ (spinning)
  int pending_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<ShardCall*> calls_ ABSL_GUARDED_BY(mu_);
  bool failed_ ABSL_GUARDED_BY(mu_) = false;   // a call failed
  bool gave_up_ ABSL_GUARDED_BY(mu_) = false;  // Wait's bound passed
  size_t failed_shard_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tessera

#endif  // TESSERA_WORKER_CALL_GROUP_H_
