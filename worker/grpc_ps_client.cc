#include "worker/grpc_ps_client.h"

#include <sched.h>

#include <algorithm>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/transport.h"
#include "spdlog/spdlog.h"
#include "worker/grpc_transport.h"

namespace tessera {
namespace {

unsigned UsableCores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
  return std::max(1u, std::thread::hardware_concurrency());
}

}  // namespace

int64_t ResolveSpinWaitUs(const JobConfig& config, unsigned cores) {
  if (config.worker.spin_wait_us >= 0) return config.worker.spin_wait_us;
  const bool local =
      std::all_of(config.cluster.servers.begin(), config.cluster.servers.end(), IsLoopbackAddress);
  // Threads that run at once: one per server, one per standby on this host
  // (it applies what its primary applies), one per worker, one more per
  // worker that pushes while it computes, and one more per worker that reads
  // its click log ahead (worker/example_stream.h).
  const uint64_t per_worker = 1 + (config.overlaps_push() ? 1 : 0) + (config.data.ctr() ? 1 : 0);
  const uint64_t local_standbys = static_cast<uint64_t>(std::count_if(
      config.cluster.standbys.begin(), config.cluster.standbys.end(), IsLoopbackAddress));
  const uint64_t busy = static_cast<uint64_t>(config.num_servers()) + local_standbys +
                        uint64_t{config.cluster.workers} * per_worker;
  return local && busy <= cores ? 3000 : 0;
}

// The transports, and why the job's security settings could not be used.
struct GrpcPsClient::Setup {
  std::vector<std::unique_ptr<ShardTransport>> transports;
  absl::Status security_error;
};

GrpcPsClient::GrpcPsClient(const JobConfig& config, uint32_t rank,
                           std::shared_ptr<const TransportSecurity> security)
    : GrpcPsClient(config, rank, [&config, &security] {
        Setup setup;
        if (security == nullptr) {
          auto from_config = TransportSecurity::ForJob(config);
          setup.security_error = from_config.status();
          security = from_config.ok() ? *std::move(from_config) : TransportSecurity::Plaintext();
        }
        for (uint32_t s = 0; s < config.num_servers(); ++s) {
          std::vector<std::string> addresses{config.cluster.servers[s]};
          if (!config.cluster.standbys.empty()) addresses.push_back(config.cluster.standbys[s]);
          setup.transports.push_back(std::make_unique<GrpcShardTransport>(
              std::move(addresses), config.worker.channels_per_shard, security,
              config.server.max_message_bytes));
        }
        return setup;
      }()) {}

GrpcPsClient::GrpcPsClient(const JobConfig& config, uint32_t rank, Setup setup)
    : ShardedPsClient(config, rank, std::move(setup.transports),
                      absl::Microseconds(ResolveSpinWaitUs(config, UsableCores()))),
      security_error_(std::move(setup.security_error)) {}

absl::StatusOr<int64_t> GrpcPsClient::Connect(int64_t resume_clock) {
  if (!security_error_.ok()) return security_error_;  // never talk in plaintext by mistake
  absl::StatusOr<int64_t> clock = ShardedPsClient::Connect(resume_clock);
  if (clock.ok() && config_.worker.spin_wait_us < 0) {
    const int64_t spin = ResolveSpinWaitUs(config_, UsableCores());
    spdlog::info("worker.spin_wait_us auto: {} us{}", spin,
                 spin > 0 ? " (servers on this host, a core per daemon)"
                          : " (servers elsewhere, or cores shared)");
  }
  return clock;
}

}  // namespace tessera
