// Push staleness as a shard measures it, and the three compensations
// (optimizer.staleness_compensation) against steps computed by hand.
#include <catch2/catch.hpp>
#include <cmath>

#include "server/staleness_tracker.h"
#include "tests/server/shard_fixtures.h"

namespace tessera {
namespace {

// A push of `grad` on all of table w (8 values) that advances the clock,
// naming the pull its values came from (or none).
PushResponse PushW(Shard& shard, uint32_t worker, int64_t clock, float grad,
                   std::optional<int64_t> values_clock) {
  PushRequest p = MakePush(worker, clock, Dense("w", 0, 8), std::vector<float>(8, grad), true);
  if (values_clock) p.set_values_clock(*values_clock);
  PushResponse response;
  REQUIRE(shard.Push(p, &response).ok());
  return response;
}

std::vector<float> PullW(Shard& shard, uint32_t worker, int64_t clock) {
  auto p = StartPull(shard, worker, clock, Dense("w", 0, 8));
  REQUIRE(p->status.has_value());
  REQUIRE(p->status->ok());
  return DecodeFloats(p->response.values(0));
}

TEST_CASE("a push's staleness is the updates published since its values were read") {
  const JobConfig c = MakeConfig("ssp", 10, 2);
  auto shard = MakeShard(c);
  PullW(*shard, 0, 0);  // worker 0 reads at version 0
  for (int64_t clock = 0; clock < 3; ++clock) PushW(*shard, 1, clock, 0, std::nullopt);
  CHECK(PushW(*shard, 0, 0, 0, 0).staleness() == 3);
  // Its own update since the read counts too.
  CHECK(PushW(*shard, 0, 1, 0, 0).staleness() == 4);
  // A read no pull answered cannot be measured.
  CHECK(PushW(*shard, 1, 3, 0, 99).staleness() == -1);
  // A push that names no read is not counted at all.
  CHECK(PushW(*shard, 1, 4, 0, std::nullopt).staleness() == -1);

  v1::StatsResponse stats;
  shard->Stats(&stats);
  const std::vector<double> bounds = StalenessTracker::Bounds();
  REQUIRE(stats.push_staleness_buckets_size() == static_cast<int>(bounds.size()) + 1);
  for (size_t i = 0; i < bounds.size(); ++i) {
    INFO("bucket <= " << bounds[i]);
    CHECK(stats.push_staleness_buckets(i) == (bounds[i] == 4 ? 2u : 0u));  // 3 and 4
  }
  CHECK(stats.push_staleness_buckets(bounds.size()) == 0);  // above the last bound
  CHECK(stats.push_staleness_sum() == 7);
  CHECK(stats.push_staleness_unknown() == 1);
  CHECK(stats.updates_published() == 7);  // every clock advanced
}

TEST_CASE("a fused pull is a read too; a worker's fourth pull back is forgotten") {
  const JobConfig c = MakeConfig("asp", 0, 2);
  auto shard = MakeShard(c);
  PullW(*shard, 0, 0);
  PushRequest fused = MakePush(0, 0, Dense("w", 0, 8), std::vector<float>(8, 0), true);
  fused.set_values_clock(0);
  *fused.add_pull_slices() = Dense("w", 0, 8);
  PushResponse response;
  REQUIRE(shard->Push(fused, &response).ok());
  REQUIRE(response.pulled());
  CHECK(response.staleness() == 0);
  PushW(*shard, 1, 0, 0, std::nullopt);
  CHECK(PushW(*shard, 0, 1, 0, 1).staleness() == 1);  // read at version 1 (fused), now 2
  // Pulls at clocks 2, 3 and 4 fill the ring of three.
  PullW(*shard, 0, 2);
  PushW(*shard, 0, 2, 0, std::nullopt);
  PullW(*shard, 0, 3);
  PushW(*shard, 0, 3, 0, std::nullopt);
  PullW(*shard, 0, 4);
  // Remembered: clocks 2, 3, 4. Clock 0's read is gone.
  CHECK(PushW(*shard, 0, 4, 0, 0).staleness() == -1);
  CHECK(PushW(*shard, 0, 5, 0, 2).staleness() == 3);
}

TEST_CASE("lr_scale divides the update's learning rate by its staleness") {
  JobConfig c = MakeConfig("asp", 0, 2);  // sgd, lr 1; w starts at 1
  c.optimizer.staleness_compensation = StalenessCompensation::kLrScale;
  auto shard = MakeShard(c);
  PullW(*shard, 0, 0);
  for (int64_t clock = 0; clock < 4; ++clock) PushW(*shard, 1, clock, 0, std::nullopt);
  REQUIRE(PushW(*shard, 0, 0, 0.3f, 0).staleness() == 4);
  for (float v : PullNow(*shard, Dense("w", 0, 8), /*worker=*/1))
    CHECK(v == Approx(1 - 0.3 / 4).epsilon(1e-6));
  // Staleness 0 counts as 1; an unknown read is applied at the full rate.
  PullW(*shard, 0, 1);
  PushW(*shard, 0, 1, 0.1f, 1);
  for (float v : PullNow(*shard, Dense("w", 0, 8), /*worker=*/1))
    CHECK(v == Approx(0.925 - 0.1).epsilon(1e-6));
  PushW(*shard, 0, 2, 0.1f, 77);
  for (float v : PullNow(*shard, Dense("w", 0, 8), /*worker=*/1))
    CHECK(v == Approx(0.825 - 0.1).epsilon(1e-6));
}

TEST_CASE("dc compensates with the values the gradient was computed from") {
  JobConfig c = MakeConfig("asp", 0, 2);  // sgd, lr 1; w starts at 1
  c.optimizer.staleness_compensation = StalenessCompensation::kDc;
  c.optimizer.dc_lambda = 1.0f;
  c.optimizer.dc_decay = 0.9f;
  auto shard = MakeShard(c);
  // The hand-computed DC-ASGD-a step, mean square corrected for its zero start.
  double ms = 0;
  int t = 0;
  auto compensated = [&](double g, double w_now, double w_read) {
    ms = 0.9 * ms + 0.1 * g * g;
    ++t;
    const double lambda = 1.0 / std::sqrt(ms / (1 - std::pow(0.9, t)) + 1e-7);
    return g + lambda * g * g * (w_now - w_read);
  };
  PullW(*shard, 0, 0);                          // worker 0 reads w = 1
  PushW(*shard, 1, 0, 0.3f, std::nullopt);      // w = 0.7, not compensated
  PushW(*shard, 0, 0, 0.2f, 0);                 // from w = 1, applied to 0.7
  double w = 0.7 - compensated(0.2, 0.7, 1.0);  // 0.2 * (1 - 0.3) = 0.14
  CHECK(w == Approx(0.56).epsilon(1e-5));
  for (float v : PullNow(*shard, Dense("w", 0, 8), /*worker=*/1))
    CHECK(v == Approx(w).epsilon(1e-5));
  const double read = w;
  PullW(*shard, 0, 1);                       // worker 0 reads w = 0.56
  PushW(*shard, 1, 1, -0.5f, std::nullopt);  // w = 1.06
  PushW(*shard, 0, 1, 0.4f, 1);
  w = (w + 0.5) - compensated(0.4, w + 0.5, read);
  for (float v : PullNow(*shard, Dense("w", 0, 8), /*worker=*/1))
    CHECK(v == Approx(w).epsilon(1e-5));
  // Fresh values (nothing applied since the read) are not changed by dc.
  PullW(*shard, 0, 2);
  PushW(*shard, 0, 2, 0.1f, 2);
  compensated(0.1, 0, 0);  // the mean square still moves
  w -= 0.1;
  for (float v : PullNow(*shard, Dense("w", 0, 8), /*worker=*/1))
    CHECK(v == Approx(w).epsilon(1e-5));

  v1::StatsResponse stats;
  shard->Stats(&stats);
  // w's 8 floats for each remembered read: worker 0's three, worker 1's one.
  CHECK(stats.compensation_floats() == 4 * 8);
}

// A push of a gradient per value of w (8 values) that advances the clock.
void PushEach(Shard& shard, uint32_t worker, int64_t clock, const std::vector<float>& grad,
              std::optional<int64_t> values_clock) {
  PushRequest p = MakePush(worker, clock, Dense("w", 0, 8), grad, true);
  if (values_clock) p.set_values_clock(*values_clock);
  PushResponse response;
  REQUIRE(shard.Push(p, &response).ok());
}

// Gap-Aware's bookkeeping for one value, computed by hand: the running mean
// of its undamped |step| (decay d, corrected for its zero start) and the gap.
struct HandGap {
  double d, mean = 0;
  int t = 0;
  // The step actually taken: `step` (undamped) divided by the gap of a value
  // `drift` away from its read.
  double Step(double step, double drift) {
    mean = d * mean + (1 - d) * std::abs(step);
    ++t;
    const double typical = mean / (1 - std::pow(d, t));
    return step / std::max(1.0, std::abs(drift) / typical);
  }
};

TEST_CASE("gap_aware divides each value's step by how far it moved since the read") {
  JobConfig c = MakeConfig("asp", 0, 2);  // sgd, lr 1; w starts at 1
  c.optimizer.staleness_compensation = StalenessCompensation::kGapAware;
  c.optimizer.gap_decay = 0.5f;
  auto shard = MakeShard(c);
  HandGap moved{0.5}, still{0.5};  // values 0-3 (worker 1 moves them), 4-7
  double w_moved = 1, w_still = 1;
  PullW(*shard, 0, 0);  // worker 0 reads w = 1 everywhere
  // Worker 1 names no read: applied whole, but its steps are learned.
  PushEach(*shard, 1, 0, {0.3f, 0.3f, 0.3f, 0.3f, 0, 0, 0, 0}, std::nullopt);
  w_moved -= moved.Step(0.3, 0);
  w_still -= still.Step(0, 0);
  // Worker 0's push from w = 1: values 0-3 moved 0.3 since, more than their
  // typical step, and are damped; values 4-7 did not move and go whole.
  PushEach(*shard, 0, 0, std::vector<float>(8, 0.2f), 0);
  w_moved -= moved.Step(0.2, w_moved - 1);
  w_still -= still.Step(0.2, w_still - 1);
  CHECK(w_moved == Approx(0.7 - 0.2 / (0.3 / (0.175 / 0.75))).epsilon(1e-6));  // gap 1.29
  CHECK(w_still == Approx(0.8).epsilon(1e-6));
  std::vector<float> now = PullNow(*shard, Dense("w", 0, 8), /*worker=*/1);
  for (int i = 0; i < 8; ++i) CHECK(now[i] == Approx(i < 4 ? w_moved : w_still).epsilon(1e-6));

  // A drift smaller than the typical step is no gap: the full step.
  PullW(*shard, 0, 1);
  const double read_moved = w_moved, read_still = w_still;
  PushEach(*shard, 1, 1, std::vector<float>(8, 0.05f), std::nullopt);
  w_moved -= moved.Step(0.05, 0);
  w_still -= still.Step(0.05, 0);
  PushEach(*shard, 0, 1, std::vector<float>(8, 0.1f), 1);
  const double full_moved = w_moved - 0.1, full_still = w_still - 0.1;
  w_moved -= moved.Step(0.1, w_moved - read_moved);
  w_still -= still.Step(0.1, w_still - read_still);
  CHECK(w_moved == Approx(full_moved).epsilon(1e-6));
  CHECK(w_still == Approx(full_still).epsilon(1e-6));
  now = PullNow(*shard, Dense("w", 0, 8), /*worker=*/1);
  for (int i = 0; i < 8; ++i) CHECK(now[i] == Approx(i < 4 ? w_moved : w_still).epsilon(1e-6));

  v1::StatsResponse stats;
  shard->Stats(&stats);
  // Kept as for dc: worker 0's two reads of w, worker 1's last.
  CHECK(stats.compensation_floats() == 3 * 8);
}

TEST_CASE("gap_aware damps the step, not the optimizer's memory of the gradient") {
  JobConfig c = MakeConfig("asp", 0, 2);
  c.optimizer.type = OptimizerType::kMomentum;  // v = 0.5 v + g; w -= v
  c.optimizer.momentum = 0.5f;
  c.optimizer.staleness_compensation = StalenessCompensation::kGapAware;
  c.optimizer.gap_decay = 0.5f;
  auto shard = MakeShard(c);
  HandGap hand{0.5};
  double w = 1, v = 0;
  PullW(*shard, 0, 0);  // worker 0 reads w = 1
  for (int64_t clock = 0; clock < 2; ++clock) {
    PushW(*shard, 1, clock, 0.4f, std::nullopt);
    v = 0.5 * v + 0.4;
    w -= hand.Step(v, 0);  // 0.6, then 0.0
  }
  PushW(*shard, 0, 0, 0.2f, 0);  // from w = 1, applied at w = 0
  v = 0.5 * v + 0.2;             // 0.5: the whole gradient
  const double damped = hand.Step(v, w - 1);
  CHECK(damped == Approx(0.5 / (1.0 / (0.45 / 0.875))).epsilon(1e-9));  // gap 1.94
  w -= damped;
  for (float x : PullNow(*shard, Dense("w", 0, 8), /*worker=*/1)) CHECK(x == Approx(w).epsilon(1e-6));
  // A fresh push of 0 moves w by the velocity alone: 0.25, not half the
  // damped 0.257 (which a damped gradient would have left in v).
  PullW(*shard, 0, 1);
  PushW(*shard, 0, 1, 0.0f, 1);
  v = 0.5 * v;
  w -= hand.Step(v, 0);
  CHECK(v == Approx(0.25));
  for (float x : PullNow(*shard, Dense("w", 0, 8), /*worker=*/1)) CHECK(x == Approx(w).epsilon(1e-6));
}

TEST_CASE("gap_aware is refused with ftrl, whose values come from its slots") {
  auto c = ParseJobConfig(R"(
cluster: {servers: ["h:1"], workers: 2}
consistency: {mode: asp}
model: {type: tables, tables: [{name: w, kind: dense, size: 8}]}
optimizer: {type: ftrl, staleness_compensation: gap_aware}
)",
                          {});
  REQUIRE_FALSE(c.ok());
  CHECK_THAT(std::string(c.status().message()),
             Catch::Contains("optimizer.staleness_compensation = 'gap_aware'") &&
                 Catch::Contains("ftrl"));
}

}  // namespace
}  // namespace tessera
