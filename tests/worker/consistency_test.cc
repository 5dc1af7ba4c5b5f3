// Consistency through the real Shard in process (LocalPsClient): BSP
// aggregation equals one process with the combined batch, and the SSP bound
// holds with a slowed worker; the push pipeline overlaps compute with pushes
// where the mode allows it, and only there.
#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <map>
#include <mutex>
#include <thread>

#include "server/shard.h"
#include "tests/worker/fixtures.h"
#include "worker/dataset.h"
#include "worker/local_ps_client.h"
#include "worker/model.h"
#include "worker/ps_client.h"
#include "worker/trainer.h"

namespace tessera {
namespace {

JobConfig MakeConfig(const std::string& mode, uint32_t staleness, uint32_t workers,
                     uint32_t batch) {
  return SmallMlpJob({"cluster.workers=" + std::to_string(workers), "consistency.mode=" + mode,
                      "consistency.staleness=" + std::to_string(staleness),
                      "training.batch_size=" + std::to_string(batch)});
}

double RelativeDifference(const ParameterSet& a, const ParameterSet& b) {
  double diff = 0, norm = 0;
  for (size_t t = 0; t < a.size(); ++t) {
    for (size_t i = 0; i < a[t].size(); ++i) {
      diff += std::pow(double(a[t][i]) - b[t][i], 2);
      norm += std::pow(double(b[t][i]), 2);
    }
  }
  return std::sqrt(diff / norm);
}

TEST_CASE("BSP with aggregation: 2 workers of batch b equal one process of batch 2b") {
  const uint32_t kBatch = 16, kSteps = 50;
  JobConfig two = MakeConfig("bsp", 0, 2, kBatch);
  two.training.max_steps = kSteps;
  two.training.epochs = 10;
  // The reader below takes rank 0 over from the finished worker (a rank is
  // owned by the client that registered it; with no lease, once silent).
  two.security.rank_lease_s = 0;
  Dataset train = SyntheticDataset(1024, 784, 10, 5);
  Cluster cluster(two);
  std::vector<std::thread> workers;
  std::atomic<int> failures{0};
  for (uint32_t rank = 0; rank < 2; ++rank) {
    workers.emplace_back([&, rank] {
      LocalPsClient client(two, rank, cluster.ptrs());
      auto backend = MakeCpuBackend();
      Trainer trainer(two, rank, &client, backend.get(), &train, nullptr);
      if (!trainer.Run().ok()) ++failures;
    });
  }
  for (auto& t : workers) t.join();
  REQUIRE(failures == 0);

  // One process: the union of both workers' batches at every step.
  JobConfig one = MakeConfig("bsp", 0, 1, 2 * kBatch);
  one.cluster.servers = two.cluster.servers;
  Cluster single(one);
  LocalPsClient client(one, 0, single.ptrs());
  REQUIRE(client.Connect().ok());
  auto backend = MakeCpuBackend();
  auto model = MakeModel(one.model, backend.get(), 2 * kBatch);
  Batcher b0(train.size(), 0, 2, kBatch, two.training.seed);
  Batcher b1(train.size(), 1, 2, kBatch, two.training.seed);
  ParameterSet params, grads;
  std::vector<float> x;
  std::vector<int32_t> y;
  for (uint32_t step = 0; step < kSteps; ++step) {
    const uint32_t epoch = step / b0.steps_per_epoch();
    const size_t s = step % b0.steps_per_epoch();
    REQUIRE(client.PullDense(step, &params).ok());
    x.clear();
    y.clear();
    for (Batcher* b : {&b0, &b1}) {
      for (uint32_t i : b->Batch(epoch, s)) {
        x.insert(x.end(), train.example(i), train.example(i) + train.features);
        y.push_back(train.y[i]);
      }
    }
    int64_t correct = 0;
    model->TrainStep(params, x.data(), y.data(), 2 * kBatch, &grads, &correct);
    REQUIRE(client.PushDense(step, grads, step).ok());
  }
  ParameterSet expected, got;
  REQUIRE(client.PullDense(kSteps, &expected).ok());
  LocalPsClient reader(two, 0, cluster.ptrs());
  REQUIRE(reader.Connect().ok());
  REQUIRE(reader.PullDense(0, &got).ok());
  CHECK(RelativeDifference(got, expected) < 1e-5);
  // And the run did move the parameters: the comparison is not trivially true.
  ParameterSet initial;
  Cluster fresh(one);
  LocalPsClient fresh_client(one, 0, fresh.ptrs());
  REQUIRE(fresh_client.Connect().ok());
  REQUIRE(fresh_client.PullDense(0, &initial).ok());
  CHECK(RelativeDifference(expected, initial) > 1e-2);
}

TEST_CASE("SSP with a slowed worker: the bound holds, fast workers block, nothing deadlocks") {
  const uint32_t kWorkers = 3, kStaleness = 2;
  JobConfig c = MakeConfig("ssp", kStaleness, kWorkers, 8);
  c.consistency.refresh = Refresh::kLazy;  // the bound is what this test is about
  c.training.max_steps = 30;
  c.training.epochs = 10;
  c.training.slow_rank = 2;
  c.training.slow_worker_ms = 15;
  Dataset train = SyntheticDataset(1024, 784, 10, 5);
  Cluster cluster(c);
  // Each shard's record of every worker's finished iterations; under SSP a
  // push's updates are applied before its clock advances.
  auto slow_clock_and_min = [&](int64_t* slowest, int64_t* slow) {
    *slowest = INT64_MAX;
    *slow = INT64_MAX;
    for (auto& shard : cluster.shards()) {
      v1::StatsResponse stats;
      shard->Stats(&stats);
      for (int64_t w : stats.worker_clocks())
        *slowest = std::min(*slowest, std::max<int64_t>(w, 0));
      *slow = std::min(*slow, std::max<int64_t>(stats.worker_clocks(2), 0));
    }
  };
  std::atomic<int> violations{0}, failures{0};
  std::atomic<int64_t> max_lead{0};
  std::vector<int64_t> pulls(kWorkers), steps(kWorkers);
  std::vector<std::thread> threads;
  for (uint32_t rank = 0; rank < kWorkers; ++rank) {
    threads.emplace_back([&, rank] {
      LocalPsClient client(c, rank, cluster.ptrs());
      auto backend = MakeCpuBackend();
      Trainer trainer(c, rank, &client, backend.get(), &train, nullptr);
      trainer.on_compute = [&](int64_t clock, int64_t guaranteed) {
        // The parameters hold every update of clocks < guaranteed; SSP needs < clock - s.
        if (guaranteed < clock - int64_t(kStaleness)) ++violations;
        // Every worker has finished at least clock - s iterations on every shard.
        int64_t slowest, slow;
        slow_clock_and_min(&slowest, &slow);
        if (slowest < clock - int64_t(kStaleness)) ++violations;
        int64_t lead = clock - slow, seen = max_lead.load();
        while (lead > seen && !max_lead.compare_exchange_weak(seen, lead)) {
        }
      };
      auto result = trainer.Run();
      if (!result.ok()) {
        ++failures;
        return;
      }
      pulls[rank] = result->pulls;
      steps[rank] = result->steps;
    });
  }
  for (auto& t : threads) t.join();
  REQUIRE(failures == 0);
  CHECK(violations == 0);
  for (uint32_t r = 0; r < kWorkers; ++r) CHECK(steps[r] == 30);
  // Fast workers ran ahead of the slow one up to the bound, and no further.
  CHECK(max_lead == kStaleness);
  // The cache saved pulls: fewer pulls than steps for the fast workers.
  CHECK(pulls[0] < steps[0]);
}

TEST_CASE("SSP refresh: lazy pulls when the bound forces it, eager fetches every clock") {
  const Refresh refresh = GENERATE(Refresh::kLazy, Refresh::kEager);
  INFO("consistency.refresh " << NameOf(refresh));
  // One worker: nothing races it, so what it pulls is the rule's alone.
  const uint32_t kSteps = 40;
  JobConfig c = MakeConfig("ssp", 3, 1, 8);
  c.consistency.refresh = refresh;
  c.training.max_steps = kSteps;
  c.training.epochs = 10;
  Dataset train = SyntheticDataset(1024, 784, 10, 5);
  Cluster cluster(c);
  const auto results = RunTrainers(c, cluster, &train);
  REQUIRE(results[0].ok());
  const TrainResult& r = *results[0];
  CHECK(r.steps == kSteps);
  if (refresh == Refresh::kLazy) {
    // A copy serves up to s + 1 = 4 clocks (3 with the push pipeline, whose
    // fused pull is asked one step early).
    CHECK(r.pulls <= kSteps / 2);
  } else {
    // Every push brought the next clock's values back.
    CHECK(r.fused_pulls >= kSteps - 1);
    CHECK(r.pulls >= kSteps);
  }
}

}  // namespace
}  // namespace tessera

namespace tessera {
namespace {

// A PsClient whose pushes take `delay` and record when they finished. Its
// fused pull is a pull right after the push (one worker: never waits).
class SlowPushClient : public PsClient {
 public:
  SlowPushClient(PsClient* inner, std::chrono::milliseconds delay) : inner_(inner), delay_(delay) {}
  absl::StatusOr<int64_t> Connect(int64_t resume_clock = 0) override {
    return inner_->Connect(resume_clock);
  }
  absl::StatusOr<int64_t> PullDense(int64_t clock, ParameterSet* params) override {
    return inner_->PullDense(clock, params);
  }
  absl::Status PushDense(int64_t clock, const ParameterSet& grads,
                         std::optional<int64_t> values_clock) override {
    std::this_thread::sleep_for(delay_);
    absl::Status s = inner_->PushDense(clock, grads, values_clock);
    std::lock_guard<std::mutex> lock(mu_);
    push_done_[clock] = std::chrono::steady_clock::now();
    return s;
  }
  absl::StatusOr<std::optional<int64_t>> PushDenseAndPull(int64_t clock, const ParameterSet& grads,
                                                          std::optional<int64_t> values_clock,
                                                          ParameterSet* params) override {
    if (absl::Status s = PushDense(clock, grads, values_clock); !s.ok()) return s;
    auto pulled = inner_->PullDense(clock + 1, params);
    if (!pulled.ok()) return pulled.status();
    return std::optional<int64_t>(*pulled);
  }
  absl::StatusOr<int64_t> PullRows(int64_t clock, RowSet* rows, RowPull mode) override {
    return inner_->PullRows(clock, rows, mode);
  }
  absl::Status PushRows(int64_t clock, const RowSet& grads) override {
    return inner_->PushRows(clock, grads);
  }
  absl::Status Finish() override { return inner_->Finish(); }
  absl::StatusOr<uint32_t> WorkersFinished() override { return inner_->WorkersFinished(); }

  std::chrono::steady_clock::time_point push_done(int64_t clock) {
    std::lock_guard<std::mutex> lock(mu_);
    return push_done_.at(clock);
  }

 private:
  PsClient* const inner_;
  const std::chrono::milliseconds delay_;
  std::mutex mu_;
  std::map<int64_t, std::chrono::steady_clock::time_point> push_done_;
};

// Runs one worker whose pushes take 30 ms; returns, per clock c >= 1, whether
// step c's compute began before push c-1 had finished.
std::vector<bool> ComputeOverlapsPush(const std::string& mode, uint32_t staleness, bool overlap) {
  JobConfig c = MakeConfig(mode, staleness, 1, 16);
  c.training.max_steps = 6;
  c.worker.overlap_push = overlap;
  Dataset train = SyntheticDataset(1024, 784, 10, 5);
  Cluster cluster(c);
  LocalPsClient local(c, 0, cluster.ptrs());
  SlowPushClient client(&local, std::chrono::milliseconds(30));
  auto backend = MakeCpuBackend();
  Trainer trainer(c, 0, &client, backend.get(), &train, nullptr);
  std::map<int64_t, std::chrono::steady_clock::time_point> compute_start;
  trainer.on_compute = [&](int64_t clock, int64_t) {
    compute_start[clock] = std::chrono::steady_clock::now();
  };
  auto result = trainer.Run();
  REQUIRE(result.ok());
  std::vector<bool> overlapped;
  for (int64_t clock = 1; clock < 6; ++clock) {
    overlapped.push_back(compute_start.at(clock) < client.push_done(clock - 1));
  }
  return overlapped;
}

TEST_CASE("SSP and ASP compute the next step while the push travels; BSP never does") {
  for (auto [mode, s] : {std::pair<const char*, uint32_t>{"ssp", 2}, {"asp", 0}}) {
    INFO(mode);
    auto overlapped = ComputeOverlapsPush(mode, s, /*overlap=*/true);
    CHECK(std::count(overlapped.begin(), overlapped.end(), true) == 5);
    // Switched off, every step waits for the push before it.
    auto waited = ComputeOverlapsPush(mode, s, /*overlap=*/false);
    CHECK(std::count(waited.begin(), waited.end(), true) == 0);
  }
  auto bsp = ComputeOverlapsPush("bsp", 0, /*overlap=*/true);
  CHECK(std::count(bsp.begin(), bsp.end(), true) == 0);
}

}  // namespace
}  // namespace tessera
