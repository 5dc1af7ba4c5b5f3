// ShardServer: one running shard — a Shard behind its gRPC service on a
// listening port (TLS and a token when the job's `security` says so), the
// standard gRPC health service (also alone on server.health_port in
// plaintext, for probes that cannot speak TLS), and a reaper thread that
// fails parked pulls at their deadline; with server.metrics_port, GET /metrics
// on the same host (server/shard_metrics.h). tessera-server's main() and the
// integration tests both start shards through it.
//
//   auto server = ShardServer::Start(config, /*shard=*/0, "127.0.0.1:0");
//   int port = (*server)->port();
//   ...
//   (*server)->Shutdown(absl::Seconds(5));
//
// Threading: Start, Shutdown and the destructor from one owning thread;
// port(), shard() and WorkersDone() from any thread.
#ifndef TESSERA_SERVER_SHARD_SERVER_H_
#define TESSERA_SERVER_SHARD_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/config.h"
#include "server/checkpointer.h"
#include "server/replication.h"
#include "server/service.h"
#include "common/metrics.h"
#include "common/metrics_server.h"
#include "server/shard.h"
#include "server/shard_metrics.h"

namespace tessera {

class ShardServer {
 public:
  // Builds shard `shard_index`, restores it from its newest checkpoint when
  // checkpoint.dir holds one (Checkpointer::Restore), and serves it on
  // `listen_address` (host:port; port 0 picks a free one). UNAVAILABLE when
  // the address cannot be bound (port in use), INVALID_ARGUMENT for a bad
  // shard index, FAILED_PRECONDITION for a checkpoint that cannot be used.
  // A primary serves workers and, with cluster.standbys, sends every change
  // to its standby (server/replication.h). A standby serves the Replica
  // service (and Stats, health, metrics) instead of workers; its
  // checkpoints go to checkpoint.dir/standby/shard-N. With cluster.etcd
  // (server/failover.h) a primary first wins its shard's term (ALREADY_EXISTS
  // when another daemon holds it), and a standby takes over when the
  // primary's term ends; a daemon whose term is over exits (kExitSuperseded).
  enum class Role { kPrimary, kStandby };
  static absl::StatusOr<std::unique_ptr<ShardServer>> Start(const JobConfig& config,
                                                            uint32_t shard_index,
                                                            const std::string& listen_address,
                                                            Role role = Role::kPrimary);
  ~ShardServer();

  int port() const { return port_; }
  Shard* shard() { return shard_.get(); }

  // Failover, a primary: `address` joins as this shard's standby (it is
  // sent the returned state, then every mutation after it). FAILED_PRECONDITION
  // on a standby, or while a standby follows this shard.
  absl::StatusOr<std::unique_ptr<ShardState>> Join(const std::string& address);

  // Stops taking calls, fails parked pulls with UNAVAILABLE, lets in-flight
  // calls finish for up to `grace`, then cancels the rest; with checkpoints
  // on, writes a last one of the state it stopped at; with failover, a
  // primary then resigns its term (its standby does not take over a daemon
  // that stopped cleanly). Idempotent.
  void Shutdown(absl::Duration grace);

 private:
  ShardServer() = default;
  // Failover: makes this (not yet serving) shard the standby of `holder`,
  // from the state it sends (Replica.Join), for a daemon at `address`. True
  // when joined; false when the primary waits for this address to follow
  // from its first mutation (the standby it started with, starting late).
  // A holder at `address` is this address's previous life: its term is
  // waited out, never joined. With `may_campaign` (a daemon started as
  // primary), NOT_FOUND once no daemon holds the shard's term any more (both
  // were lost): the caller campaigns again.
  absl::StatusOr<bool> JoinAsStandby(const Election::Holder& holder, const std::string& address,
                                     bool may_campaign);
  void ReaperLoop();

  // Logs, every kWaitLogInterval while pulls wait on a min_clock that does
  // not move, which workers hold it.
  void LogWaiting();

  std::unique_ptr<Shard> shard_;
  std::unique_ptr<ShardMetrics> metrics_;
  std::unique_ptr<Checkpointer> checkpointer_;  // with checkpoint.dir set
  std::unique_ptr<ShardService> service_;
  std::unique_ptr<ReplicaService> replica_service_;  // a standby's
  std::unique_ptr<Failover> failover_;               // with cluster.etcd
  JobConfig config_;
  uint32_t shard_index_ = 0;
  std::shared_ptr<const TransportSecurity> security_;
  absl::Mutex join_mu_;  // one Join at a time; replica_link_ changes under it
  // A primary's, with a standby (set before serving, or by Join).
  std::unique_ptr<ReplicaLink> replica_link_;
  std::vector<std::unique_ptr<ReplicaLink>> retired_links_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<grpc::Service> health_service_;  // its one service
  std::unique_ptr<grpc::Server> health_server_;  // server.health_port: health only, plaintext
  int port_ = 0;
  // server.metrics_port: stopped first (declared last), so no scrape sees
  // the shard go.
  std::unique_ptr<MetricsRegistry> registry_;
  std::unique_ptr<MetricsServer> metrics_server_;
  std::thread reaper_;

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Reaper thread only: the waiting log's state.
  int64_t waiting_min_ = -1;
  absl::Time waiting_since_, waiting_logged_;
};

// The address a shard listens on by default: its configured address when the
// host is an IP literal or localhost, else 0.0.0.0 with the same port (a DNS
// name such as a Kubernetes service names the pod, not an interface).
std::string DefaultListenAddress(const std::string& configured_address);

}  // namespace tessera

#endif  // TESSERA_SERVER_SHARD_SERVER_H_
