#include "worker/push_pipeline.h"

namespace tessera {

PushPipeline::PushPipeline(PsClient* client) : client_(client), thread_([this] { Loop(); }) {}

PushPipeline::~PushPipeline() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();  // a push in flight ends at its RPC deadlines at the latest
}

void PushPipeline::Start(int64_t clock, const ParameterSet* grads, ParameterSet* incoming,
                         bool want_pull, std::optional<int64_t> values_clock) {
  absl::MutexLock lock(&mu_);
  clock_ = clock;
  values_clock_ = values_clock;
  grads_ = grads;
  incoming_ = incoming;
  want_pull_ = want_pull;
  queued_ = in_flight_ = true;
  done_ = false;
}

bool PushPipeline::in_flight() const {
  absl::MutexLock lock(&mu_);
  return in_flight_;
}

int64_t PushPipeline::clock() const {
  absl::MutexLock lock(&mu_);
  return clock_;
}

absl::StatusOr<std::optional<int64_t>> PushPipeline::Wait(absl::Duration limit) {
  absl::MutexLock lock(&mu_);
  if (!in_flight_) return std::optional<int64_t>();
  if (!mu_.AwaitWithTimeout(absl::Condition(&done_), limit)) {
    return absl::DeadlineExceededError(absl::StrCat(
        "the push of clock ", clock_, " did not finish within ", absl::FormatDuration(limit)));
  }
  in_flight_ = false;
  return std::move(result_);
}

void PushPipeline::Loop() {
  absl::MutexLock lock(&mu_);
  auto work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return queued_ || stop_; };
  while (true) {
    // Idle: re-checked every second, so that a stop is never missed.
    mu_.AwaitWithTimeout(absl::Condition(&work), absl::Seconds(1));
    if (queued_) {
      queued_ = false;
      const int64_t clock = clock_;
      const ParameterSet* grads = grads_;
      ParameterSet* incoming = incoming_;
      const bool want_pull = want_pull_;
      const std::optional<int64_t> values_clock = values_clock_;
      absl::StatusOr<std::optional<int64_t>> result;
      mu_.Unlock();
      if (want_pull) {
        result = client_->PushDenseAndPull(clock, *grads, values_clock, incoming);
      } else {
        absl::Status s = client_->PushDense(clock, *grads, values_clock);
        result = s.ok() ? absl::StatusOr<std::optional<int64_t>>(std::nullopt) : s;
      }
      mu_.Lock();
      result_ = std::move(result);
      done_ = true;
      continue;
    }
    if (stop_) return;
  }
}

}  // namespace tessera
