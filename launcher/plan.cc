// The launcher's plan of a job (launcher/plan.h). Split from launcher.cc,
// which starts and supervises what is planned here.
#include "launcher/plan.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include <httplib.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/secret.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "server/checkpoint.h"
#include "worker/held_push.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

// checkpoint.every_seconds when the config sets neither it nor every_clocks.
constexpr int kDefaultCheckpointSeconds = 10;

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

std::string DefaultOutDir(const JobConfig& config) {
  char stamp[32];
  const std::time_t t = std::time(nullptr);
  std::strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", std::localtime(&t));
  return absl::StrCat("runs/", config.name, "-", stamp);
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

}  // namespace

Job::~Job() {
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

bool DrawsToken(const LaunchOptions& options, const JobConfig& config) {
  return options.token && config.security.token_file.empty();
}

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

std::string FindBinary(const std::string& name, const std::string& bazel_dir) {
  std::error_code ec;
  const fs::path dir = fs::read_symlink("/proc/self/exe", ec).parent_path();
  for (const fs::path& candidate : {dir / name, dir / ".." / bazel_dir / name}) {
    if (access(candidate.c_str(), X_OK) == 0) return candidate.string();
  }
  return (dir / name).string();
}

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

}  // namespace tessera
