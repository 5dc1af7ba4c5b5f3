#include "worker/grpc_transport.h"

#include <chrono>
#include <utility>

#include "absl/time/clock.h"

namespace tessera {

GrpcShardTransport::GrpcShardTransport(std::vector<std::string> addresses, size_t lanes,
                                       std::shared_ptr<const TransportSecurity> security,
                                       int64_t max_message_bytes)
    : addresses_(std::move(addresses)),
      security_(std::move(security)),
      max_message_bytes_(max_message_bytes) {
  stubs_.resize(std::max<size_t>(lanes, 1));
  Dial();
}

void GrpcShardTransport::Dial() {
  for (size_t c = 0; c < stubs_.size(); ++c) {
    stubs_[c] = v1::Shard::NewStub(
        security_->Channel(address(), max_message_bytes_, static_cast<int>(c)));
  }
}

bool GrpcShardTransport::NextAddress() {
  if (addresses_.size() < 2) return false;
  at_ = (at_ + 1) % addresses_.size();
  Dial();
  return true;
}

grpc::ClientContext* GrpcShardTransport::ContextFor(ShardCall* call) {
  auto context = std::make_shared<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(call->deadline()));
  context->set_wait_for_ready(call->wait_for_ready());
  call->state = context;
  // Before the call starts, TryCancel cancels it as it starts.
  call->SetCancel([c = context.get()] { c->TryCancel(); });
  return context.get();
}

std::function<void(grpc::Status)> GrpcShardTransport::Answer(Done done) {
  return [done = std::move(done)](grpc::Status status) {
    done(absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message()));
  };
}

void GrpcShardTransport::Register(size_t lane, ShardCall* call, const v1::RegisterRequest* request,
                                  v1::RegisterResponse* response, Done done) {
  stubs_[lane]->async()->Register(ContextFor(call), request, response, Answer(std::move(done)));
}

void GrpcShardTransport::Pull(size_t lane, ShardCall* call, const v1::PullRequest* request,
                              v1::PullResponse* response, Done done) {
  stubs_[lane]->async()->Pull(ContextFor(call), request, response, Answer(std::move(done)));
}

void GrpcShardTransport::Push(size_t lane, ShardCall* call, const v1::PushRequest* request,
                              v1::PushResponse* response, Done done) {
  stubs_[lane]->async()->Push(ContextFor(call), request, response, Answer(std::move(done)));
}

void GrpcShardTransport::Clock(size_t lane, ShardCall* call, const v1::ClockRequest* request,
                               v1::ClockResponse* response, Done done) {
  stubs_[lane]->async()->Clock(ContextFor(call), request, response, Answer(std::move(done)));
}

void GrpcShardTransport::Finish(size_t lane, ShardCall* call, const v1::FinishRequest* request,
                                v1::FinishResponse* response, Done done) {
  stubs_[lane]->async()->Finish(ContextFor(call), request, response, Answer(std::move(done)));
}

void GrpcShardTransport::Stats(size_t lane, ShardCall* call, const v1::StatsRequest* request,
                               v1::StatsResponse* response, Done done) {
  stubs_[lane]->async()->Stats(ContextFor(call), request, response, Answer(std::move(done)));
}

void GrpcShardTransport::Plan(size_t lane, ShardCall* call, const v1::PlanRequest* request,
                              v1::PlanResponse* response, Done done) {
  stubs_[lane]->async()->Plan(ContextFor(call), request, response, Answer(std::move(done)));
}

}  // namespace tessera
