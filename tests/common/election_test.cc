// Election against a real etcd (Debian's etcd-server), started by the test on
// loopback ports of its own: one primary at a time, a term that ends when its
// lease does, terms that only grow, a resignation handed over at once, and
// etcd gone said plainly. Skips, saying so, where no etcd binary exists.
#include "common/election.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "tests/metrics_text.h"

namespace tessera {
namespace {

constexpr char kEtcd[] = "/usr/bin/etcd";

// A single-member etcd on loopback, stopped (SIGKILL) with this object.
class Etcd {
 public:
  Etcd() {
    const char* tmp = std::getenv("TEST_TMPDIR");
    dir_ = std::string(tmp ? tmp : "/tmp") + "/etcd-" + std::to_string(getpid());
    client_ = FreeLoopbackPort();
    const int peer = FreeLoopbackPort();
    const std::string client_url = "http://127.0.0.1:" + std::to_string(client_);
    const std::string peer_url = "http://127.0.0.1:" + std::to_string(peer);
    const std::string log = dir_ + ".log";
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (std::freopen(log.c_str(), "w", stderr) == nullptr) _exit(127);
      execl(kEtcd, kEtcd, "--data-dir", dir_.c_str(), "--listen-client-urls", client_url.c_str(),
            "--advertise-client-urls", client_url.c_str(), "--listen-peer-urls", peer_url.c_str(),
            "--initial-advertise-peer-urls", peer_url.c_str(), "--initial-cluster",
            ("default=" + peer_url).c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  ~Etcd() { Stop(); }
  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  std::string endpoint() const { return "127.0.0.1:" + std::to_string(client_); }

 private:
  std::string dir_;
  int client_ = 0;
  pid_t pid_ = -1;
};

std::unique_ptr<Election> Candidate(const Etcd& etcd, const std::string& name) {
  auto e = Election::Create(etcd.endpoint(), "/tessera/job/shard-0/primary", name, /*ttl_s=*/2);
  REQUIRE(e.ok());
  return *std::move(e);
}

// Waits until etcd answers (a few hundred ms after start).
void WaitReady(Election& e) {
  for (int i = 0; i < 100; ++i) {
    absl::StatusOr<Election::Holder> h = e.Current();
    if (h.ok() || absl::IsNotFound(h.status())) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  FAIL("etcd did not answer within 10 s");
}

TEST_CASE("one primary at a time; a term ends with its lease; terms only grow") {
  if (access(kEtcd, X_OK) != 0) {
    WARN("SKIPPED: no " << kEtcd << " (apt-get install etcd-server)");
    return;
  }
  Etcd etcd;
  auto a = Candidate(etcd, "server-0a");
  auto b = Candidate(etcd, "server-0b");
  WaitReady(*a);
  CHECK(absl::IsNotFound(a->Current().status()));

  absl::StatusOr<int64_t> first = a->Campaign();
  REQUIRE(first.ok());
  CHECK(*first > 0);
  CHECK(a->term() == *first);
  CHECK(*a->Campaign() == *first);  // again while primary: the same term
  absl::StatusOr<int64_t> refused = b->Campaign();
  CHECK(absl::IsAlreadyExists(refused.status()));
  CHECK(refused.status().message() ==
        "'server-0a' is primary, term " + std::to_string(*first));
  CHECK(b->term() == 0);
  REQUIRE(a->Current().ok());
  CHECK(a->Current()->name == "server-0a");
  CHECK(a->Current()->term == *first);

  // Renewed, the term lasts past its TTL.
  for (int i = 0; i < 5; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    REQUIRE(a->Renew().ok());
  }
  CHECK(absl::IsAlreadyExists(b->Campaign().status()));

  // Not renewed (a paused or cut-off primary), it ends; then another wins a
  // larger term, and the old holder learns its term is over.
  std::this_thread::sleep_for(std::chrono::milliseconds(3500));
  absl::StatusOr<int64_t> second = b->Campaign();
  REQUIRE(second.ok());
  CHECK(*second > *first);
  const absl::Status over = a->Renew();
  CHECK(absl::IsFailedPrecondition(over));
  CHECK(over.message() == "term " + std::to_string(*first) + " of 'server-0a' is over: its "
                          "lease expired");
  CHECK(a->term() == 0);
  CHECK(absl::IsAlreadyExists(a->Campaign().status()));

  // Resigning hands over at once, to a larger term still.
  REQUIRE(b->Resign().ok());
  CHECK(b->term() == 0);
  absl::StatusOr<int64_t> third = a->Campaign();
  REQUIRE(third.ok());
  CHECK(*third > *second);

  // etcd gone: every call says so within its deadline.
  etcd.Stop();
  const auto start = std::chrono::steady_clock::now();
  const absl::Status lost = a->Renew();
  CHECK(absl::IsUnavailable(lost));
  CHECK(lost.message().find("etcd at " + etcd.endpoint() + " did not answer") == 0);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(3));
  CHECK(a->term() == *third);  // not known to be over: the caller stops after ttl_s
}

TEST_CASE("an election's arguments are checked") {
  CHECK(absl::IsInvalidArgument(Election::Create("localhost", "/k", "a", 2).status()));
  CHECK(absl::IsInvalidArgument(Election::Create("127.0.0.1:0", "/k", "a", 2).status()));
  CHECK(absl::IsInvalidArgument(Election::Create("127.0.0.1:2379", "", "a", 2).status()));
  CHECK(absl::IsInvalidArgument(Election::Create("127.0.0.1:2379", "/k", "a", 1).status()));
  CHECK(Election::Create("127.0.0.1:2379", "/k", "a", 2).ok());
}

}  // namespace
}  // namespace tessera
