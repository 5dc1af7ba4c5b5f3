// A shard's side of recovery: adopting the clock a worker resumes at (after
// the shard was restored, or the worker died between shards), retried push
// pieces applied once, and BSP cuts taken at the clocks every shard shares.
#include <catch2/catch.hpp>

#include "shard_fixtures.h"

namespace tessera {
namespace {

v1::RegisterResponse RegisterAt(Shard& shard, uint32_t worker, int64_t resume_clock) {
  v1::RegisterRequest r;
  r.set_worker_rank(worker);
  r.set_session(SessionOf(worker));
  NameJob(shard, &r);
  r.set_resume_clock(resume_clock);
  v1::RegisterResponse resp;
  REQUIRE(shard.Register(r, &resp).ok());
  return resp;
}

PushResponse PushPiece(Shard& shard, uint32_t worker, int64_t clock, uint32_t piece, bool advance,
                       absl::Status* status = nullptr) {
  PushRequest p = MakePush(worker, clock, Dense("w", 0, 8), std::vector<float>(8, 1.0f), advance);
  p.set_piece(piece);
  PushResponse resp;
  absl::Status s = shard.Push(p, &resp);
  if (status != nullptr) {
    *status = s;
  } else {
    REQUIRE(s.ok());
  }
  return resp;
}

TEST_CASE("a shard behind a worker adopts the worker's clock and counts the clocks it lost") {
  auto shard = MakeShard(MakeConfig("bsp", 0, 2));
  // Worker 0 comes back at clock 7 (other shards hold it there): it jumps.
  v1::RegisterResponse r0 = RegisterAt(*shard, 0, 7);
  CHECK(r0.clock() == 7);
  CHECK(r0.lost_clocks() == 7);
  // Its pull at 7 waits for worker 1, who is still at 0 here...
  auto pull = StartPull(*shard, 0, 7, Dense("w", 0, 8));
  CHECK_FALSE(pull->status.has_value());
  // ...until worker 1 comes back at 7 too: min_clock rises and is published.
  v1::RegisterResponse r1 = RegisterAt(*shard, 1, 7);
  CHECK(r1.lost_clocks() == 7);
  REQUIRE(pull->status.has_value());
  CHECK(pull->status->ok());
  CHECK(pull->response.min_clock() == 7);
  // A worker behind the shard keeps the shard's clock (a restarted worker catches up).
  v1::RegisterResponse again = RegisterAt(*shard, 0, 2);
  CHECK(again.clock() == 7);
  CHECK(again.lost_clocks() == 0);
  v1::StatsResponse stats;
  shard->Stats(&stats);
  CHECK(stats.lost_clocks() == 7);
  // A resume clock no job reaches is refused and changes nothing.
  for (int64_t bad : {int64_t{-1}, (int64_t{1} << 40) + 1, std::numeric_limits<int64_t>::max()}) {
    v1::RegisterRequest r;
    r.set_worker_rank(0);
    r.set_session(SessionOf(0));
    NameJob(*shard, &r);
    r.set_resume_clock(bad);
    v1::RegisterResponse resp;
    CHECK(shard->Register(r, &resp).code() == absl::StatusCode::kInvalidArgument);
  }
  v1::StatsResponse after;
  shard->Stats(&after);
  CHECK(after.worker_clocks(0) == 7);
}

TEST_CASE("a retried push piece is acknowledged once and applied once") {
  auto shard = MakeShard(MakeConfig("asp", 0, 1));
  // Pieces 1 and 2 of clock 0, piece 1 sent twice (its first reply was lost).
  PushPiece(*shard, 0, 0, 1, false);
  PushPiece(*shard, 0, 0, 1, false);
  PushPiece(*shard, 0, 0, 2, false);
  // lr 1, w starts at 1, gradient 1: two applied pushes.
  for (float x : PullNow(*shard, Dense("w", 0, 8))) CHECK(x == -1.0f);
  v1::StatsResponse stats;
  shard->Stats(&stats);
  CHECK(stats.duplicate_pushes() == 1);
  // The advance closes the clock; piece 1 of the next clock applies again.
  Advance(*shard, 0, 0);
  PushPiece(*shard, 0, 1, 1, false);
  for (float x : PullNow(*shard, Dense("w", 0, 8))) CHECK(x == -2.0f);
  // Piece 0 is never checked (tools that push many times a clock).
  PushPiece(*shard, 0, 1, 0, false);
  PushPiece(*shard, 0, 1, 0, false);
  for (float x : PullNow(*shard, Dense("w", 0, 8))) CHECK(x == -4.0f);
  absl::Status s;
  PushPiece(*shard, 0, 1, 65, false, &s);
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  for (float x : PullNow(*shard, Dense("w", 0, 8))) CHECK(x == -4.0f);
}

TEST_CASE("BSP cuts are taken at the chosen clocks, after the clock's updates, before publishing") {
  auto shard = MakeShard(MakeConfig("bsp", 0, 2));
  std::vector<int64_t> cuts;
  std::vector<float> cut_w;
  shard->SetBspCuts([](int64_t clock) { return clock % 2 == 0; },
                    [&](std::unique_ptr<ShardState> state) {
                      cuts.push_back(state->manifest.clock());
                      for (int64_t c : state->manifest.worker_clocks()) CHECK(c == cuts.back());
                      cut_w.assign(reinterpret_cast<const float*>(state->tables[0].data()),
                                   reinterpret_cast<const float*>(state->tables[0].data()) + 8);
                    });
  for (int64_t clock = 0; clock < 4; ++clock) {
    for (uint32_t w = 0; w < 2; ++w) {
      StartPull(*shard, w, clock, Dense("w", 0, 8));
      PushPiece(*shard, w, clock, 1, /*advance=*/true);
    }
  }
  CHECK(cuts == std::vector<int64_t>{2, 4});
  // The cut of clock 4 holds the four aggregated updates (lr 1, mean gradient 1).
  for (float x : cut_w) CHECK(x == -3.0f);
}

TEST_CASE("an SSP snapshot records each worker's clock with exactly its applied pushes") {
  auto shard = MakeShard(MakeConfig("ssp", 2, 2));
  PushPiece(*shard, 0, 0, 1, true);
  PushPiece(*shard, 0, 1, 1, true);
  PushPiece(*shard, 1, 0, 1, true);
  std::unique_ptr<ShardState> cut = shard->Snapshot();
  CHECK(cut->manifest.clock() == 1);  // min_clock
  CHECK(cut->manifest.worker_clocks(0) == 2);
  CHECK(cut->manifest.worker_clocks(1) == 1);
  const float* w = reinterpret_cast<const float*>(cut->tables[0].data());
  CHECK(w[0] == -2.0f);  // three pushes of gradient 1, lr 1, from 1
}

}  // namespace
}  // namespace tessera

namespace tessera {
namespace {

TEST_CASE("a worker silent past evict_after_s is dropped from the barrier and rejoins when back") {
  JobConfig config = MakeConfig("bsp", 0, 2);
  config.consistency.evict_after_s = 0.05;
  auto shard = MakeShard(config);
  PushPiece(*shard, 0, 0, 1, /*advance=*/true);
  auto pull = StartPull(*shard, 0, 1, Dense("w", 0, 8));  // waits for worker 1
  CHECK_FALSE(pull->status.has_value());
  // Worker 0 keeps calling; worker 1 is silent.
  CHECK(shard->EvictSilent(absl::Now()) == 0);  // not silent long enough yet
  absl::SleepFor(absl::Milliseconds(80));
  v1::RegisterResponse keepalive = RegisterAt(*shard, 0, 0);
  CHECK(keepalive.clock() == 1);
  CHECK(shard->EvictSilent(absl::Now()) == 1);
  REQUIRE(pull->status.has_value());
  CHECK(pull->status->ok());
  v1::StatsResponse stats;
  shard->Stats(&stats);
  REQUIRE(stats.evicted_workers_size() == 1);
  CHECK(stats.evicted_workers(0) == 1);
  CHECK(stats.min_clock() == 1);
  // Worker 1 comes back: its push for the skipped clock is refused, and it
  // re-registers at the published min_clock, where it joins the barrier again.
  absl::Status s;
  PushPiece(*shard, 1, 0, 1, true, &s);
  CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
  v1::RegisterResponse back = RegisterAt(*shard, 1, 0);
  CHECK(back.clock() == 1);
  v1::StatsResponse after;
  shard->Stats(&after);
  CHECK(after.evicted_workers_size() == 0);
  CHECK(after.worker_clocks(1) == 1);
  // ASP never evicts: nobody waits.
  JobConfig asp = MakeConfig("asp", 0, 2);
  asp.consistency.evict_after_s = 0.001;
  auto free_running = MakeShard(asp);
  absl::SleepFor(absl::Milliseconds(5));
  CHECK(free_running->EvictSilent(absl::Now()) == 0);
}

}  // namespace
}  // namespace tessera
