// Checkpointer: when a shard checkpoints, the thread that writes the
// checkpoints, and the restore at start-up (checkpoint.* in the job config).
//
//   TESSERA_RETURN_IF_ERROR(Checkpointer::Restore(shard, config));  // before serving
//   auto checkpointer = std::make_unique<Checkpointer>(shard, config);
//   ...
//   checkpointer->Final();  // SIGTERM or every worker done: one last cut
//
// When: BSP — the shard cuts inline, on the thread that raises min_clock,
// at every multiple of every_clocks and at the first clock after
// every_seconds has passed; every shard of the job therefore cuts at the
// same clocks (a consistent set: a state the run passed through). SSP/ASP —
// this thread takes Shard::Snapshot() when min_clock passes a multiple of
// every_clocks or every_seconds has passed: each shard at its own moment.
// Training does not stall: a cut is a memory copy under the tables' locks;
// the file is written here, off the request path. One write at a time: a cut
// made while one is written waits in a one-slot queue, and a newer cut
// replaces a waiting one.
// Shard 0 of a training.balance dynamic job also keeps the epoch plan log
// (server/checkpoint.h: WritePlanLog), written on the Plan call's thread as
// each plan is made, and merged back after the checkpoint at a restore.
//
// Threading: the constructor starts the thread; Final() and the destructor
// from the owning thread. The BSP sink runs on gRPC threads.
#ifndef TESSERA_SERVER_CHECKPOINTER_H_
#define TESSERA_SERVER_CHECKPOINTER_H_

#include <atomic>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/config.h"
#include "server/checkpoint.h"
#include "server/shard.h"

namespace tessera {

class Checkpointer {
 public:
  // Restores `shard` from its newest valid checkpoint under checkpoint.dir
  // (checkpoint.restore: auto | required; never does nothing), logging one
  // line: clock, folder, bytes, seconds. Torn or corrupt checkpoints are
  // skipped with a warning each. FAILED_PRECONDITION (exit 2) for a
  // checkpoint of another job, layout or sharding, or when `required` finds
  // none. REQUIRES: the shard has not served yet.
  static absl::Status Restore(Shard* shard, const JobConfig& config);

  // `shard` must outlive this. REQUIRES: checkpoint.dir is set.
  Checkpointer(Shard* shard, const JobConfig& config);
  ~Checkpointer();

  // Stops the thread (a write in flight or queued completes), then cuts and
  // writes once more, synchronously. Idempotent.
  void Final();

 private:
  void Loop();
  // Whether the BSP cut at `clock` is due (called by the shard).
  bool WantBspCut(int64_t clock);
  void Queue(std::unique_ptr<ShardState> state);
  void Write(std::unique_ptr<ShardState> state);

  // const after construction
  Shard* const shard_;
  const CheckpointConfig config_;
  const bool bsp_;

  CheckpointStore store_;  // used by the writing thread (or Final, after it stopped)
  std::atomic<int64_t> last_cut_clock_{-1};
  std::atomic<int64_t> last_cut_ms_;  // steady ms of the last cut

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool final_done_ ABSL_GUARDED_BY(mu_) = false;
  std::unique_ptr<ShardState> queued_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace tessera

#endif  // TESSERA_SERVER_CHECKPOINTER_H_
