// A real tessera-server under the common default of 1,024 open files, with
// 2,000 idle TCP connections to its gRPC port and 2,000 to its metrics port
// (docs/RELIABILITY.md, hostile input): the shard raises its own limit,
// a worker's Register and a scrape still succeed within their deadlines.
#include <arpa/inet.h>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "common/config.h"
#include "proto/tessera.grpc.pb.h"
#include "tests/e2e/e2e_fixtures.h"
#include "tests/metrics_text.h"
#include "tests/server/test_session.h"

namespace tessera {
namespace {

constexpr int kIdle = 2000;  // per port

const char kJob[] = R"(
name: descriptors
cluster: {servers: ['127.0.0.1:1'], workers: 1}
consistency: {mode: asp}
model:
  type: tables
  tables: [{name: w, kind: dense, size: 64}]
optimizer: {type: sgd, lr: 0.5}
)";

// tessera-server with a soft limit of 1,024 open files; stderr to `log`.
pid_t StartShard(const std::string& config, int metrics_port, const std::string& log) {
  const std::string binary = Runfile("server/tessera-server");
  const std::string metrics = "server.metrics_port=" + std::to_string(metrics_port);
  const pid_t pid = fork();
  if (pid != 0) return pid;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = 1024;
  setrlimit(RLIMIT_NOFILE, &limit);
  if (std::freopen(log.c_str(), "w", stderr) == nullptr) _exit(127);
  execl(binary.c_str(), binary.c_str(), "--config", config.c_str(), "--shard", "0", "--listen", "127.0.0.1:0",
        "--set", metrics.c_str(), static_cast<char*>(nullptr));
  _exit(127);
}

// An idle TCP connection to 127.0.0.1:port, or -1 when none was made
// within 2 s.
int IdleConnection(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval two_seconds{2, 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &two_seconds, sizeof(two_seconds));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

TEST_CASE("2,000 idle connections per port under a 1,024 limit: Register and a scrape succeed") {
  // This process holds the idle sockets: it needs about 4,100 descriptors.
  rlimit limit{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &limit) == 0);
  if (limit.rlim_max < 2 * kIdle + 256) {
    WARN("SKIPPED: the hard limit on open files (" << limit.rlim_max << ") is below "
                                                   << 2 * kIdle + 256);
    return;
  }
  limit.rlim_cur = limit.rlim_max;
  REQUIRE(setrlimit(RLIMIT_NOFILE, &limit) == 0);

  const std::string config = TempDir("descriptors.yaml");
  std::ofstream(config) << kJob;
  const std::string log = TempDir("descriptors-server.log");
  const int metrics_port = FreeLoopbackPort();
  const pid_t shard = StartShard(config, metrics_port, log);
  REQUIRE(shard > 0);
  int port = 0;
  for (int i = 0; i < 200 && port == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const std::string text = Read(log);
    const size_t at = text.find("(port ");
    if (at != std::string::npos) port = std::atoi(text.c_str() + at + 6);
  }
  INFO(Read(log));
  REQUIRE(port > 0);
  CHECK(Read(log).find("open files: soft limit 1024 raised to") != std::string::npos);

  const auto opened = std::chrono::steady_clock::now();
  std::vector<int> idle;
  for (int target : {port, metrics_port}) {
    for (int i = 0; i < kIdle; ++i) {
      const int fd = IdleConnection(target);
      if (fd < 0) break;
      idle.push_back(fd);
    }
  }
  CHECK(idle.size() == 2 * kIdle);

  // A worker's call, as the worker makes it, within its deadline.
  auto job = ParseJobConfig(kJob, {});
  REQUIRE(job.ok());
  auto stub = v1::Shard::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::RegisterRequest request;
  request.set_session(SessionOf(0));
  request.set_job(job->name);
  request.set_job_layout(job->LayoutText());
  v1::RegisterResponse response;
  const grpc::Status registered = stub->Register(&ctx, request, &response);
  INFO(registered.error_message());
  CHECK(registered.ok());

  // A scrape within Prometheus' default timeout (10 s).
  httplib::Client scraper("127.0.0.1", metrics_port);
  scraper.set_connection_timeout(10);
  scraper.set_read_timeout(10);
  auto scraped = scraper.Get("/metrics");
  REQUIRE(scraped);
  CHECK(scraped->status == 200);
  CHECK(scraped->body.find("tessera_shard_") != std::string::npos);

  // Connections that never finish the HTTP/2 handshake are closed after
  // 10 s (GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS), the metrics port's after
  // 2 s without a request: the descriptors come back without a restart.
  std::this_thread::sleep_until(opened + std::chrono::seconds(12));
  // (gRPC first sends its SETTINGS, then a GOAWAY: read to the end.)
  size_t closed[2] = {0, 0};
  for (size_t i = 0; i < idle.size(); ++i) {
    char buffer[4096];
    ssize_t n;
    while ((n = recv(idle[i], buffer, sizeof(buffer), MSG_DONTWAIT)) > 0) {
    }
    if (n == 0 || (n < 0 && errno != EAGAIN)) ++closed[i < kIdle ? 0 : 1];
  }
  CHECK(closed[0] == kIdle);
  CHECK(closed[1] == kIdle);

  for (int fd : idle) close(fd);
  kill(shard, SIGTERM);
  int status = 0;
  REQUIRE(waitpid(shard, &status, 0) == shard);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

}  // namespace
}  // namespace tessera
