// The clock table: min_clock, parking, release order, deadlines, cancel.
#include "server/clock_table.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

namespace tessera {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1000);

TEST_CASE("min_clock counts unregistered workers as 0 and ignores finished ones") {
  ClockTable t(3);
  CHECK(t.min_clock() == 0);
  CHECK(t.WorkerClock(0) == -1);
  CHECK(t.Register(0) == 0);
  CHECK(t.Register(1) == 0);
  REQUIRE(t.AdvanceClock(0, 0).ok());
  REQUIRE(t.AdvanceClock(1, 0).ok());
  CHECK(t.min_clock() == 0);  // worker 2 has not started
  t.Register(2);
  auto a = t.AdvanceClock(2, 0);
  REQUIRE(a.ok());
  CHECK(a->old_min == 0);
  CHECK(a->new_min == 1);
  CHECK(t.Register(2) == 1);  // re-registering keeps the clock
  t.Finish(2);
  REQUIRE(t.AdvanceClock(0, 1).ok());
  REQUIRE(t.AdvanceClock(1, 1).ok());
  CHECK(t.min_clock() == 2);
  CHECK_FALSE(t.AllFinished());
}

TEST_CASE("advancing needs registration and the worker's own clock") {
  ClockTable t(2);
  CHECK(t.AdvanceClock(0, 0).status().code() == absl::StatusCode::kFailedPrecondition);
  t.Register(0);
  CHECK(t.AdvanceClock(0, 1).status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(t.AdvanceClock(0, 0).ok());
  CHECK(t.AdvanceClock(0, 0).status().code() == absl::StatusCode::kFailedPrecondition);
}

TEST_CASE("waiters run when the published clock reaches them, in order") {
  ClockTable t(1);
  std::vector<int> order;
  CHECK_FALSE(t.WaitFor(0, kT0, [&](absl::Status) { order.push_back(0); }).has_value());
  CHECK(t.WaitFor(2, kT0 + absl::Hours(1), [&](absl::Status s) {
    CHECK(s.ok());
    order.push_back(2);
  }));
  CHECK(t.WaitFor(1, kT0 + absl::Hours(1), [&](absl::Status s) {
    CHECK(s.ok());
    order.push_back(1);
  }));
  CHECK(t.parked() == 2);
  t.Publish(1);
  CHECK(order == std::vector<int>{1});
  t.Publish(0);  // never lowers
  CHECK(t.published_min() == 1);
  t.Publish(5);
  CHECK(order == std::vector<int>{1, 2});
  CHECK(t.parked() == 0);
}

TEST_CASE("a part's waiters run when that part or the whole clock is published") {
  ClockTable t(1);
  std::vector<std::string> order;
  auto wait = [&](int64_t required, uint32_t part, const std::string& name) {
    return t.WaitFor(required, kT0 + absl::Hours(1), [&order, name](absl::Status s) {
      CHECK(s.ok());
      order.push_back(name);
    }, part);
  };
  REQUIRE(wait(1, 1, "part 1 at 1"));
  REQUIRE(wait(1, 2, "part 2 at 1"));
  REQUIRE(wait(2, 1, "part 1 at 2"));
  REQUIRE(wait(1, 0, "whole at 1"));
  t.PublishPart(1, 1);
  CHECK(order == std::vector<std::string>{"part 1 at 1"});
  CHECK(t.part_published(1) == 1);
  CHECK(t.part_published(2) == 0);
  CHECK(t.published_min() == 0);  // the clock itself is not closed
  CHECK_FALSE(wait(1, 1, "part 1 again").has_value());  // already there: inline
  t.PublishPart(1, 0);  // never lowers
  CHECK(t.part_published(1) == 1);
  t.Publish(1);  // the close answers every waiter at 1, parts or not
  CHECK(order == std::vector<std::string>{"part 1 at 1", "part 2 at 1", "whole at 1"});
  CHECK(t.part_published(2) == 1);
  CHECK(t.parked() == 1);
  // A cancelled part waiter leaves the part's index too.
  absl::Status cancelled;
  t.Cancel(*t.WaitFor(3, kT0 + absl::Hours(1), [&](absl::Status s) { cancelled = s; }, 1));
  CHECK(absl::IsCancelled(cancelled));
  t.PublishPart(1, 2);
  CHECK(order.back() == "part 1 at 2");
  CHECK(t.parked() == 0);
}

TEST_CASE("deadlines fail parked waiters with DEADLINE_EXCEEDED, once") {
  ClockTable t(1);
  int calls = 0;
  absl::Status got;
  t.WaitFor(3, kT0 + absl::Seconds(2), [&](absl::Status s) {
    ++calls;
    got = s;
  });
  CHECK(t.NextDeadline() == kT0 + absl::Seconds(2));
  CHECK(t.ExpireDue(kT0 + absl::Seconds(1)) == 0);
  CHECK(calls == 0);
  CHECK(t.ExpireDue(kT0 + absl::Seconds(2)) == 1);
  CHECK(calls == 1);
  CHECK(got.code() == absl::StatusCode::kDeadlineExceeded);
  t.Publish(10);
  CHECK(calls == 1);
  CHECK(t.expired() == 1);
  CHECK(t.NextDeadline() == absl::InfiniteFuture());
}

TEST_CASE("cancel and shutdown release parked waiters exactly once") {
  ClockTable t(1);
  std::vector<absl::StatusCode> codes;
  auto record = [&](absl::Status s) { codes.push_back(s.code()); };
  auto id = t.WaitFor(1, kT0, record);
  t.WaitFor(1, kT0, record);
  REQUIRE(id);
  CHECK(t.Cancel(*id));
  CHECK_FALSE(t.Cancel(*id));
  t.FailAll(absl::UnavailableError("stop"));
  CHECK(codes == std::vector<absl::StatusCode>{absl::StatusCode::kCancelled,
                                               absl::StatusCode::kUnavailable});
  t.Publish(1);
  CHECK(codes.size() == 2);
}

}  // namespace
}  // namespace tessera
