// The daemons started exactly as the rendered manifests start them — the
// same command, args and environment, pod-like identity (POD_NAME
// tessera-server-N, JOB_COMPLETION_INDEX), the job file from the ConfigMap —
// with the DNS pattern mapped to loopback addresses. Workers start first and
// must wait for their servers; the run completes and the servers exit 0.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <thread>

#include "tests/deploy/rendered.h"

namespace tessera {
namespace {

struct Daemon {
  std::string name;
  pid_t pid = -1;
  int exit_code = -1;
};

// The container's command line and environment, as the kubelet would run it.
struct PodSpec {
  std::vector<std::string> argv;
  std::vector<std::string> env;
};

PodSpec FromContainer(const YAML::Node& c, const std::map<std::string, std::string>& field_refs) {
  PodSpec spec;
  for (const auto& a : c["command"]) spec.argv.push_back(a.as<std::string>());
  for (const auto& a : c["args"]) spec.argv.push_back(a.as<std::string>());
  for (const auto& e : c["env"]) {
    std::string name = e["name"].as<std::string>();
    std::string value =
        e["value"] ? e["value"].as<std::string>()
                   : field_refs.at(e["valueFrom"]["fieldRef"]["fieldPath"].as<std::string>());
    spec.env.push_back(name + "=" + value);
  }
  return spec;
}

pid_t Start(PodSpec spec, const std::string& log) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  FILE* f = std::freopen(log.c_str(), "w", stderr);
  (void)f;
  std::vector<char*> argv, envp;
  for (auto& a : spec.argv) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : spec.env) envp.push_back(e.data());
  envp.push_back(nullptr);
  execve(argv[0], argv.data(), envp.data());
  _exit(127);
}

// A port that is free on every address in `hosts` right now (the kernel
// picks it on the first; getpid() is no help inside the test sandbox's PID
// namespace, where concurrent runs share small pids).
int FreePortOn(const std::vector<std::string>& hosts) {
  for (int attempt = 0; attempt < 50; ++attempt) {
    std::vector<int> fds;
    int port = 0;
    bool ok = true;
    for (const std::string& host : hosts) {
      int fd = socket(AF_INET, SOCK_STREAM, 0);
      fds.push_back(fd);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_port = htons(port);
      inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
      if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
        ok = false;
        break;
      }
      socklen_t len = sizeof(addr);
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
      port = ntohs(addr.sin_port);
    }
    for (int fd : fds) close(fd);
    if (ok) return port;
  }
  FAIL("no port free on every shard address");
  return 0;
}

TEST_CASE("daemons started as the manifests start them train to the end; servers exit 0") {
  Rendered r = Render("cpu");
  const std::string dir = TempPath("pods");
  int status;
  Shell("rm -rf " + dir + " && mkdir -p " + dir, &status);
  const std::string job_path = dir + "/job.yaml";
  std::ofstream(job_path) << JobTextOf(r);
  JobConfig job = JobOf(r);
  const std::string ns = r.by_kind.at("Namespace")["metadata"]["name"].as<std::string>();
  std::vector<std::string> hosts;
  for (uint32_t s = 0; s < job.num_servers(); ++s)
    hosts.push_back("127.1." + std::to_string(s) + ".1");
  const std::string port = std::to_string(FreePortOn(hosts));
  std::string metrics_port;
  do {
    metrics_port = std::to_string(FreePortOn(hosts));
  } while (metrics_port == port);
  // Cluster DNS mapped to loopback: shard i at 127.1.i.1.
  const std::vector<std::string> local = {"--set", "cluster.server_pattern=127.1.{i}.1:" + port,
                                          "--set", "data.dataset=synthetic",
                                          "--set", "data.synthetic_train=2048",
                                          "--set", "data.synthetic_test=512",
                                          "--set", "model.layers=[784,32,10]",
                                          "--set", "training.epochs=1",
                                          "--set", "worker.connect_timeout_ms=60000",
                                          // Each server pod serves GET /metrics on its own
                                          // address; workers, which share this host's one
                                          // address, serve none here.
                                          "--set", "server.metrics_port=" + metrics_port,
                                          "--set", "worker.metrics_port=0",
                                          "--set", "worker.metrics_linger_s=0",
                                          // The pods' PersistentVolumeClaim: this test's folder.
                                          "--set", "checkpoint.dir=" + dir + "/checkpoints"};
  // Rewrites what points into the pod's filesystem to this test's folder.
  auto localize = [&](PodSpec spec, const std::string& binary) {
    spec.argv[0] = Runfile(binary);
    for (auto& a : spec.argv) {
      if (a == "/etc/tessera/job.yaml") a = job_path;
      if (a.find("/tmp/") != std::string::npos) a.replace(a.find("/tmp/"), 5, dir + "/");
    }
    spec.argv.insert(spec.argv.end(), local.begin(), local.end());
    return spec;
  };

  std::vector<Daemon> daemons;
  const YAML::Node worker = r.by_kind.at("Job")["spec"]["template"]["spec"]["containers"][0];
  for (uint32_t rank = 0; rank < job.cluster.workers; ++rank) {
    PodSpec spec =
        localize(FromContainer(worker, {{"metadata.namespace", ns}}), "worker/tessera-worker");
    spec.env.push_back("JOB_COMPLETION_INDEX=" +
                       std::to_string(rank));  // set by the Job controller
    spec.env.push_back("HOSTNAME=tessera-worker-" + std::to_string(rank) + "-abcde");
    // Each worker writes its own result file (pods have their own /tmp).
    for (auto& a : spec.argv) {
      if (a == dir + "/result.json") a = dir + "/result-" + std::to_string(rank) + ".json";
      if (a.find(dir + "/metrics.jsonl") != std::string::npos) a += std::to_string(rank);
    }
    daemons.push_back({"worker-" + std::to_string(rank),
                       Start(spec, dir + "/worker-" + std::to_string(rank) + ".log")});
  }
  std::this_thread::sleep_for(std::chrono::seconds(1));  // the workers are waiting now
  const YAML::Node server =
      r.by_kind.at("StatefulSet")["spec"]["template"]["spec"]["containers"][0];
  for (uint32_t s = 0; s < job.num_servers(); ++s) {
    const std::string pod = "tessera-server-" + std::to_string(s);
    PodSpec spec =
        localize(FromContainer(server, {{"metadata.name", pod}, {"metadata.namespace", ns}}),
                 "server/tessera-server");
    spec.env.push_back("HOSTNAME=" + pod);
    daemons.push_back({pod, Start(spec, dir + "/" + pod + ".log")});
  }

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  size_t running = daemons.size();
  while (running > 0 && std::chrono::steady_clock::now() < deadline) {
    for (auto& d : daemons) {
      if (d.exit_code >= 0) continue;
      int st;
      if (waitpid(d.pid, &st, WNOHANG) == d.pid) {
        d.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        --running;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (auto& d : daemons) {
    if (d.exit_code < 0) {
      kill(d.pid, SIGKILL);
      waitpid(d.pid, nullptr, 0);
    }
    std::ifstream log(dir + "/" + d.name + ".log");
    std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
    INFO(d.name << " log:\n" << text);
    CHECK(d.exit_code == 0);
    if (d.name.rfind("tessera-server-", 0) == 0) {
      // The shard index came from POD_NAME; the address from the mapped pattern.
      const std::string s = d.name.substr(15);
      CHECK(text.find("shard " + s + "/2 ready on 127.1." + s + ".1:" + port) != std::string::npos);
      CHECK(text.find("all 2 workers finished; exiting") != std::string::npos);
      // The last checkpoint went to the claim (here: the test's folder).
      CHECK(text.find("checkpoint of clock") != std::string::npos);
      CHECK(text.find(dir + "/checkpoints/shard-" + s + "/ckpt-") != std::string::npos);
    }
  }
  std::ifstream result(dir + "/result-0.json");
  std::string text((std::istreambuf_iterator<char>(result)), std::istreambuf_iterator<char>());
  CHECK(text.find("\"test_accuracy\"") != std::string::npos);
}

}  // namespace
}  // namespace tessera
