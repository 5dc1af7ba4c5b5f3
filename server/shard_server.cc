#include "server/shard_server.h"

#include <arpa/inet.h>
#include <grpcpp/health_check_service_interface.h>

#include <atomic>

#include "proto/health.grpc.pb.h"

#include "absl/strings/str_cat.h"
#include "common/partition.h"
#include "common/status.h"
#include "common/transport.h"
#include "spdlog/spdlog.h"

namespace tessera {
namespace {

// grpc.health.v1.Health/Check alone, for server.health_port: a server needs at
// least one callback service to run without a completion queue of its own.
class HealthOnly final : public grpc::health::v1::Health::CallbackService {
 public:
  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context,
                                  const grpc::health::v1::HealthCheckRequest*,
                                  grpc::health::v1::HealthCheckResponse* response) override {
    response->set_status(serving_.load() ? grpc::health::v1::HealthCheckResponse::SERVING
                                         : grpc::health::v1::HealthCheckResponse::NOT_SERVING);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  void SetServing(bool serving) { serving_.store(serving); }

 private:
  std::atomic<bool> serving_{true};
};

// How often the reaper wakes at the latest; pulls expire within this of
// their deadline.
constexpr absl::Duration kReaperTick = absl::Milliseconds(20);
// How long a daemon that finds another serving its shard keeps trying to
// join it (or, one started as primary, to campaign once none serves).
constexpr absl::Duration kJoinPatience = absl::Minutes(2);
// How often a shard whose pulls wait on a stuck min_clock says on whom.
constexpr absl::Duration kWaitLogInterval = absl::Seconds(5);

// A daemon whose term is over must not act as primary another moment:
// fail-stop (docs/DESIGN.md "Failover").
[[noreturn]] void StopDaemon(const std::string& why) {
  spdlog::critical("{}", why);
  spdlog::default_logger()->flush();
  std::_Exit(kExitSuperseded);
}

}  // namespace

std::string DefaultListenAddress(const std::string& configured_address) {
  size_t colon = configured_address.rfind(':');
  std::string host = configured_address.substr(0, colon);
  std::string port = configured_address.substr(colon + 1);
  in_addr v4;
  in6_addr v6;
  std::string bare =
      host.size() > 2 && host.front() == '[' ? host.substr(1, host.size() - 2) : host;
  if (host == "localhost" || inet_pton(AF_INET, bare.c_str(), &v4) == 1 ||
      inet_pton(AF_INET6, bare.c_str(), &v6) == 1) {
    return configured_address;
  }
  return "0.0.0.0:" + port;
}

absl::StatusOr<std::unique_ptr<ShardServer>> ShardServer::Start(const JobConfig& config,
                                                                uint32_t shard_index,
                                                                const std::string& listen_address,
                                                                Role role) {
  std::unique_ptr<ShardServer> server(new ShardServer());
  server->config_ = config;
  server->shard_index_ = shard_index;
  TESSERA_ASSIGN_OR_RETURN(server->shard_, Shard::Create(config, shard_index));
  TESSERA_ASSIGN_OR_RETURN(std::shared_ptr<const TransportSecurity> security,
                           TransportSecurity::ForJob(config));
  server->security_ = security;
  bool standby = role == Role::kStandby;
  bool joined = false;  // a primary that found another and joined it as its standby
  if (!config.cluster.etcd.empty()) {
    const std::string& address =
        standby ? config.cluster.standbys[shard_index] : config.cluster.servers[shard_index];
    TESSERA_ASSIGN_OR_RETURN(
        server->failover_,
        Failover::Create(config, shard_index,
                         standby ? Failover::Role::kStandby : Failover::Role::kPrimary, address,
                         server->shard_.get(), StopDaemon));
    absl::StatusOr<Election::Holder> holder;
    if (!standby) {
      // Campaign; where another daemon serves the shard (its standby took
      // over while this one was gone), never a second primary: join it. If
      // that one is lost too before this one joined, campaign again.
      const absl::Time give_up = absl::Now() + kJoinPatience;
      while (true) {
        absl::Status won = server->failover_->BecomePrimary().status();
        // The holder may be between terms when asked (its term just ended);
        // then campaign again.
        for (int attempt = 0; absl::IsAlreadyExists(won); ++attempt) {
          holder = server->failover_->Holder();
          if (!absl::IsNotFound(holder.status()) || attempt == 10) break;
          won = server->failover_->BecomePrimary().status();
        }
        if (!absl::IsAlreadyExists(won)) TESSERA_RETURN_IF_ERROR(won);
        if (won.ok()) break;
        TESSERA_RETURN_IF_ERROR(holder.status());
        absl::StatusOr<bool> followed =
            server->JoinAsStandby(*holder, address, /*may_campaign=*/true);
        if (!absl::IsNotFound(followed.status()) || absl::Now() > give_up) {
          TESSERA_ASSIGN_OR_RETURN(joined, std::move(followed));
          standby = true;
          break;
        }
      }
    } else {
      // A standby that starts while a primary serves (restarted, or added
      // later) cannot know what it missed: it joins. One that starts with
      // the job (no primary yet) follows from the first mutation.
      holder = server->failover_->Holder();
      if (!holder.ok() && !absl::IsNotFound(holder.status())) return holder.status();
      // Both of the shard's daemons were lost: this one cannot be the one
      // with the newest state any more.
      if (absl::IsNotFound(holder.status())) server->failover_->RenounceInSync();
      if (holder.ok()) {
        TESSERA_ASSIGN_OR_RETURN(joined,
                                 server->JoinAsStandby(*holder, address, /*may_campaign=*/false));
        // Not joined: a standby that follows from the start.
      }
    }
  }
  if (standby) server->shard_->SetStandby();
  // A standby keeps checkpoints of its own, beside its primary's (a primary
  // that joined keeps its place: the primary it follows was the standby).
  JobConfig own = config;
  if (role == Role::kStandby && !own.checkpoint.dir.empty()) own.checkpoint.dir += "/standby";
  if (!own.checkpoint.dir.empty()) {
    if (!joined) TESSERA_RETURN_IF_ERROR(Checkpointer::Restore(server->shard_.get(), own));
    server->checkpointer_ = std::make_unique<Checkpointer>(server->shard_.get(), own);
  }
  if (!standby && !config.cluster.standbys.empty()) {
    server->replica_link_ = std::make_unique<ReplicaLink>(
        config, shard_index, config.cluster.standbys[shard_index], security);
    server->replica_link_->SetFromStart();
    server->replica_link_->SetFailover(server->failover_.get());
    TESSERA_RETURN_IF_ERROR(server->shard_->SetMutationLog(server->replica_link_->Log()));
    spdlog::info("shard {} sends every change to its standby at {} before it answers",
                 shard_index, server->replica_link_->address());
  }
  server->metrics_ = std::make_unique<ShardMetrics>(config);
  server->service_ = std::make_unique<ShardService>(
      server->shard_.get(), absl::Milliseconds(config.server.max_pull_wait_ms), security,
      server->metrics_.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  // gRPC sets SO_REUSEPORT by default, which would let a second shard share a
  // port in use instead of failing at start-up.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(listen_address, security->ServerCredentials(), &server->port_);
  builder.RegisterService(server->service_.get());
  if (standby || server->failover_) {
    // A standby follows here; with failover a primary takes joiners here.
    ReplicaService::JoinFn join;
    if (server->failover_) {
      join = [s = server.get()](const std::string& address) { return s->Join(address); };
    }
    server->replica_service_ =
        std::make_unique<ReplicaService>(server->shard_.get(), security, std::move(join));
    builder.RegisterService(server->replica_service_.get());
  }
  ApplyServerTransport(&builder, config.server.max_message_bytes);
  {
    // gRPC's memory quota bounds what its transport may buffer for this
    // server; past it, the transport sheds the streams that hold the most
    // (a flood of large bodies) instead of growing.
    grpc::ResourceQuota quota("tessera-shard");
    if (config.server.threads > 0) quota.SetMaxThreads(config.server.threads);
    int64_t bound = config.server.transport_memory_bytes;
    if (bound == 0) {
      uint64_t dense_bytes = 0;  // what one worker's pull of this shard's dense share moves
      for (const TableConfig& t : config.Tables()) {
        if (t.kind == TableKind::kDense) {
          dense_bytes += DenseShardRange(t.size, shard_index, config.num_servers()).size() * 4;
        }
      }
      bound = (int64_t{32} << 20) + 2 * static_cast<int64_t>(dense_bytes);
    }
    if (bound > 0) quota.Resize(static_cast<size_t>(bound));
    builder.SetResourceQuota(quota);
  }
  // What this daemon holds before any Follow can reach it (Failover::Start).
  const uint64_t followed_before_serving = server->shard_->followed();
  server->server_ = builder.BuildAndStart();
  if (!server->server_ || server->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", listen_address,
                     ": the port is in use or the address is not on this host"));
  }
  server->server_->GetHealthCheckService()->SetServingStatus(true);
  if (config.server.health_port > 0) {
    // Health only: no other service is registered on this server.
    const std::string health_address = absl::StrCat(
        listen_address.substr(0, listen_address.rfind(':')), ":", config.server.health_port);
    grpc::ServerBuilder health;
    health.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    int bound = 0;
    health.AddListeningPort(health_address, grpc::InsecureServerCredentials(), &bound);
    server->health_service_ = std::make_unique<HealthOnly>();
    health.RegisterService(server->health_service_.get());
    server->health_server_ = health.BuildAndStart();
    if (!server->health_server_ || bound == 0) {
      return absl::UnavailableError(absl::StrCat("cannot listen on ", health_address,
                                                 " (server.health_port): the port is in use"));
    }
  }
  if (config.server.metrics_port > 0) {
    server->registry_ = std::make_unique<MetricsRegistry>(
        Labels{{"job", config.name}, {"shard", absl::StrCat(shard_index)}});
    server->registry_->Add([s = server.get()](Exposition& e) {
      s->metrics_->Collect(*s->shard_, e);
    });
    TESSERA_ASSIGN_OR_RETURN(const MetricsAccess access, MetricsAccessFor(config));
    TESSERA_ASSIGN_OR_RETURN(
        server->metrics_server_,
        MetricsServer::Start(listen_address.substr(0, listen_address.rfind(':')),
                             static_cast<int>(config.server.metrics_port), server->registry_.get(),
                             "server.metrics_port", access));
    spdlog::info("serving GET /metrics on {}://{}:{}",
                 server->metrics_server_->https() ? "https" : "http",
                 listen_address.substr(0, listen_address.rfind(':')),
                 server->metrics_server_->port());
  }
  server->reaper_ = std::thread([s = server.get()] { s->ReaperLoop(); });
  if (server->failover_) server->failover_->Start(followed_before_serving);
  return server;
}

absl::StatusOr<bool> ShardServer::JoinAsStandby(const Election::Holder& holder,
                                                const std::string& address, bool may_campaign) {
  if (holder.name == address) {
    spdlog::warn("shard {}: term {} is this address's own, from before a restart; waiting for it "
                 "to end",
                 shard_index_, holder.term);
  } else {
    spdlog::warn("shard {}: {} is primary (term {}); joining it as its standby", shard_index_,
                 holder.name, holder.term);
  }
  // The primary may not serve yet (it has just won), or none may serve
  // while a daemon that lost both of the shard's daemons starts from its
  // checkpoint: as long as workers wait for a lost shard by default
  // (worker.server_lost_timeout_s).
  const absl::Time give_up = absl::Now() + kJoinPatience;
  absl::StatusOr<JoinedState> state;
  Election::Holder primary = holder;
  while (true) {
    if (primary.name == address) {
      // This address's previous life (a primary, or a standby it promoted),
      // now gone: its lease runs out.
      state = absl::UnavailableError(absl::StrCat("term ", primary.term, " of ", address,
                                                  ", from before a restart, has not ended"));
    } else {
      state = JoinPrimary(config_, *shard_, primary.name, address, *security_);
    }
    if (state.ok() || absl::IsInvalidArgument(state.status()) || absl::IsAborted(state.status()) ||
        absl::Now() > give_up) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(200));
    // The primary may have gone meanwhile: join whoever serves next. While
    // nobody does, this daemon (restarted) cannot be the one with the newest
    // state: it says so, so that a primary may start from its checkpoint.
    absl::StatusOr<Election::Holder> now = failover_->Holder();
    if (now.ok()) {
      primary = *now;
    } else if (absl::IsNotFound(now.status())) {
      failover_->RenounceInSync();
      if (may_campaign) {
        return absl::NotFoundError(
            absl::StrCat("shard ", shard_index_, ": no daemon holds its term any more"));
      }
    }
  }
  if (absl::IsAborted(state.status())) {
    spdlog::info("shard {}: {}", shard_index_, std::string(state.status().message()));
    return false;
  }
  TESSERA_RETURN_IF_ERROR(state.status());
  shard_->SetStandby();
  TESSERA_RETURN_IF_ERROR(shard_->Restore(state->state));
  shard_->SetTerm(state->term);
  failover_->BecomeStandby(primary.name);
  spdlog::info(
      "shard {}: joined the primary at {} as its standby, from its state at clock {} (mutation {})",
      shard_index_, primary.name, state->state.manifest.clock(), state->state.manifest.log_sequence());
  return true;
}

absl::StatusOr<std::unique_ptr<ShardState>> ShardServer::Join(const std::string& address) {
  absl::MutexLock lock(&join_mu_);
  if (shard_->standby()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "shard ", shard_index_, " here is a standby: join its primary"));
  }
  if (replica_link_ && replica_link_->connected() && replica_link_->address() == address &&
      replica_link_->from_start() && replica_link_->sent() == 0) {
    // The standby this shard started with, starting after it: this shard
    // waits for its first acknowledgement, so it follows from the start.
    return absl::AbortedError(absl::StrCat("shard ", shard_index_, " waits for ", address,
                                           " to follow from its first mutation"));
  }
  if (replica_link_ && replica_link_->connected()) {
    if (replica_link_->address() != address) {
      return absl::FailedPreconditionError(absl::StrCat("shard ", shard_index_,
                                                        " has a standby that follows it, at ",
                                                        replica_link_->address()));
    }
    // A new daemon at the standby's address: the one the link sends to is
    // gone (restarted), though the link may still be retrying a mutation
    // (server.replication_timeout_s). The standby is unnamed in etcd first,
    // here: the joiner lacks what is answered while it catches up, and a
    // link with nothing more to send would never unname it (chaos: the
    // primary was killed then, and the joiner, still named from its previous
    // life, was waited for in vain). Then the link stops retrying and is
    // cut, and the joiner gets a copy of the state that holds its mutation.
    const std::string why = absl::StrCat("a new daemon at ", address, " joins in its place");
    if (failover_) failover_->StandbyOutOfSync(why);
    replica_link_->Abandon(why);
  }
  auto link = std::make_unique<ReplicaLink>(config_, shard_index_, address, security_);
  link->SetFailover(failover_.get());
  link->SetCatchingUp();
  TESSERA_ASSIGN_OR_RETURN(
      std::unique_ptr<ShardState> state,
      shard_->SnapshotAndLog(link->Log()));
  spdlog::info(
      "shard {}: {} joins as its standby, from clock {} (mutation {}); the changes since are "
      "sent as soon as it serves, and once it has them all, every change before it is answered",
      shard_index_, address, state->manifest.clock(), state->manifest.log_sequence());
  // The old link gets no more mutations (the log was replaced under its
  // lock); kept until the server goes, as links are few and a call may
  // still await it.
  if (replica_link_) retired_links_.push_back(std::move(replica_link_));
  replica_link_ = std::move(link);
  return state;
}

void ShardServer::ReaperLoop() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    absl::Time wake = std::min(shard_->NextDeadline(), absl::Now() + kReaperTick);
    mu_.AwaitWithDeadline(absl::Condition(&stopping_), wake);
    if (stopping_) break;
    mu_.Unlock();
    shard_->ExpireDue(absl::Now());
    shard_->EvictSilent(absl::Now());
    LogWaiting();
    mu_.Lock();
  }
}

void ShardServer::LogWaiting() {
  const absl::Time now = absl::Now();
  const int64_t min = shard_->published_min();
  if (shard_->parked() == 0 || min != waiting_min_) {
    waiting_min_ = min;
    waiting_since_ = waiting_logged_ = now;
    return;
  }
  if (now - waiting_logged_ < kWaitLogInterval) return;
  waiting_logged_ = now;
  std::vector<uint32_t> laggards = shard_->Laggards();
  std::string who;
  for (uint32_t w : laggards) absl::StrAppend(&who, who.empty() ? "" : ", ", w);
  spdlog::warn("{} pull(s) have waited {:.0f} s for min_clock to pass {}: held by worker(s) {} "
               "(slow, stuck or gone; a restarted worker rejoins)",
               shard_->parked(), absl::ToDoubleSeconds(now - waiting_since_), min, who);
}

void ShardServer::Shutdown(absl::Duration grace) {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (reaper_.joinable()) reaper_.join();
  if (!server_) return;  // never started (e.g. the port was in use)
  server_->GetHealthCheckService()->SetServingStatus(false);
  if (health_server_) {
    static_cast<HealthOnly*>(health_service_.get())->SetServing(false);
    health_server_->Shutdown(absl::ToChronoTime(absl::Now()));
  }
  shard_->FailParked();
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  shard_->FailParked();  // pulls that parked while shutdown began
  server_->Wait();
  if (checkpointer_) checkpointer_->Final();
  if (failover_) failover_->Resign();
  metrics_server_.reset();
}

ShardServer::~ShardServer() { Shutdown(absl::Seconds(1)); }

}  // namespace tessera
