#include "worker/worker_metrics.h"

#include "absl/time/clock.h"

namespace tessera {

WorkerMetrics::WorkerMetrics()
    : wait_(LatencyBounds()),
      compute_(LatencyBounds()),
      push_(LatencyBounds()),
      data_(LatencyBounds()) {}

void WorkerMetrics::StepDone(const Step& s) {
  wait_.Observe(s.wait_seconds);
  compute_.Observe(s.compute_seconds);
  push_.Observe(s.push_seconds);
  data_.Observe(s.data_seconds);
  constexpr auto kRelaxed = std::memory_order_relaxed;
  steps_.fetch_add(1, kRelaxed);
  samples_.fetch_add(s.samples, kRelaxed);
  (s.pulled ? pulls_ : cache_hits_).fetch_add(1, kRelaxed);
  loss_.store(s.loss, kRelaxed);
  clock_.store(s.clock, kRelaxed);
  epoch_.store(s.epoch, kRelaxed);
  last_step_unix_.store(absl::ToUnixMicros(absl::Now()) / 1e6, kRelaxed);
}

void WorkerMetrics::SetTotals(int64_t fused_pulls, int64_t row_cache_hits, int64_t reconnects) {
  fused_pulls_.store(fused_pulls, std::memory_order_relaxed);
  row_cache_hits_.store(row_cache_hits, std::memory_order_relaxed);
  reconnects_.store(reconnects, std::memory_order_relaxed);
}

void WorkerMetrics::Collect(Exposition& e) const {
  auto load = [](const std::atomic<int64_t>& a) {
    return static_cast<double>(a.load(std::memory_order_relaxed));
  };
  e.Scalar("tessera_worker_steps_total", "counter", "Training steps finished.", load(steps_));
  e.Scalar("tessera_worker_samples_total", "counter", "Training examples computed on.",
           load(samples_));
  e.Family("tessera_worker_step_phase_seconds", "histogram",
           "Each step's time by phase: wait (pull or wait for values the staleness bound "
           "allows), compute, push, data (reading the batch).");
  e.HistogramSeries("tessera_worker_step_phase_seconds", {{"phase", "wait"}}, wait_);
  e.HistogramSeries("tessera_worker_step_phase_seconds", {{"phase", "compute"}}, compute_);
  e.HistogramSeries("tessera_worker_step_phase_seconds", {{"phase", "push"}}, push_);
  e.HistogramSeries("tessera_worker_step_phase_seconds", {{"phase", "data"}}, data_);
  e.Scalar("tessera_worker_loss", "gauge", "Training loss of the last step.",
           loss_.load(std::memory_order_relaxed));
  e.Scalar("tessera_worker_last_step_timestamp_seconds", "gauge",
           "Unix time the last step finished (0: none yet).",
           last_step_unix_.load(std::memory_order_relaxed));
  e.Scalar("tessera_worker_clock", "gauge", "The worker's clock: steps it has pushed.",
           load(clock_));
  e.Scalar("tessera_worker_epoch", "gauge", "The epoch the worker trains in (from 0).",
           load(epoch_));
  e.Scalar("tessera_worker_pulls_total", "counter", "Steps that had to pull before computing.",
           load(pulls_));
  e.Scalar("tessera_worker_cache_hits_total", "counter",
           "Steps that computed on cached values without a pull (fresh enough, or fused).",
           load(cache_hits_));
  e.Scalar("tessera_worker_fused_pulls_total", "counter",
           "Pulls answered inside the previous push's round trip.", load(fused_pulls_));
  e.Scalar("tessera_worker_row_cache_hits_total", "counter",
           "Sparse rows served by the worker's row cache instead of a pull.",
           load(row_cache_hits_));
  e.Scalar("tessera_worker_reconnects_total", "counter", "Recoveries after a failed call.",
           load(reconnects_));
}

}  // namespace tessera
