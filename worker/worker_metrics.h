// WorkerMetrics: what a worker's GET /metrics reports (tessera_worker_*,
// docs/OBSERVABILITY.md): steps and samples, each step's time split into
// waiting for parameters (the consistency model's wait included), computing
// and pushing, the data reader's time, the last loss, clock and epoch, the
// unix time of the last finished step (a "stuck trainer" alert compares it
// with time()), pulls, fused pulls and cache hits, reconnects.
//
//   WorkerMetrics metrics;
//   trainer.metrics = &metrics;              // the trainer records each step
//   registry.Add([&](Exposition& e) { metrics.Collect(e); });
//
// Threading: one writer (the training thread) calls the recording methods;
// Collect may run concurrently on the metrics server's threads. Everything
// is relaxed atomics: a scrape sees each number exact, not all of one step.
#ifndef TESSERA_WORKER_WORKER_METRICS_H_
#define TESSERA_WORKER_WORKER_METRICS_H_

#include <atomic>
#include <cstdint>

#include "common/histogram.h"
#include "common/metrics.h"

namespace tessera {

class WorkerMetrics {
 public:
  WorkerMetrics();

  struct Step {
    double wait_seconds = 0;     // pulling, or waiting for the values (staleness bound)
    double compute_seconds = 0;  // forward, backward, gradients ready
    double push_seconds = 0;     // handing the gradients over (and a fused pull)
    double data_seconds = 0;     // reading the batch
    int64_t samples = 0;
    double loss = 0;
    int64_t clock = 0;           // the worker's clock after the step
    uint32_t epoch = 0;
    bool pulled = false;         // the step had to pull (a cache miss)
  };
  void StepDone(const Step& step);
  // Running totals the trainer keeps (set, not added: they are its own).
  void SetTotals(int64_t fused_pulls, int64_t row_cache_hits, int64_t reconnects);

  void Collect(Exposition& e) const;

 private:
  Histogram wait_, compute_, push_, data_;
  std::atomic<int64_t> steps_{0}, samples_{0}, pulls_{0}, cache_hits_{0};
  std::atomic<int64_t> fused_pulls_{0}, row_cache_hits_{0}, reconnects_{0};
  std::atomic<int64_t> clock_{0}, epoch_{0};
  std::atomic<double> loss_{0}, last_step_unix_{0};
};

}  // namespace tessera

#endif  // TESSERA_WORKER_WORKER_METRICS_H_
