// A real shard behind gRPC on loopback: several concurrent clients, parked
// pulls, deadlines, health, shutdown, the status codes of bad requests, and
// what GET /metrics says about them.
#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <thread>

#include "common/codec.h"
#include "common/wire.h"
#include "proto/health.grpc.pb.h"
#include "proto/tessera.grpc.pb.h"
#include "server/shard_server.h"
#include "tests/metrics_text.h"
#include "tests/server/test_session.h"

namespace tessera {
namespace {

JobConfig MakeConfig(const std::string& mode, uint32_t workers) {
  auto c =
      ParseJobConfig("cluster: {servers: ['127.0.0.1:1'], workers: " + std::to_string(workers) +
                         "}\nconsistency: {mode: " + mode + "}\n" + R"(
model:
  type: tables
  tables:
    - {name: w, kind: dense, size: 1000}
    - {name: emb, kind: sparse, dim: 4}
optimizer: {type: sgd, lr: 1.0}
server: {max_message_bytes: 65536, max_pull_wait_ms: 60000}
)",
                     {});
  REQUIRE(c.ok());
  return *c;
}

struct Client {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Shard::Stub> stub;
  const JobConfig config;  // the server's, for Register's job identity
  explicit Client(ShardServer& server) : Client(server.port(), server.shard()->config()) {}
  Client(int port, const JobConfig& job) : config(job) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    args.SetMaxSendMessageSize(64 << 20);
    channel = grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port),
                                        grpc::InsecureChannelCredentials(), args);
    stub = v1::Shard::NewStub(channel);
  }
  grpc::Status Register(uint32_t worker) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::RegisterRequest r;
    r.set_worker_rank(worker);
    r.set_session(SessionOf(worker));
    r.set_job(config.name);
    r.set_job_layout(config.LayoutText());
    v1::RegisterResponse resp;
    return stub->Register(&ctx, r, &resp);
  }
  grpc::Status Pull(uint32_t worker, int64_t clock, const std::string& table, uint64_t offset,
                    uint64_t length, std::vector<float>* out,
                    std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + timeout);
    v1::PullRequest r;
    r.set_worker_rank(worker);
    r.set_session(SessionOf(worker));
    r.set_clock(clock);
    auto* s = r.add_slices();
    s->set_table(table);
    s->set_offset(offset);
    s->set_length(length);
    v1::PullResponse resp;
    grpc::Status status = stub->Pull(&ctx, r, &resp);
    if (status.ok() && out) *out = DecodeFloats(resp.values(0));
    return status;
  }
  grpc::Status Push(const v1::PushRequest& r) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::PushResponse resp;
    return stub->Push(&ctx, r, &resp);
  }
};

v1::PushRequest DensePush(uint32_t worker, int64_t clock, uint64_t offset,
                          const std::vector<float>& g, bool advance = true) {
  v1::PushRequest r;
  r.set_worker_rank(worker);
  r.set_session(SessionOf(worker));
  r.set_clock(clock);
  auto* s = r.add_slices();
  s->set_table("w");
  s->set_offset(offset);
  s->set_length(g.size());
  EncodeFloats(g, r.add_gradients());
  r.set_advance_clock(advance);
  return r;
}

std::unique_ptr<ShardServer> StartServer(const JobConfig& c) {
  auto server = ShardServer::Start(c, 0, "127.0.0.1:0");
  REQUIRE(server.ok());
  REQUIRE((*server)->port() > 0);
  return std::move(*server);
}

TEST_CASE("register returns this shard's table layout; health says SERVING") {
  auto server = StartServer(MakeConfig("asp", 1));
  Client c(*server);
  grpc::ClientContext ctx;
  v1::RegisterRequest r;
  r.set_session(SessionOf(0));
  r.set_job(c.config.name);
  r.set_job_layout(c.config.LayoutText());
  v1::RegisterResponse resp;
  REQUIRE(c.stub->Register(&ctx, r, &resp).ok());
  CHECK(resp.num_shards() == 1);
  CHECK(resp.mode() == "asp");
  REQUIRE(resp.tables_size() == 2);
  CHECK(resp.tables(0).name() == "w");
  CHECK(resp.tables(0).end() == 1000);
  CHECK(resp.tables(1).kind() == v1::SPARSE);
  CHECK(resp.tables(1).dim() == 4);

  auto health = grpc::health::v1::Health::NewStub(c.channel);
  grpc::ClientContext hctx;
  grpc::health::v1::HealthCheckRequest hreq;
  grpc::health::v1::HealthCheckResponse hresp;
  REQUIRE(health->Check(&hctx, hreq, &hresp).ok());
  CHECK(hresp.status() == grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST_CASE("concurrent clients over gRPC end with the sequential result") {
  const uint32_t kWorkers = 4;
  const int kSteps = 50;
  auto server = StartServer(MakeConfig("asp", kWorkers));
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (uint32_t w = 0; w < kWorkers; ++w) {
    threads.emplace_back([&, w] {
      Client c(*server);  // one channel (connection) per client
      if (!c.Register(w).ok()) ++failures;
      for (int i = 0; i < kSteps; ++i) {
        std::vector<float> values;
        if (!c.Pull(w, i, "w", 0, 1000, &values).ok()) ++failures;
        if (!c.Push(DensePush(w, i, 0, std::vector<float>(1000, float(w + 1)))).ok()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failures == 0);
  Client c(*server);
  std::vector<float> final_values;
  REQUIRE(c.Pull(0, 0, "w", 0, 1000, &final_values).ok());
  for (float x : final_values) REQUIRE(x == -float(kSteps * (1 + 2 + 3 + 4)));
}

TEST_CASE("a BSP pull parks without a thread and returns when the slow worker advances") {
  JobConfig config = MakeConfig("bsp", 2);
  config.server.threads = 2;  // parked pulls must not use them up
  auto server = StartServer(config);
  Client fast(*server), slow(*server);
  REQUIRE(fast.Register(0).ok());
  REQUIRE(slow.Register(1).ok());
  REQUIRE(fast.Push(DensePush(0, 0, 0, std::vector<float>(10, 1.0f))).ok());
  std::atomic<bool> returned{false};
  std::vector<std::thread> parked;
  for (int i = 0; i < 8; ++i) {  // more parked pulls than server threads
    parked.emplace_back([&] {
      std::vector<float> v;
      CHECK(fast.Pull(0, 1, "w", 0, 10, &v).ok());
      CHECK(v[0] == -0.5f);  // mean of the two workers' gradients (1 and 0)
      returned = true;
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK_FALSE(returned);
  // The shard still answers other calls while those pulls wait.
  std::vector<float> v;
  REQUIRE(slow.Pull(1, 0, "w", 0, 10, &v).ok());
  v1::StatsResponse stats;
  {
    grpc::ClientContext ctx;
    REQUIRE(slow.stub->Stats(&ctx, v1::StatsRequest(), &stats).ok());
  }
  CHECK(stats.parked_pulls() == 8);
  REQUIRE(slow.Push(DensePush(1, 0, 0, std::vector<float>(10, 0.0f))).ok());
  for (auto& t : parked) t.join();
  CHECK(returned);
}

TEST_CASE("parked pulls end DEADLINE_EXCEEDED at the caller's deadline or the server bound") {
  JobConfig config = MakeConfig("bsp", 2);
  config.server.max_pull_wait_ms = 300;
  auto server = StartServer(config);
  Client c(*server);
  REQUIRE(c.Register(0).ok());
  REQUIRE(c.Register(1).ok());
  REQUIRE(c.Push(DensePush(0, 0, 0, {1.0f})).ok());
  auto start = std::chrono::steady_clock::now();
  CHECK(c.Pull(0, 1, "w", 0, 1, nullptr, std::chrono::milliseconds(100)).error_code() ==
        grpc::StatusCode::DEADLINE_EXCEEDED);
  // A caller with a long deadline still gets an answer at the server's bound.
  CHECK(c.Pull(0, 1, "w", 0, 1, nullptr, std::chrono::seconds(30)).error_code() ==
        grpc::StatusCode::DEADLINE_EXCEEDED);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(10));
  // Both are gone from the clock table.
  for (int i = 0; i < 50 && server->shard() != nullptr; ++i) {
    v1::StatsResponse stats;
    server->shard()->Stats(&stats);
    if (stats.parked_pulls() == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  v1::StatsResponse stats;
  server->shard()->Stats(&stats);
  CHECK(stats.parked_pulls() == 0);
}

TEST_CASE("bad requests over gRPC get their status codes and change nothing") {
  auto server = StartServer(MakeConfig("asp", 1));
  Client c(*server);
  REQUIRE(c.Register(0).ok());
  std::vector<float> before;
  REQUIRE(c.Pull(0, 0, "w", 0, 1000, &before).ok());

  CHECK(c.Pull(0, 0, "nope", 0, 1, nullptr).error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(c.Pull(0, 0, "w", 999, 2, nullptr).error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(c.Push(DensePush(0, 0, 0, {1.0f, std::nanf("")})).error_code() ==
        grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(c.Push(DensePush(0, 5, 0, {1.0f})).error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  v1::PushRequest stranger = DensePush(0, 0, 0, {1.0f});
  stranger.set_worker_rank(0);
  stranger.set_session(SessionOf(0));
  {
    Client other(*server);
    JobConfig two = MakeConfig("asp", 2);
    auto server2 = StartServer(two);
    Client c2(*server2);
    v1::PushRequest p = DensePush(1, 0, 0, {1.0f});
    CHECK(c2.Push(p).error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  }
  // Over max_message_bytes (64 KiB here): gRPC refuses it before the shard sees it.
  CHECK(c.Push(DensePush(0, 0, 0, std::vector<float>(1000, 1.0f))).ok());
  v1::PushRequest huge = DensePush(0, 1, 0, std::vector<float>(1000, 1.0f));
  huge.mutable_gradients(0)->mutable_values()->append(std::string(100'000, '\0'));
  CHECK(c.Push(huge).error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  v1::PushRequest bad_key;
  bad_key.set_worker_rank(0);
  bad_key.set_session(SessionOf(0));
  bad_key.set_clock(1);
  auto* s = bad_key.add_slices();
  s->set_table("emb");
  EncodeKeys(std::vector<uint64_t>{5, 3}, s->mutable_keys());
  EncodeFloats(std::vector<float>(8, 1.0f), bad_key.add_gradients());
  CHECK(c.Push(bad_key).error_code() == grpc::StatusCode::INVALID_ARGUMENT);

  std::vector<float> after;
  REQUIRE(c.Pull(0, 1, "w", 0, 1000, &after).ok());
  for (size_t i = 0; i < after.size(); ++i)
    REQUIRE(after[i] == before[i] - 1.0f);  // the one good push
}

TEST_CASE("shutdown answers parked pulls UNAVAILABLE instead of leaving them hanging") {
  auto server = StartServer(MakeConfig("bsp", 2));
  Client c(*server);
  REQUIRE(c.Register(0).ok());
  REQUIRE(c.Register(1).ok());
  REQUIRE(c.Push(DensePush(0, 0, 0, {1.0f})).ok());
  grpc::Status status;
  std::thread waiter([&] { status = c.Pull(0, 1, "w", 0, 1, nullptr, std::chrono::seconds(30)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto start = std::chrono::steady_clock::now();
  server->Shutdown(absl::Seconds(5));
  waiter.join();
  CHECK(status.error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(4));
}

TEST_CASE("a second shard on a port in use fails with UNAVAILABLE") {
  auto server = StartServer(MakeConfig("asp", 1));
  auto second =
      ShardServer::Start(MakeConfig("asp", 1), 0, "127.0.0.1:" + std::to_string(server->port()));
  REQUIRE_FALSE(second.ok());
  CHECK(second.status().code() == absl::StatusCode::kUnavailable);
  CHECK(second.status().message().find("in use") != std::string::npos);
}

TEST_CASE("GET /metrics counts a shard's calls by code, its traffic by table, and its clocks") {
  JobConfig config = MakeConfig("asp", 2);
  config.name = "metrics-test";
  const int metrics_port = FreeLoopbackPort();
  config.server.metrics_port = metrics_port;
  auto server = StartServer(config);
  Client c(*server);
  REQUIRE(c.Register(0).ok());
  REQUIRE(c.Register(1).ok());
  REQUIRE(c.Push(DensePush(0, 0, 0, std::vector<float>(100, 0.5f))).ok());
  REQUIRE(c.Push(DensePush(0, 1, 100, std::vector<float>(50, 0.5f))).ok());
  std::vector<float> values;
  REQUIRE(c.Pull(1, 0, "w", 0, 1000, &values).ok());
  v1::PushRequest unknown = DensePush(1, 0, 0, {1.0f});
  unknown.mutable_slices(0)->set_table("nope");
  CHECK(c.Push(unknown).error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(c.Push(DensePush(1, 5, 0, {1.0f})).error_code() == grpc::StatusCode::FAILED_PRECONDITION);

  httplib::Client http("127.0.0.1", metrics_port);
  auto res = http.Get("/metrics");
  REQUIRE(res);
  REQUIRE(res->status == 200);
  const std::string& text = res->body;
  const std::string shard = "job=\"metrics-test\",shard=\"0\"";
  CHECK(SampleValue(text, "tessera_shard_requests_total{" + shard +
                              ",method=\"Push\",code=\"OK\"}") == 2);
  CHECK(SampleValue(text, "tessera_shard_requests_total{" + shard +
                              ",method=\"Push\",code=\"InvalidArgument\"}") == 1);
  CHECK(SampleValue(text, "tessera_shard_requests_total{" + shard +
                              ",method=\"Push\",code=\"FailedPrecondition\"}") == 1);
  CHECK(SampleValue(text, "tessera_shard_requests_total{" + shard +
                              ",method=\"Register\",code=\"OK\"}") == 2);
  // Only the two pushes that were applied: 150 floats of fp32.
  CHECK(SampleValue(text, "tessera_shard_push_bytes_total{" + shard + ",table=\"w\"}") == 600);
  CHECK(SampleValue(text, "tessera_shard_pull_bytes_total{" + shard + ",table=\"w\"}") == 4000);
  // Sent as fp32: the raw counts equal the wire counts.
  CHECK(SampleValue(text, "tessera_shard_push_raw_bytes_total{" + shard + ",table=\"w\"}") == 600);
  CHECK(SampleValue(text, "tessera_shard_pull_raw_bytes_total{" + shard + ",table=\"w\"}") == 4000);
  CHECK(SampleValue(text, "tessera_shard_pushes_total{" + shard + ",table=\"w\"}") == 2);
  CHECK(SampleValue(text, "tessera_shard_push_duration_seconds_count{" + shard +
                              ",table=\"w\"}") == 2);
  CHECK(SampleValue(text, "tessera_shard_pull_duration_seconds_count{" + shard +
                              ",table=\"w\"}") == 1);
  CHECK(SampleValue(text, "tessera_shard_pull_duration_seconds_count{" + shard +
                              ",table=\"emb\"}") == 0);
  CHECK(SampleValue(text, "tessera_shard_worker_clock{" + shard + ",rank=\"0\"}") == 2);
  CHECK(SampleValue(text, "tessera_shard_worker_clock{" + shard + ",rank=\"1\"}") == 0);
  CHECK(SampleValue(text, "tessera_shard_min_clock{" + shard + "}") == 0);
  CHECK(SampleValue(text, "tessera_shard_table_bytes{" + shard + ",table=\"w\"}") == 4000);
  CHECK(SampleValue(text, "tessera_shard_parked_pulls{" + shard + "}") == 0);
  CHECK(text.find("process_resident_memory_bytes{" + shard + "}") != std::string::npos);
  server->Shutdown(absl::Seconds(1));
  CHECK_FALSE(http.Get("/metrics"));  // stopped with the shard
}

}  // namespace
}  // namespace tessera
