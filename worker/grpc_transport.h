// GrpcShardTransport: a ShardTransport over gRPC (worker/shard_transport.h).
// One channel (HTTP/2 connection) per lane to the daemon in use: the
// shard's primary, or after NextAddress its standby (cluster.standbys), and
// back. Every call carries the ShardCall's deadline; the job's TLS and token
// come with the channels (common/security.h).
//
// Threading: as ShardTransport.
#ifndef TESSERA_WORKER_GRPC_TRANSPORT_H_
#define TESSERA_WORKER_GRPC_TRANSPORT_H_

#include <memory>
#include <string>
#include <vector>

#include "common/security.h"
#include "proto/tessera.grpc.pb.h"
#include "worker/shard_transport.h"

namespace tessera {

class GrpcShardTransport : public ShardTransport {
 public:
  // `addresses`: the primary's, then the standby's (at least one);
  // `lanes` >= 1 channels to whichever is in use.
  GrpcShardTransport(std::vector<std::string> addresses, size_t lanes,
                     std::shared_ptr<const TransportSecurity> security, int64_t max_message_bytes);

  const std::string& address() const override { return addresses_[at_]; }
  bool NextAddress() override;
  size_t daemons() const override { return addresses_.size(); }
  size_t lanes() const override { return stubs_.size(); }
  bool offers_shared_memory() const override { return true; }

  void Register(size_t lane, ShardCall* call, const v1::RegisterRequest* request,
                v1::RegisterResponse* response, Done done) override;
  void Pull(size_t lane, ShardCall* call, const v1::PullRequest* request,
            v1::PullResponse* response, Done done) override;
  void Push(size_t lane, ShardCall* call, const v1::PushRequest* request,
            v1::PushResponse* response, Done done) override;
  void Clock(size_t lane, ShardCall* call, const v1::ClockRequest* request,
             v1::ClockResponse* response, Done done) override;
  void Finish(size_t lane, ShardCall* call, const v1::FinishRequest* request,
              v1::FinishResponse* response, Done done) override;
  void Stats(size_t lane, ShardCall* call, const v1::StatsRequest* request,
             v1::StatsResponse* response, Done done) override;
  void Plan(size_t lane, ShardCall* call, const v1::PlanRequest* request,
            v1::PlanResponse* response, Done done) override;

 private:
  // (Re)creates the channels to address().
  void Dial();
  // A ClientContext for `call` (kept in call->state, cancelled through it),
  // and `done` as gRPC's callback.
  grpc::ClientContext* ContextFor(ShardCall* call);
  static std::function<void(grpc::Status)> Answer(Done done);

  const std::vector<std::string> addresses_;
  size_t at_ = 0;
  const std::shared_ptr<const TransportSecurity> security_;
  const int64_t max_message_bytes_;
  std::vector<std::unique_ptr<v1::Shard::Stub>> stubs_;  // one per lane
};

}  // namespace tessera

#endif  // TESSERA_WORKER_GRPC_TRANSPORT_H_
