#include "launcher/launcher.h"

#include <httplib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/config.h"
#include "common/secret.h"
#include "common/status.h"
#include "launcher/emulated_network.h"
#include "launcher/process.h"
#include "launcher/summary.h"
#include "nlohmann/json.hpp"
#include "server/checkpoint.h"
#include "worker/held_push.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

std::atomic<int> g_signal{0};

void OnSignal(int sig) { g_signal = sig; }

// How long workers may keep running after a server has exited 0 (servers exit
// when every worker has called Finish, just before the workers' processes end).
constexpr double kWorkerExitGraceS = 10.0;

// checkpoint.every_seconds when the config sets neither it nor every_clocks.
constexpr int kDefaultCheckpointSeconds = 10;

// One job as the launcher runs it.
struct Job {
  JobConfig config;
  std::string dir;  // the output folder
  std::string server_bin, worker_bin;
  int64_t resumed_from = -1;
  bool pin_resume_clock = false;  // every shard restores exactly resumed_from (BSP)
  std::vector<Child> children;
  // emulation.link_rate: every daemon on a host of its own (index: servers,
  // then workers). Removed when the job ends, after its daemons stopped.
  std::unique_ptr<EmulatedNetwork> network;
  // --replicas without cluster.etcd: the etcd this run started (killed with
  // the Job), and its client address.
  pid_t etcd_pid = -1;
  std::string etcd;
  ~Job() {
    if (etcd_pid > 0) {
      kill(etcd_pid, SIGTERM);
      waitpid(etcd_pid, nullptr, 0);
    }
    // The pushes workers keep in /dev/shm for a restart (worker/held_push.h)
    // matter no more once the job has ended, however it ended.
    for (uint32_t r = 0; !dir.empty() && r < config.cluster.workers; ++r) {
      const std::string held = HeldPushFile::PathFor(absl::StrCat(dir, "/session-rank", r), r);
      std::remove(held.c_str());
      std::remove((held + ".tmp").c_str());
    }
  }
};

// The port every shard listens on, and every daemon's GET /metrics, on an
// emulated host (each host has ports of its own).
constexpr int kEmulatedShardPort = 7000;
constexpr int kEmulatedMetricsPort = 9100;
// etcd's client port (and the next, its peer port) on its emulated host.
constexpr int kEmulatedEtcdPort = 2379;

// --replicas: etcd's binary (Debian's etcd-server).
constexpr char kEtcdBinary[] = "/usr/bin/etcd";

// Starts an etcd of this run's own (data in DIR/etcd), with a short election
// timeout so that leases of 1 s are granted, and waits until it answers: on
// loopback at `loopback_ports` (client, peer), or on the emulated network's
// host `host` (its address, from this machine through the observer port).
// FAILED_PRECONDITION when etcd is not installed.
absl::Status StartEtcd(Job* job, std::optional<size_t> host, std::vector<int> loopback_ports) {
  if (access(kEtcdBinary, X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--replicas needs etcd to decide who is primary: ", kEtcdBinary,
        " is missing (apt-get install etcd-server; scripts/install_deps.sh does), or set "
        "cluster.etcd to one that runs"));
  }
  std::string ip = "127.0.0.1", netns;
  std::vector<int> ports = std::move(loopback_ports);
  if (host) {
    ip = job->network->Address(*host);
    netns = job->network->Namespace(*host);
    ports = {kEmulatedEtcdPort, kEmulatedEtcdPort + 1};
  }
  const std::string client = absl::StrCat("http://", ip, ":", ports[0]);
  const std::string peer = absl::StrCat("http://", ip, ":", ports[1]);
  job->etcd_pid = Spawn(kEtcdBinary,
                        {"--data-dir", job->dir + "/etcd", "--listen-client-urls", client,
                         "--advertise-client-urls", client, "--listen-peer-urls", peer,
                         "--initial-advertise-peer-urls", peer, "--initial-cluster",
                         "default=" + peer, "--heartbeat-interval", "50", "--election-timeout",
                         "250"},
                        job->dir + "/etcd.log", /*append=*/true, netns);
  if (job->etcd_pid <= 0) return absl::InternalError("could not start " + std::string(kEtcdBinary));
  job->etcd = absl::StrCat(ip, ":", ports[0]);
  for (int i = 0; i < 100; ++i) {
    httplib::Client probe(ip, ports[0]);
    probe.set_connection_timeout(0, 200'000);
    if (auto res = probe.Get("/health"); res && res->status == 200) return absl::OkStatus();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return absl::UnavailableError(
      absl::StrCat("the etcd this run started did not answer within 10 s (", job->dir,
                   "/etcd.log says why)"));
}


// Whether this run draws a job token: unless told not to (--open), or the
// config names a token file of its own.
bool DrawsToken(const LaunchOptions& options, const JobConfig& config) {
  return options.token && config.security.token_file.empty();
}

// Writes `bytes` random bytes as hex and a newline to `path`, readable by
// this user only (0600). INTERNAL naming `what` when it cannot.
absl::Status WriteSecret(const std::string& path, size_t bytes, const std::string& what) {
  TESSERA_ASSIGN_OR_RETURN(const std::string hex, RandomHex(bytes));
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  const std::string line = hex + "\n";
  const bool written =
      fd >= 0 && write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  if (fd >= 0) close(fd);
  if (!written) return absl::InternalError(absl::StrCat("cannot write ", what, " to ", path));
  return absl::OkStatus();
}

// emulation.link_rate: makes a host per daemon (servers, workers, then with
// --replicas the standbys and the run's own etcd) and says so.
// FAILED_PRECONDITION without CAP_NET_ADMIN (exit 2).
absl::Status MakeNetwork(const LaunchOptions& options, Job* job) {
  const JobConfig& config = job->config;
  if (!config.emulation.enabled()) return absl::OkStatus();
  TESSERA_RETURN_IF_ERROR(EmulatedNetwork::CheckCapable());
  if (const int stale = EmulatedNetwork::RemoveStale(); stale > 0) {
    std::printf("tessera run: removed %d network namespaces left by launchers that no longer run\n",
                stale);
  }
  std::vector<std::string> hosts;
  for (uint32_t s = 0; s < config.num_servers(); ++s) hosts.push_back(absl::StrCat("server-", s));
  for (uint32_t r = 0; r < config.cluster.workers; ++r) hosts.push_back(absl::StrCat("worker-", r));
  if (options.replicas > 0) {
    for (uint32_t s = 0; s < config.num_servers(); ++s) hosts.push_back(absl::StrCat("standby-", s));
    if (config.cluster.etcd.empty()) hosts.push_back("etcd");
  }
  TESSERA_ASSIGN_OR_RETURN(
      job->network,
      EmulatedNetwork::Create(absl::StrCat("tessera-", getpid()), hosts,
                              {config.emulation.link_rate_bps, config.emulation.link_delay_ms}));
  return job->network->WriteDescription((fs::path(job->dir) / "network.json").string());
}

// The daemon binary `name`, looked for next to this executable (an install)
// and in the Bazel output tree (bazel-bin/launcher/ -> bazel-bin/<dir>/).
std::string FindBinary(const std::string& name, const std::string& bazel_dir) {
  std::error_code ec;
  const fs::path dir = fs::read_symlink("/proc/self/exe", ec).parent_path();
  for (const fs::path& candidate : {dir / name, dir / ".." / bazel_dir / name}) {
    if (access(candidate.c_str(), X_OK) == 0) return candidate.string();
  }
  return (dir / name).string();
}

std::string DefaultOutDir(const JobConfig& config) {
  char stamp[32];
  const std::time_t t = std::time(nullptr);
  std::strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", std::localtime(&t));
  return absl::StrCat("runs/", config.name, "-", stamp);
}

// The output folder and the checkpoint folder: a fresh run gets empty ones,
// a resumed run finds the cut every shard restores. INVALID_ARGUMENT (exit 2)
// when there is nothing to resume, or a fresh run would mix its checkpoints
// with another run's.
absl::Status PrepareFolders(const LaunchOptions& options, Job* job,
                            std::vector<std::string>* server_sets) {
  const bool resume = !options.resume_dir.empty();
  job->dir = resume ? options.resume_dir
                    : (options.out_dir.empty() ? DefaultOutDir(job->config) : options.out_dir);
  std::error_code ec;
  if (resume && !fs::is_directory(job->dir, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("--resume ", job->dir, ": no such folder"));
  }
  fs::create_directories(job->dir, ec);
  if (ec) {
    return absl::InvalidArgumentError(absl::StrCat("cannot create ", job->dir, ": ", ec.message()));
  }
  const bool own_checkpoints =
      job->config.checkpoint.dir.empty() && !job->config.checkpoint.disabled;
  if (own_checkpoints) {
    job->config.checkpoint.dir = (fs::path(job->dir) / "checkpoints").string();
    server_sets->push_back("checkpoint.dir=" + job->config.checkpoint.dir);
  }
  if (!job->config.checkpoint.disabled && job->config.checkpoint.every_clocks == 0 &&
      job->config.checkpoint.every_seconds == 0) {
    // A restarted server should lose seconds, not the whole run.
    job->config.checkpoint.every_seconds = kDefaultCheckpointSeconds;
    server_sets->push_back(absl::StrCat("checkpoint.every_seconds=", kDefaultCheckpointSeconds));
  }
  const std::string& ckpt = job->config.checkpoint.dir;
  if (resume) {
    // BSP: every shard restores the same cut. SSP/ASP cut at each shard's
    // own moment: each restores its newest, and the workers' Register moves
    // every shard to the clock they resume at.
    const bool bsp = job->config.consistency.mode == ConsistencyMode::kBsp;
    absl::StatusOr<int64_t> clock;
    if (bsp) {
      clock = NewestCommonClock(ckpt, job->config.num_servers());
    } else if (auto newest = NewestClocks(ckpt, job->config.num_servers()); newest.ok()) {
      clock = *std::min_element(newest->begin(), newest->end());
    } else {
      clock = newest.status();
    }
    if (!clock.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--resume ", job->dir, ": ", clock.status().message()));
    }
    job->resumed_from = *clock;
    job->pin_resume_clock = bsp;
    return absl::OkStatus();
  }
  if (own_checkpoints) {
    fs::remove_all(ckpt, ec);  // an earlier run's, in the folder this run replaces
  } else if (fs::exists(ckpt, ec) && !fs::is_empty(ckpt, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint.dir ", ckpt,
                     " holds checkpoints of an earlier run: continue it "
                     "with --resume, or name an empty checkpoint.dir"));
  }
  return absl::OkStatus();
}

// With options.metrics, a free port for `c`'s GET /metrics (the same on
// every restart) from `ports`, set by `section`.metrics_port.
void AddMetricsPort(const LaunchOptions& options, const char* section,
                    std::vector<int>& ports, Child* c) {
  if (!options.metrics) return;
  c->metrics_port = ports.back();
  ports.pop_back();
  for (auto* args : {&c->args, &c->restart_args}) {
    args->insert(args->end(),
                 {"--set", absl::StrCat(section, ".metrics_port=", c->metrics_port)});
  }
}

// Every daemon's arguments: the same config and overrides for all, the
// servers' loopback addresses, and each daemon's identity.
absl::Status PlanChildren(const LaunchOptions& options, const std::vector<std::string>& server_sets,
                          Job* job) {
  const JobConfig& config = job->config;
  const EmulatedNetwork* net = job->network.get();
  // The servers' ports, then (with metrics) one per daemon; on an emulated
  // network every host has ports of its own.
  const int daemons = static_cast<int>(config.num_servers() * (options.replicas > 0 ? 2 : 1) +
                                       config.cluster.workers);
  std::vector<int> ports;
  // On loopback the standbys' and the run's etcd's ports come from the same
  // draw: ports drawn apart may repeat (each is free only until bound).
  std::vector<int> standby_ports, etcd_ports;
  if (net != nullptr) {
    ports.assign(options.metrics ? daemons : 0, kEmulatedMetricsPort);
  } else {
    const int standby_count = options.replicas > 0 ? static_cast<int>(config.num_servers()) : 0;
    const int etcd_count = options.replicas > 0 && config.cluster.etcd.empty() ? 2 : 0;
    TESSERA_ASSIGN_OR_RETURN(
        ports, FreePorts(static_cast<int>(config.num_servers()) + standby_count + etcd_count +
                         (options.metrics ? daemons : 0)));
    etcd_ports.assign(ports.end() - etcd_count, ports.end());
    ports.resize(ports.size() - etcd_count);
    standby_ports.assign(ports.end() - standby_count, ports.end());
    ports.resize(ports.size() - standby_count);
  }
  std::vector<std::string> addresses;
  for (uint32_t s = 0; s < config.num_servers(); ++s) {
    addresses.push_back(net != nullptr ? absl::StrCat(net->Address(s), ":", kEmulatedShardPort)
                                       : absl::StrCat("127.0.0.1:", ports[s]));
  }
  if (net == nullptr) ports.erase(ports.begin(), ports.begin() + config.num_servers());
  job->config.cluster.servers = addresses;  // where this run's shards are (tessera status)
  std::vector<std::string> common = {"--config", options.config_path};
  std::vector<std::string> standbys;
  if (options.replicas > 0) {
    // On an emulated network the standbys' hosts follow the workers'.
    const size_t first_standby_host = config.num_servers() + config.cluster.workers;
    if (net != nullptr) {
      for (uint32_t s = 0; s < config.num_servers(); ++s) {
        standbys.push_back(
            absl::StrCat(net->Address(first_standby_host + s), ":", kEmulatedShardPort));
      }
    } else {
      for (int port : standby_ports) standbys.push_back(absl::StrCat("127.0.0.1:", port));
    }
    std::string etcd = config.cluster.etcd;
    if (etcd.empty()) {
      std::optional<size_t> etcd_host;
      if (net != nullptr) etcd_host = first_standby_host + config.num_servers();
      TESSERA_RETURN_IF_ERROR(StartEtcd(job, etcd_host, etcd_ports));
      etcd = job->etcd;
      // This etcd grants leases of 1 s: a lost primary is replaced sooner.
      common.insert(common.end(), {"--set", "server.lease_ttl_s=1"});
    }
    job->config.cluster.standbys = standbys;
    job->config.cluster.etcd = etcd;
    common.insert(common.end(), {"--set", "cluster.etcd=" + etcd});
  }
  for (const auto& o : options.overrides) common.insert(common.end(), {"--set", o});
  common.insert(common.end(),
                {"--set", absl::StrCat("cluster.servers=[", absl::StrJoin(addresses, ","), "]")});
  if (!standbys.empty()) {
    common.insert(common.end(), {"--set", absl::StrCat("cluster.standbys=[",
                                                       absl::StrJoin(standbys, ","), "]")});
  }
  for (const auto& o : server_sets) common.insert(common.end(), {"--set", o});
  // /dev/shm is one for every namespace: shared memory would bypass the links.
  if (net != nullptr) common.insert(common.end(), {"--set", "worker.shared_memory=off"});
  std::string token_file = config.security.token_file;
  if (DrawsToken(options, config)) {
    token_file = (fs::path(job->dir) / "token").string();
    TESSERA_RETURN_IF_ERROR(WriteSecret(token_file, 32, "the job token"));
    common.insert(common.end(), {"--set", "security.token_file=" + token_file});
  }
  // Where this run's shards listen and the token that admits a call, for
  // tools that join the running job (tessera status, a debugging client).
  std::ofstream(fs::path(job->dir) / "cluster.json")
      << nlohmann::json{{"servers", addresses}, {"token_file", token_file}}.dump(2) << "\n";
  // Standbys first: a standby that starts with the job follows its primary
  // from the first mutation (one that starts later joins it).
  for (uint32_t s = 0; s < standbys.size(); ++s) {
    Child c{absl::StrCat("standby-", s), true};
    c.log_path = absl::StrCat(job->dir, "/", c.name, ".log");
    c.args = common;
    c.args.insert(c.args.end(), {"--shard", std::to_string(s), "--standby"});
    c.restart_args = c.args;
    AddMetricsPort(options, "server", ports, &c);
    if (net != nullptr) {
      const size_t host = config.num_servers() + config.cluster.workers + s;
      c.netns = net->Namespace(host);
      c.metrics_host = net->Address(host);
    }
    job->children.push_back(c);
  }
  for (uint32_t s = 0; s < config.num_servers(); ++s) {
    Child c{absl::StrCat("server-", s), true};
    c.log_path = absl::StrCat(job->dir, "/", c.name, ".log");
    c.restart_args = common;
    c.restart_args.insert(c.restart_args.end(), {"--shard", std::to_string(s)});
    c.args = c.restart_args;
    if (job->resumed_from >= 0) {
      // Only the first start must restore (the common cut, under BSP); a
      // later restart takes the newest checkpoint the shard wrote since.
      c.args.insert(c.args.end(), {"--set", "checkpoint.restore=required"});
      if (job->pin_resume_clock) {
        c.args.insert(c.args.end(),
                      {"--set", absl::StrCat("checkpoint.restore_clock=", job->resumed_from)});
      }
    }
    AddMetricsPort(options, "server", ports, &c);
    if (net != nullptr) c.netns = net->Namespace(s), c.metrics_host = net->Address(s);
    job->children.push_back(c);
  }
  for (uint32_t r = 0; r < config.cluster.workers; ++r) {
    Child c{absl::StrCat("worker-", r), false};
    c.log_path = absl::StrCat(job->dir, "/", c.name, ".log");
    const std::string metrics = absl::StrCat(job->dir, "/metrics-rank", r, ".jsonl");
    if (job->resumed_from < 0) std::remove(metrics.c_str());
    // The rank's session, kept for its restarts: a restarted worker is the
    // same holder and takes its rank back at once, while no other process
    // can take it (security.rank_lease_s never).
    const std::string session = absl::StrCat(job->dir, "/session-rank", r);
    TESSERA_RETURN_IF_ERROR(WriteSecret(session, 16, "a worker's session"));
    c.args = common;
    c.args.insert(c.args.end(),
                  {"--rank", std::to_string(r), "--set", "security.session_file=" + session, "--set",
                   "logging.metrics_file=" + metrics, "--set",
                   // The live line reads the metrics: at least one a second.
                   absl::StrCat("worker.progress_interval_s=",
                                std::min(config.worker.progress_interval_s, 1.0)),
                   "--result", absl::StrCat(job->dir, "/result-rank", r, ".json")});
    c.restart_args = c.args;
    AddMetricsPort(options, "worker", ports, &c);
    if (net != nullptr) {
      c.netns = net->Namespace(config.num_servers() + r);
      c.metrics_host = net->Address(config.num_servers() + r);
    }
    job->children.push_back(c);
  }
  if (options.metrics) {
    // Prometheus' file-based service discovery reads this list as it is.
    nlohmann::json targets = nlohmann::json::array();
    for (const Child& c : job->children) {
      targets.push_back({{"targets", {absl::StrCat(c.metrics_host, ":", c.metrics_port)}},
                         {"labels", {{"daemon", c.name}}}});
    }
    std::ofstream(fs::path(job->dir) / "metrics_targets.json") << targets.dump(2) << "\n";
  }
  return absl::OkStatus();
}

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
