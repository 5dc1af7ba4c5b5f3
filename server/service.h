// ShardService: the gRPC face of a Shard (proto/tessera.proto's Shard
// service) on the callback API. It only translates: requests go to the Shard,
// absl::Status comes back as grpc::Status with the same code. A pull that must
// wait is parked inside the Shard as a callback, and a change is answered
// from a callback once its standby holds it (Shard::Hold): no gRPC thread
// waits.
//
// Every call must carry the job's token when one is configured
// (TransportSecurity::Admits); one that does not fails UNAUTHENTICATED before
// the Shard sees it. Status messages are capped at kMaxStatusMessageBytes, so
// an error that names a client's string never overflows gRPC's metadata.
//
// With a ShardMetrics, every call is recorded as it is answered (method,
// status code, latency; refusals included).
//
// Threading: gRPC calls the handlers from its callback threads; the Shard and
// ShardMetrics are thread-safe. The service owns neither; both must outlive it.
#ifndef TESSERA_SERVER_SERVICE_H_
#define TESSERA_SERVER_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <memory>

#include "absl/time/time.h"
#include "common/security.h"
#include "proto/tessera.grpc.pb.h"
#include "server/shard.h"
#include "server/shard_metrics.h"

namespace tessera {

// absl::Status -> grpc::Status; the codes share their numbering. Messages
// longer than kMaxStatusMessageBytes are cut there.
inline constexpr size_t kMaxStatusMessageBytes = 2048;
grpc::Status ToGrpcStatus(const absl::Status& status);

class ShardService final : public v1::Shard::CallbackService {
 public:
  // Parked pulls wait at most max_pull_wait, whatever the caller's deadline.
  // `metrics` may be null (none recorded).
  ShardService(Shard* shard, absl::Duration max_pull_wait,
               std::shared_ptr<const TransportSecurity> security, ShardMetrics* metrics = nullptr)
      : shard_(shard),
        max_pull_wait_(max_pull_wait),
        security_(std::move(security)),
        metrics_(metrics) {}

  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* context,
                                     const v1::RegisterRequest* request,
                                     v1::RegisterResponse* response) override;
  grpc::ServerUnaryReactor* Pull(grpc::CallbackServerContext* context,
                                 const v1::PullRequest* request,
                                 v1::PullResponse* response) override;
  grpc::ServerUnaryReactor* Push(grpc::CallbackServerContext* context,
                                 const v1::PushRequest* request,
                                 v1::PushResponse* response) override;
  grpc::ServerUnaryReactor* Clock(grpc::CallbackServerContext* context,
                                  const v1::ClockRequest* request,
                                  v1::ClockResponse* response) override;
  grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* context,
                                   const v1::FinishRequest* request,
                                   v1::FinishResponse* response) override;
  grpc::ServerUnaryReactor* Stats(grpc::CallbackServerContext* context,
                                  const v1::StatsRequest* request,
                                  v1::StatsResponse* response) override;
  grpc::ServerUnaryReactor* Plan(grpc::CallbackServerContext* context,
                                 const v1::PlanRequest* request,
                                 v1::PlanResponse* response) override;

 private:
  // The call's answer when it lacks the job's token; null when admitted.
  grpc::ServerUnaryReactor* Refuse(grpc::CallbackServerContext* context,
                                   ShardMetrics::Method method, absl::Time start) const;
  // Finishes a call with `status`, recording it, once what `hold` names is
  // safe (Shard::WhenHeld: at once without a standby; else from the
  // replication link's sender, no thread waiting meanwhile).
  grpc::ServerUnaryReactor* Answer(
      grpc::CallbackServerContext* context, ShardMetrics::Method method, absl::Time start,
      absl::Status status, Shard::Hold hold = {},
      const google::protobuf::RepeatedPtrField<v1::Slice>* slices = nullptr) const;

  Shard* const shard_;
  const absl::Duration max_pull_wait_;
  const std::shared_ptr<const TransportSecurity> security_;
  ShardMetrics* const metrics_;
};

}  // namespace tessera

#endif  // TESSERA_SERVER_SERVICE_H_
