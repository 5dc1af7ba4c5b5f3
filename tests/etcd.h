// A single-member etcd (Debian's etcd-server) for tests, on loopback ports of
// its own, stopped (SIGKILL) with the object. Tests that need it skip,
// saying so, where kEtcd does not exist (EtcdMissing).
//
//   if (EtcdMissing()) return;
//   Etcd etcd;
//   ... Election::Create(etcd.endpoint(), ...) ...
//
// Threading: one owner.
#ifndef TESSERA_TESTS_ETCD_H_
#define TESSERA_TESTS_ETCD_H_

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <httplib.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <thread>
#include <cstdlib>
#include <string>

#include "tests/metrics_text.h"

namespace tessera {

inline constexpr char kEtcd[] = "/usr/bin/etcd";

// True, with a visible warning, where no etcd binary is installed.
inline bool EtcdMissing() {
  if (access(kEtcd, X_OK) == 0) return false;
  WARN("SKIPPED: no " << kEtcd << " (apt-get install etcd-server)");
  return true;
}

class Etcd {
 public:
  // `fast`: a 50 ms heartbeat and 250 ms election timeout, so that leases of
  // 1 s are granted (etcd's shortest lease is 1.5 election timeouts).
  explicit Etcd(bool fast = false) {
    const char* tmp = std::getenv("TEST_TMPDIR");
    dir_ = std::string(tmp ? tmp : "/tmp") + "/etcd-" + std::to_string(getpid()) + "-" +
           std::to_string(++count());
    client_ = FreeLoopbackPort();
    const int peer = FreeLoopbackPort();
    const std::string client_url = "http://127.0.0.1:" + std::to_string(client_);
    const std::string peer_url = "http://127.0.0.1:" + std::to_string(peer);
    const std::string log = dir_ + ".log";
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (std::freopen(log.c_str(), "w", stderr) == nullptr) _exit(127);
      const char* heartbeat = fast ? "50" : "100";
      const char* election = fast ? "250" : "1000";
      execl(kEtcd, kEtcd, "--data-dir", dir_.c_str(), "--listen-client-urls", client_url.c_str(),
            "--advertise-client-urls", client_url.c_str(), "--listen-peer-urls", peer_url.c_str(),
            "--initial-advertise-peer-urls", peer_url.c_str(), "--initial-cluster",
            ("default=" + peer_url).c_str(), "--heartbeat-interval", heartbeat,
            "--election-timeout", election, static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  ~Etcd() { Stop(); }
  Etcd(const Etcd&) = delete;
  Etcd& operator=(const Etcd&) = delete;

  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  std::string endpoint() const { return "127.0.0.1:" + std::to_string(client_); }
  // Blocks until etcd answers GET /health (a few hundred ms after start).
  void WaitReady() const {
    for (int i = 0; i < 100; ++i) {
      httplib::Client client("127.0.0.1", client_);
      client.set_connection_timeout(0, 200'000);
      auto res = client.Get("/health");
      if (res && res->status == 200) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    FAIL("etcd at " << endpoint() << " did not answer within 10 s");
  }

 private:
  static int& count() {
    static int n = 0;
    return n;
  }
  std::string dir_;
  int client_ = 0;
  pid_t pid_ = -1;
};

}  // namespace tessera

#endif  // TESSERA_TESTS_ETCD_H_
