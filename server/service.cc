#include "server/service.h"

#include <string>

#include "absl/synchronization/mutex.h"

namespace tessera {
namespace {

// A pull that may park. OnCancel (the caller gave up or its deadline passed)
// takes the pull off the clock table, which then finishes it with CANCELLED.
// Finish runs exactly once, from whichever thread releases the pull.
class PullReactor : public grpc::ServerUnaryReactor {
 public:
  PullReactor(Shard* shard, ShardMetrics* metrics) : shard_(shard), metrics_(metrics) {}

  void Start(const v1::PullRequest* request, v1::PullResponse* response, absl::Time deadline,
             absl::Time start) {
    auto id = shard_->Pull(*request, response, deadline, [this, request, start](absl::Status status) {
      if (metrics_ != nullptr) {
        metrics_->Record(ShardMetrics::kPull, status.code(),
                         absl::ToDoubleSeconds(absl::Now() - start), &request->slices());
      }
      Finish(ToGrpcStatus(status));
    });
    bool cancel_now = false;
    {
      absl::MutexLock lock(&mu_);
      if (id) parked_id_ = *id;
      cancel_now = id && cancelled_;
    }
    if (cancel_now) shard_->CancelPull(*id);
  }

  void OnCancel() override {
    ClockTable::WaiterId id = 0;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      id = parked_id_;
    }
    if (id != 0) shard_->CancelPull(id);
  }

  void OnDone() override { delete this; }

 private:
  Shard* const shard_;
  ShardMetrics* const metrics_;
  absl::Mutex mu_;
  ClockTable::WaiterId parked_id_ ABSL_GUARDED_BY(mu_) = 0;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  std::string message(status.message().substr(0, kMaxStatusMessageBytes));
  if (status.message().size() > kMaxStatusMessageBytes) message += "...";
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), message);
}

grpc::ServerUnaryReactor* ShardService::Refuse(grpc::CallbackServerContext* context,
                                               ShardMetrics::Method method,
                                               absl::Time start) const {
  if (security_->Admits(*context)) return nullptr;
  return Answer(context, method, start,
                absl::UnauthenticatedError(
                    "this job's shards require its token (security.token_file): "
                    "the call carries none, or another"));
}

grpc::ServerUnaryReactor* ShardService::Answer(
    grpc::CallbackServerContext* context, ShardMetrics::Method method, absl::Time start,
    absl::Status status, Shard::Hold hold,
    const google::protobuf::RepeatedPtrField<v1::Slice>* slices) const {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  shard_->WhenHeld(std::move(hold), [this, reactor, method, start, status, slices] {
    if (metrics_ != nullptr) {
      metrics_->Record(method, status.code(), absl::ToDoubleSeconds(absl::Now() - start),
                       status.ok() ? slices : nullptr);
    }
    reactor->Finish(ToGrpcStatus(status));
  });
  return reactor;
}

grpc::ServerUnaryReactor* ShardService::Register(grpc::CallbackServerContext* context,
                                                 const v1::RegisterRequest* request,
                                                 v1::RegisterResponse* response) {
  const absl::Time start = absl::Now();
  if (auto* refused = Refuse(context, ShardMetrics::kRegister, start)) return refused;
  Shard::Hold hold;
  absl::Status status = shard_->Register(*request, response, &hold);
  return Answer(context, ShardMetrics::kRegister, start, std::move(status), std::move(hold));
}

grpc::ServerUnaryReactor* ShardService::Pull(grpc::CallbackServerContext* context,
                                             const v1::PullRequest* request,
                                             v1::PullResponse* response) {
  const absl::Time start = absl::Now();
  if (auto* refused = Refuse(context, ShardMetrics::kPull, start)) return refused;
  absl::Time deadline = std::min(absl::FromChrono(context->deadline()), start + max_pull_wait_);
  auto* reactor = new PullReactor(shard_, metrics_);
  reactor->Start(request, response, deadline, start);
  return reactor;
}

grpc::ServerUnaryReactor* ShardService::Push(grpc::CallbackServerContext* context,
                                             const v1::PushRequest* request,
                                             v1::PushResponse* response) {
  const absl::Time start = absl::Now();
  if (auto* refused = Refuse(context, ShardMetrics::kPush, start)) return refused;
  Shard::Hold hold;
  absl::Status status = shard_->Push(*request, response, &hold);
  return Answer(context, ShardMetrics::kPush, start, std::move(status), std::move(hold), &request->slices());
}

grpc::ServerUnaryReactor* ShardService::Clock(grpc::CallbackServerContext* context,
                                              const v1::ClockRequest* request,
                                              v1::ClockResponse* response) {
  const absl::Time start = absl::Now();
  if (auto* refused = Refuse(context, ShardMetrics::kClock, start)) return refused;
  Shard::Hold hold;
  absl::Status status = shard_->Clock(*request, response, &hold);
  return Answer(context, ShardMetrics::kClock, start, std::move(status), std::move(hold));
}

grpc::ServerUnaryReactor* ShardService::Finish(grpc::CallbackServerContext* context,
                                               const v1::FinishRequest* request,
                                               v1::FinishResponse* response) {
  const absl::Time start = absl::Now();
  if (auto* refused = Refuse(context, ShardMetrics::kFinish, start)) return refused;
  Shard::Hold hold;
  absl::Status status = shard_->Finish(*request, response, &hold);
  return Answer(context, ShardMetrics::kFinish, start, std::move(status), std::move(hold));
}

grpc::ServerUnaryReactor* ShardService::Stats(grpc::CallbackServerContext* context,
                                              const v1::StatsRequest*,
                                              v1::StatsResponse* response) {
  const absl::Time start = absl::Now();
  if (auto* refused = Refuse(context, ShardMetrics::kStats, start)) return refused;
  shard_->Stats(response);
  return Answer(context, ShardMetrics::kStats, start, absl::OkStatus());
}

grpc::ServerUnaryReactor* ShardService::Plan(grpc::CallbackServerContext* context,
                                             const v1::PlanRequest* request,
                                             v1::PlanResponse* response) {
  const absl::Time start = absl::Now();
  if (auto* refused = Refuse(context, ShardMetrics::kPlan, start)) return refused;
  Shard::Hold hold;
  absl::Status status = shard_->Plan(*request, response, &hold);
  return Answer(context, ShardMetrics::kPlan, start, std::move(status), std::move(hold));
}

}  // namespace tessera
