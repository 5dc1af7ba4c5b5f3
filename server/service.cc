#include "server/service.h"

#include <string>

#include "absl/synchronization/mutex.h"

namespace tessera {
namespace {

// Finishes at once with the status of a synchronous Shard call.
grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context,
                                    const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// A pull that may park. OnCancel (the caller gave up or its deadline passed)
// takes the pull off the clock table, which then finishes it with CANCELLED.
// Finish runs exactly once, from whichever thread releases the pull.
class PullReactor : public grpc::ServerUnaryReactor {
 public:
  explicit PullReactor(Shard* shard) : shard_(shard) {}

  void Start(const v1::PullRequest* request, v1::PullResponse* response, absl::Time deadline) {
    auto id = shard_->Pull(*request, response, deadline,
                           [this](absl::Status status) { Finish(ToGrpcStatus(status)); });
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

grpc::ServerUnaryReactor* ShardService::Refuse(grpc::CallbackServerContext* context) const {
  if (security_->Admits(*context)) return nullptr;
  return FinishNow(context, absl::UnauthenticatedError(
                                "this job's shards require its token (security.token_file): "
                                "the call carries none, or another"));
}

grpc::ServerUnaryReactor* ShardService::Register(grpc::CallbackServerContext* context,
                                                 const v1::RegisterRequest* request,
                                                 v1::RegisterResponse* response) {
  if (auto* refused = Refuse(context)) return refused;
  return FinishNow(context, shard_->Register(*request, response));
}

grpc::ServerUnaryReactor* ShardService::Pull(grpc::CallbackServerContext* context,
                                             const v1::PullRequest* request,
                                             v1::PullResponse* response) {
  if (auto* refused = Refuse(context)) return refused;
  absl::Time deadline =
      std::min(absl::FromChrono(context->deadline()), absl::Now() + max_pull_wait_);
  auto* reactor = new PullReactor(shard_);
  reactor->Start(request, response, deadline);
  return reactor;
}

grpc::ServerUnaryReactor* ShardService::Push(grpc::CallbackServerContext* context,
                                             const v1::PushRequest* request,
                                             v1::PushResponse* response) {
  if (auto* refused = Refuse(context)) return refused;
  return FinishNow(context, shard_->Push(*request, response));
}

grpc::ServerUnaryReactor* ShardService::Clock(grpc::CallbackServerContext* context,
                                              const v1::ClockRequest* request,
                                              v1::ClockResponse* response) {
  if (auto* refused = Refuse(context)) return refused;
  return FinishNow(context, shard_->Clock(*request, response));
}

grpc::ServerUnaryReactor* ShardService::Finish(grpc::CallbackServerContext* context,
                                               const v1::FinishRequest* request,
                                               v1::FinishResponse* response) {
  if (auto* refused = Refuse(context)) return refused;
  return FinishNow(context, shard_->Finish(*request, response));
}

grpc::ServerUnaryReactor* ShardService::Stats(grpc::CallbackServerContext* context,
                                              const v1::StatsRequest*,
                                              v1::StatsResponse* response) {
  if (auto* refused = Refuse(context)) return refused;
  shard_->Stats(response);
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* ShardService::Plan(grpc::CallbackServerContext* context,
                                             const v1::PlanRequest* request,
                                             v1::PlanResponse* response) {
  if (auto* refused = Refuse(context)) return refused;
  return FinishNow(context, shard_->Plan(*request, response));
}

}  // namespace tessera
