#include "launcher/launcher.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <optional>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/config.h"
#include "common/status.h"
#include "launcher/emulated_network.h"
#include "launcher/plan.h"
#include "launcher/process.h"
#include "launcher/summary.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

std::atomic<int> g_signal{0};

void OnSignal(int sig) { g_signal = sig; }

// How long workers may keep running after a server has exited 0 (servers exit
// when every worker has called Finish, just before the workers' processes end).
constexpr double kWorkerExitGraceS = 10.0;

void Start(const LaunchOptions& options, const Job& job, Child& c) {
  const bool again = c.restarts > 0 || job.resumed_from >= 0;
  c.pid = Spawn(c.is_server ? job.server_bin : job.worker_bin,
                c.restarts > 0 ? c.restart_args : c.args, c.log_path, /*append=*/again, c.netns);
  c.running = true;
  c.exit_code = -1;
  if (options.on_spawn) options.on_spawn(c.name, c.pid);
}

// Whether a daemon that ended this way may be started again: a signal (kill,
// OOM) or a worker's exit 3 (a server lost). Exit 2 (config) never.
bool Restartable(const Child& c) { return c.exit_code > 128 || (!c.is_server && c.exit_code == 3); }

// Watches the children until the workers are done. Restarts daemons that
// died (up to max_restarts each). Returns "" on success, else what failed.
std::string Supervise(const LaunchOptions& options, Job& job, double start) {
  double last_display = 0;
  double server_exit_seen = 0;  // when a server was first seen to have exited 0
  while (true) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    Reap(job.children);
    if (g_signal != 0) return "interrupted";
    // Servers exit 0 once every worker has called Finish: after that, a
    // worker that dies (before its process ended) has nothing left to do.
    bool servers_done = true;
    for (const Child& c : job.children) {
      if (c.is_server) {
        servers_done &= !c.running && (c.exit_code == 0 || c.exit_code == kExitSuperseded);
      }
    }
    bool workers_running = false, workers_done = true;
    for (Child& c : job.children) {
      if (c.is_server) continue;
      if (servers_done && !c.running && c.exit_code != 0) {
        std::printf("tessera run: %s %s after every server finished; not restarting it\n",
                    c.name.c_str(), HowItEnded(c).c_str());
        c.exit_code = 0;
      }
      workers_running |= c.running;
      workers_done &= !c.running && c.exit_code == 0;
    }
    for (Child& c : job.children) {
      if (c.running) continue;
      if (c.exit_code == 0 && !c.is_server) continue;      // a worker that finished
      if (c.is_server && c.exit_code == kExitSuperseded && !c.superseded) {
        // Its standby serves the shard now (server/failover.h). While the
        // workers train, started again it rejoins as that one's standby.
        const bool rejoin = workers_running && c.restarts < options.max_restarts;
        std::printf("tessera run: %s: another daemon serves its shard now (%s); %s\n",
                    c.name.c_str(), LastLine(c.log_path).c_str(),
                    rejoin ? "starting it again to rejoin as its standby" : "not restarting it");
        std::fflush(stdout);
        if (rejoin) {
          ++c.restarts;
          Start(options, job, c);
        } else {
          c.superseded = true;
        }
        continue;
      }
      if (c.is_server && c.superseded) continue;
      if (c.exit_code == 0 && !workers_running) continue;  // a server after the workers
      if (c.exit_code == 0) {
        // Servers exit once every worker has called Finish, which a worker
        // does just before its process ends: give the workers a moment.
        if (server_exit_seen == 0) server_exit_seen = NowSeconds();
        // (A worker may linger to answer a last scrape: worker.metrics_linger_s.)
        if (NowSeconds() - server_exit_seen <
            kWorkerExitGraceS + job.config.worker.metrics_linger_s) {
          continue;
        }
        return absl::StrCat(c.name, " exited while workers were still running");
      }
      if (!Restartable(c) || c.restarts >= options.max_restarts) {
        return absl::StrCat(
            c.name, " failed (", HowItEnded(c),
            c.restarts > 0 ? absl::StrCat(", after ", c.restarts, " restart(s)") : "",
            "): ", LastLine(c.log_path));
      }
      ++c.restarts;
      if (options.live) std::printf("\n");
      std::printf("tessera run: %s %s; restarting it (%d of %d)\n", c.name.c_str(),
                  HowItEnded(c).c_str(), c.restarts, options.max_restarts);
      std::fflush(stdout);
      Start(options, job, c);
    }
    if (workers_done) return "";
    const double now = NowSeconds();
    if (!options.quiet && now - last_display >= (options.live ? 1.0 : 5.0)) {
      std::string line = ProgressLine(job.dir, job.config.cluster.workers, now - start);
      std::string restarted;
      for (const Child& c : job.children) {
        if (c.restarts > 0)
          absl::StrAppend(&restarted, restarted.empty() ? "" : ", ", c.name, " x", c.restarts);
      }
      if (!restarted.empty()) absl::StrAppend(&line, " | restarted ", restarted);
      if (options.live) {
        std::printf("\r\033[K%s", line.c_str());
      } else {
        std::printf("%s\n", line.c_str());
      }
      std::fflush(stdout);
      last_display = now;
    }
  }
}

}  // namespace

int RunJob(const LaunchOptions& options) {
  absl::StatusOr<JobConfig> loaded = LoadJobConfig(options.config_path, options.overrides);
  if (!loaded.ok()) {
    std::fprintf(stderr, "tessera run: %s\n", std::string(loaded.status().message()).c_str());
    return 2;
  }
  Job job;
  job.config = *std::move(loaded);
  std::vector<std::string> server_sets;
  absl::Status s = PrepareFolders(options, &job, &server_sets);
  if (s.ok()) s = MakeNetwork(options, &job);
  if (s.ok()) s = PlanChildren(options, server_sets, &job);
  if (!s.ok()) {
    std::fprintf(stderr, "tessera run: %s\n", std::string(s.message()).c_str());
    return absl::IsInvalidArgument(s) || absl::IsFailedPrecondition(s) ? 2 : 1;
  }
  job.server_bin = options.server_binary.empty() ? FindBinary("tessera-server", "server")
                                                 : options.server_binary;
  job.worker_bin = options.worker_binary.empty() ? FindBinary("tessera-worker", "worker")
                                                 : options.worker_binary;

  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  g_signal = 0;

  const JobConfig& config = job.config;
  const double start = NowSeconds();
  for (Child& c : job.children) Start(options, job, c);
  if (!options.quiet) {
    std::printf(
        "tessera run: %s: %u servers, %u workers, %s%s; logs in %s%s\n", config.name.c_str(),
        config.num_servers(), config.cluster.workers, ModeName(config.consistency.mode),
        config.consistency.mode == ConsistencyMode::kSsp
            ? absl::StrCat(" staleness ", config.consistency.staleness).c_str()
            : "",
        job.dir.c_str(),
        job.resumed_from >= 0 ? absl::StrCat("; resuming from clock ", job.resumed_from).c_str()
                              : "");
  }
  if (!options.quiet && options.metrics) {
    std::string ports;
    for (const Child& c : job.children) {
      absl::StrAppend(&ports, ports.empty() ? "" : ", ", c.name, " ", c.metrics_port);
    }
    std::printf("tessera run: GET /metrics on %s ports: %s (Prometheus targets: %s)\n",
                job.network ? "each host's address" : "127.0.0.1", ports.c_str(),
                (fs::path(job.dir) / "metrics_targets.json").c_str());
  }
  if (!options.quiet) {
    std::string servers;
    for (const std::string& a : config.cluster.servers) {
      absl::StrAppend(&servers, servers.empty() ? "" : ",", a);
    }
    // The same overrides: the job's mode, staleness and security as it runs.
    std::string sets;
    for (const std::string& o : options.overrides) absl::StrAppend(&sets, " --set '", o, "'");
    if (!config.cluster.standbys.empty()) {
      absl::StrAppend(&sets, " --set cluster.standbys=[", absl::StrJoin(config.cluster.standbys, ","),
                      "]");
    }
    std::printf("tessera run: status: tessera status --config %s%s --set cluster.servers=[%s]%s\n",
                options.config_path.c_str(), sets.c_str(), servers.c_str(),
                DrawsToken(options, config)
                    ? absl::StrCat(" --set security.token_file=", job.dir, "/token").c_str()
                    : "");
  }
  if (!options.quiet && job.network) {
    std::printf(
        "tessera run: emulated network: a host per daemon, links of %s each way%s; this machine "
        "at %s; cut a link with: tessera net cut %s HOST\n",
        config.emulation.link_rate.c_str(),
        config.emulation.link_delay_ms > 0
            ? absl::StrCat(", ", config.emulation.link_delay_ms, " ms delay").c_str()
            : "",
        job.network->observer_address().c_str(), job.dir.c_str());
  }
  std::fflush(stdout);

  const std::string failure = Supervise(options, job, start);
  if (options.live) std::printf("\n");
  if (failure == "interrupted") {
    std::printf(
        "tessera run: interrupted; stopping every daemon (servers checkpoint first; "
        "continue with --resume %s)\n",
        job.dir.c_str());
    StopAll(job.children, 10.0);
    return 130;
  }
  if (!failure.empty()) {
    StopAll(job.children, 10.0);
    std::fprintf(stderr, "tessera run: %s\ntessera run: stopped every other daemon; logs in %s\n",
                 failure.c_str(), job.dir.c_str());
    return 1;
  }
  // Servers exit by themselves once every worker has finished.
  const double deadline = NowSeconds() + 10.0;
  while (Reap(job.children) && NowSeconds() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  StopAll(job.children, 10.0);
  RunFacts facts;
  facts.wall_seconds = NowSeconds() - start;
  facts.resumed_from_clock = job.resumed_from;
  facts.children = &job.children;
  const std::string headline = WriteSummary(config, job.dir, facts);
  if (!options.quiet) {
    std::printf("tessera run: %s\ntessera run: summary in %s/summary.json\n", headline.c_str(),
                job.dir.c_str());
  }
  return 0;
}

}  // namespace tessera
