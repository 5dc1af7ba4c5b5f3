// ClockTable: one shard's view of every worker's clock, and the pulls parked
// until the clock allows them.
//
// clock[w] counts the iterations worker w has finished on this shard (0 after
// Register). min_clock is the minimum over all W workers; a worker that has
// not registered yet counts as clock 0, a finished worker does not count.
// The shard *publishes* a min_clock once every update that must be visible at
// it has been applied (BSP aggregation applies first, then publishes); pulls
// gate on the published value, never on the raw one.
//
// A pull that must wait is parked as a callback, not a thread: Publish runs the
// callbacks whose requirement is met, ExpireDue fails those past their
// deadline with DEADLINE_EXCEEDED, Cancel fails one with CANCELLED, FailAll
// (shutdown) fails the rest with UNAVAILABLE. Each parked callback runs exactly
// once, outside the table's lock, on the thread that released it.
//
// Threading: thread-safe; one short mutex, never held while a callback runs.
#ifndef TESSERA_SERVER_CLOCK_TABLE_H_
#define TESSERA_SERVER_CLOCK_TABLE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace tessera {

class ClockTable {
 public:
  using Callback = std::function<void(absl::Status)>;
  using WaiterId = uint64_t;

  // The outcome of advancing a worker's clock.
  struct Advance {
    int64_t clock = 0;    // the worker's clock afterwards
    int64_t old_min = 0;  // raw min_clock before and after
    int64_t new_min = 0;
  };

  explicit ClockTable(uint32_t num_workers);

  // Marks `worker` registered. Returns its clock (0 when new; unchanged when it
  // registers again, e.g. after a restart). REQUIRES: worker < num_workers.
  int64_t Register(uint32_t worker);
  bool IsRegistered(uint32_t worker) const;
  // The worker's clock, or -1 when it has not registered.
  int64_t WorkerClock(uint32_t worker) const;

  // The worker is at `clock` elsewhere (other shards, its own count): a
  // registered worker behind it jumps there (the clocks in between are lost
  // on this shard); one at or past it stays. Registers the worker.
  // Returns min_clock before and after, and the worker's clock in .clock.
  // REQUIRES: worker < num_workers, clock >= 0.
  Advance Adopt(uint32_t worker, int64_t clock);

  // Start-up from a checkpoint: every worker's clock (-1: unregistered) and
  // finished flag, and the published min_clock. REQUIRES: sizes num_workers,
  // nothing parked.
  void Restore(const std::vector<int64_t>& clocks, const std::vector<bool>& finished,
               int64_t published);

  // The unfinished workers whose clock is the minimum: whom a barrier waits for.
  std::vector<uint32_t> Laggards() const;

  // Drops `worker` from min_clock (consistency.evict_after_s): the others go
  // on without it. Returns min_clock before and after.
  Advance Evict(uint32_t worker);
  // An evicted worker that calls again rejoins the barrier at the published
  // min_clock (the clocks it missed are skipped). Returns whether it was evicted.
  bool Rejoin(uint32_t worker);
  std::vector<bool> evicted() const;

  // Worker `worker` finished iteration `finished`; its clock becomes finished+1.
  // FAILED_PRECONDITION when it is unregistered or `finished` != its clock.
  absl::StatusOr<Advance> AdvanceClock(uint32_t worker, int64_t finished);

  // The worker is done; it no longer holds min_clock back. Returns how many
  // workers are finished. REQUIRES: registered.
  uint32_t Finish(uint32_t worker);
  uint32_t workers_finished() const;
  bool AllFinished() const;

  int64_t min_clock() const;  // raw
  int64_t published_min() const;
  std::vector<int64_t> clocks() const;  // -1 for unregistered workers
  std::vector<bool> finished() const;

  // Parks `callback` until published_min >= required, unless it already is:
  // then returns nullopt and does not call it (the caller proceeds inline).
  // With `part` > 0 (worker.bsp_parts), part_published(part) >= required
  // satisfies it too.
  std::optional<WaiterId> WaitFor(int64_t required, absl::Time deadline, Callback callback,
                                  uint32_t part = 0);

  // Raises published_min to `min` (never lowers it) and runs the callbacks it
  // satisfies, in order of their requirement.
  void Publish(int64_t min);

  // BSP parts: part `part`'s values are those of min_clock `min` (every
  // worker's push of it up to clock min - 1 is applied) before the clock
  // closes. Raises part_published(part) to `min` and runs the callbacks
  // waiting on that part it satisfies.
  void PublishPart(uint32_t part, int64_t min);
  // The highest min PublishPart gave `part`, or published_min when higher.
  int64_t part_published(uint32_t part) const;

  // Fails the waiter with CANCELLED if it is still parked; false otherwise.
  bool Cancel(WaiterId id);
  // Fails every waiter whose deadline is <= now. Returns how many.
  size_t ExpireDue(absl::Time now);
  // Fails every parked waiter with UNAVAILABLE (shutdown).
  void FailAll(const absl::Status& status);

  // The earliest deadline of a parked waiter (InfiniteFuture when none).
  absl::Time NextDeadline() const;
  size_t parked() const;
  uint64_t expired() const;

 private:
  struct Waiter {
    int64_t required;
    absl::Time deadline;
    Callback callback;
    uint32_t part = 0;  // WaitFor's part (0: none)
  };

  int64_t RawMinLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes waiter `id`, returning its callback.
  Callback TakeLocked(WaiterId id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // const after construction
  const uint32_t num_workers_;

  mutable absl::Mutex mu_;
  std::vector<int64_t> clocks_ ABSL_GUARDED_BY(mu_);  // -1: not registered
  std::vector<bool> finished_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> evicted_ ABSL_GUARDED_BY(mu_);
  uint32_t num_finished_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t published_ ABSL_GUARDED_BY(mu_) = 0;
  WaiterId next_id_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<WaiterId, Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  std::multimap<int64_t, WaiterId> by_required_ ABSL_GUARDED_BY(mu_);
  std::multimap<absl::Time, WaiterId> by_deadline_ ABSL_GUARDED_BY(mu_);
  // Waiters with a part, by (part, required), and each part's published min.
  std::multimap<std::pair<uint32_t, int64_t>, WaiterId> by_part_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint32_t, int64_t> part_published_ ABSL_GUARDED_BY(mu_);
  uint64_t expired_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace tessera

#endif  // TESSERA_SERVER_CLOCK_TABLE_H_
