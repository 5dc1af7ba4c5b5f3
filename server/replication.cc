#include "server/replication.h"

#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"
#include "server/service.h"
#include "spdlog/spdlog.h"

namespace tessera {
namespace {

// One try's deadline, and the pause between tries of an unreachable standby.
constexpr absl::Duration kTryDeadline = absl::Seconds(2);
constexpr absl::Duration kRetryPause = absl::Milliseconds(100);

}  // namespace

grpc::ServerUnaryReactor* ReplicaService::Follow(grpc::CallbackServerContext* context,
                                                 const v1::Mutation* request,
                                                 v1::FollowReply* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (!security_->Admits(*context)) {
    reactor->Finish(grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                                 "this job's standbys require its token (security.token_file)"));
    return reactor;
  }
  const absl::Status status = shard_->Follow(*request);
  response->set_followed(shard_->followed());
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

ReplicaLink::ReplicaLink(const JobConfig& config, uint32_t shard_index,
                         std::shared_ptr<const TransportSecurity> security)
    : shard_index_(shard_index),
      address_(config.cluster.standbys.at(shard_index)),
      timeout_(absl::Seconds(config.server.replication_timeout_s)),
      channel_(security->Channel(address_, config.server.max_message_bytes, /*channel_id=*/0)),
      stub_(v1::Replica::NewStub(channel_)) {}

void ReplicaLink::Send(const v1::Mutation& m) {
  if (cut_.load()) return;
  const absl::Time give_up = absl::Now() + timeout_;
  grpc::Status last;
  for (int attempt = 1;; ++attempt) {
    grpc::ClientContext context;
    const absl::Time deadline = std::min(absl::Now() + kTryDeadline, give_up);
    context.set_deadline(absl::ToChronoTime(deadline));
    // The first call may wait for the standby's channel to come up.
    context.set_wait_for_ready(true);
    v1::FollowReply reply;
    last = stub_->Follow(&context, m, &reply);
    if (last.ok()) {
      sent_.fetch_add(1, std::memory_order_relaxed);
      bytes_.fetch_add(m.ByteSizeLong(), std::memory_order_relaxed);
      if (failover_ != nullptr) failover_->StandbyInSync();
      return;
    }
    const bool retry = last.error_code() == grpc::StatusCode::UNAVAILABLE ||
                       last.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
    if (!retry) {
      Cut(absl::StrCat("it refused mutation ", m.sequence(), ": ", last.error_message()));
      return;
    }
    if (absl::Now() + kRetryPause >= give_up) {
      Cut(absl::StrCat("it did not acknowledge mutation ", m.sequence(), " within ",
                       absl::FormatDuration(timeout_), " (server.replication_timeout_s; ",
                       attempt, " tries, the last: ", last.error_message(), ")"));
      return;
    }
    std::this_thread::sleep_for(absl::ToChronoMilliseconds(kRetryPause));
  }
}

void ReplicaLink::Cut(const std::string& why) {
  if (cut_.load()) return;
  // Unnamed before anything it lacks is answered; else this daemon stops.
  if (failover_ != nullptr) failover_->StandbyOutOfSync(why);
  if (cut_.exchange(true)) return;
  spdlog::error(
      "shard {} goes on without its standby at {}: {}. The standby no longer follows; "
      "start it again once it can (a standby cannot yet catch up with a running primary "
      "over the network)",
      shard_index_, address_, why);
}

}  // namespace tessera
