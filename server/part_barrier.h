// PartBarrier: worker.bsp_parts on one shard, a barrier per part. A BSP
// step's dense values move in parts (common/partition.h BspParts: the
// shard's dense ranges in table order, cut into nearly equal runs). Each
// worker pushes part 1, 2, ... in order while its pulls of every part of the
// next clock wait here. A part is applied as soon as every worker the
// barrier waits for has pushed it, and its waiting pulls are answered then,
// while the later parts are still arriving; the clock's close applies
// whatever part is left (a worker that was evicted, finished, or pushed
// only some parts).
//
// Equal to applying the clock at its close: a part's buffer is the sum of
// its pushes, applied once as their mean, and a chunk counts one optimizer
// step per clock however many parts of it are applied
// (DenseTable::ApplyAccumulatedRange); the optimizers work value by value.
// A part's pushes are added to the buffer under that part's lock, with the
// count that decides its mean, so an apply never misses a push it counted.
// One exception: a worker that rejoins the barrier (after an eviction) and
// pushes a part already applied at that clock has it applied on its own
// at the close.
//
// Threading: thread-safe. One mutex per part, held while a push of that part
// is added and, when it completes the part, while the part is applied;
// pushes of different parts proceed in parallel. Lock order: a worker's
// mutex (Shard::WorkerSlot), the shard's aggregate mutex, a part's mutex,
// then a table chunk's and the clock table's.
#ifndef TESSERA_SERVER_PART_BARRIER_H_
#define TESSERA_SERVER_PART_BARRIER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "server/dense_table.h"

namespace tessera {

class PartBarrier {
 public:
  // A run of one table's values: global indices [offset, offset + length).
  struct Range {
    DenseTable* table = nullptr;
    uint64_t offset = 0;
    uint64_t length = 0;
  };

  // parts[k]: the ranges of part k + 1, in the order a request names them.
  PartBarrier(std::vector<std::vector<Range>> parts, uint32_t num_workers);

  uint32_t size() const { return static_cast<uint32_t>(parts_.size()); }

  // OK when `slices` are exactly part `part`'s ranges, in order; else
  // INVALID_ARGUMENT naming what differs (a request changes nothing then).
  absl::Status CheckPart(uint32_t part, const std::vector<Range>& slices) const;

  // Adds `worker`'s push of part `part` at `clock` (one gradient per range,
  // already checked) to the buffer. When every worker `laggards()` names
  // (the unfinished workers still at the barrier's clock) has pushed this
  // part at `clock`, and `worker` is one of them, applies the part as the
  // mean of its pushes and returns true: the caller then publishes the part
  // (ClockTable::PublishPart(part, clock + 1)). REQUIRES: part in [1, size()].
  bool Push(uint32_t part, uint32_t worker, int64_t clock,
            const std::vector<absl::Span<const float>>& grads,
            const std::function<std::vector<uint32_t>()>& laggards);

  // The clock's close: applies every part holding pushes not yet applied.
  void Close();

  // Whether some part was applied at `clock` (the open clock) before its
  // close: the values then mix two clocks until it closes.
  bool AppliedBeforeClose(int64_t clock) const;

 private:
  struct Part {
    std::vector<Range> ranges;  // const after construction
    mutable absl::Mutex mu;
    std::vector<int64_t> pushed ABSL_GUARDED_BY(mu);  // per worker: the clock of its last push
    uint32_t pending ABSL_GUARDED_BY(mu) = 0;         // pushes in the buffer
    int64_t pending_clock ABSL_GUARDED_BY(mu) = -1;   // their clock
    int64_t applied_clock ABSL_GUARDED_BY(mu) = -1;   // the clock last applied early
  };

  // Applies the part's buffer as the mean of its pending pushes.
  static void ApplyLocked(Part& part) ABSL_EXCLUSIVE_LOCKS_REQUIRED(part.mu);

  std::vector<std::unique_ptr<Part>> parts_;
};

}  // namespace tessera

#endif  // TESSERA_SERVER_PART_BARRIER_H_
