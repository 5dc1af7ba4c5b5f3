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
#include <random>
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
  ~Scene() {
    renewing.store(false);
    if (renew.joinable()) renew.join();
  }

  // The primary keeps its term (a lease of 1 s) until the scene ends; other
  // calls on `primary` hold primary_mu meanwhile.
  void KeepTerm() {
    renewing.store(true);
    renew = std::thread([this] {
      while (renewing.load()) {
        {
          std::lock_guard<std::mutex> lock(primary_mu);
          (void)primary->Renew();
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    });
  }
  // The standby's Failover, started as it begins to serve; why it stopped
  // the daemon (if it did) is Stopped().
  std::unique_ptr<Failover> StartStandby() {
    auto f = Failover::Create(c, 0, Failover::Role::kStandby, kStandbyAddress, pair->standby.get(),
                              [this](const std::string& why) {
                                std::lock_guard<std::mutex> lock(stop_mu);
                                stopped = why;
                              });
    REQUIRE(f.ok());
    (*f)->Start(before_serving);
    return *std::move(f);
  }
  std::string Stopped() {
    std::lock_guard<std::mutex> lock(stop_mu);
    return stopped;
  }

  std::mutex primary_mu;
  std::atomic<bool> renewing{false};
  std::thread renew;
  std::mutex stop_mu;
  std::string stopped;
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
  scene.KeepTerm();
  FollowAll(*pair);
  std::unique_ptr<Failover> failover = scene.StartStandby();
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
    std::lock_guard<std::mutex> lock(scene.primary_mu);
    REQUIRE(primary->DeleteWhileHeld(prefix + "in_sync").ok());
  }
  REQUIRE((*presence)->EndTerm(*held).ok());  // as if it had been paused past the lease
  // Within 2 s: its next renewal (every third of the lease) finds it lapsed.
  std::string why;
  bool written_again = false;
  for (int i = 0; i < 40 && (named ? !written_again : why.empty()); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    why = scene.Stopped();
    absl::StatusOr<Election::Holder> now = (*presence)->Current();
    written_again = now.ok() && now->lease != held->lease;
  }
  if (named) {
    CHECK(written_again);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // and it stays
    CHECK(scene.Stopped().empty());
    CHECK(pair->standby->standby());
  } else {
    CHECK_THAT(why, Catch::Contains("no longer names it in sync"));
  }
}

TEST_CASE("a standby cut off from its primary alone exits once the primary no longer names it") {
  // Its presence never lapses (it reaches etcd), but its primary went on
  // without it (ReplicaLink::Cut deletes in_sync): it follows nothing any
  // more, and exits to be started again and join with a copy. A standby
  // that still follows, or that followed nothing in this life, stays.
  if (EtcdMissing()) return;
  enum Case { kCut, kStillFollowing, kNamed, kFollowedNothing };
  const Case what = GENERATE(kCut, kStillFollowing, kNamed, kFollowedNothing);
  const char* names[] = {"cut by its primary", "unnamed but still following",
                         "named and idle", "unnamed, having followed nothing"};
  INFO(names[what]);
  Scene scene;
  const JobConfig& c = scene.c;
  auto& pair = scene.pair;
  Election* primary = scene.primary.get();
  scene.KeepTerm();
  if (what != kFollowedNothing) FollowAll(*pair);
  std::unique_ptr<Failover> failover = scene.StartStandby();
  if (what != kNamed) {
    std::lock_guard<std::mutex> lock(scene.primary_mu);
    REQUIRE(primary->DeleteWhileHeld(scene.prefix + "in_sync").ok());
  }
  // Looks every third of the 1 s lease: two in a row find it unnamed
  // within 1 s. Watched for 2.5 s; a standby still following gets a change
  // every 100 ms.
  std::mt19937 rng(7);
  int64_t clock = 0;
  std::string why;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(2500);
  while (std::chrono::steady_clock::now() < until && why.empty()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (what == kStillFollowing) {
      for (uint32_t w = 0; w < c.cluster.workers; ++w) {
        PushResponse r;
        REQUIRE(pair->primary->Push(RandomPush(w, clock, &rng), &r).ok());
      }
      ++clock;
      FollowAll(*pair);
    }
    why = scene.Stopped();
  }
  if (what == kCut) {
    CHECK_THAT(why, Catch::Contains("no longer names this standby in sync") &&
                        Catch::Contains("127.0.0.1:9"));
  } else {
    CHECK(why.empty());
    CHECK(pair->standby->standby());
  }
  if (what == kStillFollowing) CHECK(clock >= 20);
}

}  // namespace
}  // namespace tessera
