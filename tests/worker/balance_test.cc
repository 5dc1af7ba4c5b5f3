// training.balance dynamic: shares planned by shard 0 from measured rates
// (EpochPlanner), and through real trainers on in-process shards, every
// example of an epoch trained once while a slowed worker takes fewer.
#include <catch2/catch.hpp>
#include <limits>
#include <cmath>
#include <filesystem>
#include <map>
#include <mutex>
#include <numeric>
#include <thread>

#include "server/checkpoint.h"
#include "server/checkpointer.h"
#include "server/epoch_planner.h"
#include "tests/server/shard_fixtures.h"
#include "tests/server/test_session.h"
#include "tests/worker/fixtures.h"
#include "worker/dataset.h"
#include "worker/local_ps_client.h"
#include "worker/trainer.h"

namespace tessera {
namespace {

uint32_t Sum(const std::vector<uint32_t>& v) { return std::accumulate(v.begin(), v.end(), 0u); }

// Worker `rank` (registered first) asks `shard` for `epoch`'s plan at `rate`.
std::vector<uint32_t> Ask(Shard& shard, uint32_t rank, int64_t epoch, double rate) {
  RegisterWorker(shard, rank);
  v1::PlanRequest request;
  request.set_worker_rank(rank);
  request.set_session(SessionOf(rank));
  request.set_epoch(epoch);
  request.set_examples_per_second(rate);
  v1::PlanResponse response;
  REQUIRE(shard.Plan(request, &response).ok());
  return std::vector<uint32_t>(response.shares().begin(), response.shares().end());
}

TEST_CASE("shares follow the rates, each at least 1, summing to the global batch") {
  CHECK(EpochPlanner::Shares({3, 3, 3, 1}, 40) == std::vector<uint32_t>{12, 12, 12, 4});
  // Unknown rates count as the mean of the known; none known: equal.
  CHECK(EpochPlanner::Shares({0, 2, 0}, 24) == std::vector<uint32_t>{8, 8, 8});
  CHECK(EpochPlanner::Shares({0, 0}, 10) == std::vector<uint32_t>{5, 5});
  CHECK(EpochPlanner::Shares({1000, 1e-9}, 8) == std::vector<uint32_t>{7, 1});
  const auto odd = EpochPlanner::Shares({1, 1, 1}, 64);
  CHECK(Sum(odd) == 64);
  CHECK(*std::max_element(odd.begin(), odd.end()) - *std::min_element(odd.begin(), odd.end()) <= 1);
}

TEST_CASE("every worker gets the plan the epoch's first ask made") {
  EpochPlanner planner(2, 8, 10);
  const auto first = planner.Plan(0, 5, 30.0);  // worker 1's rate unknown: equal
  CHECK(first == std::vector<uint32_t>{8, 8});
  CHECK(planner.Plan(1, 5, 10.0) == first);  // its rate counts from the next epoch
  CHECK(planner.Plan(0, 6, 30.0) == std::vector<uint32_t>{12, 4});
  CHECK(planner.Plan(1, 5, 0.0) == first);  // asked again (a restarted worker)
}

TEST_CASE("epoch 0's calibration plan is equal parts; plan 0 follows the rates it gathered") {
  EpochPlanner planner(2, 8, 10);
  const int64_t kCalibration = EpochPlanner::kCalibration;
  CHECK(planner.Plan(0, kCalibration, 0.0) == std::vector<uint32_t>{8, 8});
  CHECK(planner.Plan(1, kCalibration, 0.0) == std::vector<uint32_t>{8, 8});
  // Halfway through the calibration steps both report; the plan stays.
  CHECK(planner.Plan(0, kCalibration, 30.0) == std::vector<uint32_t>{8, 8});
  CHECK(planner.Plan(1, kCalibration, 10.0) == std::vector<uint32_t>{8, 8});
  CHECK(planner.Plan(0, 0, 0.0) == std::vector<uint32_t>{12, 4});
  // Checkpointed with the others; below -1 is not a plan.
  EpochPlanner::State saved = planner.Save();
  CHECK(saved.plans.count(kCalibration) == 1);
  EpochPlanner restored(2, 8, 10);
  REQUIRE(restored.Load(saved).ok());
  CHECK(restored.Plan(1, kCalibration, 0.0) == std::vector<uint32_t>{8, 8});
  saved.plans[-2] = {8, 8};
  CHECK(restored.Load(saved).code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("a planner's state saves and loads; a state that does not fit is refused whole") {
  EpochPlanner planner(2, 8, 10);
  planner.Plan(0, 0, 30.0);
  planner.Plan(1, 0, 10.0);
  const auto epoch1 = planner.Plan(0, 1, 30.0);  // {12, 4}
  const EpochPlanner::State saved = planner.Save();
  CHECK(saved.rates == std::vector<double>{30.0, 10.0});
  CHECK(saved.plans.size() == 2);

  EpochPlanner restored(2, 8, 10);
  REQUIRE(restored.Load(saved).ok());
  restored.Plan(1, 1, 1000.0);  // a new rate does not change a plan already made
  CHECK(restored.Plan(1, 1, 0.0) == epoch1);
  CHECK(restored.Plan(0, 0, 0.0) == std::vector<uint32_t>{8, 8});

  EpochPlanner other(2, 8, 10);
  EpochPlanner::State bad = saved;
  bad.plans[2] = {15, 0};  // a share of 0
  CHECK(other.Load(bad).code() == absl::StatusCode::kInvalidArgument);
  bad = saved;
  bad.plans[2] = {9, 9};  // sums to 18, not 16
  CHECK(other.Load(bad).code() == absl::StatusCode::kInvalidArgument);
  bad = saved;
  bad.rates = {1.0};
  CHECK(other.Load(bad).code() == absl::StatusCode::kInvalidArgument);
  bad = saved;
  bad.rates[0] = std::nan("");
  CHECK(other.Load(bad).code() == absl::StatusCode::kInvalidArgument);
  // Nothing was taken from the refused states: epoch 1 is planned afresh.
  CHECK(other.Plan(0, 1, 0.0) == std::vector<uint32_t>{8, 8});
}

TEST_CASE("a shard restored from its checkpoint answers the epoch plans it had made") {
  auto c = ParseJobConfig("cluster: {servers: [\"h:1\"], workers: 2}\n",
                          {"training.balance=dynamic", "training.epochs=4"});
  REQUIRE(c.ok());
  auto before = Shard::Create(*c, 0);
  REQUIRE(before.ok());
  Ask(**before, 0, 0, 300.0);
  Ask(**before, 1, 0, 100.0);
  const std::vector<uint32_t> epoch1 = Ask(**before, 0, 1, 300.0);
  CHECK(epoch1 != std::vector<uint32_t>{64, 64});  // the rates shaped it
  std::unique_ptr<ShardState> cut = (*before)->Snapshot();
  REQUIRE(cut->manifest.epoch_plans_size() == 2);

  auto after = Shard::Create(*c, 0);
  REQUIRE(after.ok());
  REQUIRE((*after)->Restore(*cut).ok());
  // Worker 1, which had not asked for epoch 1 before the restart, gets the
  // plan worker 0 trains by, whatever rate it reports now.
  CHECK(Ask(**after, 1, 1, 5000.0) == epoch1);
  // The rates came back too: the next epoch is planned from them.
  CHECK(Ask(**after, 0, 2, 0.0) == EpochPlanner::Shares({300.0, 5000.0}, 128));

  // A checkpoint whose plans do not fit this job is refused.
  cut->manifest.mutable_epoch_plans(0)->set_shares(0, 1000);
  auto refused = Shard::Create(*c, 0);
  REQUIRE(refused.ok());
  CHECK((*refused)->Restore(*cut).code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("a shard 0 restarted from a checkpoint older than a plan answers that plan from its log") {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = std::string(tmp ? tmp : "/tmp") + "/plan-log";
  std::filesystem::remove_all(dir);
  auto c = ParseJobConfig("cluster: {servers: [\"h:1\"], workers: 2}\n",
                          {"training.balance=dynamic", "training.epochs=4", "checkpoint.dir=" + dir,
                           "checkpoint.every_seconds=0", "checkpoint.keep=5"});
  REQUIRE(c.ok());
  const std::string root = dir + "/shard-0";
  std::vector<uint32_t> epoch1;
  {
    auto before = Shard::Create(*c, 0);
    REQUIRE(before.ok());
    Checkpointer checkpointer(before->get(), *c);
    Ask(**before, 0, 0, 300.0);
    Ask(**before, 1, 0, 100.0);
    // The last checkpoint this shard will have: epoch 0's plan only.
    REQUIRE(CheckpointStore(root, 5).Write((*before)->Snapshot().get()).ok());
    epoch1 = Ask(**before, 0, 1, 300.0);  // made from {300, 100}: logged before answered
    CHECK(epoch1 == EpochPlanner::Shares({300.0, 100.0}, 128));
    auto log = ReadPlanLog(root);
    REQUIRE(log.ok());
    CHECK(log->epoch_plans_size() == 2);
  }  // the checkpointer's last cut, at exit, holds epoch 1 too ...
  std::vector<std::string> written = CheckpointStore::List(root);
  REQUIRE(written.size() == 2);
  std::filesystem::remove_all(written.back());  // ... but this shard died before it (kill -9)

  auto after = Shard::Create(*c, 0);
  REQUIRE(after.ok());
  REQUIRE(Checkpointer::Restore(after->get(), *c).ok());
  // Worker 1 had not asked for epoch 1: it gets the plan worker 0 trains by,
  // not one made from the rate it reports now.
  CHECK(Ask(**after, 1, 1, 5000.0) == epoch1);
  CHECK(Ask(**after, 0, 2, 0.0) == EpochPlanner::Shares({300.0, 5000.0}, 128));

  SECTION("a torn log leaves the checkpoint's plans; epoch 1 is made again") {
    const std::string file = root + "/EPOCH_PLANS";
    const auto size = std::filesystem::file_size(file);
    std::filesystem::resize_file(file, size - 3);
    auto torn = Shard::Create(*c, 0);
    REQUIRE(torn.ok());
    REQUIRE(Checkpointer::Restore(torn->get(), *c).ok());
    CHECK(Ask(**torn, 0, 0, 0.0) == std::vector<uint32_t>{64, 64});  // from the checkpoint
    CHECK(Ask(**torn, 1, 1, 5000.0) == EpochPlanner::Shares({300.0, 5000.0}, 128));
  }
  SECTION("static balancing keeps no log") {
    auto s = ParseJobConfig("cluster: {servers: [\"h:1\"], workers: 2}\n",
                            {"checkpoint.dir=" + dir + "/static", "checkpoint.every_seconds=0"});
    REQUIRE(s.ok());
    auto shard = Shard::Create(*s, 0);
    REQUIRE(shard.ok());
    { Checkpointer checkpointer(shard->get(), *s); }
    CHECK(absl::IsNotFound(ReadPlanLog(dir + "/static/shard-0").status()));
  }
}

TEST_CASE("a shard refuses a plan request it cannot read, naming what it expected") {
  auto c = ParseJobConfig("cluster: {servers: [\"h:1\"], workers: 2}\n",
                          {"training.balance=dynamic", "training.epochs=4"});
  REQUIRE(c.ok());
  Cluster cluster(*c);
  Shard& shard = *cluster.shards()[0];
  v1::PlanRequest request;
  request.set_worker_rank(0);
  request.set_session(SessionOf(0));
  v1::RegisterRequest reg;
  reg.set_worker_rank(0);
  reg.set_session(SessionOf(0));
  NameJob(shard, &reg);
  v1::RegisterResponse registered;
  REQUIRE(shard.Register(reg, &registered).ok());
  v1::PlanResponse response;
  request.set_epoch(-2);  // -1 is epoch 0's calibration plan
  CHECK(shard.Plan(request, &response).code() == absl::StatusCode::kInvalidArgument);
  request.set_epoch(0);
  request.set_examples_per_second(std::nan(""));
  CHECK(shard.Plan(request, &response).code() == absl::StatusCode::kInvalidArgument);
  CHECK(response.shares_size() == 0);
  request.set_examples_per_second(100);
  REQUIRE(shard.Plan(request, &response).ok());
  CHECK(response.shares_size() == 2);
  request.set_session(SessionOf(1));  // not rank 0's secret
  CHECK_FALSE(shard.Plan(request, &response).ok());
}

TEST_CASE("a plan for an epoch the job does not have, or at an absurd rate, is refused and "
          "replaces nothing") {
  auto c = ParseJobConfig("cluster: {servers: [\"h:1\"], workers: 2}\n",
                          {"training.balance=dynamic", "training.epochs=4"});
  REQUIRE(c.ok());
  auto shard = Shard::Create(*c, 0);
  REQUIRE(shard.ok());
  Ask(**shard, 0, 0, 300.0);
  Ask(**shard, 1, 0, 100.0);
  const std::vector<uint32_t> epoch1 = Ask(**shard, 0, 1, 300.0);
  v1::PlanRequest request;
  request.set_worker_rank(1);
  request.set_session(SessionOf(1));
  v1::PlanResponse response;
  for (const int64_t epoch : {int64_t{4}, int64_t{1} << 40, std::numeric_limits<int64_t>::max()}) {
    request.set_epoch(epoch);
    request.set_examples_per_second(100);
    const absl::Status s = (*shard)->Plan(request, &response);
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK(std::string(s.message()).find("training.epochs") != std::string::npos);
  }
  request.set_epoch(2);
  request.set_examples_per_second(1e300);  // finite, and no device's
  CHECK((*shard)->Plan(request, &response).code() == absl::StatusCode::kInvalidArgument);
  // The plan rank 0 trains epoch 1 by is the one rank 1 gets, whatever came
  // before; and the last epoch still plans.
  CHECK(Ask(**shard, 1, 1, 5000.0) == epoch1);
  CHECK(Sum(Ask(**shard, 1, 3, 100.0)) == 2 * 64);
  // Every plan is kept: epoch 0's too, after the job's last.
  CHECK(Ask(**shard, 0, 0, 0.0) == Ask(**shard, 1, 0, 0.0));
}

// Runs 3 workers (rank 2 slowed) under dynamic balancing for kEpochs epochs
// of kSteps steps, checks that every example of every epoch was trained
// once, and returns how many examples each rank took: epoch -> step -> rank
// -> examples.
constexpr uint32_t kSteps = 10, kEpochs = 3;
std::map<uint32_t, std::map<size_t, std::map<uint32_t, int>>> TrainBalanced(
    const std::string& calibration_steps) {
  const uint32_t kWorkers = 3, kBatch = 8;
  const uint32_t kExamples = kWorkers * kBatch * kSteps;
  auto c = ParseJobConfig(R"(
cluster: {servers: ["local:1", "local:2"]}
model: {type: mlp, layers: [784, 16, 10], seed: 3}
optimizer: {type: adam, lr: 0.01}
data: {dataset: synthetic}
worker: {pull_timeout_ms: 30000, progress_interval_s: 1000}
)",
                          {"cluster.workers=3", "consistency.mode=bsp", "training.balance=dynamic",
                           "training.batch_size=8", "training.epochs=3", "training.slow_rank=2",
                           "training.slow_worker_ms=20",
                           "training.balance_calibration_steps=" + calibration_steps});
  REQUIRE(c.ok());
  // Example i says who it is in its first feature.
  Dataset train = SyntheticDataset(kExamples, 784, 10, 5);
  for (uint32_t i = 0; i < kExamples; ++i) train.x[size_t(i) * 784] = i * 1e-3f;
  Cluster cluster(*c);
  std::mutex mu;
  // epoch -> how many times each example was trained.
  std::map<uint32_t, std::vector<int>> seen;
  std::map<uint32_t, std::map<size_t, std::map<uint32_t, int>>> taken;
  std::vector<size_t> steps(kWorkers, 0);  // by rank: steps read so far
  const auto results = RunTrainers(*c, cluster, &train, [&](uint32_t rank, Trainer& trainer) {
    trainer.on_batch = [&, rank](uint32_t epoch, const Dataset& batch) {
      std::lock_guard<std::mutex> lock(mu);
      std::vector<int>& count = seen[epoch];
      count.resize(kExamples);
      for (size_t k = 0; k < batch.size(); ++k) {
        ++count[std::lround(batch.x[k * 784] * 1e3f)];
      }
      taken[epoch][steps[rank]++ % kSteps][rank] = static_cast<int>(batch.size());
    };
  });
  for (const auto& result : results) {
    REQUIRE(result.ok());
    CHECK(result->steps == kSteps * kEpochs);
  }
  REQUIRE(seen.size() == kEpochs);
  for (const auto& [epoch, count] : seen) {
    INFO("epoch " << epoch);
    CHECK(std::all_of(count.begin(), count.end(), [](int n) { return n == 1; }));
  }
  return taken;
}

TEST_CASE("training.slow_probability slows each worker's steps at that rate, independently") {
  TrainingConfig t;
  CHECK_FALSE(SlowedStep(t, 0, 0));  // 0: never
  t.slow_probability = 1;
  CHECK(SlowedStep(t, 3, 12345));
  t.slow_probability = 0.25;
  int slowed[2] = {0, 0}, both = 0;
  const int kClocks = 20000;
  for (int64_t clock = 0; clock < kClocks; ++clock) {
    const bool a = SlowedStep(t, 0, clock), b = SlowedStep(t, 1, clock);
    slowed[0] += a;
    slowed[1] += b;
    both += a && b;
    CHECK(SlowedStep(t, 0, clock) == a);  // a retried step draws alike
  }
  // Binomial(20000, 0.25): sd 61; both: p^2 = 0.0625, sd 34.
  CHECK(std::abs(slowed[0] - kClocks / 4) < 300);
  CHECK(std::abs(slowed[1] - kClocks / 4) < 300);
  CHECK(std::abs(both - kClocks / 16) < 200);
  // Another seed, other steps.
  TrainingConfig other = t;
  other.seed = t.seed + 1;
  int same = 0;
  for (int64_t clock = 0; clock < 1000; ++clock) same += SlowedStep(t, 0, clock) == SlowedStep(other, 0, clock);
  CHECK(same < 700);  // agreeing by chance: 62.5% (sd 15 of 1000)
}

TEST_CASE("dynamic balancing trains every example once per epoch; a slow worker takes fewer") {
  SECTION("epoch 0 re-planned after its calibration steps") {
    // 10 asked, at most half the epoch: 5 steps on equal parts, then shares.
    auto taken = TrainBalanced("10");
    for (size_t step = 0; step < kSteps; ++step) {
      INFO("epoch 0, step " << step);
      if (step < kSteps / 2) {
        CHECK(taken[0][step][2] == taken[0][step][0]);
      } else {
        CHECK(taken[0][step][2] < taken[0][step][0]);
        CHECK(taken[0][step][2] < taken[0][step][1]);
      }
    }
    for (uint32_t epoch = 1; epoch < kEpochs; ++epoch) {
      INFO("epoch " << epoch);
      CHECK(taken[epoch][0][2] < taken[epoch][0][0]);
      CHECK(taken[epoch][kSteps - 1][2] < taken[epoch][kSteps - 1][1]);
    }
  }
  SECTION("no calibration: epoch 0 knows no rates and runs on equal parts") {
    auto taken = TrainBalanced("0");
    for (size_t step = 0; step < kSteps; ++step) {
      INFO("epoch 0, step " << step);
      CHECK(taken[0][step][2] == taken[0][step][0]);
    }
    for (uint32_t epoch = 1; epoch < kEpochs; ++epoch) {
      INFO("epoch " << epoch);
      CHECK(taken[epoch][0][2] < taken[epoch][0][0]);
      CHECK(taken[epoch][0][2] < taken[epoch][0][1]);
    }
  }
}

}  // namespace
}  // namespace tessera
