// Replication's unit (server/shard.h SetMutationLog, Follow): a standby that
// follows its primary's mutations, in order, holds the primary's state to the
// bit: tables, optimizer slots and steps, sparse rows, clocks. Under BSP a
// clock's pushes travel once, summed, in the clock's close; in every other
// mode each push and advance travels as applied.
#include <atomic>
#include <functional>
#include <set>
#include <cmath>
#include <limits>
#include <mutex>
#include <random>
#include <thread>

#include "server/checkpoint.h"
#include "zlib.h"

#include "tests/server/shard_fixtures.h"

namespace tessera {
namespace {

// What a checkpoint of `shard` would hold now: the cut, every worker's clock
// and finished flag, and each table's optimizer steps, row count and bytes
// (as a CRC-32, readable when a check fails; Same() compares the bytes).
struct State {
  std::vector<std::string> text;
  std::vector<std::string> bytes;
};

State StateOf(Shard& shard) {
  std::unique_ptr<ShardState> s = shard.Snapshot();
  State out;
  out.text = {"cut " + std::to_string(s->manifest.clock())};
  for (int64_t c : s->manifest.worker_clocks()) out.text.push_back("clock " + std::to_string(c));
  for (bool f : s->manifest.worker_finished()) out.text.push_back(f ? "finished" : "training");
  for (uint64_t p : s->manifest.worker_pieces()) out.text.push_back("pieces " + std::to_string(p));
  REQUIRE(s->tables.size() == static_cast<size_t>(s->manifest.tables_size()));
  for (size_t i = 0; i < s->tables.size(); ++i) {
    const v1::CheckpointTable& t = s->manifest.tables(static_cast<int>(i));
    const ByteBuffer& b = s->tables[i];
    std::string line = t.name() + ": rows " + std::to_string(t.rows()) + ", step " +
                       std::to_string(t.step()) + ", bytes " + std::to_string(b.size()) +
                       ", crc " +
                       std::to_string(crc32(0, reinterpret_cast<const Bytef*>(b.data()),
                                            static_cast<uInt>(b.size()))) +
                       ", chunk steps";
    for (int64_t step : t.chunk_steps()) line += " " + std::to_string(step);
    out.text.push_back(line);
    out.bytes.emplace_back(b.data(), b.size());
  }
  return out;
}

// Whether two shards' states are the same, to the bit.
bool Same(Shard& a, Shard& b) {
  const State x = StateOf(a), y = StateOf(b);
  CHECK(x.text == y.text);
  return x.text == y.text && x.bytes == y.bytes;
}

JobConfig AdamJob(const std::string& mode, uint32_t workers) {
  JobConfig c = MakeConfig(mode, 0, workers);
  c.optimizer.type = OptimizerType::kAdam;
  c.optimizer.lr = 0.01f;
  return c;
}

// A push of random gradients for all of `w`, `b` and some `emb` rows.
PushRequest RandomPush(uint32_t worker, int64_t clock, std::mt19937* rng) {
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> w(8), b(2);
  for (float& x : w) x = g(*rng);
  for (float& x : b) x = g(*rng);
  std::vector<uint64_t> keys;
  for (uint64_t k = 0; k < 40; ++k) {
    if ((*rng)() % 3 == 0) keys.push_back(k * 7919);
  }
  std::vector<float> rows(keys.size() * 2);
  for (float& x : rows) x = g(*rng);
  PushRequest p = MakePush(worker, clock, Dense("w", 0, 8), w, /*advance=*/true);
  *p.add_slices() = Dense("b", 0, 2);
  EncodeFloats(b, p.add_gradients());
  if (!keys.empty()) {
    *p.add_slices() = Sparse("emb", keys);
    EncodeFloats(rows, p.add_gradients());
  }
  return p;
}

struct Pair {
  std::unique_ptr<Shard> primary, standby;
  std::vector<v1::Mutation> log;
  std::set<uint64_t> awaited;  // the numbers the shard awaited
  std::function<void(uint64_t)> on_await;  // a test's, after each await
  size_t followed = 0;
  std::mutex mu;
};

std::unique_ptr<Pair> MakePair(const JobConfig& c) {
  auto pair = std::make_unique<Pair>();
  auto primary = Shard::Create(c, 0);
  auto standby = Shard::Create(c, 0);
  REQUIRE(primary.ok());
  REQUIRE(standby.ok());
  pair->primary = *std::move(primary);
  pair->standby = *std::move(standby);
  pair->standby->SetStandby();
  Pair* raw = pair.get();
  REQUIRE(pair->primary
              ->SetMutationLog({[raw](const v1::Mutation& m) {
                std::lock_guard<std::mutex> lock(raw->mu);
                raw->log.push_back(m);
              },
                               [raw](uint64_t sequence) {
                                 {
                                   // After the mutation was appended, and once.
                                   std::lock_guard<std::mutex> lock(raw->mu);
                                   CHECK(sequence <= raw->log.size());
                                   CHECK(raw->awaited.insert(sequence).second);
                                 }
                                 if (raw->on_await) raw->on_await(sequence);
                               }})
              .ok());
  for (uint32_t w = 0; w < c.cluster.workers; ++w) RegisterWorker(*pair->primary, w);
  return pair;
}

// Follows the mutations logged since the last call.
void FollowAll(Pair& pair) {
  for (size_t i = pair.followed; i < pair.log.size(); ++i, ++pair.followed) {
    INFO("mutation " << i);
    CHECK(pair.log[i].sequence() == i + 1);  // numbered, none missing
    REQUIRE(pair.standby->Follow(pair.log[i]).ok());
  }
}

// The standby refuses `m` with `code`, and its state is still `before`.
void CheckRefused(Pair& pair, const State& before, const v1::Mutation& m, absl::StatusCode code) {
  const uint64_t followed = pair.standby->followed();
  const absl::Status s = pair.standby->Follow(m);
  CHECK(s.code() == code);
  const State now = StateOf(*pair.standby);
  CHECK(now.text == before.text);
  CHECK(now.bytes == before.bytes);
  CHECK(pair.standby->followed() == followed);
}

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
  CHECK(pair->awaited.size() == pair->log.size());
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

// Without aggregation (SSP, ASP, BSP with aggregate: false) every push is
// its own mutation. `values_clock`: the pull the gradients were computed
// from (staleness compensation).
PushRequest Piece(uint32_t worker, int64_t clock, uint32_t piece, std::mt19937* rng,
                  std::optional<int64_t> values_clock) {
  std::normal_distribution<float> g(0.0f, 1.0f);
  PushRequest p;
  if (piece == 1) {
    std::vector<float> w(8);
    for (float& x : w) x = g(*rng);
    p = MakePush(worker, clock, Dense("w", 0, 8), w);
  } else {
    std::vector<float> b(2);
    for (float& x : b) x = g(*rng);
    p = MakePush(worker, clock, Dense("b", 0, 2), b, /*advance=*/true);
    std::vector<uint64_t> keys;
    for (uint64_t k = 0; k < 40; ++k) {
      if ((*rng)() % 3 == 0) keys.push_back(k * 7919);
    }
    std::vector<float> rows(keys.size() * 2);
    for (float& x : rows) x = g(*rng);
    if (!keys.empty()) {
      *p.add_slices() = Sparse("emb", keys);
      EncodeFloats(rows, p.add_gradients());
    }
  }
  p.set_piece(piece);
  if (values_clock) p.set_values_clock(*values_clock);
  return p;
}

struct Unaggregated {
  const char* name;
  JobConfig config;
};

Unaggregated UnaggregatedJob(int which, uint32_t workers) {
  switch (which) {
    case 0: {
      Unaggregated j{"ssp, staleness 2", AdamJob("ssp", workers)};
      j.config.consistency.staleness = 2;
      return j;
    }
    case 1: {
      Unaggregated j{"asp with dc", MakeConfig("asp", 0, workers)};  // sgd
      j.config.optimizer.staleness_compensation = StalenessCompensation::kDc;
      j.config.optimizer.dc_lambda = 1.0f;
      return j;
    }
    case 2: {
      Unaggregated j{"asp with lr_scale", AdamJob("asp", workers)};
      j.config.optimizer.staleness_compensation = StalenessCompensation::kLrScale;
      return j;
    }
    default: {
      Unaggregated j{"bsp, aggregate: false", AdamJob("bsp", workers)};
      j.config.consistency.aggregate = false;
      return j;
    }
  }
}

TEST_CASE("a standby following an SSP, ASP or unaggregated BSP primary holds its state to the bit") {
  const uint32_t workers = 3;
  const Unaggregated job = UnaggregatedJob(GENERATE(0, 1, 2, 3), workers);
  INFO(job.name);
  const JobConfig& c = job.config;
  auto pair = MakePair(c);
  // How far ahead of min_clock a worker's pull is answered at once.
  const int64_t ahead = c.consistency.mode == ConsistencyMode::kAsp ? 1 << 20
                                                                   : c.consistency.staleness;
  constexpr int64_t kClocks = 25;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  std::mutex pull_mu;  // a pull's answer comes on this thread or an advancing one
  for (uint32_t w = 0; w < workers; ++w) {
    threads.emplace_back([&, w] {
      std::mt19937 rng(200 + w);
      for (int64_t clock = 0; clock < kClocks; ++clock) {
        // Waited for here, so that the pull is answered at once.
        for (int i = 0; i < 200000 && pair->primary->published_min() < clock - ahead; ++i) {
          std::this_thread::sleep_for(std::chrono::microseconds(50));
        }
        // The values the push is computed from (kept for dc), and rows the
        // pull creates (server.pull_creates_rows).
        PullRequest pull = MakePull(w, clock, Dense("w", 0, 8));
        *pull.add_slices() = Dense("b", 0, 2);
        *pull.add_slices() = Sparse("emb", {5000000 + 100 * clock + w});
        PullResponse answer;
        std::optional<absl::Status> pulled;
        pair->primary->Pull(pull, &answer, absl::Now() + absl::Seconds(30),
                            [&](absl::Status st) {
                              std::lock_guard<std::mutex> lock(pull_mu);
                              pulled = st;
                            });
        {
          std::lock_guard<std::mutex> lock(pull_mu);
          if (!pulled.has_value() || !pulled->ok()) ++failures;
        }
        for (uint32_t piece : {1u, 2u}) {
          PushResponse r;
          if (!pair->primary->Push(Piece(w, clock, piece, &rng, clock), &r).ok()) ++failures;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  REQUIRE(failures == 0);
  FollowAll(*pair);
  CHECK(Same(*pair->primary, *pair->standby));
  // Every push and advance is a mutation of its own, after 3 registrations.
  size_t pushes = 0, advances = 0, created = 0;
  for (const v1::Mutation& m : pair->log) {
    pushes += m.has_push();
    advances += m.has_advance();
    for (const v1::TableAggregate& t : m.created()) created += t.created_keys_size();
  }
  CHECK(pushes == 2 * workers * kClocks);
  CHECK(advances == workers * kClocks);
  CHECK(pair->log.size() == workers + pushes + advances);
  CHECK(pair->awaited.size() == pair->log.size());  // each answered once it was safe
  CHECK(created >= workers * kClocks);  // each pull created a row
  if (c.optimizer.staleness_compensation == StalenessCompensation::kDc) {
    size_t with_values = 0;
    for (const v1::Mutation& m : pair->log) with_values += m.has_push() && m.push().read_size() > 0;
    CHECK(with_values == pushes);  // each dense piece was computed from a kept pull
  }
}

TEST_CASE("without aggregation, a parked pull is answered only once the standby holds its clock") {
  // The advance that opens worker 1's clock is awaited (the standby holds
  // it) before the pull parked on it is answered.
  auto pair = MakePair(UnaggregatedJob(GENERATE(0, 3), 2).config);
  const int64_t staleness = pair->primary->config().consistency.staleness;
  std::mt19937 rng(29);
  PushResponse r;
  // Worker 1 runs ahead until its pull must wait for worker 0.
  for (int64_t clock = 0; clock <= staleness; ++clock) {
    REQUIRE(pair->primary->Push(Piece(1, clock, 2, &rng, std::nullopt), &r).ok());
  }
  auto pull = StartPull(*pair->primary, 1, staleness + 1, Dense("w", 0, 8));
  REQUIRE(!pull->status.has_value());  // parked
  std::optional<bool> answered_at_await;
  pair->on_await = [&](uint64_t sequence) {
    if (pair->log[sequence - 1].has_advance()) answered_at_await = pull->status.has_value();
  };
  REQUIRE(pair->primary->Push(Piece(0, 0, 2, &rng, std::nullopt), &r).ok());
  REQUIRE(answered_at_await.has_value());
  CHECK(!*answered_at_await);
  REQUIRE(pull->status.has_value());
  CHECK(pull->status->ok());
}

TEST_CASE("without aggregation, a piece retried on a promoted standby is applied once") {
  // The standby joins mid-clock (SnapshotAndLog), after worker 0's piece 1
  // of clock 3 was applied: the copy names the piece, and so do the
  // mutations after it. A retry of either piece on the promoted standby is
  // acknowledged, not applied again.
  const uint32_t workers = 2;
  const JobConfig c = UnaggregatedJob(GENERATE(0, 2), workers).config;
  auto created = Shard::Create(c, 0);
  REQUIRE(created.ok());
  Shard& primary = **created;
  for (uint32_t w = 0; w < workers; ++w) RegisterWorker(primary, w);
  std::mt19937 rng(17);
  const auto push = [&](Shard& shard, const PushRequest& p) {
    PushResponse r;
    REQUIRE(shard.Push(p, &r).ok());
    return r;
  };
  for (int64_t clock = 0; clock < 3; ++clock) {
    for (uint32_t w = 0; w < workers; ++w) {
      push(primary, Piece(w, clock, 1, &rng, std::nullopt));
      push(primary, Piece(w, clock, 2, &rng, std::nullopt));
    }
  }
  const PushRequest first = Piece(0, 3, 1, &rng, std::nullopt);
  push(primary, first);
  std::vector<v1::Mutation> log;
  auto snapshot = primary.SnapshotAndLog({[&](const v1::Mutation& m) { log.push_back(m); }});
  REQUIRE(snapshot.ok());
  REQUIRE((*snapshot)->manifest.worker_pieces_size() == static_cast<int>(workers));
  CHECK((*snapshot)->manifest.worker_pieces(0) == 1);  // piece 1's bit
  CHECK((*snapshot)->manifest.worker_clocks(0) == 3);
  const PushRequest second = Piece(1, 3, 1, &rng, std::nullopt);
  push(primary, second);
  auto joined = Shard::Create(c, 0);
  REQUIRE(joined.ok());
  Shard& standby = **joined;
  standby.SetStandby();
  REQUIRE(standby.Restore(**snapshot).ok());
  REQUIRE(log.size() == 1);
  REQUIRE(log[0].has_push());
  REQUIRE(standby.Follow(log[0]).ok());
  CHECK(Same(primary, standby));
  // The primary is lost; the workers' retries reach the promoted standby.
  REQUIRE(standby.Promote(5).ok());
  for (uint32_t w = 0; w < workers; ++w) {
    v1::RegisterRequest reg;
    reg.set_worker_rank(w);
    reg.set_session(SessionOf(w));
    reg.set_resume_clock(3);
    NameJob(standby, &reg);
    v1::RegisterResponse resp;
    REQUIRE(standby.Register(reg, &resp).ok());
    CHECK(resp.clock() == 3);
    CHECK(resp.lost_clocks() == 0);
  }
  const State before = StateOf(standby);
  push(standby, first);   // in the copy
  push(standby, second);  // in the mutation after it
  const State after = StateOf(standby);
  CHECK(after.text == before.text);
  CHECK(after.bytes == before.bytes);
  // A piece neither had is applied.
  push(standby, Piece(0, 3, 2, &rng, std::nullopt));
  CHECK(StateOf(standby).bytes != before.bytes);
}

TEST_CASE("a push or advance that does not fit is refused and changes nothing on the standby") {
  const uint32_t workers = 2;
  auto pair = MakePair(UnaggregatedJob(2, workers).config);
  std::mt19937 rng(23);
  for (uint32_t w = 0; w < workers; ++w) {
    PushResponse r;
    REQUIRE(pair->primary->Push(Piece(w, 0, 1, &rng, std::nullopt), &r).ok());
    REQUIRE(pair->primary->Push(Piece(w, 0, 2, &rng, std::nullopt), &r).ok());
  }
  // 2 registrations, then worker 0's two pieces and advance, and worker 1's.
  REQUIRE(pair->log.size() == 8);
  const std::vector<v1::Mutation> rest(pair->log.begin() + 2, pair->log.end());
  pair->log.resize(2);
  FollowAll(*pair);
  const State before = StateOf(*pair->standby);
  const auto refused = [&](const v1::Mutation& m, absl::StatusCode code) {
    CheckRefused(*pair, before, m, code);
  };
  const v1::Mutation push = rest[0];
  REQUIRE(push.has_push());
  v1::Mutation bad = push;
  bad.mutable_push()->mutable_grads()->RemoveLast();
  refused(bad, absl::StatusCode::kInvalidArgument);
  bad = push;
  bad.mutable_push()->mutable_slices(0)->set_table(99);
  refused(bad, absl::StatusCode::kInvalidArgument);
  bad = push;
  bad.mutable_push()->mutable_slices(0)->set_offset(4);  // [4, +8) of 8 floats
  refused(bad, absl::StatusCode::kInvalidArgument);
  bad = push;
  bad.mutable_push()->set_worker(2);
  refused(bad, absl::StatusCode::kInvalidArgument);
  bad = push;
  bad.mutable_push()->set_piece_bit(3);
  refused(bad, absl::StatusCode::kInvalidArgument);
  bad = push;
  bad.mutable_push()->add_read_slices(0);  // read values it does not carry
  refused(bad, absl::StatusCode::kInvalidArgument);
  bad = push;
  bad.mutable_push()->set_clock(1);  // worker 0 is at clock 0 here
  refused(bad, absl::StatusCode::kFailedPrecondition);
  bad = push;
  v1::TableAggregate* rows = bad.add_created();
  rows->set_table(0);  // w is dense
  rows->add_created_keys(1);
  refused(bad, absl::StatusCode::kInvalidArgument);
  // An advance of a clock the worker is not at.
  REQUIRE(rest[2].has_advance());
  bad = rest[2];
  bad.set_sequence(3);
  bad.mutable_advance()->set_clock(1);  // worker 0 is at clock 0 here
  refused(bad, absl::StatusCode::kFailedPrecondition);
  // In order, each applies.
  pair->log.insert(pair->log.end(), rest.begin(), rest.end());
  FollowAll(*pair);
  CHECK(Same(*pair->primary, *pair->standby));
}

}  // namespace
}  // namespace tessera
