// Replication without aggregation (SSP, ASP, BSP with aggregate: false): every
// push and advance is its own mutation, sent as applied; a standby that
// follows them holds its primary's state to the bit, a parked pull waits for
// the standby, a retried piece applies once after a promotion, and what does
// not fit is refused (server/shard.h SetMutationLog, Follow).
#include <memory>
#include <random>
#include <thread>

#include "tests/server/replication_fixtures.h"

namespace tessera {
namespace {

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
        *pull.add_slices() = Sparse("emb", {static_cast<uint64_t>(5000000 + 100 * clock + w)});
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
  // Each answered once it was safe: the last mutation was waited for.
  CHECK(*pair->awaited.rbegin() == pair->log.size());
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

TEST_CASE("a standby that joins mid-clock holds its primary's state to the bit") {
  // Worker 0's clock 3 is half applied when the copy is taken: its first
  // piece moved w[0, 4), and its second, w[4, 8), follows as a mutation.
  // Both pieces fall in one lock chunk of w, so the copy must say that
  // chunk's step already counted worker 0's clock 3 (one optimizer step per
  // worker and clock however its pieces split a chunk), and with dc or
  // gap_aware, each chunk's compensation statistic.
  const uint32_t workers = 2;
  struct Job {
    const char* name;
    JobConfig config;
  };
  Job job = [](int which, uint32_t n) {
    switch (which) {
      case 0: return Job{"ssp, adam", UnaggregatedJob(0, n).config};
      case 1: return Job{"asp with dc", UnaggregatedJob(1, n).config};
      case 2: {
        Job j{"asp with gap_aware, adam", AdamJob("asp", n)};
        j.config.optimizer.staleness_compensation = StalenessCompensation::kGapAware;
        return j;
      }
      default: return Job{"bsp, aggregate: false, adam", UnaggregatedJob(3, n).config};
    }
  }(GENERATE(0, 1, 2, 3), workers);
  INFO(job.name);
  auto created = Shard::Create(job.config, 0);
  REQUIRE(created.ok());
  Shard& primary = **created;
  for (uint32_t w = 0; w < workers; ++w) RegisterWorker(primary, w);
  std::mt19937 rng(31);
  std::normal_distribution<float> g(0.0f, 1.0f);
  const auto pull = [&](uint32_t w, int64_t clock) {
    // Recorded for dc and gap_aware: the values the next push is computed from.
    PullRequest request = MakePull(w, clock, Dense("w", 0, 8));
    *request.add_slices() = Dense("b", 0, 2);
    auto answer = StartPull(primary, request);
    REQUIRE(answer->status.has_value());
    REQUIRE(answer->status->ok());
  };
  const auto piece = [&](uint32_t w, int64_t clock, uint32_t which) {
    std::vector<float> grad(4);
    for (float& x : grad) x = g(rng);
    PushRequest p = MakePush(w, clock, Dense("w", which == 1 ? 0 : 4, 4), grad, which == 2);
    if (which == 2) {
      *p.add_slices() = Dense("b", 0, 2);
      const std::vector<float> bias{g(rng), g(rng)};
      EncodeFloats(bias, p.add_gradients());
    }
    p.set_piece(which);
    p.set_values_clock(clock);
    PushResponse r;
    REQUIRE(primary.Push(p, &r).ok());
  };
  // Every worker pulls before any pushes: each push after the first is
  // stale by the others' (dc and gap_aware compensate it).
  const auto pulls = [&](int64_t clock) {
    for (uint32_t w = 0; w < workers; ++w) pull(w, clock);
  };
  for (int64_t clock = 0; clock < 3; ++clock) {
    pulls(clock);
    for (uint32_t w = 0; w < workers; ++w) {
      piece(w, clock, 1);
      piece(w, clock, 2);
    }
  }
  pulls(3);
  piece(0, 3, 1);
  std::vector<v1::Mutation> log;
  auto snapshot = primary.SnapshotAndLog({[&](const v1::Mutation& m) { log.push_back(m); }});
  REQUIRE(snapshot.ok());
  piece(0, 3, 2);
  for (uint32_t w = 1; w < workers; ++w) {
    piece(w, 3, 1);
    piece(w, 3, 2);
  }
  for (int64_t clock = 4; clock < 6; ++clock) {
    pulls(clock);
    for (uint32_t w = 0; w < workers; ++w) {
      piece(w, clock, 1);
      piece(w, clock, 2);
    }
  }
  auto joined = Shard::Create(job.config, 0);
  REQUIRE(joined.ok());
  Shard& standby = **joined;
  standby.SetStandby();
  REQUIRE(standby.Restore(**snapshot).ok());
  for (const v1::Mutation& m : log) REQUIRE(standby.Follow(m).ok());
  CHECK(Same(primary, standby));
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
