// Election against a real etcd (Debian's etcd-server), started by the test on
// loopback ports of its own: one primary at a time, a term that ends when its
// lease does, terms that only grow, a resignation handed over at once,
// campaigns that require another key's state, writes fenced by the term, and
// etcd gone said plainly. Skips, saying so, where no etcd binary exists.
#include "common/election.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <thread>

#include "tests/etcd.h"

namespace tessera {
namespace {

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
  if (EtcdMissing()) return;
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
  CHECK(absl::IsInvalidArgument(Election::Create("127.0.0.1:2379", "/k", "a", 0).status()));
  CHECK(Election::Create("127.0.0.1:2379", "/k", "a", 2).ok());
}

TEST_CASE("a campaign may require a key's state; a term's writes are fenced by the term") {
  if (EtcdMissing()) return;
  Etcd etcd;
  auto a = Candidate(etcd, "primary");
  auto b = Candidate(etcd, "standby");
  WaitReady(*a);
  const std::string in_sync = "/tessera/job/shard-0/in_sync";
  // Nobody holds it, but the standby is not named in sync: it may not win.
  const Election::Condition named{in_sync, std::string("standby")};
  absl::StatusOr<int64_t> refused = b->Campaign(named);
  CHECK(absl::IsFailedPrecondition(refused.status()));
  CHECK(refused.status().message() ==
        "nobody is primary, but " + in_sync + " does not hold 'standby'");
  CHECK(absl::IsNotFound(b->Current().status()));  // the refused try left nothing behind
  // Not primary: no fenced write.
  CHECK(absl::IsFailedPrecondition(b->PutWhileHeld(in_sync, "standby")));
  // The primary wins where the key is absent, and names its standby.
  absl::StatusOr<int64_t> first = a->Campaign(Election::Condition{in_sync, std::nullopt});
  REQUIRE(first.ok());
  REQUIRE(a->PutWhileHeld(in_sync, "standby").ok());
  CHECK(*a->Get(in_sync) == std::optional<std::string>("standby"));
  // Once its lease is gone, the standby wins, and the old primary can
  // neither write nor delete the key (its term is over).
  std::this_thread::sleep_for(std::chrono::milliseconds(3500));
  absl::StatusOr<int64_t> second = b->Campaign(named);
  REQUIRE(second.ok());
  CHECK(*second > *first);
  const absl::Status fenced = a->DeleteWhileHeld(in_sync);
  CHECK(absl::IsFailedPrecondition(fenced));
  CHECK(fenced.message() == "term " + std::to_string(*first) + " of 'primary' is over: cannot "
                            "delete " + in_sync);
  CHECK(*a->Get(in_sync) == std::optional<std::string>("standby"));
  // The new primary may.
  REQUIRE(b->DeleteWhileHeld(in_sync).ok());
  CHECK(!a->Get(in_sync)->has_value());
  // A primary's campaign that requires the key absent fails while it is there.
  REQUIRE(b->PutWhileHeld(in_sync, "someone").ok());
  REQUIRE(b->Resign().ok());
  CHECK(absl::IsFailedPrecondition(
      a->Campaign(Election::Condition{in_sync, std::nullopt}).status()));
}

}  // namespace
}  // namespace tessera
