// tessera-server: one parameter-server shard.
//
//   tessera-server --config JOB.yaml [--shard N] [--set key=value ...]
//                  [--listen HOST:PORT] [--log-level LEVEL]
//
// Exit codes: 0 after SIGTERM/SIGINT or once every worker has finished (with
// checkpoint.dir set, after writing a last checkpoint); 2 for a bad flag or
// config (one line naming the key) or a checkpoint that cannot be used; 1
// when the shard cannot start (e.g. its port is in use).
#include <signal.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/allocator.h"
#include "common/config.h"
#include "common/status.h"
#include "common/flags.h"
#include "common/histogram.h"
#include "common/identity.h"
#include "common/logging.h"
#include "common/process_limits.h"
#include "server/shard_server.h"
#include "server/staleness_tracker.h"
#include "spdlog/spdlog.h"

namespace {

const tessera::Program kProgram{
    "tessera-server",
    "--config JOB.yaml [--shard N] [--set key=value ...] [--listen HOST:PORT] [--standby]\n"
    "    [--log-level LEVEL]",
    "One parameter-server shard of the job. Exit codes: 0 after SIGTERM/SIGINT or once every\n"
    "worker has finished; 2 a bad flag, config or unusable checkpoint (one line naming the key);\n"
    "1 when the shard cannot start (e.g. its port is in use).",
    {{"config", "FILE", "the job's YAML (required)"},
     {"shard", "N", "this shard's index (default: the ordinal ending $POD_NAME or $HOSTNAME)"},
     {"set", "KEY=VALUE", "override a config key, e.g. --set server.metrics_port=9100",
      tessera::FlagKind::kRepeatable},
     {"listen", "HOST:PORT",
      "listen here instead of cluster.servers[shard] (--standby: cluster.standbys[shard]; "
      "port 0: any free)"},
     {"standby", "",
      "be shard N's standby: follow its primary's changes (docs/DESIGN.md \"Replication\"), "
      "serve no worker; checkpoints go to checkpoint.dir/standby",
      tessera::FlagKind::kSwitch},
     {"log-level", "LEVEL", "trace, debug, info, warn or error (default: logging.level)"}}};

int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "tessera-server: %s\n", message.c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace tessera;
  ConfigureAllocatorForLargeTransfers();
  if (auto exit = AnswerHelpOrVersion(argc, argv, kProgram)) return *exit;
  auto flags = ParseFlags(argc, argv, kProgram);
  if (!flags.ok()) return Fail(2, std::string(flags.status().message()));
  if (!flags->Has("config")) return Fail(2, "--config FILE is required");
  auto config = LoadJobConfig(flags->Get("config"), flags->All("set"));
  if (!config.ok()) return Fail(2, std::string(config.status().message()));
  auto shard_flag = flags->GetInt("shard", kMaxShards - 1);
  if (!shard_flag.ok()) return Fail(2, std::string(shard_flag.status().message()));
  auto shard = ResolveShardIndex(*shard_flag);
  if (!shard.ok()) return Fail(2, std::string(shard.status().message()));
  if (*shard >= config->num_servers()) {
    return Fail(2, absl::StrCat("shard index ", *shard, " is not below cluster.servers' count (",
                                config->num_servers(), ")"));
  }
  const bool standby = flags->Has("standby");
  if (standby && config->cluster.standbys.empty() && !flags->Has("listen")) {
    return Fail(2, "--standby needs cluster.standbys (its address) or --listen HOST:PORT");
  }
  std::string level = flags->Has("log-level") ? flags->Get("log-level") : config->logging.level;
  if (auto s = SetupLogging(absl::StrCat(standby ? "standby-" : "server-", *shard), level);
      !s.ok()) {
    return Fail(2, std::string(s.message()));
  }
  // Idle connections from anyone who can reach the ports must not use up
  // the descriptors the job's workers and scrapers need.
  spdlog::info("{}", Describe(RaiseDescriptorLimit()));

  // Signals are taken synchronously by this thread; block them before any
  // other thread starts so none of gRPC's threads receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::string listen =
      flags->Has("listen")
          ? flags->Get("listen")
          : DefaultListenAddress(standby ? config->cluster.standbys[*shard]
                                         : config->cluster.servers[*shard]);
  if (auto s = CheckHostPort("--listen", listen, /*allow_zero=*/true); !s.ok()) {
    return Fail(2, std::string(s.message()));
  }
  const auto start = std::chrono::steady_clock::now();
  auto server = ShardServer::Start(*config, *shard, listen,
                                   standby ? ShardServer::Role::kStandby
                                           : ShardServer::Role::kPrimary);
  if (!server.ok()) {
    // A checkpoint that cannot be used, like a bad config, is not helped by a restart.
    const bool config_error =
        absl::IsInvalidArgument(server.status()) || absl::IsFailedPrecondition(server.status());
    // Another daemon holds the shard's term (failover): not this one's to serve.
    if (absl::IsAlreadyExists(server.status())) {
      return Fail(kExitSuperseded, std::string(server.status().message()));
    }
    return Fail(config_error ? 2 : 1, std::string(server.status().message()));
  }
  size_t values = 0, reserved = 0;
  for (const auto& t : config->Tables()) {
    values += t.kind == TableKind::kDense ? t.size : 0;
    reserved += t.reserve_rows;
  }
  spdlog::info(
      "{}shard {}/{} ready on {} (port {}): mode {} staleness {}, {} workers, {} tables, "
      "{} dense values over all shards, {} sparse rows reserved, started in {:.2f} s",
      standby ? "standby of " : "", *shard, config->num_servers(), listen, (*server)->port(), ModeName(config->consistency.mode),
      config->consistency.staleness, config->cluster.workers, config->Tables().size(), values,
      reserved, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());

  timespec tick{0, 100'000'000};  // check for finished workers every 100 ms
  while (true) {
    siginfo_t info;
    int sig = sigtimedwait(&signals, &info, &tick);
    if (sig == SIGTERM || sig == SIGINT) {
      spdlog::info("received {}; draining in-flight calls", sig == SIGTERM ? "SIGTERM" : "SIGINT");
      break;
    }
    // A standby too (every worker's Finish reached it through its primary),
    // once its primary has sent nothing for 2 s: the last mutations may
    // follow the one that finished the last worker.
    const bool follows = (*server)->shard()->standby() &&
                         absl::Now() - (*server)->shard()->last_followed() < absl::Seconds(2);
    if (config->server.exit_when_workers_done && !follows &&
        (*server)->shard()->AllWorkersFinished()) {
      spdlog::info("all {} workers finished; exiting", config->cluster.workers);
      break;
    }
  }
  (*server)->Shutdown(absl::Seconds(5));
  // What the shard held at the end, for whoever sizes the next job's machines.
  v1::StatsResponse stats;
  (*server)->shard()->Stats(&stats);
  std::string held;
  for (const v1::TableStats& t : stats.tables()) {
    if (t.kind() == v1::SPARSE) {
      absl::StrAppend(&held, ", ", t.name(), " ", t.rows(), " rows");
    }
  }
  // What crossed the wire, as sent and as float32 would have been (the
  // compression the job's codecs achieved, seen from the shard).
  uint64_t wire[4] = {0, 0, 0, 0};
  for (const v1::TableStats& t : stats.tables()) {
    wire[0] += t.push_bytes();
    wire[1] += t.push_raw_bytes();
    wire[2] += t.pull_bytes();
    wire[3] += t.pull_raw_bytes();
  }
  absl::StrAppend(&held, "; wire bytes: pushes ", wire[0], " (float32 ", wire[1], "), pulls ",
                  wire[2], " (float32 ", wire[3], ")");
  // How stale the pushes were (docs/STALENESS.md).
  const std::vector<uint64_t> counts(stats.push_staleness_buckets().begin(),
                                     stats.push_staleness_buckets().end());
  uint64_t measured = 0;
  for (uint64_t c : counts) measured += c;
  if (measured > 0) {
    const std::vector<double> bounds = StalenessTracker::Bounds();
    absl::StrAppend(&held,
                    absl::StrFormat("; push staleness mean %.2f, p50 <= %g, p99 <= %g updates (%d "
                                    "pushes, %d unmeasured)",
                                    double(stats.push_staleness_sum()) / measured,
                                    Histogram::Quantile(bounds, counts, 0.5),
                                    Histogram::Quantile(bounds, counts, 0.99), measured,
                                    stats.push_staleness_unknown()));
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  spdlog::info("shard {} stopped{}; peak resident memory {:.1f} MiB", *shard, held,
               usage.ru_maxrss / 1024.0);
  return 0;
}
