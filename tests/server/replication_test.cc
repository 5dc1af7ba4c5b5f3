// Replication's unit (server/shard.h SetMutationLog, Follow): a standby that
// follows its primary's mutations, in order, holds the primary's state to the
// bit: tables, optimizer slots and steps, sparse rows, clocks. Under BSP a
// clock's pushes travel once, summed, in the clock's close (every other
// mode: tests/server/replication_unaggregated_test.cc). Also: resends,
// refusals, joins mid-clock, promotion and fencing.
#include <future>
#include <memory>
#include <random>
#include <thread>

#include "tests/server/replication_fixtures.h"

namespace tessera {
namespace {

TEST_CASE("a standby following a BSP primary holds its state to the bit") {
  const uint32_t workers = 3;
  auto pair = MakePair(AdamJob("bsp", workers));
  std::mt19937 rng(7);
  constexpr int64_t kClocks = 20;
  size_t pushes = 0;
  for (int64_t clock = 0; clock < kClocks; ++clock) {
    // A pull creates rows too (server.pull_creates_rows, the default): the
    // clock's close names them.
    std::vector<uint64_t> fresh;
    for (uint64_t j = 0; j < 5; ++j) fresh.push_back(1000000 + 10 * clock + j);
    auto pull = StartPull(*pair->primary, clock % workers, clock, Sparse("emb", fresh));
    REQUIRE(pull->status.has_value());
    REQUIRE(pull->status->ok());
    // A different order each clock: three float sums differ in their last
    // bits with the order, and the standby must get the primary's.
    for (uint32_t i = 0; i < workers; ++i) {
      const uint32_t w = (i + static_cast<uint32_t>(clock)) % workers;
      PushResponse r;
      REQUIRE(pair->primary->Push(RandomPush(w, clock, &rng), &r).ok());
      ++pushes;
    }
  }
  FollowAll(*pair);
  CHECK(Same(*pair->primary, *pair->standby));
  CHECK(StateOf(*pair->primary).text[0] == "cut " + std::to_string(kClocks));
  // One close a clock carries every push of it: 3 registrations and 20
  // closes, against 60 pushes.
  CHECK(pair->log.size() == workers + kClocks);
  CHECK(*pair->awaited.rbegin() == pair->log.size());  // each answered once it was safe
  size_t closes = 0;
  for (const v1::Mutation& m : pair->log) closes += m.has_close_clock();
  CHECK(closes == kClocks);
  CHECK(pair->log.size() < pushes);
  // Finishing is followed too (the last one closes every clock).
  for (uint32_t w = 0; w < workers; ++w) {
    v1::FinishRequest f;
    f.set_worker_rank(w);
    f.set_session(SessionOf(w));
    v1::FinishResponse fr;
    REQUIRE(pair->primary->Finish(f, &fr).ok());
  }
  FollowAll(*pair);
  CHECK(pair->standby->AllWorkersFinished());
  CHECK(Same(*pair->primary, *pair->standby));
}

// A mutation log whose acknowledgements the test gives by hand.
struct HeldByHand {
  std::mutex mu;
  std::vector<v1::Mutation> log;
  std::vector<std::function<void()>> waiting;
  Shard::MutationLog Log() {
    return {[this](v1::Mutation m) {
              std::lock_guard<std::mutex> lock(mu);
              log.push_back(std::move(m));
            },
            [this](uint64_t, std::function<void()> done) {
              std::lock_guard<std::mutex> lock(mu);
              waiting.push_back(std::move(done));
            }};
  }
  size_t Waiting() {
    std::lock_guard<std::mutex> lock(mu);
    return waiting.size();
  }
  // The standby acknowledges everything so far.
  void Acknowledge() {
    std::vector<std::function<void()>> done;
    {
      std::lock_guard<std::mutex> lock(mu);
      done.swap(waiting);
    }
    for (auto& d : done) d();
  }
};

TEST_CASE("a change's answer waits for the standby on no thread, and publishes its clock then") {
  const uint32_t workers = 2;
  auto created = Shard::Create(AdamJob("bsp", workers), 0);
  REQUIRE(created.ok());
  Shard& primary = **created;
  HeldByHand standby;
  REQUIRE(primary.SetMutationLog(standby.Log()).ok());
  // Registrations: each call returns at once; its answer waits.
  std::vector<int> answered(workers, 0);
  for (uint32_t w = 0; w < workers; ++w) {
    v1::RegisterRequest r;
    r.set_worker_rank(w);
    r.set_session(SessionOf(w));
    NameJob(primary, &r);
    v1::RegisterResponse resp;
    Shard::Hold hold;
    REQUIRE(primary.Register(r, &resp, &hold).ok());
    primary.WhenHeld(hold, [&answered, w] { ++answered[w]; });
  }
  CHECK(answered == std::vector<int>{0, 0});
  CHECK(standby.Waiting() == 2);
  standby.Acknowledge();
  CHECK(answered == std::vector<int>{1, 1});

  // Clock 0: worker 0's push buffers (nothing to send, answered at once);
  // worker 1's closes the clock, and its answer waits for the close.
  std::mt19937 rng(3);
  PushResponse r0, r1;
  Shard::Hold h0, h1;
  REQUIRE(primary.Push(RandomPush(0, 0, &rng), &r0, &h0).ok());
  bool done0 = false, done1 = false;
  primary.WhenHeld(h0, [&] { done0 = true; });
  CHECK(done0);
  PushRequest closing = RandomPush(1, 0, &rng);
  *closing.add_pull_slices() = Dense("w", 0, 8);  // a fused pull of the new values
  REQUIRE(primary.Push(closing, &r1, &h1).ok());
  primary.WhenHeld(h1, [&] { done1 = true; });
  CHECK(!done1);
  CHECK(standby.log.back().has_close_clock());
  // Not published before the standby holds the close: a pull of clock 1 parks.
  CHECK(primary.published_min() == 0);
  auto pull = StartPull(primary, 0, 1, Dense("w", 0, 8));
  CHECK(!pull->status.has_value());
  // The answer names the clock it publishes and carries its values.
  CHECK(r1.min_clock() == 1);
  CHECK(r1.pulled());
  standby.Acknowledge();
  CHECK(done1);
  CHECK(primary.published_min() == 1);
  REQUIRE(pull->status.has_value());
  CHECK(pull->status->ok());

  // Without a Hold, the call itself waits, after letting go of its locks.
  REQUIRE(primary.Push(RandomPush(0, 1, &rng), &r0).ok());
  auto waiting = std::async(std::launch::async, [&] {
    PushResponse r;
    return primary.Push(RandomPush(1, 1, &rng), &r);
  });
  CHECK(waiting.wait_for(std::chrono::milliseconds(300)) == std::future_status::timeout);
  // Meanwhile the shard answers others (a stats call takes no worker's lock;
  // a pull of worker 0 does not wait on worker 1's).
  v1::StatsResponse stats;
  primary.Stats(&stats);
  CHECK(stats.min_clock() == 1);
  for (int i = 0; i < 100 && standby.Waiting() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  standby.Acknowledge();
  REQUIRE(waiting.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
  CHECK(waiting.get().ok());
  CHECK(primary.published_min() == 2);
}

TEST_CASE("a standby follows a BSP primary whose workers push and advance at once") {
  const uint32_t workers = 4;
  auto pair = MakePair(AdamJob("bsp", workers));
  constexpr int64_t kClocks = 30;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (uint32_t w = 0; w < workers; ++w) {
    threads.emplace_back([&, w] {
      std::mt19937 rng(100 + w);
      for (int64_t clock = 0; clock < kClocks; ++clock) {
        // The barrier: a BSP push waits until every worker closed the clock before.
        for (int i = 0; i < 20000 && pair->primary->published_min() < clock; ++i) {
          std::this_thread::sleep_for(std::chrono::microseconds(50));
        }
        PushResponse r;
        if (!pair->primary->Push(RandomPush(w, clock, &rng), &r).ok()) ++failures;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  REQUIRE(failures == 0);
  REQUIRE(pair->primary->published_min() == kClocks);
  FollowAll(*pair);
  CHECK(Same(*pair->primary, *pair->standby));
}

TEST_CASE("a mutation sent again while its first try is applied is applied once") {
  const uint32_t workers = 3;
  auto pair = MakePair(AdamJob("bsp", workers));
  std::mt19937 rng(5);
  for (int64_t clock = 0; clock < 10; ++clock) {
    for (uint32_t w = 0; w < workers; ++w) {
      PushResponse r;
      REQUIRE(pair->primary->Push(RandomPush(w, clock, &rng), &r).ok());
    }
  }
  // Each mutation from three threads at once, as a primary's retry that
  // overtakes its first try would send it.
  for (const v1::Mutation& m : pair->log) {
    std::atomic<int> refused{0};
    std::vector<std::thread> tries;
    for (int t = 0; t < 3; ++t) {
      tries.emplace_back([&] {
        if (!pair->standby->Follow(m).ok()) ++refused;
      });
    }
    for (std::thread& t : tries) t.join();
    REQUIRE(refused == 0);
  }
  CHECK(pair->standby->followed() == pair->log.size());
  CHECK(Same(*pair->primary, *pair->standby));
}

TEST_CASE("a mutation that does not fit is refused and changes nothing on the standby") {
  auto pair = MakePair(AdamJob("bsp", 2));
  std::mt19937 rng(3);
  for (uint32_t w = 0; w < 2; ++w) {
    PushResponse r;
    REQUIRE(pair->primary->Push(RandomPush(w, 0, &rng), &r).ok());
  }
  REQUIRE(pair->log.size() == 3);  // two registrations, one close
  REQUIRE(pair->log[2].has_close_clock());
  const v1::Mutation close = pair->log[2];
  pair->log.pop_back();
  FollowAll(*pair);  // the registrations
  const State before = StateOf(*pair->standby);
  const auto refused = [&](const v1::Mutation& m, absl::StatusCode code) {
    CheckRefused(*pair, before, m, code);
  };
  refused(v1::Mutation(), absl::StatusCode::kInvalidArgument);  // unnumbered, empty
  v1::Mutation bad = close;
  bad.mutable_close_clock()->mutable_aggregates(0)->set_table(99);
  refused(bad, absl::StatusCode::kInvalidArgument);
  bad = close;
  bad.mutable_close_clock()->mutable_clocks()->RemoveLast();
  refused(bad, absl::StatusCode::kInvalidArgument);
  for (int t = 0; t < close.close_clock().aggregates_size(); ++t) {
    INFO("table " << t);
    bad = close;
    bad.mutable_close_clock()->mutable_aggregates(t)->mutable_values()->RemoveLast();
    refused(bad, absl::StatusCode::kInvalidArgument);
    bad = close;
    bad.mutable_close_clock()->mutable_aggregates(t)->add_created_keys(5);
    bad.mutable_close_clock()->mutable_aggregates(t)->add_created_keys(5);  // not increasing
    refused(bad, absl::StatusCode::kInvalidArgument);
  }
  bad = close;
  bad.mutable_close_clock()->mutable_aggregates(0)->set_values(0, std::nanf(""));
  refused(bad, absl::StatusCode::kInvalidArgument);
  bad = close;
  bad.mutable_close_clock()->set_clocks(0, std::numeric_limits<int64_t>::max());
  refused(bad, absl::StatusCode::kInvalidArgument);
  bad = close;
  bad.mutable_close_clock()->set_pushers(3);  // of two workers
  refused(bad, absl::StatusCode::kInvalidArgument);
  bad = pair->log[0];
  bad.set_sequence(3);
  bad.mutable_adopt()->set_worker(2);  // of two workers
  refused(bad, absl::StatusCode::kInvalidArgument);
  bad.mutable_adopt()->set_worker(0);
  bad.mutable_adopt()->set_clock(-5);
  refused(bad, absl::StatusCode::kInvalidArgument);
  bad = v1::Mutation();
  bad.set_sequence(3);
  bad.mutable_plan()->set_epoch(1);
  bad.mutable_plan()->set_rate(std::numeric_limits<double>::infinity());
  refused(bad, absl::StatusCode::kInvalidArgument);
  // One missing before it: the standby must start again.
  bad = close;
  bad.set_sequence(4);
  refused(bad, absl::StatusCode::kFailedPrecondition);
  // The real one applies, and once only when it comes again.
  pair->log.push_back(close);
  FollowAll(*pair);
  REQUIRE(pair->standby->Follow(close).ok());
  CHECK(pair->standby->followed() == 3);
  CHECK(Same(*pair->primary, *pair->standby));
}

TEST_CASE("a standby started from a snapshot taken mid-clock catches up to the bit") {
  const uint32_t workers = 3;
  const JobConfig c = AdamJob("bsp", workers);
  auto pair = MakePair(c);
  std::mt19937 rng(11);
  const auto push = [&](uint32_t w, int64_t clock) {
    PushResponse r;
    REQUIRE(pair->primary->Push(RandomPush(w, clock, &rng), &r).ok());
  };
  for (int64_t clock = 0; clock < 7; ++clock) {
    for (uint32_t w = 0; w < workers; ++w) push(w, clock);
  }
  // Two of three workers have pushed clock 7 when the state is copied: their
  // gradients sit in the buffer, not in the copy, and arrive with the close.
  push(0, 7);
  push(1, 7);
  std::unique_ptr<ShardState> snapshot = pair->primary->Snapshot();
  CHECK(snapshot->manifest.clock() == 7);
  CHECK(snapshot->manifest.log_sequence() == pair->primary->log_sequence());
  CHECK(snapshot->manifest.log_sequence() == workers + 7);
  push(2, 7);
  for (int64_t clock = 8; clock < 15; ++clock) {
    for (uint32_t w = 0; w < workers; ++w) push(w, clock);
  }
  auto late = Shard::Create(c, 0);
  REQUIRE(late.ok());
  (*late)->SetStandby();
  REQUIRE((*late)->Restore(*snapshot).ok());
  CHECK((*late)->followed() == workers + 7);
  // Sent from the start: what the copy holds is acknowledged, the rest applied.
  for (const v1::Mutation& m : pair->log) REQUIRE((*late)->Follow(m).ok());
  CHECK((*late)->followed() == pair->log.size());
  CHECK(Same(*pair->primary, **late));
}

TEST_CASE("a primary without a standby starts logging for one that joins mid-clock, to the bit") {
  // A primary that took over (or lost its standby) logs nothing; a joining
  // standby starts from SnapshotAndLog's copy and follows what comes after.
  const uint32_t workers = 3;
  const JobConfig c = AdamJob("bsp", workers);
  auto created = Shard::Create(c, 0);
  REQUIRE(created.ok());
  Shard& primary = **created;
  for (uint32_t w = 0; w < workers; ++w) RegisterWorker(primary, w);
  std::mt19937 rng(5);
  const auto push = [&](uint32_t w, int64_t clock) {
    PushResponse r;
    REQUIRE(primary.Push(RandomPush(w, clock, &rng), &r).ok());
  };
  for (int64_t clock = 0; clock < 5; ++clock) {
    for (uint32_t w = 0; w < workers; ++w) push(w, clock);
  }
  push(1, 5);  // one of three has pushed clock 5
  std::vector<v1::Mutation> log;
  std::mutex mu;
  auto snapshot = primary.SnapshotAndLog({[&](const v1::Mutation& m) {
    std::lock_guard<std::mutex> lock(mu);
    log.push_back(m);
  }});
  REQUIRE(snapshot.ok());
  CHECK((*snapshot)->manifest.clock() == 5);
  CHECK((*snapshot)->manifest.log_sequence() == 0);  // nothing was logged before
  // A pull creates rows after the copy: the next close names them.
  auto pull = StartPull(primary, 0, 5, Sparse("emb", {77, 78}));
  REQUIRE(pull->status.has_value());
  REQUIRE(pull->status->ok());
  push(0, 5);
  push(2, 5);
  for (int64_t clock = 6; clock < 9; ++clock) {
    for (uint32_t w = 0; w < workers; ++w) push(w, clock);
  }
  auto joined = Shard::Create(c, 0);
  REQUIRE(joined.ok());
  (*joined)->SetStandby();
  REQUIRE((*joined)->Restore(**snapshot).ok());
  REQUIRE(log.size() == 4);  // the closes of clocks 5..8
  for (const v1::Mutation& m : log) REQUIRE((*joined)->Follow(m).ok());
  CHECK(Same(primary, **joined));
  // A standby asked for one is refused.
  CHECK((*joined)->SnapshotAndLog({[](const v1::Mutation&) {}}).status().code() ==
        absl::StatusCode::kFailedPrecondition);
}

TEST_CASE("a promoted standby's own standby, joined mid-clock, holds its state to the bit") {
  const uint32_t workers = 2;
  const JobConfig c = AdamJob("bsp", workers);
  auto pair = MakePair(c);
  std::mt19937 rng(9);
  const auto push = [&](Shard& shard, uint32_t w, int64_t clock) {
    PushResponse r;
    REQUIRE(shard.Push(RandomPush(w, clock, &rng), &r).ok());
  };
  for (int64_t clock = 0; clock < 4; ++clock) {
    for (uint32_t w = 0; w < workers; ++w) push(*pair->primary, w, clock);
  }
  push(*pair->primary, 0, 4);  // lost with the primary: worker 0 pushes it again
  FollowAll(*pair);
  Shard& promoted = *pair->standby;
  REQUIRE(promoted.Promote(3).ok());
  for (uint32_t w = 0; w < workers; ++w) RegisterWorker(promoted, w);
  for (uint32_t w = 0; w < workers; ++w) push(promoted, w, 4);
  push(promoted, 1, 5);
  std::vector<v1::Mutation> log;
  auto snapshot = promoted.SnapshotAndLog({[&](const v1::Mutation& m) { log.push_back(m); }});
  REQUIRE(snapshot.ok());
  push(promoted, 0, 5);
  for (int64_t clock = 6; clock < 9; ++clock) {
    for (uint32_t w = 0; w < workers; ++w) push(promoted, w, clock);
  }
  // As it travels (replication.h JoinPrimary): the manifest serialized with
  // each table's byte count, the bytes copied.
  ShardState sent;
  for (size_t t = 0; t < (*snapshot)->tables.size(); ++t) {
    (*snapshot)->manifest.mutable_tables(static_cast<int>(t))
        ->set_bytes((*snapshot)->tables[t].size());
    ByteBuffer bytes((*snapshot)->tables[t].size());
    std::copy_n((*snapshot)->tables[t].data(), bytes.size(), bytes.data());
    sent.tables.push_back(std::move(bytes));
  }
  REQUIRE(sent.manifest.ParseFromString((*snapshot)->manifest.SerializeAsString()));
  auto joined = Shard::Create(c, 0);
  REQUIRE(joined.ok());
  (*joined)->SetStandby();
  REQUIRE((*joined)->Restore(sent).ok());
  (*joined)->SetTerm(3);
  for (const v1::Mutation& m : log) REQUIRE((*joined)->Follow(m).ok());
  CHECK(Same(promoted, **joined));
}

TEST_CASE("a standby serves no worker, and a primary follows no one") {
  auto pair = MakePair(AdamJob("bsp", 2));
  v1::RegisterRequest r;
  r.set_worker_rank(0);
  r.set_session(SessionOf(0));
  NameJob(*pair->standby, &r);
  v1::RegisterResponse resp;
  const absl::Status refused = pair->standby->Register(r, &resp);
  CHECK(refused.code() == absl::StatusCode::kUnavailable);
  CHECK(std::string(refused.message()).find("standby") != std::string::npos);
  auto pull = StartPull(*pair->standby, 0, 0, Dense("w", 0, 8));
  REQUIRE(pull->status.has_value());
  CHECK(pull->status->code() == absl::StatusCode::kUnavailable);
  PushResponse pr;
  CHECK(pair->standby->Push(MakePush(0, 0, Dense("b", 0, 2), {1, 1}), &pr).code() ==
        absl::StatusCode::kUnavailable);
  REQUIRE(!pair->log.empty());
  CHECK(pair->primary->Follow(pair->log[0]).code() == absl::StatusCode::kFailedPrecondition);
}

TEST_CASE("a mutation of a term that is over is refused, and a promoted standby follows no one") {
  auto pair = MakePair(AdamJob("bsp", 2));
  pair->primary->SetTerm(5);
  std::mt19937 rng(3);
  for (uint32_t w = 0; w < 2; ++w) {
    PushResponse r;
    REQUIRE(pair->primary->Push(RandomPush(w, 0, &rng), &r).ok());
  }
  REQUIRE(pair->log.size() == 3);  // two registrations (term 0) and a close (term 5)
  CHECK(pair->log[2].term() == 5);
  FollowAll(*pair);
  const State before = StateOf(*pair->standby);
  // A deposed primary of an older term (and the same numbers) is fenced.
  v1::Mutation old = pair->log[2];
  old.set_sequence(4);
  old.set_term(4);
  const absl::Status fenced = pair->standby->Follow(old);
  CHECK(fenced.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(std::string(fenced.message()).find("term 4, which is over") != std::string::npos);
  CHECK(pair->standby->followed() == 3);
  // Promotion needs a newer term than any followed.
  CHECK(pair->standby->Promote(5).code() == absl::StatusCode::kFailedPrecondition);
  CHECK(pair->standby->standby());
  v1::StatsResponse stats;
  pair->standby->Stats(&stats);
  CHECK(stats.standby());
  CHECK(stats.term() == 5);
  CHECK(stats.replication_sequence() == 3);
  CHECK(stats.promotions() == 0);
  REQUIRE(pair->standby->Promote(9).ok());
  CHECK(!pair->standby->standby());
  CHECK(pair->standby->term() == 9);
  CHECK(pair->standby->log_sequence() == 3);
  // What tessera status and the metrics show.
  stats.Clear();
  pair->standby->Stats(&stats);
  CHECK(!stats.standby());
  CHECK(stats.term() == 9);
  CHECK(stats.promotions() == 1);
  stats.Clear();
  pair->primary->Stats(&stats);
  CHECK(stats.replication_sequence() == 3);
  size_t bytes = 0;
  for (const v1::Mutation& m : pair->log) bytes += m.ByteSizeLong();
  CHECK(stats.replicated_bytes() == bytes);
  // The old primary's next mutation, of its own term, is refused too.
  v1::Mutation next = pair->log[2];
  next.set_sequence(4);
  const absl::Status refused = pair->standby->Follow(next);
  CHECK(refused.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(std::string(refused.message()).find("primary now (term 9)") != std::string::npos);
  CHECK(pair->standby->Promote(10).code() == absl::StatusCode::kFailedPrecondition);
  // Nothing changed, and the promoted shard serves the workers at clock 1.
  const State after = StateOf(*pair->standby);
  CHECK(after.text == before.text);
  CHECK(after.bytes == before.bytes);
  v1::RegisterRequest reg;
  reg.set_worker_rank(0);
  reg.set_session(SessionOf(0));
  reg.set_resume_clock(1);
  NameJob(*pair->standby, &reg);
  v1::RegisterResponse resp;
  REQUIRE(pair->standby->Register(reg, &resp).ok());
  CHECK(resp.clock() == 1);
  CHECK(resp.lost_clocks() == 0);
}

}  // namespace
}  // namespace tessera
