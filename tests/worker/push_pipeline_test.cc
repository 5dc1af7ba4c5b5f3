// PushPipeline: a push runs on its own thread while the caller goes on; Wait
// returns its result (the fused pull's guarantee, or errors), bounded.
#include "worker/push_pipeline.h"

#include <catch2/catch.hpp>
#include <thread>

namespace tessera {
namespace {

// A PsClient whose pushes block until released, recording what they got.
class GatedClient : public PsClient {
 public:
  absl::StatusOr<int64_t> Connect(int64_t resume_clock = 0) override { return resume_clock; }
  absl::StatusOr<int64_t> PullDense(int64_t, ParameterSet*) override { return 0; }
  absl::Status PushDense(int64_t clock, const ParameterSet& grads,
                         std::optional<int64_t>) override {
    Gate();
    absl::MutexLock lock(&mu_);
    pushed_.push_back(clock);
    return fail_ ? absl::UnavailableError("shard 0 is gone") : absl::OkStatus();
  }
  absl::StatusOr<std::optional<int64_t>> PushDenseAndPull(int64_t clock, const ParameterSet& grads,
                                                          std::optional<int64_t> values_clock,
                                                          ParameterSet* params) override {
    if (absl::Status s = PushDense(clock, grads, values_clock); !s.ok()) return s;
    params->assign(1, std::vector<float>(3, float(clock)));
    return std::optional<int64_t>(clock + 1);
  }
  // These tests train dense models only.
  absl::StatusOr<int64_t> PullRows(int64_t, RowSet*, RowPull) override {
    return absl::UnimplementedError("GatedClient holds no sparse tables");
  }
  absl::Status PushRows(int64_t, const RowSet&) override {
    return absl::UnimplementedError("GatedClient holds no sparse tables");
  }
  absl::Status Finish() override { return absl::OkStatus(); }
  absl::StatusOr<uint32_t> WorkersFinished() override { return 0u; }

  void Open() {
    absl::MutexLock lock(&mu_);
    open_ = true;
  }
  void Fail() {
    absl::MutexLock lock(&mu_);
    fail_ = true;
  }
  std::vector<int64_t> pushed() {
    absl::MutexLock lock(&mu_);
    return pushed_;
  }

 private:
  void Gate() {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&open_), absl::Seconds(10));
  }
  absl::Mutex mu_;
  bool open_ = false;
  bool fail_ = false;
  std::vector<int64_t> pushed_;
};

TEST_CASE("a push travels while the caller goes on; Wait takes its fused pull") {
  GatedClient client;
  PushPipeline pipeline(&client);
  ParameterSet grads(1, std::vector<float>(3, 1.0f)), incoming;
  CHECK_FALSE(pipeline.in_flight());
  pipeline.Start(4, &grads, &incoming, /*want_pull=*/true, std::nullopt);
  CHECK(pipeline.in_flight());
  // Held at the gate: a short wait times out and the push stays in flight.
  auto early = pipeline.Wait(absl::Milliseconds(50));
  CHECK(early.status().code() == absl::StatusCode::kDeadlineExceeded);
  CHECK(client.pushed().empty());
  client.Open();
  auto pulled = pipeline.Wait(absl::Seconds(10));
  REQUIRE(pulled.ok());
  REQUIRE(pulled->has_value());
  CHECK(**pulled == 5);
  CHECK(pipeline.clock() == 4);
  CHECK(incoming == ParameterSet(1, std::vector<float>(3, 4.0f)));
  CHECK_FALSE(pipeline.in_flight());
  // Without a pull asked for, the result is nullopt; pushes go in order.
  pipeline.Start(5, &grads, &incoming, /*want_pull=*/false, std::nullopt);
  auto plain = pipeline.Wait(absl::Seconds(10));
  REQUIRE(plain.ok());
  CHECK_FALSE(plain->has_value());
  CHECK(client.pushed() == std::vector<int64_t>{4, 5});
  // Nothing in flight: Wait answers at once.
  CHECK(pipeline.Wait(absl::Milliseconds(1)).ok());
}

TEST_CASE("a failed push's error comes back from Wait") {
  GatedClient client;
  client.Open();
  client.Fail();
  PushPipeline pipeline(&client);
  ParameterSet grads(1, std::vector<float>(3, 1.0f)), incoming;
  pipeline.Start(0, &grads, &incoming, false, std::nullopt);
  auto result = pipeline.Wait(absl::Seconds(10));
  CHECK(result.status().code() == absl::StatusCode::kUnavailable);
  CHECK(std::string(result.status().message()) == "shard 0 is gone");
}

TEST_CASE("destroying the pipeline with a push in flight waits for it") {
  GatedClient client;
  ParameterSet grads(1, std::vector<float>(3, 1.0f)), incoming;
  std::thread opener;
  {
    PushPipeline pipeline(&client);
    pipeline.Start(9, &grads, &incoming, false, std::nullopt);
    opener = std::thread([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      client.Open();
    });
  }
  CHECK(client.pushed() == std::vector<int64_t>{9});
  opener.join();
}

}  // namespace
}  // namespace tessera
