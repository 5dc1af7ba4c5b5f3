// PushPipeline: one push at a time on a thread of its own, so that the
// training thread computes step c+1 while step c's gradients travel (and,
// when asked, the pull fused into that push comes back). Used where the
// consistency model lets a step compute before the previous push has landed:
// SSP with staleness >= 1, and ASP (worker.overlap_push).
//
//   pipeline.Start(c, &grads[c % 2], &incoming, want_pull);
//   ... compute c+1 into grads[(c+1) % 2] ...
//   auto pulled = pipeline.Wait(limit);  // before the next push or pull
//
// Threading: Start and Wait from one thread (the trainer's). Between Start
// and Wait's return the pipeline's thread owns *grads and *incoming and is
// the only caller of the PsClient; the trainer touches neither.
#ifndef TESSERA_WORKER_PUSH_PIPELINE_H_
#define TESSERA_WORKER_PUSH_PIPELINE_H_

#include <cstdint>
#include <optional>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "worker/ps_client.h"

namespace tessera {

class PushPipeline {
 public:
  explicit PushPipeline(PsClient* client);
  // Waits for a push in flight (bounded by its RPC deadlines), then stops.
  ~PushPipeline();

  // Pushes `grads` for `clock` (advancing the clock); with `want_pull`, as
  // PsClient::PushDenseAndPull into *incoming. REQUIRES: nothing in flight.
  // `values_clock` as PsClient::PushDense.
  void Start(int64_t clock, const ParameterSet* grads, ParameterSet* incoming, bool want_pull,
             std::optional<int64_t> values_clock);

  bool in_flight() const;
  // The clock of the push in flight or last finished.
  int64_t clock() const;

  // Waits up to `limit` for the push in flight and returns its result: the
  // fused pull's guarantee, or nullopt (no pull asked, or not answered).
  // OK(nullopt) when nothing is in flight. DEADLINE_EXCEEDED after `limit`
  // (the push then still owns its buffers; the trainer gives up).
  absl::StatusOr<std::optional<int64_t>> Wait(absl::Duration limit);

 private:
  void Loop();

  PsClient* const client_;
  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool queued_ ABSL_GUARDED_BY(mu_) = false;     // Start() handed a push over
  bool in_flight_ ABSL_GUARDED_BY(mu_) = false;  // from Start() until its result is taken
  int64_t clock_ ABSL_GUARDED_BY(mu_) = -1;
  const ParameterSet* grads_ ABSL_GUARDED_BY(mu_) = nullptr;
  ParameterSet* incoming_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool want_pull_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<int64_t> values_clock_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  absl::StatusOr<std::optional<int64_t>> result_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_PUSH_PIPELINE_H_
