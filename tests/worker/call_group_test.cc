// CallGroup (worker/call_group.h): the first failure cancels the other calls
// of a fan-out, a call added after it is cancelled as it starts, Wait gives
// up at its bound and names that a deadline, and no callback runs after Wait
// returned. The calls here are answered by test threads, as a transport's
// threads would answer them.
#include "worker/call_group.h"

#include <catch2/catch.hpp>
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"

namespace tessera {
namespace {

absl::Status Named(size_t shard, const absl::Status& status) {
  return absl::Status(status.code(), absl::StrCat("shard ", shard, ": ", status.message()));
}

// A call that answers CANCELLED when cancelled, from another thread, as a
// transport does.
struct Pending {
  explicit Pending(ShardTransport::Done d) : done(std::move(d)) {}
  ShardTransport::Done done;
  std::atomic<bool> cancelled{false};
  std::thread answering;
  void AnswerOnCancel(ShardCall& call) {
    call.SetCancel([this] {
      if (cancelled.exchange(true)) return;
      answering = std::thread([this] { done(absl::CancelledError("cancelled")); });
    });
  }
  ~Pending() {
    if (answering.joinable()) answering.join();
  }
};

TEST_CASE("every call answers OK: OK, and each on_ok ran") {
  CallGroup group;
  std::vector<std::unique_ptr<ShardCall>> calls;
  std::atomic<int> ran{0};
  std::vector<std::thread> threads;
  for (size_t s = 0; s < 3; ++s) {
    calls.push_back(std::make_unique<ShardCall>(absl::Now() + absl::Seconds(10)));
    auto done = group.Add(s, calls.back().get(), [&ran] {
      ++ran;
      return absl::OkStatus();
    });
    threads.emplace_back([done] { done(absl::OkStatus()); });
  }
  group.Wait(absl::Seconds(10));
  for (auto& t : threads) t.join();
  CHECK(group.Outcome(Named).ok());
  CHECK_FALSE(group.failed());
  CHECK(ran == 3);
}

TEST_CASE("the first failure cancels the others and is the outcome, naming its shard") {
  CallGroup group;
  ShardCall first(absl::Now() + absl::Seconds(60)), failing(absl::Now() + absl::Seconds(60)),
      last(absl::Now() + absl::Seconds(60));
  Pending a(group.Add(0, &first));
  a.AnswerOnCancel(first);
  auto fail = group.Add(1, &failing);
  Pending c(group.Add(2, &last));
  c.AnswerOnCancel(last);
  std::thread failer([fail] { fail(absl::UnavailableError("gone")); });
  const absl::Time start = absl::Now();
  group.Wait(absl::Seconds(60));
  failer.join();
  CHECK(absl::Now() - start < absl::Seconds(30));  // not the calls' deadline
  CHECK(a.cancelled);
  CHECK(c.cancelled);
  CHECK(group.failed());
  CHECK(group.failed_shard() == 1);
  const absl::Status outcome = group.Outcome(Named);
  CHECK(absl::IsUnavailable(outcome));
  CHECK(outcome.message() == "shard 1: gone");
}

TEST_CASE("a call added after the group failed is cancelled as it starts") {
  CallGroup group;
  ShardCall failing(absl::Now() + absl::Seconds(10)), late(absl::Now() + absl::Seconds(10));
  group.Add(0, &failing)(absl::InternalError("broken"));
  auto done = group.Add(1, &late);
  bool cancelled = false;
  late.SetCancel([&cancelled] { cancelled = true; });  // the transport starts the call
  CHECK(cancelled);
  done(absl::CancelledError("cancelled"));
  group.Wait(absl::Seconds(10));
  CHECK(absl::IsInternal(group.Outcome(Named)));
}

TEST_CASE("past its bound Wait cancels the calls and reports a deadline") {
  CallGroup group;
  ShardCall call(absl::Now() + absl::Milliseconds(50));
  Pending p(group.Add(3, &call));
  p.AnswerOnCancel(call);  // a call its transport never answers by itself
  const absl::Time start = absl::Now();
  group.Wait(absl::Milliseconds(200));
  CHECK(absl::Now() - start >= absl::Milliseconds(200));
  CHECK(p.cancelled);
  const absl::Status outcome = group.Outcome(Named);
  CHECK(absl::IsDeadlineExceeded(outcome));
  CHECK(group.failed_shard() == 3);
}

TEST_CASE("an on_ok error is the outcome when no call failed") {
  CallGroup group;
  ShardCall a(absl::Now() + absl::Seconds(10)), b(absl::Now() + absl::Seconds(10));
  group.Add(0, &a, [] { return absl::InternalError("does not fit"); })(absl::OkStatus());
  group.Add(1, &b)(absl::OkStatus());
  group.Wait(absl::Seconds(10));
  CHECK_FALSE(group.failed());
  CHECK(group.call_error().ok());
  const absl::Status outcome = group.Outcome(Named);
  CHECK(absl::IsInternal(outcome));
  CHECK(outcome.message() == "does not fit");  // not a shard's answer: not named
}

TEST_CASE("Wait returns only once every callback has finished") {
  CallGroup group;
  ShardCall call(absl::Now() + absl::Seconds(10));
  std::atomic<bool> finished{false};
  absl::Notification entered;
  auto done = group.Add(0, &call, [&] {
    entered.Notify();
    absl::SleepFor(absl::Milliseconds(100));
    finished = true;
    return absl::OkStatus();
  });
  std::thread t([done] { done(absl::OkStatus()); });
  entered.WaitForNotification();
  group.Wait(absl::Seconds(10));
  CHECK(finished);
  t.join();
}

}  // namespace
}  // namespace tessera
