// Trainer: a worker's training loop.
//
//   per step: pull (unless the cache is fresh enough) -> forward/backward on
//   one mini-batch -> push gradients and advance the clock. When the next
//   step will need a pull, the push asks for it in the same round trip
//   (answered where the consistency rule already allows it). Under SSP
//   (s >= 1) and ASP the push runs on a PushPipeline while the next step
//   computes (worker.overlap_push); BSP waits for it.
//
// Progress goes to the log every worker.progress_interval_s and, as JSON
// lines, to logging.metrics_file. At the end rank 0 waits for the others,
// pulls the final parameters and evaluates them on the test set; then every
// worker tells the shards it has finished.
//
// Faults: a call that fails in a way a restart can cure (UNAVAILABLE,
// DEADLINE_EXCEEDED, CANCELLED, ABORTED; FAILED_PRECONDITION a few times,
// which a shard restored from a checkpoint answers) is not the end: the
// worker reconnects with backoff for up to worker.server_lost_timeout_s
// (PsClient::Connect at its own clock, which moves restored shards to it),
// takes the clock the shards agree on (a step that landed before the reply
// was lost is not done again), forgets its cached values and tries again.
// A pull that waits on a lost worker is retried the same way, for up to
// worker.wait_for_workers_s, with a line each time it times out. The data a
// step reads is a pure function of (seed, rank, clock), so a restarted or
// reconnected worker neither skips nor repeats examples beyond a lost step.
//
// Data comes from ExampleStreams (worker/example_stream.h), a batch at a
// time: a step's batch is read once, before its first attempt.
//
// Threading: Run() on one thread (plus the pipeline's, which only pushes);
// the trainer owns its streams and nothing else it is given.
#ifndef TESSERA_WORKER_TRAINER_H_
#define TESSERA_WORKER_TRAINER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/config.h"
#include "nlohmann/json.hpp"
#include "worker/backend.h"
#include "worker/dataset.h"
#include "worker/example_stream.h"
#include "worker/model.h"
#include "worker/parameter_cache.h"
#include "worker/worker_metrics.h"
#include "worker/ps_client.h"
#include "worker/push_pipeline.h"
#include "worker/row_cache.h"

namespace tessera {

struct TrainResult {
  int64_t steps = 0;
  int64_t samples = 0;
  int64_t pulls = 0;
  int64_t fused_pulls = 0;  // pulls answered inside the previous push
  double train_loss = 0;    // mean over the last epoch's steps
  double train_seconds = 0;
  double samples_per_second = 0;
  double pull_seconds = 0;  // time in pulls, waiting on staleness included
  double push_seconds = 0;
  double data_seconds = 0;  // waiting for the batches to be read or made
  double peak_rss_mib = 0;  // the worker process's high-water resident memory
  double compute_seconds = 0;
  int64_t reconnects = 0;   // recoveries after a failed call
  int64_t lost_clocks = 0;  // clocks of this worker's updates shards lost (PsClient::lost_clocks)
  std::string device;       // the backend that computed, e.g. "cpu" or "cuda:0 (...)"
  bool evaluated = false;   // rank 0 only
  double test_accuracy = 0;
  double test_loss = 0;
  // ctr models: the rows each step pulled and pushed (unique keys per batch)
  // and, after the final evaluation, the click metrics of the test set
  // (logloss against the labels; bayes: the mean binary entropy of the true
  // click probabilities; base: the training click rate predicted for all).
  int64_t rows_pulled = 0;
  int64_t row_cache_hits = 0;   // rows served by the worker's row cache instead
  PsClient::WireTraffic traffic;  // bytes of values moved (worker.compression)
  int64_t row_bytes_saved = 0;  // what those rows would have moved (pulled, at wire precision)
  bool ctr = false;
  double test_logloss = 0, test_auc = 0, bayes_logloss = 0, base_logloss = 0;
  double signal_captured = 0;      // (base - test) / (base - bayes)
  int64_t data_lines_skipped = 0;  // malformed lines of the training file (criteo_tsv)
  // Staleness the shards measured for this worker's pushes (docs/DESIGN.md).
  PsClient::PushStaleness push_staleness;

  nlohmann::json ToJson() const;
};

class Trainer {
 public:
  // `client` and `backend` must outlive Run(). `train`: this worker's
  // training examples; `test` (may be null: no evaluation) the test split.
  Trainer(const JobConfig& config, uint32_t rank, PsClient* client, Backend* backend,
          std::unique_ptr<ExampleStream> train, std::unique_ptr<ExampleStream> test);
  // The same over data sets in memory, which must outlive Run(); `test` may
  // be null.
  Trainer(const JobConfig& config, uint32_t rank, PsClient* client, Backend* backend,
          const Dataset* train, const Dataset* test);

  // Trains to the end. Errors from the PS come back with the shard named.
  absl::StatusOr<TrainResult> Run();

  // Test hook: called before every step's compute with the clock and the
  // cache's min_clock guarantee.
  std::function<void(int64_t clock, int64_t guaranteed)> on_compute;
  // Where each step is recorded for GET /metrics; null: nowhere. Must
  // outlive Run().
  WorkerMetrics* metrics = nullptr;
  // Test hook: each step's examples, with their epoch, once read.
  std::function<void(uint32_t epoch, const Dataset& batch)> on_batch;

 private:
  // One step; `model` for the classification models, ctr_model_ otherwise.
  // The batch is batch_, read before.
  absl::Status Step(ParameterCache& cache, Model* model, double* loss);
  // A ctr step's compute: pulls the batch's rows, runs the model, pushes the
  // rows' gradients (the dense push follows in Step).
  absl::Status CtrCompute(ParameterCache& cache, ParameterSet* grads, double* loss);
  // training.balance dynamic: asks shard 0 for plan `epoch`'s shares (-1:
  // epoch 0's calibration steps), reporting the compute rate since the last
  // plan; sets share_ and share_offset_. Halfway through an epoch (and
  // through the calibration steps) the worker asks again, which only reports
  // its rate so far: a plan, once made, stays.
  absl::Status PlanEpoch(int64_t epoch);
  // Examples per second of computing since the last plan (0: none yet).
  double ComputeRate() const;
  // Click metrics of the cached dense values and freshly pulled rows on the
  // test set; fills result_'s ctr fields (test_loss: the logloss).
  absl::Status EvaluateCtr(ParameterCache& cache);
  // Accuracy and loss of the current values on the test set, either model.
  absl::Status EvaluateNow(ParameterCache& cache, Model* model, double* accuracy, double* loss);
  void Progress(uint32_t epoch, size_t step, size_t steps_per_epoch);
  absl::Status EvaluateFinal(ParameterCache& cache, Model* model);
  // Runs `attempt` until it succeeds. After a failure a restart can cure, it
  // reconnects (Recover) and tries again, until worker.wait_for_workers_s
  // has passed since the first failure; stops early once `landed` says the
  // work was done after all (the shards' clock moved past it).
  absl::Status WithRecovery(const char* what, ParameterCache& cache,
                            const std::function<absl::Status()>& attempt,
                            const std::function<bool()>& landed = {});
  // Reconnects with backoff for up to worker.server_lost_timeout_s and takes
  // the clock every shard then holds; forgets the cached values.
  absl::Status Recover(const absl::Status& cause, ParameterCache& cache);
  // Waits for the pipeline's push in flight, if any, and takes its fused
  // pull into the cache.
  absl::Status FinishPush(ParameterCache& cache);
  // OK, or the backend's first failure, saying where it surfaced.
  absl::Status BackendStatus(const char* during) const;

  const JobConfig config_;
  const uint32_t rank_;
  PsClient* const client_;
  Backend* const backend_;
  const std::unique_ptr<ExampleStream> train_;
  const std::unique_ptr<ExampleStream> test_;

  int64_t clock_ = 0;
  TrainResult result_;
  ParameterSet grads_[2];                   // two with the pipeline: one computed, one travelling
  ParameterSet incoming_;                   // the pipeline's fused pull lands here
  std::unique_ptr<PushPipeline> pipeline_;  // SSP s >= 1 and ASP with worker.overlap_push
  Dataset batch_;                           // this step's examples
  // This worker's examples a step, and where in a step's global batch they
  // start (static: batch_size at 0; dynamic: from the epoch's plan).
  uint32_t share_ = 0;
  uint64_t share_offset_ = 0;
  // Computing this epoch (dynamic balancing's rate): seconds and examples.
  double epoch_compute_seconds_ = 0;
  int64_t epoch_examples_ = 0;
  // Clicks among the examples this worker trained on: the base rate.
  int64_t train_clicks_ = 0;
  int64_t train_examples_ = 0;
  std::unique_ptr<CtrModel> ctr_model_;  // model.type ctr
  CtrRows ctr_rows_;
  RowSet row_set_;  // the batch's rows: embedding, wide
  RowSet to_pull_;  // those the row cache did not hold
  std::unique_ptr<RowCache> row_cache_;
  std::vector<float> embedding_grad_, wide_grad_;
  double window_loss_ = 0;
  int64_t window_steps_ = 0, window_samples_ = 0;
  double window_start_ = 0, start_ = 0, last_progress_ = 0;
  double step_data_seconds_ = 0;  // reading this step's batch
  uint32_t current_epoch_ = 0;
  double epoch_loss_sum_ = 0;
  int64_t epoch_loss_steps_ = 0;
};

// training.slow_probability: whether worker `rank`'s step at `clock` is
// slowed. A draw per (training.seed, rank, clock), so a retried step is
// slowed alike and the workers' slow steps are independent.
bool SlowedStep(const TrainingConfig& t, uint32_t rank, int64_t clock);

// Appends one JSON object per line to a file; no-op when the path is empty.
void AppendJsonLine(const std::string& path, const nlohmann::json& object);

}  // namespace tessera

#endif  // TESSERA_WORKER_TRAINER_H_
