#include "launcher/launcher.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/config.h"

namespace tessera {
namespace {

std::atomic<int> g_signal{0};

// How long workers may keep running after a server has exited 0 (servers exit
// when every worker has called Finish, just before the workers' processes end).
constexpr double kWorkerExitGraceS = 10.0;

void OnSignal(int sig) { g_signal = sig; }

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Child {
  std::string name;  // "server-0", "worker-1"
  bool is_server = false;
  pid_t pid = -1;
  bool running = false;
  int exit_code = -1;  // 128 + signal when killed
  std::string log_path;
};

// A port that is free now, chosen by the kernel.
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

std::string Dirname(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

// The daemon binary `name`, looked for next to this executable (an install)
// and in the Bazel output tree (bazel-bin/launcher/ -> bazel-bin/<dir>/).
std::string FindBinary(const std::string& name, const std::string& bazel_dir) {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  std::string dir = n > 0 ? Dirname(std::string(buf, n)) : ".";
  for (const std::string& candidate : {dir + "/" + name, dir + "/../" + bazel_dir + "/" + name}) {
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return dir + "/" + name;
}

pid_t Spawn(const std::string& binary, const std::vector<std::string>& args,
            const std::string& log_path) {
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid != 0) return pid;
  // Child: die with the launcher, whatever kills it.
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) _exit(1);
  signal(SIGINT, SIG_IGN);  // Ctrl-C goes to the launcher, which stops us in order
  int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) {
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    close(fd);
  }
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(binary.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  execv(binary.c_str(), argv.data());
  std::fprintf(stderr, "cannot execute %s: %s\n", binary.c_str(), strerror(errno));
  _exit(127);
}

std::string LastLine(const std::string& path) {
  std::ifstream in(path);
  std::string line, last;
  while (std::getline(in, line)) {
    if (!line.empty()) last = line;
  }
  return last;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The number after "key": in a flat JSON object; `fallback` when absent.
double JsonNumber(const std::string& json, const std::string& key, double fallback = 0) {
  size_t at = json.find("\"" + key + "\":");
  if (at == std::string::npos) return fallback;
  return std::strtod(json.c_str() + at + key.size() + 3, nullptr);
}

// The string after "key": in a flat JSON object (no escapes inside); `fallback` when absent.
std::string JsonString(const std::string& json, const std::string& key,
                       const std::string& fallback = "") {
  size_t at = json.find("\"" + key + "\": \"");
  if (at == std::string::npos) return fallback;
  at += key.size() + 5;
  size_t end = json.find('"', at);
  return end == std::string::npos ? fallback : json.substr(at, end - at);
}

// Reaps children that exited; returns false when none is running.
bool Reap(std::vector<Child>& children) {
  bool any = false;
  for (Child& c : children) {
    if (!c.running) continue;
    int status;
    pid_t r = waitpid(c.pid, &status, WNOHANG);
    if (r == c.pid) {
      c.running = false;
      c.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    } else {
      any = true;
    }
  }
  return any;
}

// SIGTERM to every running child; SIGKILL to those still running after grace.
void StopAll(std::vector<Child>& children, double grace_s) {
  for (Child& c : children) {
    if (c.running) kill(c.pid, SIGTERM);
  }
  const double deadline = Now() + grace_s;
  while (Reap(children) && Now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (Child& c : children) {
    if (c.running) {
      kill(c.pid, SIGKILL);
      waitpid(c.pid, nullptr, 0);
      c.running = false;
      c.exit_code = 128 + SIGKILL;
    }
  }
}

// One line with every worker's latest progress record.
std::string ProgressLine(const std::string& dir, uint32_t workers, double elapsed) {
  std::string line = absl::StrFormat("[%5.0fs]", elapsed);
  for (uint32_t r = 0; r < workers; ++r) {
    std::string last = LastLine(absl::StrCat(dir, "/metrics-rank", r, ".jsonl"));
    if (last.find("\"progress\"") == std::string::npos) {
      line += absl::StrFormat(" | w%d %s", r,
                              last.find("\"final\"") != std::string::npos ? "done" : "starting");
      continue;
    }
    line += absl::StrFormat(" | w%d ep %.0f step %.0f/%.0f loss %.3f %.0f/s", r,
                            JsonNumber(last, "epoch"), JsonNumber(last, "step"),
                            JsonNumber(last, "steps_per_epoch"), JsonNumber(last, "loss"),
                            JsonNumber(last, "samples_per_second"));
  }
  return line;
}

void WriteSummary(const JobConfig& config, const std::string& dir, double wall_seconds,
                  std::string* headline) {
  std::string metrics;
  double samples = 0, train_seconds = 0, loss_sum = 0;
  std::string rank0;
  for (uint32_t r = 0; r < config.cluster.workers; ++r) {
    metrics += ReadFile(absl::StrCat(dir, "/metrics-rank", r, ".jsonl"));
    std::string result = ReadFile(absl::StrCat(dir, "/result-rank", r, ".json"));
    if (r == 0) rank0 = result;
    samples += JsonNumber(result, "samples");
    train_seconds = std::max(train_seconds, JsonNumber(result, "train_seconds"));
    loss_sum += JsonNumber(result, "train_loss");
  }
  std::ofstream(dir + "/metrics.jsonl") << metrics;
  const double accuracy = JsonNumber(rank0, "test_accuracy", -1);
  const double rate = samples / std::max(train_seconds, 1e-9);
  std::ofstream(dir + "/summary.json") << absl::StrFormat(
      "{\n  \"job\": \"%s\",\n  \"test_accuracy\": %.5f,\n  \"test_loss\": %.5f,\n"
      "  \"train_loss\": %.5f,\n  \"wall_seconds\": %.3f,\n  \"train_seconds\": %.3f,\n"
      "  \"samples_per_second\": %.1f,\n  \"mode\": \"%s\",\n  \"staleness\": %d,\n"
      "  \"servers\": %d,\n  \"workers\": %d,\n  \"epochs\": %d,\n  \"batch_size\": %d,\n"
      "  \"optimizer\": \"%s\",\n  \"device\": \"%s\"\n}\n",
      config.name, accuracy, JsonNumber(rank0, "test_loss"), loss_sum / config.cluster.workers,
      wall_seconds, train_seconds, rate, ModeName(config.consistency.mode),
      config.consistency.staleness, config.num_servers(), config.cluster.workers,
      config.training.epochs, config.training.batch_size, config.optimizer.type,
      JsonString(rank0, "device", "unknown"));
  *headline = absl::StrFormat(
      "test accuracy %.4f | train loss %.4f | %.1f s wall | %.0f samples/s | %s%s, %d servers, "
      "%d workers",
      accuracy, loss_sum / config.cluster.workers, wall_seconds, rate,
      ModeName(config.consistency.mode),
      config.consistency.mode == ConsistencyMode::kSsp
          ? absl::StrCat(" s=", config.consistency.staleness)
          : "",
      config.num_servers(), config.cluster.workers);
}

}  // namespace

int RunJob(const LaunchOptions& options) {
  auto config = LoadJobConfig(options.config_path, options.overrides);
  if (!config.ok()) {
    std::fprintf(stderr, "tessera run: %s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  std::string dir = options.out_dir;
  if (dir.empty()) {
    char stamp[32];
    std::time_t t = std::time(nullptr);
    std::strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", std::localtime(&t));
    dir = absl::StrCat("runs/", config->name, "-", stamp);
  }
  if (std::system(("mkdir -p '" + dir + "'").c_str()) != 0) {
    std::fprintf(stderr, "tessera run: cannot create %s\n", dir.c_str());
    return 2;
  }
  const std::string server_bin = options.server_binary.empty()
                                     ? FindBinary("tessera-server", "server")
                                     : options.server_binary;
  const std::string worker_bin = options.worker_binary.empty()
                                     ? FindBinary("tessera-worker", "worker")
                                     : options.worker_binary;

  std::vector<std::string> addresses;
  for (uint32_t s = 0; s < config->num_servers(); ++s) {
    addresses.push_back(absl::StrCat("127.0.0.1:", FreePort()));
  }
  std::vector<std::string> common = {"--config", options.config_path};
  for (const auto& o : options.overrides) common.insert(common.end(), {"--set", o});
  common.insert(common.end(),
                {"--set", absl::StrCat("cluster.servers=[", absl::StrJoin(addresses, ","), "]")});

  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  g_signal = 0;

  std::vector<Child> children;
  const double start = Now();
  for (uint32_t s = 0; s < config->num_servers(); ++s) {
    Child c{absl::StrCat("server-", s), true};
    c.log_path = absl::StrCat(dir, "/", c.name, ".log");
    std::vector<std::string> args = common;
    args.insert(args.end(), {"--shard", std::to_string(s)});
    c.pid = Spawn(server_bin, args, c.log_path);
    c.running = true;
    children.push_back(c);
  }
  for (uint32_t r = 0; r < config->cluster.workers; ++r) {
    Child c{absl::StrCat("worker-", r), false};
    c.log_path = absl::StrCat(dir, "/", c.name, ".log");
    std::string metrics = absl::StrCat(dir, "/metrics-rank", r, ".jsonl");
    std::remove(metrics.c_str());
    std::vector<std::string> args = common;
    args.insert(args.end(),
                {"--rank", std::to_string(r), "--set", "logging.metrics_file=" + metrics, "--set",
                 "worker.progress_interval_s=1", "--result",
                 absl::StrCat(dir, "/result-rank", r, ".json")});
    c.pid = Spawn(worker_bin, args, c.log_path);
    c.running = true;
    children.push_back(c);
  }
  std::printf("tessera run: %s: %u servers, %u workers, %s%s; logs in %s\n", config->name.c_str(),
              config->num_servers(), config->cluster.workers, ModeName(config->consistency.mode),
              config->consistency.mode == ConsistencyMode::kSsp
                  ? absl::StrCat(" staleness ", config->consistency.staleness).c_str()
                  : "",
              dir.c_str());
  std::fflush(stdout);

  double last_display = 0;
  double server_exit_seen = 0;  // when a server was first seen to have exited 0
  std::string failure;
  while (true) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    Reap(children);
    if (g_signal != 0) {
      if (options.live) std::printf("\n");
      std::printf("tessera run: interrupted; stopping every daemon\n");
      StopAll(children, 5.0);
      return 130;
    }
    bool workers_running = false, workers_done = true;
    for (const Child& c : children) {
      if (c.is_server) continue;
      workers_running |= c.running;
      workers_done &= !c.running && c.exit_code == 0;
    }
    for (const Child& c : children) {
      if (c.running) continue;
      if (c.exit_code == 0 && !c.is_server) continue;      // a worker that finished
      if (c.exit_code == 0 && !workers_running) continue;  // a server after the workers
      if (c.exit_code == 0) {
        // Servers exit once every worker has called Finish, which a worker
        // does just before its process ends: give the workers a moment.
        if (server_exit_seen == 0) server_exit_seen = Now();
        if (Now() - server_exit_seen < kWorkerExitGraceS) continue;
        failure = absl::StrCat(c.name, " exited while workers were still running");
      } else {
        failure = absl::StrCat(c.name, " failed (exit ", c.exit_code, "): ", LastLine(c.log_path));
      }
      break;
    }
    if (!failure.empty()) break;
    if (workers_done) break;
    const double now = Now();
    if (now - last_display >= (options.live ? 1.0 : 5.0)) {
      std::string line = ProgressLine(dir, config->cluster.workers, now - start);
      if (options.live) {
        std::printf("\r\033[K%s", line.c_str());
      } else {
        std::printf("%s\n", line.c_str());
      }
      std::fflush(stdout);
      last_display = now;
    }
  }
  if (options.live) std::printf("\n");
  if (!failure.empty()) {
    StopAll(children, 5.0);
    std::fprintf(stderr, "tessera run: %s\ntessera run: stopped every other daemon; logs in %s\n",
                 failure.c_str(), dir.c_str());
    return 1;
  }
  // Servers exit by themselves once every worker has finished.
  const double deadline = Now() + 10.0;
  while (Reap(children) && Now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  StopAll(children, 5.0);
  std::string headline;
  WriteSummary(*config, dir, Now() - start, &headline);
  std::printf("tessera run: %s\ntessera run: summary in %s/summary.json\n", headline.c_str(),
              dir.c_str());
  return 0;
}

}  // namespace tessera
