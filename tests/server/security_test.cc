// Transport security over real sockets: a job token every call must carry
// (the health service exempt), TLS with the job's CA, mutual TLS, and a
// certificate renewed on disk taken up without a restart. The PKI is made
// per test by scripts/make_test_certs.sh (openssl).
#include "common/security.h"

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "proto/health.grpc.pb.h"
#include "proto/tessera.grpc.pb.h"
#include "server/shard_server.h"
#include "tests/metrics_text.h"
#include "tests/server/test_session.h"
#include "tests/test_pki.h"
#include "worker/grpc_ps_client.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

const char kJob[] = R"(
cluster: {servers: ['127.0.0.1:1'], workers: 1}
consistency: {mode: asp}
model:
  type: tables
  tables:
    - {name: w, kind: dense, size: 64, init: {type: constant, value: 1}}
optimizer: {type: sgd, lr: 0.5}
worker: {connect_timeout_ms: 3000, rpc_timeout_ms: 3000, server_lost_timeout_s: 1}
)";

std::string WriteToken(const std::string& dir, const std::string& name, const std::string& token) {
  const std::string path = dir + "/" + name;
  std::ofstream(path) << token << "\n";
  return path;
}

JobConfig Config(std::vector<std::string> sets) {
  auto c = ParseJobConfig(kJob, sets);
  REQUIRE(c.ok());
  return *c;
}

std::unique_ptr<ShardServer> Start(const JobConfig& c) {
  auto server = ShardServer::Start(c, 0, "127.0.0.1:0");
  INFO(server.status().ToString());
  REQUIRE(server.ok());
  return *std::move(server);
}

// The worker's view of a job: `sets` on top of the server's address.
JobConfig WorkerConfig(const ShardServer& server, std::vector<std::string> sets) {
  sets.push_back(absl::StrCat("cluster.servers=['localhost:", server.port(), "']"));
  return Config(sets);
}

// A raw call with `config`'s credentials and token: Register, as a stranger would.
grpc::StatusCode RegisterWith(const JobConfig& config) {
  auto security = TransportSecurity::ForJob(config);
  REQUIRE(security.ok());
  auto stub = v1::Shard::NewStub((*security)->Channel(config.cluster.servers[0], 1 << 20, 0));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
  v1::RegisterRequest r;
  r.set_session(SessionOf(0));
  r.set_job(config.name);
  r.set_job_layout(config.LayoutText());
  v1::RegisterResponse resp;
  return stub->Register(&ctx, r, &resp).error_code();
}

grpc::StatusCode HealthWith(const JobConfig& config) {
  auto security = TransportSecurity::ForJob(config);
  REQUIRE(security.ok());
  auto stub = grpc::health::v1::Health::NewStub(
      (*security)->Channel(config.cluster.servers[0], 1 << 20, 0));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
  grpc::health::v1::HealthCheckRequest r;
  grpc::health::v1::HealthCheckResponse resp;
  return stub->Check(&ctx, r, &resp).error_code();
}

TEST_CASE("with a job token, calls without it or with another are UNAUTHENTICATED") {
  const std::string dir = TestPki();
  const std::string token = WriteToken(dir, "token", "job-token-0123456789abcdef");
  const std::string wrong = WriteToken(dir, "wrong", "job-token-fedcba9876543210");
  auto server = Start(Config({"security.token_file=" + token}));

  CHECK(RegisterWith(WorkerConfig(*server, {})) == grpc::StatusCode::UNAUTHENTICATED);
  CHECK(RegisterWith(WorkerConfig(*server, {"security.token_file=" + wrong})) ==
        grpc::StatusCode::UNAUTHENTICATED);
  CHECK(HealthWith(WorkerConfig(*server, {})) == grpc::StatusCode::OK);  // probes work
  // A worker with the token trains; the shard saw nothing from the strangers.
  JobConfig worker = WorkerConfig(*server, {"security.token_file=" + token});
  GrpcPsClient client(worker, 0);
  REQUIRE(client.Connect().ok());
  ParameterSet params, grads;
  REQUIRE(client.PullDense(0, &params).ok());
  grads = params;
  REQUIRE(client.PushDense(0, grads, std::nullopt).ok());
  REQUIRE(client.PullDense(1, &params).ok());
  CHECK(params[0][0] == 0.5f);  // 1 - 0.5 * 1
  // Without the token file a worker does not even start.
  JobConfig missing = WorkerConfig(*server, {"security.token_file=" + dir + "/nope"});
  CHECK_FALSE(TransportSecurity::ForJob(missing).ok());
  GrpcPsClient unstarted(missing, 0);
  CHECK(absl::IsInvalidArgument(unstarted.Connect().status()));
}

TEST_CASE("TLS: the job's CA is required; mutual TLS requires a client certificate") {
  const std::string dir = TestPki();
  const std::vector<std::string> server_tls = {"security.tls.cert_file=" + dir + "/server.pem",
                                               "security.tls.key_file=" + dir + "/server.key",
                                               "security.tls.ca_file=" + dir + "/ca.pem",
                                               "security.tls.mutual=true"};
  auto server = Start(Config(server_tls));
  const std::string ca = "security.tls.ca_file=" + dir + "/ca.pem";
  const std::vector<std::string> client_cert = {"security.tls.cert_file=" + dir + "/client.pem",
                                                "security.tls.key_file=" + dir + "/client.key",
                                                "security.tls.mutual=true"};
  auto with = [&](std::vector<std::string> sets) { return WorkerConfig(*server, sets); };

  std::vector<std::string> good = client_cert;
  good.push_back(ca);
  CHECK(RegisterWith(with(good)) == grpc::StatusCode::OK);
  // Plaintext to a TLS shard, TLS trusting another CA, no client certificate,
  // a client certificate of another CA: no call gets through.
  CHECK(RegisterWith(with({})) == grpc::StatusCode::UNAVAILABLE);
  std::vector<std::string> other_ca = client_cert;
  other_ca.push_back("security.tls.ca_file=" + dir + "/other-ca.pem");
  CHECK(RegisterWith(with(other_ca)) == grpc::StatusCode::UNAVAILABLE);
  CHECK(RegisterWith(with({ca})) == grpc::StatusCode::UNAVAILABLE);
  CHECK(RegisterWith(with({ca, "security.tls.cert_file=" + dir + "/rogue-client.pem",
                           "security.tls.key_file=" + dir + "/rogue-client.key",
                           "security.tls.mutual=true"})) == grpc::StatusCode::UNAVAILABLE);
}

TEST_CASE("server.health_port answers probes in plaintext and serves nothing else") {
  const std::string dir = TestPki();
  const int health = FreeLoopbackPort();
  auto server = Start(Config({"security.tls.cert_file=" + dir + "/server.pem",
                              "security.tls.key_file=" + dir + "/server.key",
                              "security.tls.ca_file=" + dir + "/ca.pem",
                              absl::StrCat("server.health_port=", health)}));
  JobConfig plain = Config({absl::StrCat("cluster.servers=['127.0.0.1:", health, "']")});
  CHECK(HealthWith(plain) == grpc::StatusCode::OK);
  CHECK(RegisterWith(plain) == grpc::StatusCode::UNIMPLEMENTED);
  // The TLS port answers no plaintext call, health included (UNAVAILABLE; once in CI's
  // parallel sanitizer stage another test's plaintext server answered UNIMPLEMENTED
  // on a port just freed, so only the success that would be a hole is refused here).
  const grpc::StatusCode on_tls_port = HealthWith(WorkerConfig(*server, {}));
  CHECK(on_tls_port != grpc::StatusCode::OK);
  if (on_tls_port != grpc::StatusCode::UNAVAILABLE) WARN("plaintext probe of the TLS port: " << on_tls_port);
}

TEST_CASE("a certificate renewed on disk is served without a restart") {
  const std::string dir = TestPki();
  const std::string live = dir + "/live";
  fs::create_directories(live);
  fs::copy_file(dir + "/server.pem", live + "/tls.crt", fs::copy_options::overwrite_existing);
  fs::copy_file(dir + "/server.key", live + "/tls.key", fs::copy_options::overwrite_existing);
  auto server = Start(Config(
      {"security.tls.cert_file=" + live + "/tls.crt", "security.tls.key_file=" + live + "/tls.key",
       "security.tls.ca_file=" + dir + "/ca.pem", "security.tls.reload_s=1"}));
  const JobConfig trusts_ca = WorkerConfig(*server, {"security.tls.ca_file=" + dir + "/ca.pem"});
  const JobConfig trusts_other =
      WorkerConfig(*server, {"security.tls.ca_file=" + dir + "/other-ca.pem"});
  CHECK(RegisterWith(trusts_ca) == grpc::StatusCode::OK);
  CHECK(RegisterWith(trusts_other) == grpc::StatusCode::UNAVAILABLE);
  // Renewed (here: by another CA, so the change is visible to a client).
  fs::copy_file(dir + "/other-server.pem", live + "/tls.crt", fs::copy_options::overwrite_existing);
  fs::copy_file(dir + "/other-server.key", live + "/tls.key", fs::copy_options::overwrite_existing);
  grpc::StatusCode seen = grpc::StatusCode::UNAVAILABLE;
  for (int i = 0; i < 40 && seen != grpc::StatusCode::OK; ++i) {
    absl::SleepFor(absl::Milliseconds(250));
    seen = RegisterWith(trusts_other);
  }
  CHECK(seen == grpc::StatusCode::OK);
  CHECK(RegisterWith(trusts_ca) == grpc::StatusCode::UNAVAILABLE);
}

}  // namespace
}  // namespace tessera
