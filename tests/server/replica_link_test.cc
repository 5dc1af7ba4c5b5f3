// ReplicaLink over a real socket to a ReplicaService (server/replication.h):
// calls that change an ASP primary from several threads at once wait for
// the standby side by side (group commit), each answered only once the
// standby holds its change, and the standby ends with the primary's state
// to the bit; a standby that goes away costs each waiting call at most
// server.replication_timeout_s, after which the primary goes on alone.
#include <grpcpp/grpcpp.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <catch2/catch.hpp>
#include <random>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "common/security.h"
#include "common/transport.h"
#include "server/replication.h"
#include "server/shard_server.h"
#include "tests/etcd.h"
#include "tests/server/shard_fixtures.h"
#include "zlib.h"

namespace tessera {
namespace {

// A standby shard serving Replica.Follow on a loopback port of its own.
struct Standby {
  std::unique_ptr<Shard> shard;
  std::unique_ptr<ReplicaService> service;
  std::unique_ptr<grpc::Server> server;
  std::string address;

  explicit Standby(const JobConfig& c) {
    auto created = Shard::Create(c, 0);
    REQUIRE(created.ok());
    shard = *std::move(created);
    shard->SetStandby();
    service = std::make_unique<ReplicaService>(shard.get(), TransportSecurity::Plaintext());
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    ApplyServerTransport(&builder, c.server.max_message_bytes);
    builder.RegisterService(service.get());
    server = builder.BuildAndStart();
    REQUIRE(server != nullptr);
    REQUIRE(port > 0);
    address = "127.0.0.1:" + std::to_string(port);
  }
  ~Standby() { Stop(); }
  void Stop() {
    if (server) server->Shutdown(std::chrono::system_clock::now());
    server.reset();
  }
};

// Every table's bytes and optimizer steps, as a checkpoint would hold them.
std::vector<std::string> Tables(Shard& shard) {
  std::unique_ptr<ShardState> s = shard.Snapshot();
  std::vector<std::string> out;
  for (size_t i = 0; i < s->tables.size(); ++i) {
    const v1::CheckpointTable& t = s->manifest.tables(static_cast<int>(i));
    std::string line = t.name() + " rows " + std::to_string(t.rows()) + " crc " +
                       std::to_string(crc32(0, reinterpret_cast<const Bytef*>(s->tables[i].data()),
                                            static_cast<uInt>(s->tables[i].size())));
    for (int64_t step : t.chunk_steps()) line += " " + std::to_string(step);
    out.push_back(line);
  }
  for (int64_t c : s->manifest.worker_clocks()) out.push_back("clock " + std::to_string(c));
  return out;
}

// A primary shard and its link to a standby of its own.
struct Linked {
  Standby standby;
  std::unique_ptr<Shard> primary;
  ReplicaLink link;

  explicit Linked(const JobConfig& c)
      : standby(c), link(c, 0, standby.address, TransportSecurity::Plaintext()) {
    auto created = Shard::Create(c, 0);
    REQUIRE(created.ok());
    primary = *std::move(created);
    link.SetFromStart();
  }
};

JobConfig Job(uint32_t workers) {
  JobConfig c = MakeConfig("asp", 0, workers);
  c.optimizer.type = OptimizerType::kAdam;
  c.optimizer.lr = 0.01f;
  c.server.replication_timeout_s = 1;
  return c;
}

// `workers` threads, each pushing `clocks` clocks of random dense and
// sparse gradients (one push that advances, a clock), at once. How many
// pushes failed.
int PushAtOnce(Shard& primary, uint32_t workers, int64_t from, int64_t clocks) {
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (uint32_t w = 0; w < workers; ++w) {
    threads.emplace_back([&, w] {
      std::mt19937 rng(31 + w + static_cast<uint32_t>(from));
      std::normal_distribution<float> g(0.0f, 1.0f);
      for (int64_t clock = from; clock < from + clocks; ++clock) {
        std::vector<float> grad(8);
        for (float& x : grad) x = g(rng);
        PushRequest p = MakePush(w, clock, Dense("w", 0, 8), grad, /*advance=*/true);
        *p.add_slices() = Sparse("emb", {w * 100 + static_cast<uint64_t>(clock) % 7});
        EncodeFloats({g(rng), g(rng)}, p.add_gradients());
        p.set_piece(1);
        PushResponse r;
        if (!primary.Push(p, &r).ok()) ++failures;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  return failures.load();
}

TEST_CASE("pushes from many threads reach the standby in order, each answered once it holds it") {
  const uint32_t workers = 6;
  const JobConfig c = Job(workers);
  Linked linked(c);
  Standby& standby = linked.standby;
  Shard& primary = *linked.primary;
  ReplicaLink& link = linked.link;
  // Each call's answer: the standby holds its mutation when it runs.
  std::atomic<int> early{0};
  Shard::MutationLog log = link.Log();
  const auto when_held = log.when_held;
  log.when_held = [&](uint64_t sequence, std::function<void()> done) {
    when_held(sequence, [&, sequence, done] {
      if (standby.shard->followed() < sequence) ++early;
      done();
    });
  };
  REQUIRE(primary.SetMutationLog(log).ok());
  for (uint32_t w = 0; w < workers; ++w) RegisterWorker(primary, w);
  constexpr int64_t kClocks = 60;
  REQUIRE(PushAtOnce(primary, workers, 0, kClocks) == 0);
  CHECK(early == 0);
  CHECK(link.connected());
  // Registrations, then a push and an advance per worker and clock.
  const uint64_t mutations = workers + 2 * workers * kClocks;
  CHECK(primary.log_sequence() == mutations);
  CHECK(link.sent() == mutations);
  CHECK(standby.shard->followed() == mutations);
  CHECK(Tables(primary) == Tables(*standby.shard));
}

TEST_CASE("a standby that goes away: waiting calls are answered within the timeout, then alone") {
  const uint32_t workers = 4;
  const JobConfig c = Job(workers);  // server.replication_timeout_s: 1
  Linked linked(c);
  Standby& standby = linked.standby;
  Shard& primary = *linked.primary;
  ReplicaLink& link = linked.link;
  REQUIRE(primary.SetMutationLog(link.Log()).ok());
  for (uint32_t w = 0; w < workers; ++w) RegisterWorker(primary, w);
  REQUIRE(PushAtOnce(primary, workers, 0, 10) == 0);
  REQUIRE(link.connected());
  standby.Stop();
  const absl::Time start = absl::Now();
  // The first calls wait out the timeout together, not one after another;
  // the rest find the link cut and do not wait.
  REQUIRE(PushAtOnce(primary, workers, 10, 20) == 0);
  const absl::Duration took = absl::Now() - start;
  CHECK(!link.connected());
  CHECK(took < absl::Seconds(5));
  INFO("took " << absl::FormatDuration(took));
  CHECK(took >= absl::Milliseconds(900));  // it did wait for the standby
  CHECK(primary.published_min() == 30);
}

TEST_CASE("a standby whose address refuses connections is cut within seconds, not the timeout") {
  // It served, then its daemon ended (nothing listens at its address): the
  // primary stops waiting for it after a second of refusals, long before
  // server.replication_timeout_s (30 s here). A silent standby (paused, cut
  // off) is waited for: the test above.
  const uint32_t workers = 2;
  JobConfig c = Job(workers);
  c.server.replication_timeout_s = 30;
  Linked linked(c);
  Shard& primary = *linked.primary;
  REQUIRE(primary.SetMutationLog(linked.link.Log()).ok());
  for (uint32_t w = 0; w < workers; ++w) RegisterWorker(primary, w);
  REQUIRE(PushAtOnce(primary, workers, 0, 5) == 0);
  REQUIRE(linked.link.connected());
  linked.standby.Stop();
  const absl::Time start = absl::Now();
  REQUIRE(PushAtOnce(primary, workers, 5, 5) == 0);
  const absl::Duration took = absl::Now() - start;
  INFO("took " << absl::FormatDuration(took));
  CHECK(!linked.link.connected());
  CHECK(took < absl::Seconds(10));
  CHECK(primary.published_min() == 10);
}

// Listens at 127.0.0.1:`port` and never accepts: the kernel completes each
// connection's handshake and nothing answers, as for a paused daemon.
struct SilentListener {
  int fd = -1;
  explicit SilentListener(int port) {
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    REQUIRE(listen(fd, 64) == 0);
  }
  ~SilentListener() { close(fd); }
};

TEST_CASE(
    "a silent standby is cut once its presence in etcd lapses, and waited for while present") {
  // A standby that served falls silent: paused (it renews its presence in
  // etcd no more: the primary gives up on it within seconds), or slow or
  // cut off from its primary alone (still present: waited for, up to
  // server.replication_timeout_s).
  if (EtcdMissing()) return;
  const bool present = GENERATE(false, true);
  INFO((present ? "still present in etcd" : "paused: its presence lapses"));
  Etcd etcd(/*fast=*/true);
  etcd.WaitReady();
  const uint32_t workers = 2;
  JobConfig c = Job(workers);
  c.cluster.etcd = etcd.endpoint();
  c.server.lease_ttl_s = 1;
  c.server.replication_timeout_s = 6;
  Linked linked(c);
  Shard& primary = *linked.primary;
  auto primary_failover = Failover::Create(c, 0, Failover::Role::kPrimary, "127.0.0.1:9", &primary,
                                           AbortOnFailoverStop);
  REQUIRE(primary_failover.ok());
  REQUIRE((*primary_failover)->BecomePrimary().ok());
  (*primary_failover)->Start(0);
  linked.link.SetFailover(primary_failover->get());
  auto standby_failover = Failover::Create(c, 0, Failover::Role::kStandby, linked.standby.address,
                                           linked.standby.shard.get(), AbortOnFailoverStop);
  REQUIRE(standby_failover.ok());
  (*standby_failover)->Start(linked.standby.shard->followed());
  REQUIRE(primary.SetMutationLog(linked.link.Log()).ok());
  for (uint32_t w = 0; w < workers; ++w) RegisterWorker(primary, w);
  REQUIRE(PushAtOnce(primary, workers, 0, 5) == 0);
  REQUIRE(linked.link.connected());
  auto presence = Election::Create(c.cluster.etcd, "/unused", "reader", 1);
  REQUIRE(presence.ok());
  const std::string key = "/tessera/" + c.name + "/shard-0/present/" + linked.standby.address;
  CHECK((*presence)->Get(key).value() == std::optional<std::string>(linked.standby.address));

  const std::string& address = linked.standby.address;
  const int port = std::stoi(address.substr(address.rfind(':') + 1));
  // Paused: it renews nothing (and revokes nothing) from here on.
  if (!present) standby_failover->reset();
  linked.standby.Stop();
  SilentListener silent(port);
  const absl::Time start = absl::Now();
  REQUIRE(PushAtOnce(primary, workers, 5, 5) == 0);
  const absl::Duration took = absl::Now() - start;
  INFO("took " << absl::FormatDuration(took));
  CHECK(!linked.link.connected());
  CHECK(primary.published_min() == 10);
  if (present) {
    CHECK(took >= absl::Seconds(5));  // the timeout (6 s), less the first try's start
  } else {
    CHECK(took < absl::Seconds(4.5));
    CHECK(!(*presence)->Get(key).value().has_value());
  }
}

// A mutation of about `floats` * 4 bytes, numbered `sequence`.
v1::Mutation Large(uint64_t sequence, int floats) {
  v1::Mutation m;
  m.set_sequence(sequence);
  v1::Mutation::Push* p = m.mutable_push();
  p->mutable_grads()->Resize(floats, 1.0f);
  return m;
}

TEST_CASE("a joiner catching up: nobody waits for it, and its queue is bounded in bytes") {
  JobConfig c = Job(1);
  c.server.replication_queue_bytes = 1 << 20;
  c.server.replication_timeout_s = 60;  // the bytes cut it, not the time
  // Nothing listens at port 1 (yet): each offer is refused at once.
  ReplicaLink link(c, 0, "127.0.0.1:1", TransportSecurity::Plaintext());
  link.SetCatchingUp();
  const absl::Time start = absl::Now();
  link.Append(Large(1, 100000));  // 0.4 MB
  link.Await(1);
  link.Append(Large(2, 100000));
  link.Await(2);
  CHECK(absl::Now() - start < absl::Seconds(5));  // offered, not waited for
  CHECK(link.connected());
  CHECK(link.sent() == 0);
  // A third would hold 1.2 MB for it: the joiner is cut (by the sender).
  link.Append(Large(3, 100000));
  link.Await(3);
  for (int i = 0; i < 250 && link.connected(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CHECK(!link.connected());
}

TEST_CASE("a joiner catching up is sent everything queued once it serves, then waited for") {
  const JobConfig c = Job(2);
  Linked linked(c);
  Shard& primary = *linked.primary;
  for (uint32_t w = 0; w < 2; ++w) RegisterWorker(primary, w);
  // A second standby joins the primary mid-run (ShardServer::Join's path).
  Standby joiner(c);
  ReplicaLink link(c, 0, joiner.address, TransportSecurity::Plaintext());
  link.SetCatchingUp();
  REQUIRE(PushAtOnce(primary, 2, 0, 5) == 0);
  auto copy = primary.SnapshotAndLog(link.Log());
  REQUIRE(copy.ok());
  REQUIRE(joiner.shard->Restore(**copy).ok());
  // Nobody waits while it catches up: the sender sends what is queued.
  REQUIRE(PushAtOnce(primary, 2, 5, 20) == 0);
  for (int i = 0; i < 500 && link.sent() < primary.log_sequence() - (*copy)->manifest.log_sequence();
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // Caught up, it is waited for: each call answered once it holds the change.
  REQUIRE(PushAtOnce(primary, 2, 25, 5) == 0);
  CHECK(link.connected());
  CHECK(link.sent() == primary.log_sequence() - (*copy)->manifest.log_sequence());
  CHECK(joiner.shard->followed() == primary.log_sequence());
  CHECK(Tables(primary) == Tables(*joiner.shard));
}

// The threads of this process now.
size_t Threads() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) {
    ++n;
  }
  return n;
}

// A loopback port nothing listens on (bound, then let go).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  socklen_t len = sizeof(a);
  REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  close(fd);
  return ntohs(a.sin_port);
}

TEST_CASE("calls that wait for a standby hold no thread: the shard answers others meanwhile") {
  // A primary daemon whose standby is not up yet: every registration waits
  // for it (server.replication_timeout_s is long). The waiting calls are
  // parked, not threads: the shard answers a stats call at once, and the
  // process gains no thread per waiting call. Once the standby serves, every
  // registration is answered, and the standby holds them all.
  constexpr uint32_t kWorkers = 48;
  const int standby_port = FreePort();
  auto config = ParseJobConfig(
      "cluster: {servers: ['127.0.0.1:1'], standbys: ['127.0.0.1:" + std::to_string(standby_port) +
          "'], workers: " + std::to_string(kWorkers) + R"(}
consistency: {mode: asp}
model:
  type: tables
  tables:
    - {name: w, kind: dense, size: 64}
server: {replication_timeout_s: 60}
)",
      {});
  REQUIRE(config.ok());
  auto primary = ShardServer::Start(*config, 0, "127.0.0.1:0");
  REQUIRE(primary.ok());
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string((*primary)->port()),
                                     grpc::InsecureChannelCredentials());
  auto stub = v1::Shard::NewStub(channel);
  REQUIRE(channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10)));
  // Threads of a warm server and client: one call through first.
  {
    grpc::ClientContext ctx;
    v1::StatsResponse stats;
    REQUIRE(stub->Stats(&ctx, v1::StatsRequest(), &stats).ok());
  }
  const size_t threads_before = Threads();

  struct Call {
    grpc::ClientContext context;
    v1::RegisterRequest request;
    v1::RegisterResponse response;
  };
  std::vector<std::unique_ptr<Call>> calls;
  std::mutex mu;
  std::condition_variable cv;
  int answered = 0, ok = 0;
  for (uint32_t w = 0; w < kWorkers; ++w) {
    auto call = std::make_unique<Call>();
    call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    call->request.set_worker_rank(w);
    call->request.set_session(SessionOf(w));
    call->request.set_job(config->name);
    call->request.set_job_layout(config->LayoutText());
    stub->async()->Register(&call->context, &call->request, &call->response,
                            [&](grpc::Status status) {
                              std::lock_guard<std::mutex> lock(mu);
                              ++answered;
                              ok += status.ok();
                              cv.notify_all();
                            });
    calls.push_back(std::move(call));
  }
  // Every registration reached the shard and waits for the standby.
  for (int i = 0; i < 200 && (*primary)->shard()->log_sequence() < kWorkers; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // (A shard whose handlers waited for the standby took 2 of them here, one
  // per gRPC thread, and no more.)
  CHECK((*primary)->shard()->log_sequence() == kWorkers);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  {
    std::lock_guard<std::mutex> lock(mu);
    CHECK(answered == 0);
  }
  const absl::Time asked = absl::Now();
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::StatsResponse stats;
    CHECK(stub->Stats(&ctx, v1::StatsRequest(), &stats).ok());
  }
  CHECK(absl::Now() - asked < absl::Seconds(2));
  const size_t threads_waiting = Threads();
  INFO("threads before " << threads_before << ", with " << kWorkers << " calls waiting "
                         << threads_waiting);
  CHECK(threads_waiting < threads_before + kWorkers / 4);

  auto standby = ShardServer::Start(*config, 0, "127.0.0.1:" + std::to_string(standby_port),
                                    ShardServer::Role::kStandby);
  CHECK(standby.ok());
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait_for(lock, std::chrono::seconds(30), [&] { return answered == int{kWorkers}; });
    CHECK(answered == int{kWorkers});
    CHECK(ok == int{kWorkers});
  }
  if (standby.ok()) CHECK((*standby)->shard()->followed() == kWorkers);
  // No call outlives its context, whatever failed above.
  for (auto& call : calls) call->context.TryCancel();
  std::unique_lock<std::mutex> lock(mu);
  REQUIRE(cv.wait_for(lock, std::chrono::seconds(70), [&] { return answered == int{kWorkers}; }));
}

}  // namespace
}  // namespace tessera
