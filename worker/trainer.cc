#include "worker/trainer.h"

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/denormal.h"
#include "common/partition.h"
#include "common/status.h"
#include "spdlog/spdlog.h"
#include "worker/model.h"
#include "worker/parameter_cache.h"
#include "worker/push_pipeline.h"

namespace tessera {
namespace {

// PlanRequest.epoch of epoch 0's calibration steps (proto/tessera.proto).
constexpr int64_t kCalibrationPlan = -1;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

bool SlowedStep(const TrainingConfig& t, uint32_t rank, int64_t clock) {
  if (t.slow_probability <= 0) return false;
  const uint64_t bits =
      SplitMix64(SplitMix64(t.seed * 0x9e3779b97f4a7c15ULL + rank) + static_cast<uint64_t>(clock));
  return static_cast<double>(bits >> 11) * 0x1.0p-53 < t.slow_probability;
}

void AppendJsonLine(const std::string& path, const nlohmann::json& object) {
  if (path.empty()) return;
  if (FILE* f = std::fopen(path.c_str(), "a")) {
    std::fprintf(f, "%s\n", object.dump().c_str());
    std::fclose(f);
  }
}

nlohmann::json TrainResult::ToJson() const {
  nlohmann::json j = {
      {"steps", steps},
      {"samples", samples},
      {"pulls", pulls},
      {"fused_pulls", fused_pulls},
      {"train_loss", train_loss},
      {"train_seconds", train_seconds},
      {"samples_per_second", samples_per_second},
      {"pull_seconds", pull_seconds},
      {"push_seconds", push_seconds},
      {"compute_seconds", compute_seconds},
      {"reconnects", reconnects},
      {"lost_clocks", lost_clocks},
      {"data_seconds", data_seconds},
      {"peak_rss_mib", peak_rss_mib},
      {"device", device},
      {"pushes_measured", push_staleness.measured},
      {"pushes_unmeasured", push_staleness.unknown},
      {"push_staleness_mean",
       push_staleness.measured ? double(push_staleness.sum) / push_staleness.measured : 0.0},
      {"push_staleness_max", push_staleness.max},
      {"push_bytes", traffic.push_bytes},
      {"push_raw_bytes", traffic.push_raw_bytes},
      {"pull_bytes", traffic.pull_bytes},
      {"pull_raw_bytes", traffic.pull_raw_bytes},
  };
  if (ctr) {
    j["rows_pulled"] = rows_pulled;
    j["row_cache_hits"] = row_cache_hits;
    j["row_bytes_saved"] = row_bytes_saved;
    j["data_lines_skipped"] = data_lines_skipped;
  }
  if (evaluated) {
    j["test_accuracy"] = test_accuracy;
    j["test_loss"] = test_loss;
  }
  if (evaluated && ctr) {
    j["logloss"] = test_logloss;
    j["auc"] = test_auc;
    j["bayes_logloss"] = bayes_logloss;
    j["base_logloss"] = base_logloss;
    j["signal_captured"] = signal_captured;
  }
  return j;
}

Trainer::Trainer(const JobConfig& config, uint32_t rank, PsClient* client, Backend* backend,
                 std::unique_ptr<ExampleStream> train, std::unique_ptr<ExampleStream> test)
    : config_(config),
      rank_(rank),
      client_(client),
      backend_(backend),
      train_(std::move(train)),
      test_(std::move(test)) {}

Trainer::Trainer(const JobConfig& config, uint32_t rank, PsClient* client, Backend* backend,
                 const Dataset* train, const Dataset* test)
    : Trainer(config, rank, client, backend,
              config.training.balance == Balance::kDynamic
                  ? StreamOf(train, 0, 1, config.training.seed, true)
                  : StreamOf(train, rank, config.cluster.workers, config.training.seed, true),
              test ? StreamOf(test, 0, 1, 0, false) : nullptr) {}

absl::StatusOr<TrainResult> Trainer::Run() {
  ScopedFlushDenormal flush;  // CPU-backend compute runs on this thread
  result_.device = backend_->name();
  const TrainingConfig& t = config_.training;
  // A config problem is reported before any server is asked for anything.
  // Under dynamic balancing a step trains on the workers' global batch.
  const bool dynamic = t.balance == Balance::kDynamic;
  const uint64_t step_examples =
      dynamic ? uint64_t{config_.cluster.workers} * t.batch_size : t.batch_size;
  const size_t steps_per_epoch = train_->examples_per_epoch() / step_examples;
  if (steps_per_epoch == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("config: training.batch_size = '", t.batch_size, "': expected at most ",
                     dynamic ? "the training examples over the workers ("
                             : "this worker's share of the training examples (",
                     train_->examples_per_epoch(),
                     dynamic ? absl::StrCat(" / ", config_.cluster.workers) : "", ")"));
  }
  share_ = t.batch_size;
  share_offset_ = dynamic ? uint64_t{rank_} * t.batch_size : 0;
  result_.data_lines_skipped = static_cast<int64_t>(train_->skipped_lines());
  TESSERA_ASSIGN_OR_RETURN(clock_, client_->Connect());
  const uint32_t max_batch = std::max<uint32_t>(static_cast<uint32_t>(step_examples), 256);
  std::unique_ptr<Model> model;
  if (config_.model.type == ModelType::kCtr) {
    result_.ctr = true;
    ctr_model_ = std::make_unique<CtrModel>(config_.model, backend_, max_batch);
    row_set_.resize(2);
    row_set_[0].table = 0;  // "embedding" (JobConfig::Tables() order)
    row_set_[0].dim = config_.model.embedding_dim;
    row_set_[1].table = 1;  // "wide"
    row_set_[1].dim = 1;
    to_pull_ = row_set_;
    row_cache_ = std::make_unique<RowCache>(config_.consistency, config_.worker.row_cache_rows);
  } else {
    model = MakeModel(config_.model, backend_, max_batch);
  }
  TESSERA_RETURN_IF_ERROR(BackendStatus("allocating the model"));
  const ConsistencyConfig& consistency = config_.consistency;
  const bool overlap = config_.overlaps_push();
  ParameterCache cache(consistency, /*asp_lag=*/overlap ? 1 : 0);
  if (overlap) pipeline_ = std::make_unique<PushPipeline>(client_);
  start_ = window_start_ = last_progress_ = Now();
  spdlog::info(
      "worker {} of {}: {} training examples, {} steps per epoch, batch {}, starting "
      "at clock {}",
      rank_, config_.cluster.workers, train_->examples_per_epoch(), steps_per_epoch, t.batch_size,
      clock_);
  // A restarted worker resumes at its clock: skip the steps it already did
  // (clock_ also moves past a step that landed before its reply was lost).
  int64_t global_step = 0;
  // Epoch 0's first steps run on the calibration plan (equal parts) while
  // every worker measures its rate; halfway through them it reports the
  // rate, so that plan 0, asked for at their end, is made from all of them.
  const size_t calibration =
      dynamic ? std::min<size_t>(t.balance_calibration_steps, steps_per_epoch / 2) : 0;
  auto report_rate = [&](int64_t plan) {
    return WithRecovery("reporting the compute rate", cache,
                        [&] { return client_->PlanEpoch(plan, ComputeRate()).status(); });
  };
  for (uint32_t epoch = 0; epoch < t.epochs; ++epoch) {
    // training.max_steps may end the run mid-epoch: the last epoch that
    // trained keeps its loss (a fresh epoch would report 0).
    if (t.max_steps > 0 && global_step >= t.max_steps) break;
    epoch_loss_sum_ = 0;
    epoch_loss_steps_ = 0;
    const bool calibrating = epoch == 0 && calibration > 0;
    if (dynamic) {
      TESSERA_RETURN_IF_ERROR(WithRecovery("planning the epoch", cache, [&] {
        return PlanEpoch(calibrating ? kCalibrationPlan : int64_t{epoch});
      }));
    }
    for (size_t step = 0; step < steps_per_epoch; ++step, ++global_step) {
      if (t.max_steps > 0 && global_step >= t.max_steps) break;
      // Before the skip: a restarted worker needs the plan of the steps it
      // resumes at.
      if (calibrating && step == calibration) {
        TESSERA_RETURN_IF_ERROR(
            WithRecovery("planning the epoch", cache, [&] { return PlanEpoch(0); }));
      }
      if (global_step < clock_) continue;
      if (calibrating && step == calibration / 2 && step > 0) {
        TESSERA_RETURN_IF_ERROR(report_rate(kCalibrationPlan));
      }
      if (dynamic && step == steps_per_epoch / 2 && step > 0) {
        // Halfway: the rate so far, for the next epoch's plan (whoever asks
        // for it first may get there before this worker's epoch ends).
        TESSERA_RETURN_IF_ERROR(report_rate(epoch));
      }
      // Read once: a retried step trains on the same examples.
      const double read_start = Now();
      TESSERA_RETURN_IF_ERROR(train_->Seek(epoch, uint64_t{step} * step_examples + share_offset_));
      TESSERA_RETURN_IF_ERROR(train_->Next(share_, &batch_));
      step_data_seconds_ = Now() - read_start;
      result_.data_seconds += step_data_seconds_;
      current_epoch_ = epoch;
      if (on_batch) on_batch(epoch, batch_);
      double loss = 0;
      TESSERA_RETURN_IF_ERROR(WithRecovery(
          "a training step", cache, [&] { return Step(cache, model.get(), &loss); },
          [&] { return clock_ > global_step; }));
      if (clock_ > global_step + 1) continue;  // the shards were further on: skip to there
      // Rank 0 alone evaluates along the way (the others' copies differ only
      // by staleness, and their time is better spent training).
      if (rank_ == 0 && t.eval_every_steps > 0 && test_ &&
          (global_step + 1) % t.eval_every_steps == 0) {
        double acc, test_loss;
        TESSERA_RETURN_IF_ERROR(EvaluateNow(cache, model.get(), &acc, &test_loss));
        spdlog::info("step {}: test accuracy {:.4f}, test loss {:.4f} (parameters of clock {})",
                     global_step + 1, acc, test_loss, cache.guaranteed());
        AppendJsonLine(config_.logging.metrics_file, {{"rank", rank_},
                                                      {"event", "eval"},
                                                      {"step", global_step + 1},
                                                      {"clock", clock_},
                                                      {"elapsed_s", Now() - start_},
                                                      {"test_accuracy", acc},
                                                      {"test_loss", test_loss}});
      }
      if (Now() - last_progress_ >= config_.worker.progress_interval_s) {
        Progress(epoch, step, steps_per_epoch);
      }
    }
  }
  result_.train_loss = epoch_loss_steps_ ? epoch_loss_sum_ / epoch_loss_steps_ : 0;
  TESSERA_RETURN_IF_ERROR(WithRecovery("the last push", cache, [&] { return FinishPush(cache); }));
  result_.train_seconds = Now() - start_;
  result_.samples_per_second = result_.samples / std::max(result_.train_seconds, 1e-9);
  if (rank_ == 0 && test_) TESSERA_RETURN_IF_ERROR(EvaluateFinal(cache, model.get()));
  TESSERA_RETURN_IF_ERROR(WithRecovery("finishing", cache, [&] { return client_->Finish(); }));
  result_.lost_clocks = client_->lost_clocks();
  result_.traffic = client_->traffic();
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) == 0) result_.peak_rss_mib = usage.ru_maxrss / 1024.0;
  result_.push_staleness = client_->push_staleness();
  nlohmann::json final_line = {{"rank", rank_}, {"event", "final"}};
  final_line.update(result_.ToJson());
  AppendJsonLine(config_.logging.metrics_file, final_line);
  return result_;
}

namespace {

// Whether a failed call may succeed after reconnecting: a transient failure,
// or a shard restored under us that holds another clock.
bool Recoverable(const absl::Status& s) { return IsTransient(s) || absl::IsFailedPrecondition(s); }

// FAILED_PRECONDITION is recoverable once or twice (a shard restarted under
// us); more in a row is a real disagreement.
constexpr int kMaxPreconditionRetries = 3;

}  // namespace

absl::Status Trainer::WithRecovery(const char* what, ParameterCache& cache,
                                   const std::function<absl::Status()>& attempt,
                                   const std::function<bool()>& landed) {
  const double started = Now();
  int preconditions = 0;
  while (true) {
    absl::Status s = attempt();
    if (s.ok() || !Recoverable(s)) return s;
    if (absl::IsFailedPrecondition(s) && ++preconditions > kMaxPreconditionRetries) return s;
    if (Now() - started > config_.worker.wait_for_workers_s) {
      return absl::DeadlineExceededError(
          absl::StrCat(what, " did not succeed within worker.wait_for_workers_s (",
                       config_.worker.wait_for_workers_s, " s); last error: ", s.message()));
    }
    TESSERA_RETURN_IF_ERROR(Recover(s, cache));
    if (landed && landed()) return absl::OkStatus();
  }
}

absl::Status Trainer::Recover(const absl::Status& cause, ParameterCache& cache) {
  ++result_.reconnects;
  const double deadline = Now() + config_.worker.server_lost_timeout_s;
  if (absl::IsDeadlineExceeded(cause)) {
    spdlog::warn(
        "at clock {}: {}; still waiting (a worker or shard is slow, paused or "
        "restarting)",
        clock_, std::string(cause.message()));
  } else {
    spdlog::warn("at clock {}: {}; reconnecting for up to {} s (worker.server_lost_timeout_s)",
                 clock_, std::string(cause.message()), config_.worker.server_lost_timeout_s);
  }
  double backoff = 0.1;
  absl::StatusOr<int64_t> clock = client_->Connect(clock_);
  while (!clock.ok()) {
    if (!Recoverable(clock.status()) || Now() + backoff > deadline) {
      return absl::UnavailableError(
          absl::StrCat("lost the servers at clock ", clock_, " and could not reconnect within ",
                       config_.worker.server_lost_timeout_s, " s: ", clock.status().message()));
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(backoff));
    backoff = std::min(backoff * 2, 2.0);
    clock = client_->Connect(clock_);
  }
  if (*clock != clock_) {
    spdlog::info("reconnected: the shards hold clock {} (this worker was at {}); going on there",
                 *clock, clock_);
  } else if (!absl::IsDeadlineExceeded(cause)) {
    spdlog::info("reconnected at clock {}", clock_);
  }
  clock_ = *clock;
  cache.Invalidate();
  if (row_cache_) row_cache_->Invalidate();
  return absl::OkStatus();
}

absl::Status Trainer::Step(ParameterCache& cache, Model* model, double* loss) {
  const TrainingConfig& t = config_.training;
  double t0 = Now();
  bool pulled = false;
  if (!cache.FreshFor(clock_)) {
    // The previous push may bring the values this step needs.
    TESSERA_RETURN_IF_ERROR(FinishPush(cache));
  }
  if (!cache.FreshFor(clock_)) {
    // Not fresh: no pull yet, or the fused one could not be answered at once.
    TESSERA_ASSIGN_OR_RETURN(int64_t guaranteed, client_->PullDense(clock_, &cache.values()));
    cache.Filled(guaranteed, clock_);
    ++result_.pulls;
    pulled = true;
  }
  double t1 = Now();
  if (on_compute) on_compute(clock_, cache.guaranteed());
  const uint32_t n = static_cast<uint32_t>(batch_.size());
  // With the pipeline, the previous step's gradients may still be on their
  // way: this step writes the other buffer.
  ParameterSet& grads = grads_[pipeline_ ? clock_ % 2 : 0];
  if (ctr_model_) {
    TESSERA_RETURN_IF_ERROR(CtrCompute(cache, &grads, loss));
  } else {
    int64_t correct = 0;
    *loss = model->TrainStep(cache.values(), batch_.x.data(), batch_.y.data(), n, &grads, &correct,
                             cache.version());
  }
  TESSERA_RETURN_IF_ERROR(BackendStatus("a training step"));
  if (t.slow_worker_ms > 0 && (static_cast<int32_t>(rank_) == t.slow_rank || SlowedStep(t, rank_, clock_))) {
    // A slower device: slower in proportion to the examples it takes.
    std::this_thread::sleep_for(
        std::chrono::duration<double, std::milli>(t.slow_worker_ms * n / t.batch_size));
  }
  if (n != t.batch_size) {
    // Dynamic balancing: weighted by its part of the global batch, so that
    // the shards' mean over the workers is the mean over the examples.
    const float weight = static_cast<float>(n) / static_cast<float>(t.batch_size);
    for (std::vector<float>& g : grads) {
      for (float& v : g) v *= weight;
    }
  }
  double t2 = Now();
  epoch_compute_seconds_ += t2 - t1;
  epoch_examples_ += n;
  // The shards measure (and may compensate) the push's staleness from the
  // pull its values came from.
  const int64_t values_clock = cache.pulled_for();
  const bool eager = config_.consistency.refresh == Refresh::kEager;
  if (pipeline_) {
    // Shards take a worker's clocks in order: the previous push lands first.
    TESSERA_RETURN_IF_ERROR(FinishPush(cache));
    // This push's fused pull is first used two steps on (the next step
    // computes while it travels) unless that step has to wait for it.
    pipeline_->Start(clock_, &grads, &incoming_, eager || !cache.FreshFor(clock_ + 2),
                     values_clock);
  } else if (!eager && cache.FreshFor(clock_ + 1)) {
    TESSERA_RETURN_IF_ERROR(client_->PushDense(clock_, grads, values_clock));
  } else {
    // The next step must pull: ask for it in the push's round trip.
    TESSERA_ASSIGN_OR_RETURN(
        std::optional<int64_t> pulled,
        client_->PushDenseAndPull(clock_, grads, values_clock, &cache.values()));
    if (pulled) {
      cache.Filled(*pulled, clock_ + 1);
      ++result_.pulls;
      ++result_.fused_pulls;
    }
  }
  ++clock_;
  double t3 = Now();
  result_.pull_seconds += t1 - t0;
  result_.compute_seconds += t2 - t1;
  result_.push_seconds += t3 - t2;
  ++result_.steps;
  result_.samples += n;
  for (int32_t y : batch_.y) train_clicks_ += y;
  train_examples_ += n;
  if (metrics != nullptr) {
    metrics->StepDone({t1 - t0, t2 - t1, t3 - t2, step_data_seconds_, n, *loss, clock_,
                       current_epoch_, pulled});
    metrics->SetTotals(result_.fused_pulls, result_.row_cache_hits, result_.reconnects);
  }
  window_loss_ += *loss;
  ++window_steps_;
  window_samples_ += n;
  epoch_loss_sum_ += *loss;
  ++epoch_loss_steps_;
  return absl::OkStatus();
}

absl::Status Trainer::CtrCompute(ParameterCache& cache, ParameterSet* grads, double* loss) {
  ctr_rows_.Build(batch_);
  for (SparseRows& r : row_set_) r.keys = ctr_rows_.keys;
  // Rows the cache holds fresh for this clock are not pulled again.
  const std::vector<uint32_t> missing = row_cache_->Serve(clock_, &row_set_);
  for (size_t t = 0; t < row_set_.size(); ++t) {
    to_pull_[t].keys.clear();
    for (uint32_t k : missing) to_pull_[t].keys.push_back(ctr_rows_.keys[k]);
  }
  TESSERA_ASSIGN_OR_RETURN(const int64_t guaranteed, client_->PullRows(clock_, &to_pull_, RowPull::kTrain));
  for (size_t t = 0; t < row_set_.size(); ++t) {
    const uint32_t dim = row_set_[t].dim;
    for (size_t j = 0; j < missing.size(); ++j) {
      std::copy_n(to_pull_[t].values.data() + j * dim, dim,
                  row_set_[t].values.data() + size_t{missing[j]} * dim);
    }
  }
  row_cache_->Store(row_set_, missing, guaranteed);
  const int64_t hits = static_cast<int64_t>(ctr_rows_.keys.size() - missing.size());
  result_.rows_pulled += static_cast<int64_t>(missing.size());
  result_.row_cache_hits += hits;
  result_.row_bytes_saved += hits * (config_.model.embedding_dim + 1) *
                             (config_.worker.compression.all.pull == CodecKind::kNone ? 4 : 2);
  const auto batch =
      CtrModel::Batch::Of(batch_, ctr_rows_, row_set_[0].values.data(), row_set_[1].values.data());
  int64_t correct = 0;
  *loss = ctr_model_->TrainStep(cache.values(), batch, grads, &embedding_grad_, &wide_grad_,
                                &correct, cache.version());
  TESSERA_RETURN_IF_ERROR(BackendStatus("a training step"));
  // The rows' gradients replace their pulled values; the dense push, which
  // advances the clock, follows.
  row_set_[0].values.swap(embedding_grad_);
  row_set_[1].values.swap(wide_grad_);
  return client_->PushRows(clock_, row_set_);
}

double Trainer::ComputeRate() const {
  return epoch_compute_seconds_ > 0 ? epoch_examples_ / epoch_compute_seconds_ : 0.0;
}

absl::Status Trainer::PlanEpoch(int64_t epoch) {
  const double rate = ComputeRate();
  TESSERA_ASSIGN_OR_RETURN(std::vector<uint32_t> shares, client_->PlanEpoch(epoch, rate));
  const uint64_t global = uint64_t{config_.cluster.workers} * config_.training.batch_size;
  uint64_t sum = 0, offset = 0;
  for (uint32_t r = 0; r < shares.size(); ++r) {
    if (r == rank_) offset = sum;
    sum += shares[r];
  }
  if (shares.size() != config_.cluster.workers || sum != global || shares[rank_] == 0) {
    return absl::InternalError(
        absl::StrCat("shard 0 planned epoch ", epoch, " as [", absl::StrJoin(shares, ", "),
                     "]: expected ", config_.cluster.workers, " shares >= 1 summing to ", global));
  }
  share_ = shares[rank_];
  share_offset_ = offset;
  epoch_compute_seconds_ = 0;
  epoch_examples_ = 0;
  spdlog::info(
      "{}: steps shared [{}] by rank (this worker {} examples a step; it computed "
      "{:.0f} examples/s)",
      epoch == kCalibrationPlan
          ? std::string("epoch 1's calibration steps")
          : absl::StrCat("epoch ", epoch + 1),
      absl::StrJoin(shares, ", "), share_, rate);
  return absl::OkStatus();
}

absl::Status Trainer::EvaluateNow(ParameterCache& cache, Model* model, double* accuracy,
                                  double* loss) {
  if (ctr_model_) {
    TESSERA_RETURN_IF_ERROR(EvaluateCtr(cache));
    *accuracy = result_.test_accuracy;
    *loss = result_.test_logloss;
    return absl::OkStatus();
  }
  TESSERA_RETURN_IF_ERROR(model->Evaluate(cache.values(), *test_, accuracy, loss));
  return BackendStatus("evaluation");
}

absl::Status Trainer::EvaluateCtr(ParameterCache& cache) {
  const uint32_t batch_size = std::max<uint32_t>(config_.training.batch_size, 256);
  std::vector<float> q;      // predicted click probabilities
  std::vector<int32_t> y;    // labels
  std::vector<float> truth;  // true click probabilities, where the data knows them
  RowSet rows = row_set_;
  CtrRows ctr_rows;
  Dataset part;
  TESSERA_RETURN_IF_ERROR(test_->Seek(0, 0));
  while (true) {
    TESSERA_RETURN_IF_ERROR(test_->Next(batch_size, &part));
    const uint32_t n = static_cast<uint32_t>(part.size());
    if (n == 0) break;
    ctr_rows.Build(part);
    for (SparseRows& r : rows) r.keys = ctr_rows.keys;
    TESSERA_RETURN_IF_ERROR(client_->PullRows(clock_, &rows, RowPull::kEvaluate).status());
    const auto batch =
        CtrModel::Batch::Of(part, ctr_rows, rows[0].values.data(), rows[1].values.data());
    q.resize(q.size() + n);
    ctr_model_->Predict(cache.values(), batch, q.data() + q.size() - n);
    TESSERA_RETURN_IF_ERROR(BackendStatus("evaluation"));
    y.insert(y.end(), part.y.begin(), part.y.end());
    truth.insert(truth.end(), part.p.begin(), part.p.end());
  }
  int64_t correct = 0, test_clicks = 0;
  for (size_t i = 0; i < q.size(); ++i) {
    correct += (q[i] > 0.5f) == (y[i] == 1);
    test_clicks += y[i];
  }
  // The base-rate predictor knows the click rate of the examples this worker
  // trained on (of the test set's only when it trained on none: a worker
  // restarted after its last step).
  const double rate = train_examples_ > 0 ? double(train_clicks_) / train_examples_
                                          : double(test_clicks) / std::max<size_t>(y.size(), 1);
  const std::vector<float> base(y.size(), static_cast<float>(rate));
  const bool known = !truth.empty() && truth.size() == y.size();
  result_.test_accuracy = q.empty() ? 0 : double(correct) / q.size();
  result_.test_logloss = LogLoss(q, y);
  result_.test_loss = result_.test_logloss;
  result_.test_auc = Auc(q, y);
  result_.base_logloss = LogLoss(base, y);
  result_.bayes_logloss = known ? MeanBinaryEntropy(truth) : 0;
  const double room = result_.base_logloss - result_.bayes_logloss;
  result_.signal_captured =
      !known || room <= 0 ? 0 : (result_.base_logloss - result_.test_logloss) / room;
  return absl::OkStatus();
}

absl::Status Trainer::FinishPush(ParameterCache& cache) {
  if (!pipeline_ || !pipeline_->in_flight()) return absl::OkStatus();
  // A push's calls end at their deadlines; this bound only adds a margin.
  const absl::Duration limit =
      absl::Milliseconds(config_.worker.rpc_timeout_ms + config_.worker.pull_timeout_ms);
  TESSERA_ASSIGN_OR_RETURN(std::optional<int64_t> pulled, pipeline_->Wait(limit));
  if (pulled) {
    // The fused pull landed in incoming_; nothing reads the cache right now.
    cache.values().swap(incoming_);
    cache.Filled(*pulled, pipeline_->clock() + 1);
    ++result_.pulls;
    ++result_.fused_pulls;
  }
  return absl::OkStatus();
}

absl::Status Trainer::BackendStatus(const char* during) const {
  absl::Status s = backend_->status();
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat("the ", backend_->name(), " backend failed during ",
                                             during, ": ", s.message()));
}

void Trainer::Progress(uint32_t epoch, size_t step, size_t steps_per_epoch) {
  const double now = Now();
  const double rate = window_samples_ / std::max(now - window_start_, 1e-9);
  const double loss = window_steps_ ? window_loss_ / window_steps_ : 0;
  spdlog::info(
      "epoch {}/{} step {}/{} clock {} | {:.0f} samples/s | loss {:.4f} | {} pulls, "
      "{:.1f} s in pulls (waiting on staleness included)",
      epoch + 1, config_.training.epochs, step + 1, steps_per_epoch, clock_, rate, loss,
      result_.pulls, result_.pull_seconds);
  AppendJsonLine(config_.logging.metrics_file, {{"rank", rank_},
                                                {"event", "progress"},
                                                {"epoch", epoch + 1},
                                                {"step", step + 1},
                                                {"steps_per_epoch", steps_per_epoch},
                                                {"clock", clock_},
                                                {"elapsed_s", now - start_},
                                                {"samples_per_second", rate},
                                                {"loss", loss},
                                                {"pulls", result_.pulls},
                                                {"pull_seconds", result_.pull_seconds}});
  window_start_ = last_progress_ = now;
  window_loss_ = 0;
  window_steps_ = window_samples_ = 0;
}

absl::Status Trainer::EvaluateFinal(ParameterCache& cache, Model* model) {
  // The final model is the one every worker contributed to: wait (bounded)
  // for the others, then pull.
  const double deadline = Now() + config_.worker.pull_timeout_ms / 1000.0;
  const uint32_t others = config_.cluster.workers - 1;
  while (true) {
    uint32_t finished = 0;
    TESSERA_RETURN_IF_ERROR(WithRecovery("asking who finished", cache, [&]() -> absl::Status {
      TESSERA_ASSIGN_OR_RETURN(finished, client_->WorkersFinished());
      return absl::OkStatus();
    }));
    if (finished >= others) break;
    if (Now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("rank 0 waited worker.pull_timeout_ms for the other workers to finish; ",
                       finished, " of ", others, " did"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  TESSERA_RETURN_IF_ERROR(WithRecovery("the final pull", cache, [&]() -> absl::Status {
    TESSERA_ASSIGN_OR_RETURN(int64_t guaranteed, client_->PullDense(clock_, &cache.values()));
    cache.Filled(guaranteed, clock_);
    return absl::OkStatus();
  }));
  if (ctr_model_) {
    TESSERA_RETURN_IF_ERROR(
        WithRecovery("the final evaluation", cache, [&] { return EvaluateCtr(cache); }));
  } else {
    TESSERA_RETURN_IF_ERROR(
        model->Evaluate(cache.values(), *test_, &result_.test_accuracy, &result_.test_loss));
    TESSERA_RETURN_IF_ERROR(BackendStatus("the final evaluation"));
  }
  result_.evaluated = true;
  spdlog::info("final test accuracy {:.4f} (test loss {:.4f}) on {} examples after {} steps",
               result_.test_accuracy, result_.test_loss, test_->examples_per_epoch(), clock_);
  if (ctr_model_) {
    if (result_.bayes_logloss > 0) {
      spdlog::info(
          "click metrics: logloss {:.5f}, auc {:.4f}; bayes {:.5f}, base rate {:.5f}: "
          "{:.1f}% of the signal captured",
          result_.test_logloss, result_.test_auc, result_.bayes_logloss, result_.base_logloss,
          100 * result_.signal_captured);
    } else {
      spdlog::info("click metrics: logloss {:.5f}, auc {:.4f}; base rate {:.5f}",
                   result_.test_logloss, result_.test_auc, result_.base_logloss);
    }
  }
  return absl::OkStatus();
}

}  // namespace tessera
