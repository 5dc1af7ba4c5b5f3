// Failover (server/failover.h) against a real etcd: a standby named in sync
// takes over once its primary's term ends, but only if it followed a
// mutation in this life. What counts as this life is what the shard held
// before it served (Failover::Start's argument): mutations that arrive
// between serving and the watch's start count. (Read at the watch's start, a
// joiner named in sync by such a mutation, whose primary then died, never
// took over: the restarted primary waited for it and gave up. Chaos found it.)
// Skips, saying so, where no etcd binary exists.
#include "server/failover.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <atomic>
#include <mutex>
#include <thread>

#include "common/election.h"
#include "tests/etcd.h"
#include "tests/server/replication_fixtures.h"

namespace tessera {
namespace {

constexpr char kStandbyAddress[] = "127.0.0.1:7";

// A real etcd; a primary's term, held by 127.0.0.1:9 with its standby named
// in sync, as a primary writes them; and a standby that has followed nothing.
struct Scene {
  Etcd etcd{/*fast=*/true};
  JobConfig c;
  std::unique_ptr<Pair> pair;
  uint64_t before_serving = 0;
  std::string prefix;
  std::unique_ptr<Election> primary;

  Scene() {
    etcd.WaitReady();
    c = AdamJob("bsp", 2);
    c.cluster.etcd = etcd.endpoint();
    c.server.lease_ttl_s = 1;
    pair = MakePair(c);  // the standby starts from the same state, nothing followed
    before_serving = pair->standby->followed();
    prefix = "/tessera/" + c.name + "/shard-0/";
    auto election = Election::Create(c.cluster.etcd, prefix + "primary", "127.0.0.1:9", 1);
    REQUIRE(election.ok());
    primary = *std::move(election);
    REQUIRE(primary->Campaign().ok());
    REQUIRE(primary->PutWhileHeld(prefix + "in_sync", kStandbyAddress).ok());
  }
};

TEST_CASE("a standby named in sync takes over only if it followed since it began to serve") {
  if (EtcdMissing()) return;
  const bool followed_since_serving = GENERATE(true, false);
  INFO("followed since serving: " << followed_since_serving);
  Scene scene;
  const JobConfig& c = scene.c;
  auto& pair = scene.pair;
  const uint64_t before_serving = scene.before_serving;
  Election* primary = scene.primary.get();

  // The standby serves, and follows the primary's mutations (the workers'
  // registrations) before its watch starts.
  FollowAll(*pair);
  REQUIRE(pair->standby->followed() > before_serving);
  auto failover = Failover::Create(c, 0, Failover::Role::kStandby, kStandbyAddress,
                                   pair->standby.get(), AbortOnFailoverStop);
  REQUIRE(failover.ok());
  (*failover)->Start(followed_since_serving ? before_serving : pair->standby->followed());

  // The primary's term ends.
  REQUIRE(primary->Resign().ok());
  bool promoted = false;
  for (int i = 0; i < 50 && !promoted; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    promoted = !pair->standby->standby();
  }
  CHECK(promoted == followed_since_serving);
  if (promoted) {
    CHECK((*failover)->term() > primary->term());
    CHECK(pair->standby->term() == (*failover)->term());
  }
}

TEST_CASE("a standby whose presence lapsed exits once its primary no longer names it in sync") {
  // Paused past its presence lease (here: the lease revoked from outside),
  // a standby its primary gave up on follows nothing any more: it exits to
  // be started again and join with a copy. One still named stays (it may
  // hold every change), and writes its presence again.
  if (EtcdMissing()) return;
  const bool named = GENERATE(true, false);
  INFO((named ? "still named in sync" : "unnamed by its primary"));
  Scene scene;
  const JobConfig& c = scene.c;
  auto& pair = scene.pair;
  const std::string& prefix = scene.prefix;
  Election* primary = scene.primary.get();
  // The primary keeps its term (a lease of 1 s) throughout.
  std::mutex primary_mu;
  std::atomic<bool> done{false};
  std::thread renew([&] {
    while (!done.load()) {
      {
        std::lock_guard<std::mutex> lock(primary_mu);
        (void)primary->Renew();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  });
  struct StopRenewing {
    std::atomic<bool>& done;
    std::thread& renew;
    ~StopRenewing() {
      done.store(true);
      renew.join();
    }
  } stop_renewing{done, renew};
  FollowAll(*pair);
  std::mutex mu;
  std::string stopped;
  auto failover = Failover::Create(c, 0, Failover::Role::kStandby, kStandbyAddress,
                                   pair->standby.get(), [&](const std::string& why) {
                                     std::lock_guard<std::mutex> lock(mu);
                                     stopped = why;
                                   });
  REQUIRE(failover.ok());
  (*failover)->Start(scene.before_serving);
  // Its presence, read as an election key: the holder is its lease.
  auto presence = Election::Create(c.cluster.etcd, prefix + "present/" + kStandbyAddress, "x", 1);
  REQUIRE(presence.ok());
  absl::StatusOr<Election::Holder> held;
  for (int i = 0; i < 50; ++i) {
    held = (*presence)->Current();
    if (held.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  REQUIRE(held.ok());
  CHECK(held->name == kStandbyAddress);
  if (!named) {
    std::lock_guard<std::mutex> lock(primary_mu);
    REQUIRE(primary->DeleteWhileHeld(prefix + "in_sync").ok());
  }
  REQUIRE((*presence)->EndTerm(*held).ok());  // as if it had been paused past the lease
  // Within 2 s: its next renewal (every third of the lease) finds it lapsed.
  std::string why;
  bool written_again = false;
  for (int i = 0; i < 40 && (named ? !written_again : why.empty()); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    {
      std::lock_guard<std::mutex> lock(mu);
      why = stopped;
    }
    absl::StatusOr<Election::Holder> now = (*presence)->Current();
    written_again = now.ok() && now->lease != held->lease;
  }
  if (named) {
    CHECK(written_again);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // and it stays
    std::lock_guard<std::mutex> lock(mu);
    CHECK(stopped.empty());
    CHECK(pair->standby->standby());
  } else {
    CHECK_THAT(why, Catch::Contains("no longer names it in sync"));
  }
}

}  // namespace
}  // namespace tessera
