// GrpcPsClient: the PsClient over gRPC: the shared protocol
// (worker/sharded_ps_client.h) over a GrpcShardTransport per shard
// (worker/grpc_transport.h) with worker.channels_per_shard channels each,
// to the shard's primary and, with cluster.standbys, its standby.
//
// Connect() waits for shards that are still starting: gRPC retries the
// connection with backoff until worker.connect_timeout_ms, then the worker
// fails with a line naming the shard that did not answer. It refuses to talk
// at all when the job's TLS or token settings cannot be read (never
// plaintext by mistake).
//
// Threading: as ShardedPsClient (one caller at a time).
#ifndef TESSERA_WORKER_GRPC_PS_CLIENT_H_
#define TESSERA_WORKER_GRPC_PS_CLIENT_H_

#include <cstdint>
#include <memory>

#include "common/config.h"
#include "common/security.h"
#include "worker/sharded_ps_client.h"

namespace tessera {

// worker.spin_wait_us as it applies on a machine with `cores` cores (the
// -1 "auto" resolved; see common/config.h).
int64_t ResolveSpinWaitUs(const JobConfig& config, unsigned cores);

class GrpcPsClient : public ShardedPsClient {
 public:
  // `security`: the job's TLS and token (TransportSecurity::ForJob); null
  // reads them from `config`, and Connect fails with the reason when that
  // cannot be done.
  GrpcPsClient(const JobConfig& config, uint32_t rank,
               std::shared_ptr<const TransportSecurity> security = nullptr);

  absl::StatusOr<int64_t> Connect(int64_t resume_clock = 0) override;

 private:
  struct Setup;
  GrpcPsClient(const JobConfig& config, uint32_t rank, Setup setup);

  absl::Status security_error_;  // from reading the job's security settings
};

}  // namespace tessera

#endif  // TESSERA_WORKER_GRPC_PS_CLIENT_H_
