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
#include <thread>

#include "common/election.h"
#include "tests/etcd.h"
#include "tests/server/replication_fixtures.h"

namespace tessera {
namespace {

constexpr char kStandbyAddress[] = "127.0.0.1:7";

TEST_CASE("a standby named in sync takes over only if it followed since it began to serve") {
  if (EtcdMissing()) return;
  const bool followed_since_serving = GENERATE(true, false);
  INFO("followed since serving: " << followed_since_serving);
  Etcd etcd(/*fast=*/true);
  etcd.WaitReady();
  JobConfig c = AdamJob("bsp", 2);
  c.cluster.etcd = etcd.endpoint();
  c.server.lease_ttl_s = 1;
  auto pair = MakePair(c);  // the standby starts from the same state, nothing followed
  const uint64_t before_serving = pair->standby->followed();

  // The primary's term, and its standby named in sync, as a primary writes them.
  const std::string prefix = "/tessera/" + c.name + "/shard-0/";
  auto primary = Election::Create(c.cluster.etcd, prefix + "primary", "127.0.0.1:9", 1);
  REQUIRE(primary.ok());
  REQUIRE((*primary)->Campaign().ok());
  REQUIRE((*primary)->PutWhileHeld(prefix + "in_sync", kStandbyAddress).ok());

  // The standby serves, and follows the primary's mutations (the workers'
  // registrations) before its watch starts.
  FollowAll(*pair);
  REQUIRE(pair->standby->followed() > before_serving);
  auto failover = Failover::Create(c, 0, Failover::Role::kStandby, kStandbyAddress,
                                   pair->standby.get(), AbortOnFailoverStop);
  REQUIRE(failover.ok());
  (*failover)->Start(followed_since_serving ? before_serving : pair->standby->followed());

  // The primary's term ends.
  REQUIRE((*primary)->Resign().ok());
  bool promoted = false;
  for (int i = 0; i < 50 && !promoted; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    promoted = !pair->standby->standby();
  }
  CHECK(promoted == followed_since_serving);
  if (promoted) {
    CHECK((*failover)->term() > (*primary)->term());
    CHECK(pair->standby->term() == (*failover)->term());
  }
}

}  // namespace
}  // namespace tessera
